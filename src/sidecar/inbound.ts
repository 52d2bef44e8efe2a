/**
 * The inbound path: calls from other services' sidecars to the local app. The caller's
 * sidecar names the service port in Host (`checkout:80`); the request goes to the app's
 * target port, streamed both ways. Timeouts are the caller's (its sidecar closes the
 * connection when its deadline passes, and that aborts the call here).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { Pool } from 'undici';
import type { Clock } from './clock.ts';
import type { ConfigStore } from './config-store.ts';
import type { ProxyErrorCode } from './errors.ts';
import { addForwardingHeaders, endToEndHeaders } from './headers.ts';
import type { SidecarMetrics } from './metrics.ts';
import { CALLER_HEADER } from './outbound.ts';
import { relayResponse, sendAttempt } from './upstream.ts';
import { RequestRecord } from './request-record.ts';

/** Where the local app listens: a host, and a port that overrides every target port when given. */
export interface AppAddress {
  readonly host: string;
  readonly port?: number;
}

export interface InboundDeps {
  readonly store: ConfigStore;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  readonly clock: Clock;
  readonly app: AppAddress;
  readonly accessLog: boolean;
  readonly draining: () => boolean;
}

const SERVICE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** The caller header stops here: the app gets the request without it. */
const CALLER_ONLY: ReadonlySet<string> = new Set([CALLER_HEADER]);

export interface InboundHandler {
  (req: IncomingMessage, res: ServerResponse): void;
  close(): Promise<void>;
}

export function createInboundHandler(deps: InboundDeps): InboundHandler {
  const pools = new Map<number, Pool>();
  const poolFor = (port: number) => {
    let pool = pools.get(port);
    if (!pool) {
      const host = deps.app.host.includes(':') ? `[${deps.app.host}]` : deps.app.host;
      // The app is on this machine: connecting is quick or refused, never slow.
      pool = new Pool(`http://${host}:${port}`, { pipelining: 1, connectTimeout: 1000, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000, headersTimeout: 0, bodyTimeout: 0 });
      pools.set(port, pool);
    }
    return pool;
  };

  const handler = ((req: IncomingMessage, res: ServerResponse) => {
    const snap = deps.store.current;
    const claimed = req.headers[CALLER_HEADER];
    const caller = typeof claimed === 'string' && SERVICE_NAME.test(claimed) ? claimed : 'unknown';
    const record = new RequestRecord(deps, req, 'inbound', { source: caller, destination: snap?.service ?? 'unknown', route: 'inbound' });
    const fail = (code: ProxyErrorCode) => record.fail(res, code);
    if (!snap) return fail('not_ready');
    if (deps.draining()) {
      res.setHeader('connection', 'close');
      return fail('shutting_down');
    }
    const host = req.headers.host ?? '';
    const colon = host.lastIndexOf(':');
    const asked = colon >= 0 ? Number(host.slice(colon + 1)) : undefined;
    const port = snap.inbound.ports.find((p) => p.port === asked) ?? snap.inbound.ports[0]!;
    const headers = endToEndHeaders(req.headers, CALLER_ONLY);
    addForwardingHeaders(headers, req.socket.remoteAddress, host);
    const controller = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) controller.abort();
    };
    res.on('close', onClose);
    const body = req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined ? undefined : req;
    void sendAttempt(poolFor(deps.app.port ?? port.targetPort), { method: req.method ?? 'GET', path: req.url ?? '/', headers, body, timeoutMs: 0, signal: controller.signal })
      .then(async (result) => {
        if (!result.ok) {
          if (result.failure === 'aborted') return record.done(499);
          return fail(result.failure === 'connect_failure' ? 'connect_failure' : 'upstream_reset');
        }
        try {
          await relayResponse(res, result, []);
        } catch {
          res.destroy();
        }
        record.done(result.statusCode);
      })
      .finally(() => res.off('close', onClose));
  }) as InboundHandler;
  handler.close = async () => {
    await Promise.all([...pools.values()].map((p) => p.close().catch(() => undefined)));
  };
  return handler;
}
