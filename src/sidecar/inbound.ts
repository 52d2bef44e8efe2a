/**
 * The inbound path: calls from other services' sidecars to the local app. For each
 * request, in order: who is calling (the peer's verified SPIFFE ID from the mTLS
 * handshake, see mesh-listener.ts; nobody for plaintext) → the path in its one canonical
 * spelling (config/normalize-path.ts) → the access decision (config/access.ts) → the
 * app's target port for the service port named in `x-trellis-destination` (`checkout:80`;
 * in Host from older sidecars), with the normalised path and the caller's Host, streamed both ways. Timeouts are the caller's (its sidecar closes the
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
import { CALLER_HEADER, DESTINATION_HEADER, PEER_IDENTITY_HEADER } from './outbound.ts';
import { decideAccess } from '../config/access.ts';
import { normalizePath } from '../config/normalize-path.ts';
import { peerOf } from './mesh-listener.ts';
import { parseMeshIdentity } from '../identity/spiffe.ts';
import { relayResponse, sendAttempt } from './upstream.ts';
import { armBodyDeadline } from './body-deadline.ts';
import { PROXY_ERRORS } from './errors.ts';
import { RequestRecord } from './request-record.ts';
import type { Http2ServerRequest } from 'node:http2';
import { closeConnectionAfter, cutOff } from './h2-server.ts';
import { H2Pool } from './h2-pool.ts';
import { connectPlain } from './mesh-connector.ts';
import { grpcStatusOf } from './grpc.ts';
import type { SidecarTracer } from './tracing.ts';

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
  /** Time a request body has to arrive in full after the headers, in ms; 0 for none (body-deadline.ts). */
  readonly bodyTimeoutMs: number;
  /** Present when tracing is configured: each request gets a SERVER span, whose context the app receives (tracing.ts). */
  readonly tracer?: SidecarTracer;
}

/** Mesh headers stop here: the app gets only what this sidecar verified. */
const MESH_ONLY: ReadonlySet<string> = new Set([CALLER_HEADER, PEER_IDENTITY_HEADER, DESTINATION_HEADER]);

export interface InboundHandler {
  (req: IncomingMessage, res: ServerResponse): void;
  close(): Promise<void>;
}

/**
 * The `source_workload` label of a verified caller: its service key (`checkout`,
 * `shop/checkout`), or for a Kubernetes ServiceAccount identity `sa:<namespace>/<name>`
 * (distinct from any service key, since several services may run as one ServiceAccount).
 */
export function callerLabel(identity: string): string {
  const parsed = parseMeshIdentity(identity);
  if (parsed?.service !== undefined) return parsed.service;
  if (parsed?.serviceAccount !== undefined) return `sa:${parsed.namespace}/${parsed.serviceAccount}`;
  return identity.slice(identity.lastIndexOf('/') + 1);
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

  /** HTTP/2 without TLS (h2c) to an app port that speaks `http2` or `grpc`: one multiplexed session. */
  const h2Pools = new Map<number, H2Pool>();
  const h2PoolFor = (port: number) => {
    let pool = h2Pools.get(port);
    if (!pool) {
      const host = deps.app.host.includes(':') ? `[${deps.app.host}]` : deps.app.host;
      pool = new H2Pool(`http://${host}:${port}`, () => connectPlain(deps.app.host, port, 1000), 60_000);
      h2Pools.set(port, pool);
    }
    return pool;
  };

  const handler = ((req: IncomingMessage, res: ServerResponse) => {
    const snap = deps.store.current;
    const peer = peerOf(req.socket);
    const caller = peer.identity === null ? 'unauthenticated' : callerLabel(peer.identity);
    const record = new RequestRecord(deps, req, 'inbound', { source: caller, destination: snap?.service ?? 'unknown', route: 'inbound' });
    const fail = (code: ProxyErrorCode) => record.fail(res, code);
    if (!snap) return fail('not_ready');
    if (deps.draining()) {
      closeConnectionAfter(res);
      return fail('shutting_down');
    }
    if (peer.refused) {
      closeConnectionAfter(res);
      res.setHeader('x-trellis-peer-rejected', peer.refused.reason);
      return fail('peer_rejected');
    }
    // A connection accepted in permissive mode may outlive a switch to strict.
    if (peer.transport === 'plaintext' && snap.inbound.mtls.mode === 'strict') return fail('mtls_required');
    const target = req.url ?? '/';
    const q = target.indexOf('?');
    const normalized = normalizePath(q < 0 ? target : target.slice(0, q));
    if (!normalized.ok) return fail('bad_request');
    const method = req.method ?? 'GET';
    const decision = decideAccess(snap.inbound.access, peer.identity, method, normalized.path);
    const reason = decision.policy ?? (snap.inbound.access.default === 'policy' ? 'no_matching_rule' : `default_${snap.inbound.access.default}`);
    deps.metrics.accessDecisions.inc({ result: decision.audited ? 'audited' : decision.allowed ? 'allowed' : 'denied', reason });
    if (!decision.allowed || decision.audited) {
      deps.log[decision.audited ? 'warn' : 'info']({ type: decision.audited ? 'access_audited' : 'access_denied', caller: peer.identity, method, path: normalized.path, reason: decision.reason }, decision.audited ? 'call would be denied (audit mode lets it through)' : 'call denied');
      if (!decision.allowed) return fail('access_denied');
    }
    const host = req.headers.host ?? '';
    // The service port: from x-trellis-destination (set by calling sidecars, which keep the
    // app's authority in Host), else from Host as sidecars before it sent it (`api:80`).
    const destination = req.headers[DESTINATION_HEADER];
    const named = typeof destination === 'string' ? destination : host;
    const colon = named.lastIndexOf(':');
    const asked = colon >= 0 ? Number(named.slice(colon + 1)) : undefined;
    const port = snap.inbound.ports.find((p) => p.port === asked) ?? snap.inbound.ports[0]!;
    const headers = endToEndHeaders(req.headers, MESH_ONLY);
    addForwardingHeaders(headers, req.socket.remoteAddress, host, record.span);
    if (peer.identity !== null) headers[PEER_IDENTITY_HEADER] = peer.identity;
    const path = q < 0 ? normalized.path : normalized.path + target.slice(q);
    const controller = new AbortController();
    const onClose = () => {
      if (cutOff(res)) controller.abort();
    };
    res.on('close', onClose);
    const noBody = req.httpVersionMajor === 2 ? (req as unknown as Http2ServerRequest).stream.endAfterHeaders : req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined;
    const body = noBody ? undefined : req;
    if (record.grpc) headers.te = 'trailers';
    const body$ = armBodyDeadline(req, res, deps.bodyTimeoutMs, () => {
      deps.metrics.bodyTimeouts.inc({ reporter: 'inbound' });
      record.flags = 'request_body_timeout';
      controller.abort();
    });
    const appPort = deps.app.port ?? port.targetPort;
    if (record.span !== undefined) record.backend = `${deps.app.host}:${appPort}`;
    const attempt = { method, path, headers, body, timeoutMs: 0, signal: controller.signal };
    void (port.protocol === 'http2' || port.protocol === 'grpc' ? h2PoolFor(appPort).send(attempt) : sendAttempt(poolFor(appPort), attempt))
      .then(async (result) => {
        if (body$.expired) {
          if (result.ok) result.body.destroy();
          return record.done(PROXY_ERRORS.request_body_timeout.status);
        }
        if (!result.ok) {
          if (result.failure === 'aborted') return record.done(499);
          return fail(result.failure === 'connect_failure' ? 'connect_failure' : 'upstream_reset');
        }
        try {
          const trailers = await relayResponse(res, result, []);
          if (record.grpc) record.grpcStatus = grpcStatusOf(trailers) ?? grpcStatusOf(result.headers);
        } catch {
          res.destroy();
        }
        record.done(result.statusCode);
      })
      .finally(() => res.off('close', onClose));
  }) as InboundHandler;
  handler.close = async () => {
    await Promise.all([...pools.values(), ...h2Pools.values()].map((p) => p.close().catch(() => undefined)));
  };
  return handler;
}
