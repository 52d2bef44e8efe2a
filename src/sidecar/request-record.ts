/**
 * The bookkeeping every proxied request shares, inbound and outbound: the active gauge,
 * the request metrics, the optional access log line and, when tracing is on, the request's
 * span (tracing.ts), all written once when it ends.
 */
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { Clock } from './clock.ts';
import type { ProxyErrorCode } from './errors.ts';
import type { Reporter, SidecarMetrics } from './metrics.ts';
import { sendProxyError, type DownstreamResponse } from './upstream.ts';
import { GRPC_STATUS, isGrpc, isGrpcServerFailure, PROXY_ERROR_GRPC_STATUS } from './grpc.ts';
import type { RequestSpan, SidecarTracer } from './tracing.ts';

export interface RecordDeps {
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  readonly clock: Clock;
  readonly accessLog: boolean;
  /** Present when tracing is configured: every record then starts a span. */
  readonly tracer?: SidecarTracer;
}

/** One request in flight; its labels are filled in as routing learns them. */
export class RequestRecord {
  source: string;
  destination: string;
  route: string;
  /** A proxy error code, or `-` when the response came from upstream. */
  flags = '-';
  /** The request's span; undefined when tracing is off (the request paths then skip all span work). */
  readonly span: RequestSpan | undefined;
  /** Where the request went, `address:port` (the last attempt's endpoint, or the local app); kept only for the span. */
  backend: string | undefined;
  /** Attempts beyond the first; counted only for the span. */
  retries = 0;
  /** The request is a gRPC call: errors are answered as gRPC statuses, and its status is counted. */
  readonly grpc: boolean;
  /** The call's gRPC status, once known (from the response headers or trailers). */
  grpcStatus: number | undefined;
  readonly #deps: RecordDeps;
  readonly #req: IncomingMessage;
  readonly #reporter: Reporter;
  readonly #started: number;

  constructor(deps: RecordDeps, req: IncomingMessage, reporter: Reporter, labels: { source: string; destination: string; route: string }) {
    this.#deps = deps;
    this.#req = req;
    this.#reporter = reporter;
    this.#started = deps.clock.now();
    this.source = labels.source;
    this.destination = labels.destination;
    this.route = labels.route;
    this.grpc = isGrpc(req.headers);
    this.span = deps.tracer?.start(reporter === 'inbound' ? 'server' : 'client', req.method ?? 'GET', req.url ?? '/', req.headers);
    deps.metrics.activeOf(reporter).inc();
  }

  /** Clock ms when the request arrived. */
  get started(): number {
    return this.#started;
  }

  /** Records the end of the request with its status. Call exactly once. */
  done(status: number): void {
    const d = this.#deps;
    d.metrics.activeOf(this.#reporter).dec();
    const seconds = (d.clock.now() - this.#started) / 1000;
    d.metrics.observe(
      { reporter: this.#reporter, source_workload: this.source, destination_service: this.destination, route: this.route, response_code: String(status), response_flags: this.flags },
      seconds,
    );
    if (this.grpc) {
      // A call that got no gRPC status (a reset, an HTTP error page) is `unknown` to the client too.
      const grpcStatus = this.grpcStatus ?? (this.flags === '-' ? GRPC_STATUS.unknown : PROXY_ERROR_GRPC_STATUS[this.flags as ProxyErrorCode] ?? GRPC_STATUS.unknown);
      d.metrics.grpcResponses.inc({ reporter: this.#reporter, source_workload: this.source, destination_service: this.destination, route: this.route, grpc_status: String(grpcStatus) });
      // Relayed from upstream as HTTP 200, yet failed: errors the sidecar made count already by their HTTP status.
      if (this.flags === '-' && status < 500 && isGrpcServerFailure(grpcStatus)) {
        d.metrics.grpcFailures.inc({ reporter: this.#reporter, source_workload: this.source, destination_service: this.destination, route: this.route });
      }
    }
    if (d.accessLog) {
      const r = this.#req;
      d.log.info({ type: 'access', reporter: this.#reporter, method: r.method, path: (r.url ?? '').split('?')[0], source: this.source, destination: this.destination, route: this.route, status, flags: this.flags, ms: Math.round(seconds * 1000) });
    }
    this.span?.end(this, status);
  }

  /** Answers with a proxy error and records it. */
  fail(res: DownstreamResponse, code: ProxyErrorCode): void {
    this.flags = code;
    this.done(sendProxyError(res, code, {}, this.grpc));
  }
}
