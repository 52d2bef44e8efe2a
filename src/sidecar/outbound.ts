/**
 * The outbound path: the app's calls to other services. For each request, in order:
 * find the destination (destination.ts: Host or absolute URI, names resolved across
 * namespaces) → the route plan (route-plan.ts, pure: rule, redirect, backend by weight,
 * filters) → fault injection → deadline → circuit breaker → pick an endpoint (outlier
 * detection, terminating instances last, balancer) → send, retrying within the budget
 * (retry.ts decides what may be retried), the per-try and whole-request timeouts → stream
 * the response back.
 *
 * A host that names no service the sidecar may call can still be an instance's own
 * address (a pod IP and port): the call then goes to exactly that instance (`callInstance`).
 * Anything else is egress (egress.ts): passed through when the mesh allows it, else refused.
 *
 * A request works on the config snapshot current when it arrived, start to finish.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { CompiledHeaderModifier, CompiledRule } from '../config/types.ts';
import type { Random, TimerClock } from './clock.ts';
import type { Cluster, ClusterManager, InstanceCall } from './clusters.ts';
import type { Endpoint } from './endpoint.ts';
import type { ConfigStore, Snapshot } from './config-store.ts';
import { PROXY_ERRORS, type ProxyErrorCode } from './errors.ts';
import { armBodyDeadline } from './body-deadline.ts';
import { addForwardingHeaders, applyHeaderModifier, endToEndHeaders, isRetrySafe } from './headers.ts';
import type { SidecarMetrics } from './metrics.ts';
import { relayResponse, sendGrpcStatusOfHttp, sendProxyError } from './upstream.ts';
import type { Http2ServerRequest } from 'node:http2';
import { closeConnectionAfter, cutOff } from './h2-server.ts';
import { formatGrpcTimeout, grpcStatusOf, parseGrpcTimeout } from './grpc.ts';
import { ReplayBody } from './replay-body.ts';
import { Deadline } from './deadline.ts';
import { dispatch, type DispatchEvents, type Exchange } from './dispatch.ts';
import { RequestRecord } from './request-record.ts';
import { readBody } from '../http/json-server.ts';
import { serviceKeyOfHost } from '../spec/names.ts';
import { canonicalIp, hostOfServiceKey, parseTarget, type Target } from './destination.ts';
import { createEgress } from './egress.ts';
import { planRoute, type MirrorFilter } from './route-plan.ts';
import type { SidecarTracer } from './tracing.ts';

/**
 * A header older sidecars sent to name the caller. Callers are identified only by their
 * mTLS certificate now; whatever arrives under this name is dropped on both sides, so no
 * app or sidecar mistakes a claim for an identity.
 */
export const CALLER_HEADER = 'x-trellis-caller';
/** Set by the destination sidecar for the app: the caller's verified SPIFFE ID (absent for unauthenticated callers). */
export const PEER_IDENTITY_HEADER = 'x-trellis-peer-identity';
/** Marks mirrored copies, so backends can tell them from real traffic. */
export const MIRROR_HEADER = 'x-trellis-mirror';
/**
 * Set by the calling sidecar on a meshed hop: `name[.namespace]:port`, the service and
 * service port the call is for. `Host` carries the authority the app sent (which may name
 * the service without a port, an instance's address, or a rewritten host), so the
 * destination's inbound reads the port from here; it strips the header before the app.
 */
export const DESTINATION_HEADER = 'x-trellis-destination';
/** Headers only sidecars may set: whatever an app sends under these names is dropped. */
const MESH_HEADERS: ReadonlySet<string> = new Set([CALLER_HEADER, MIRROR_HEADER, PEER_IDENTITY_HEADER, DESTINATION_HEADER]);
/** Mirrors in flight at once per sidecar; beyond it copies are skipped, so mirroring never builds a queue. */
const MAX_MIRRORS_IN_FLIGHT = 64;

export interface OutboundDeps {
  readonly store: ConfigStore;
  readonly clusters: ClusterManager;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  readonly clock: TimerClock;
  readonly random: Random;
  /** Largest request body held in memory so it can be retried or mirrored (bigger ones stream, unretried). */
  readonly maxRetryBodyBytes: number;
  /** Time a request body has to arrive in full after the headers, in ms; 0 for none (body-deadline.ts). */
  readonly bodyTimeoutMs: number;
  readonly accessLog: boolean;
  /** True once shutdown began: new requests get 503 shutting_down. */
  readonly draining: () => boolean;
  /** Present when tracing is configured: each request gets a CLIENT span (tracing.ts). */
  readonly tracer?: SidecarTracer;
}

/** What of a route rule governs sending: its timeouts and retries. */
type RequestPolicy = Pick<CompiledRule, 'timeouts' | 'retry'>;

/** For a call addressed to an instance that no route rule of its service matches: no timeout, no retry. */
const INSTANCE_CALL_POLICY: RequestPolicy = Object.freeze({
  timeouts: Object.freeze({ requestMs: 0, backendRequestMs: 0 }),
  retry: Object.freeze({ attempts: 0, codes: Object.freeze([]) as readonly number[], backoffMs: 0 }),
});

/** The outbound listener's request handler, and what it holds open. */
export interface OutboundHandler {
  (req: IncomingMessage, res: ServerResponse): void;
  /** Closes the egress connections (the clusters' pools are the ClusterManager's). */
  close(): Promise<void>;
}

export function createOutboundHandler(deps: OutboundDeps): OutboundHandler {
  let mirrorsInFlight = 0;
  const egress = createEgress();

  /** Fire-and-forget copies; they never delay or fail the primary request. */
  function mirror(filters: readonly MirrorFilter[], method: string, path: string, headers: Record<string, string | string[]>, body: Buffer | undefined, callerPort: number): void {
    for (const f of filters) {
      if (mirrorsInFlight >= MAX_MIRRORS_IN_FLIGHT) continue;
      if (f.numerator < f.denominator && deps.random() * f.denominator >= f.numerator) continue;
      const cluster = deps.clusters.get(f.backend.service);
      const ep = cluster?.picker.pick(cluster.candidates());
      if (!cluster || !ep) continue;
      const port = f.backend.port ?? callerPort;
      const copy: Record<string, string | string[]> = { ...headers, [MIRROR_HEADER]: '1' };
      setUpstreamAuthority(copy, cluster, port, undefined);
      mirrorsInFlight++;
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 10_000);
      void cluster
        .send(ep, ep.port || targetPort(cluster, port), port, { method, path, headers: copy, body, timeoutMs: 10_000, signal: controller.signal })
        .then((r) => (r.ok ? r.body.dump() : undefined))
        .catch(() => undefined)
        .finally(() => {
          clearTimeout(timer);
          mirrorsInFlight--;
        });
    }
  }

  const handler = ((req: IncomingMessage, res: ServerResponse) => {
    const snap = deps.store.current;
    const record = new RequestRecord(deps, req, 'outbound', { source: snap?.service ?? 'unknown', destination: 'unknown', route: 'unknown' });
    const fail = (code: ProxyErrorCode) => record.fail(res, code);

    if (!snap) return fail('not_ready');
    if (deps.draining()) {
      closeConnectionAfter(res);
      return fail('shutting_down');
    }
    const target = parseTarget(req, snap.hostSuffix);
    if (!target) return fail('bad_request');
    const key = serviceKeyOfHost(target.host, snap.namespace);
    const table = key === null ? undefined : snap.routes.get(key);
    if (!table) {
      // Not a service name: an instance's own address (pod IP and port), or a host outside the mesh.
      const instance = deps.clusters.findInstance(target.host, target.port ?? 80);
      if (instance) return callInstance(snap, req, res, record, target, instance);
      if (snap.inbound.egress === 'passthrough') {
        if (isOwnListener(req, target)) return fail('proxy_loop');
        return egress.forward(req, res, record, target, MESH_HEADERS);
      }
      return fail('unknown_service');
    }
    record.destination = table.service;
    const method = req.method ?? 'GET';
    const plan = planRoute(table, { port: target.port, method, path: target.path, query: target.query, authority: target.authority, headers: req.headers }, deps.random);
    if (plan.kind === 'no_route') return fail('no_route');
    record.route = plan.rule.route ?? 'default';
    if (plan.kind === 'redirect') {
      res.writeHead(plan.status, { location: plan.location, 'content-length': 0 });
      res.end();
      return record.done(plan.status);
    }
    if (plan.kind === 'no_backend') return fail('no_backend');
    record.destination = plan.backend.service;
    const headers = endToEndHeaders(req.headers, MESH_HEADERS);
    // The authority the app named (from the absolute URI when it used the sidecar as its proxy).
    headers.host = target.authority;
    addForwardingHeaders(headers, req.socket.remoteAddress, target.authority, record.span);
    for (const m of plan.requestHeaders) applyHeaderModifier(headers, m);
    run(record, {
      req,
      res,
      policy: plan.rule,
      cluster: deps.clusters.get(plan.backend.service)!,
      method,
      pathAndQuery: plan.pathAndQuery,
      headers,
      backendPort: plan.backendPort,
      rewriteHost: plan.rewriteHost,
      responseModifiers: plan.responseHeaders,
      mirrors: plan.mirrors,
      started: record.started,
    });
  }) as OutboundHandler;
  handler.close = () => egress.close();

  /** Forwards, then records the outcome. */
  function run(record: RequestRecord, args: ForwardArgs): void {
    void forward(args, record)
      .then((outcome) => {
        record.flags = outcome.flags;
        record.done(outcome.status);
      })
      .catch((err: Error) => {
        deps.log.error({ err, type: 'bug' }, 'outbound request failed unexpectedly');
        record.fail(args.res, 'upstream_reset');
      });
  }

  /**
   * A call addressed to one instance of a known service (its IP and port): it goes to that
   * instance and no other, with the service's cluster settings (mTLS to the service's
   * identity, connection limits, breaker, fault injection), and the timeouts and retries
   * of the service's route rule that matches the request (none when no rule does: the app
   * chose the instance, so the route's backends and filters do not apply). Retries go to
   * the same instance. The destination's inbound enforces its access policy as for any call.
   */
  function callInstance(snap: Snapshot, req: IncomingMessage, res: ServerResponse, record: RequestRecord, target: Target, call: InstanceCall): void {
    const { cluster } = call;
    record.destination = cluster.service;
    const method = req.method ?? 'GET';
    const rule = snap.routes.get(cluster.service)?.match({ port: call.servicePort, method, path: target.path, headers: req.headers, query: target.query });
    record.route = rule ? (rule.route ?? 'default') : 'instance';
    const headers = endToEndHeaders(req.headers, MESH_HEADERS);
    headers.host = target.authority;
    addForwardingHeaders(headers, req.socket.remoteAddress, target.authority, record.span);
    const pathAndQuery = target.query ? `${target.path}?${target.query}` : target.path;
    run(record, {
      req,
      res,
      policy: rule ?? INSTANCE_CALL_POLICY,
      cluster,
      method,
      pathAndQuery,
      headers,
      backendPort: call.servicePort,
      rewriteHost: undefined,
      responseModifiers: [],
      mirrors: [],
      started: record.started,
      pinned: { endpoint: call.endpoint, port: call.connectPort },
    });
  }

  interface ForwardArgs {
    req: IncomingMessage;
    res: ServerResponse;
    /** Timeouts and retries: the matched rule's. */
    policy: RequestPolicy;
    cluster: Cluster;
    method: string;
    pathAndQuery: string;
    headers: Record<string, string | string[]>;
    backendPort: number;
    rewriteHost: string | undefined;
    responseModifiers: readonly CompiledHeaderModifier[];
    /** RequestMirror filters of the rule and of the chosen backend. */
    mirrors: readonly MirrorFilter[];
    started: number;
    /** Send every attempt to this endpoint, on this port, instead of balancing (a call addressed to one instance). */
    pinned?: { readonly endpoint: Endpoint; readonly port: number };
  }

  /** What the layers report, as metrics and logs. */
  const events: DispatchEvents = {
    retried: (service, reason) => deps.metrics.retries.inc({ destination_service: service, reason }),
    retryDenied: (service) => deps.metrics.retriesDenied.inc({ destination_service: service }),
    overloaded: (service) => deps.metrics.breakerRejections.inc({ destination_service: service }),
    ejected: (service, endpoint) => {
      deps.metrics.ejections.inc({ destination_service: service });
      deps.log.warn({ type: 'outlier_ejected', service, endpoint }, 'endpoint ejected by outlier detection');
    },
  };

  /** The events, with this request's retries also counted on its record (for its span). */
  function countingRetries(record: RequestRecord): DispatchEvents {
    return {
      ...events,
      retried: (service, reason) => {
        record.retries++;
        events.retried(service, reason);
      },
    };
  }

  /**
   * The HTTP/1.1 side of one request: fault injection, the request body (read into memory
   * when small enough to retry or mirror), mirrors; then the protocol-neutral dispatch
   * (dispatch.ts: deadline → retry → breaker → pick → attempt), and its outcome written back.
   */
  async function forward(a: ForwardArgs, record: RequestRecord): Promise<{ status: number; flags: string }> {
    const { req, res, cluster } = a;
    const deadline = new Deadline(deps.clock, a.started, requestTimeoutMs(a.policy.timeouts.requestMs, record.grpc ? parseGrpcTimeout(req.headers['grpc-timeout']) : undefined));
    // Armed first: a small body is read into memory below, and a caller dripping it must not hold that read open.
    let bodyExpired: () => void = () => undefined;
    const bodyExpiry = new Promise<undefined>((resolve) => (bodyExpired = () => resolve(undefined)));
    const body$ = armBodyDeadline(req, res, deps.bodyTimeoutMs, () => {
      deps.metrics.bodyTimeouts.inc({ reporter: 'outbound' });
      deadline.cancel('request_body_timeout');
      bodyExpired();
    });
    const bodyTimedOut = { status: PROXY_ERRORS.request_body_timeout.status, flags: 'request_body_timeout' } as const;
    const onClose = () => {
      if (cutOff(res)) deadline.cancel('client_gone');
    };
    res.on('close', onClose);
    try {
      const fault = cluster.settings.faultInjection;
      if (fault.delay && deps.random() * 100 < fault.delay.percentage) await deps.clock.sleep(fault.delay.delayMs);
      if (body$.expired) return bodyTimedOut;
      if (fault.abort && deps.random() * 100 < fault.abort.percentage) {
        if (record.grpc) {
          sendGrpcStatusOfHttp(res, fault.abort.httpStatus, 'aborted by fault injection', { 'x-trellis-error': 'fault_abort' });
          return { status: fault.abort.httpStatus, flags: 'fault_abort' };
        }
        res.writeHead(fault.abort.httpStatus, { 'content-type': 'application/json', 'x-trellis-error': 'fault_abort' });
        res.end(JSON.stringify({ error: 'fault_abort', message: 'aborted by fault injection' }));
        return { status: fault.abort.httpStatus, flags: 'fault_abort' };
      }

      // A body we may need to send twice (a retry, a mirror) is read into memory first, if
      // small. An HTTP/2 body of unknown length (every gRPC call) may be a stream that only
      // ends after the response began, so it is sent as it arrives and kept for a replay.
      const length = req.headers['content-length'];
      const h2 = req.httpVersionMajor === 2;
      const chunked = h2 ? length === undefined && !(req as unknown as Http2ServerRequest).stream.endAfterHeaders : req.headers['transfer-encoding'] !== undefined;
      let body: Buffer | IncomingMessage | ReplayBody | undefined;
      if (!chunked && (length === undefined || length === '0')) body = undefined;
      else if (!chunked && Number(length) <= deps.maxRetryBodyBytes) body = (await Promise.race([readBody(req, deps.maxRetryBodyBytes).catch(() => undefined), bodyExpiry])) ?? Buffer.alloc(0);
      else body = h2 ? new ReplayBody(req, deps.maxRetryBodyBytes) : req;
      if (body$.expired) return bodyTimedOut;
      if (a.mirrors.length > 0) {
        if (body === undefined || Buffer.isBuffer(body)) mirror(a.mirrors, a.method, a.pathAndQuery, a.headers, body, a.backendPort);
        else if (body instanceof ReplayBody) {
          // Mirrored once the whole body has come, if it fit the replay buffer.
          const headers = { ...a.headers };
          const whole = body;
          void whole.complete().then((b) => b && mirror(a.mirrors, a.method, a.pathAndQuery, headers, b, a.backendPort));
        }
      }
      if (record.grpc) a.headers.te = 'trailers';

      setUpstreamAuthority(a.headers, cluster, a.backendPort, a.rewriteHost);
      const exchange: Exchange = { method: a.method, path: a.pathAndQuery, headers: a.headers, body, retrySafe: isRetrySafe(a.method, req.headers) };
      const outcome = await dispatch(cluster, exchange, {
        policy: a.policy,
        deadline,
        portOf: (ep) => ep.port || targetPort(cluster, a.backendPort),
        pinned: a.pinned,
        clock: deps.clock,
        random: deps.random,
        send: (t, x, w) => {
          if (record.span !== undefined) record.backend = `${t.endpoint.address}:${t.port}`;
          // A gRPC call's deadline travels with it, as what is left of it at each attempt.
          if (record.grpc && deadline.at !== Infinity) x.headers['grpc-timeout'] = formatGrpcTimeout(deadline.remainingMs());
          const attempt = { method: x.method, path: x.path, headers: x.headers, body: x.body, timeoutMs: w.timeoutMs, signal: w.signal };
          return cluster.send(t.endpoint, t.port, a.backendPort, attempt);
        },
        events: record.span === undefined ? events : countingRetries(record),
      });
      switch (outcome.kind) {
        case 'client_gone':
          return { status: 499, flags: 'client_closed' };
        case 'failed':
          if (outcome.code === 'request_body_timeout') return bodyTimedOut;
          return { status: sendProxyError(res, outcome.code, {}, record.grpc), flags: outcome.code };
        case 'response':
          try {
            const trailers = await relayResponse(res, outcome.response, a.responseModifiers);
            if (record.grpc) record.grpcStatus = grpcStatusOf(trailers) ?? grpcStatusOf(outcome.response.headers);
          } catch {
            res.destroy();
          } finally {
            outcome.settle();
          }
          return { status: outcome.response.statusCode, flags: body$.expired ? 'request_body_timeout' : '-' };
      }
    } finally {
      deadline.dispose();
      res.off('close', onClose);
    }
  }

  return handler;
}

/**
 * Whether the target is the listener the request came in on (its address, or loopback,
 * and its port): passed through, the call would come back here, again and again.
 */
function isOwnListener(req: IncomingMessage, target: Target): boolean {
  if ((target.port ?? 80) !== req.socket.localPort) return false;
  const ip = canonicalIp(target.host);
  if (target.host === 'localhost') return true;
  if (ip === null) return false;
  return ip === '::1' || ip.startsWith('127.') || ip === '0.0.0.0' || ip === '::' || ip === canonicalIp((req.socket.localAddress ?? '').replace(/^::ffff:/, ''));
}

/** The port an unmeshed endpoint without one of its own is reached on: the targetPort of the called service port. */
export function targetPort(cluster: Cluster, servicePort: number): number {
  const p = cluster.settings.ports.find((x) => x.port === servicePort) ?? cluster.settings.ports[0]!;
  return p.targetPort;
}

/**
 * The authority a backend gets, set in `headers` (whose `host` holds the authority the app
 * sent): a URLRewrite hostname when the rule has one; for an unmeshed backend named by a
 * DNS name, that name (it is the virtual host the backend serves, as Envoy's auto host
 * rewrite does for DNS clusters); otherwise the app's own authority, unchanged, to meshed
 * and unmeshed backends alike. A meshed backend's sidecar also gets `x-trellis-destination`
 * (`name[.namespace]:servicePort`), the service port it serves the call on.
 */
export function setUpstreamAuthority(headers: Record<string, string | string[]>, cluster: Cluster, servicePort: number, rewriteHost: string | undefined): void {
  if (rewriteHost !== undefined) headers.host = rewriteHost;
  else if (!cluster.settings.meshed && cluster.endpointsBody.dns) headers.host = cluster.endpointsBody.dns.hostname;
  if (cluster.settings.meshed) headers[DESTINATION_HEADER] = `${hostOfServiceKey(cluster.service)}:${servicePort}`;
}

/**
 * The whole-request timeout of a call: the route's, or the gRPC deadline the caller sent
 * (`grpc-timeout`) when that is sooner; 0 for none.
 */
export function requestTimeoutMs(routeMs: number, grpcMs: number | undefined): number {
  if (grpcMs === undefined || grpcMs <= 0) return routeMs;
  return routeMs === 0 ? grpcMs : Math.min(routeMs, grpcMs);
}
