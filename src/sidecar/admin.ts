/**
 * The admin listener (default 127.0.0.1:15000): health, readiness, metrics, the running
 * config, and authenticated config writes for running without a reconciler.
 *
 *   GET  /healthz        200 while the process serves
 *   GET  /readyz         200 once a config runs and until shutdown begins, else 503
 *   GET  /metrics        Prometheus text
 *   GET  /config         the running config (404 no_config before the first)
 *   GET  /identity       the workload certificate in use: SPIFFE ID, serial, validity, PEM, trust bundle (never the key)
 *   PUT  /config         a whole config          → 200 | 401 | 403 | 422 invalid_config
 *                        (200 with `stored: false`: running, but the state folder could not keep it)
 *   POST /config/delta   a delta on the running  → 200 | 401 | 403 | 409 base_mismatch | 422
 *
 * Writes need `Authorization: Bearer <token>`; without a configured token they are refused.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ConfigStore } from './config-store.ts';
import type { SidecarMetrics } from './metrics.ts';
import type { SidecarIdentity } from './identity.ts';
import { hasBearer, readJsonBody, sendJson as json } from '../http/json-server.ts';

/** Largest config accepted over admin; a real one is a few hundred KiB at most. */
const MAX_BODY_BYTES = 32 * 1024 * 1024;

export interface AdminDeps {
  readonly store: ConfigStore;
  readonly metrics: SidecarMetrics;
  /** Bearer token for writes; undefined disables writes. */
  readonly token: string | undefined;
  readonly ready: () => boolean;
  readonly identity: SidecarIdentity;
}

export function createAdminHandler(deps: AdminDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const authorized = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (deps.token === undefined) {
      json(res, 403, { error: 'admin_writes_disabled', message: 'start the sidecar with --admin-token-file to allow config writes' });
      return false;
    }
    if (!hasBearer(req, deps.token)) {
      res.setHeader('www-authenticate', 'Bearer');
      json(res, 401, { error: 'unauthorized', message: 'a valid bearer token is required' });
      return false;
    }
    return true;
  };

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    const route = `${method} ${path}`;
    void (async () => {
      switch (route) {
        case 'GET /healthz':
          return json(res, 200, { status: 'ok' });
        case 'GET /readyz': {
          const snap = deps.store.current;
          return json(res, deps.ready() ? 200 : 503, { ready: deps.ready(), version: snap?.version ?? null });
        }
        case 'GET /metrics': {
          const text = await deps.metrics.registry.metrics();
          res.writeHead(200, { 'content-type': deps.metrics.registry.contentType });
          return res.end(text);
        }
        case 'GET /config': {
          const snap = deps.store.current;
          if (!snap) return json(res, 404, { error: 'no_config', message: 'no config has been applied yet' });
          return json(res, 200, snap.config);
        }
        case 'GET /identity': {
          const c = deps.identity.current;
          if (!c) return json(res, 404, { error: 'no_identity', message: 'no certificate yet' });
          return json(res, 200, {
            identity: c.identity,
            serialNumber: c.serialNumber,
            notBefore: new Date(c.notBefore).toISOString(),
            notAfter: new Date(c.notAfter).toISOString(),
            certificate: c.certificatePem,
            trustBundle: c.trustBundle,
          });
        }
        case 'PUT /config':
        case 'POST /config/delta': {
          if (!authorized(req, res)) return;
          const body = await readJsonBody(req, MAX_BODY_BYTES);
          if (!body.ok) return json(res, body.status, { error: body.error });
          const result = path === '/config' ? deps.store.apply(body.value, 'admin') : deps.store.applyDelta(body.value, 'admin');
          if (result.ok) return json(res, 200, { version: result.version, changed: result.changed, ...(result.stored === undefined ? {} : { stored: result.stored }) });
          return json(res, result.status, { error: result.code, reasons: result.reasons });
        }
        default:
          if (['/healthz', '/readyz', '/metrics', '/config', '/config/delta', '/identity'].includes(path ?? '')) return json(res, 405, { error: 'method_not_allowed' });
          return json(res, 404, { error: 'not_found' });
      }
    })().catch((err: Error) => json(res, 500, { error: 'internal', message: err.message }));
  };
}
