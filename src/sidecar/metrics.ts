/**
 * Sidecar metrics, in Prometheus base units with Istio-like labels. Label values are
 * bounded: service and route names come from the config, codes from a fixed catalog;
 * paths and other request data never become labels.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Request duration buckets, in seconds: from sub-millisecond hops to the 15 s default timeout. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15];

export type Reporter = 'outbound' | 'inbound';

/** Label sets whose metric children `observe` keeps at hand. */
const MAX_CACHED_LABEL_SETS = 4096;

export interface RequestLabels {
  readonly reporter: Reporter;
  readonly source_workload: string;
  readonly destination_service: string;
  readonly route: string;
  readonly response_code: string;
  /** A proxy error code (see errors.ts), or `-` when the response came from the backend. */
  readonly response_flags: string;
}

export class SidecarMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'trellis_requests_total',
    help: 'Requests handled, by direction, caller, destination, route, status code and proxy error code',
    labelNames: ['reporter', 'source_workload', 'destination_service', 'route', 'response_code', 'response_flags'] as const,
    registers: [this.registry],
  });
  readonly grpcResponses = new Counter({
    name: 'trellis_grpc_responses_total',
    help: 'gRPC calls handled, by direction, caller, destination, route and gRPC status code (0 is OK, 14 unavailable)',
    labelNames: ['reporter', 'source_workload', 'destination_service', 'route', 'grpc_status'] as const,
    registers: [this.registry],
  });
  /**
   * gRPC calls relayed with a non-failing HTTP status whose gRPC status says the server
   * failed (grpc.ts `isGrpcServerFailure`): failures that `trellis_requests_total` alone
   * would count as successes. The dashboard adds them to its failures.
   */
  readonly grpcFailures = new Counter({
    name: 'trellis_grpc_failures_total',
    help: 'gRPC calls the upstream answered with HTTP 200 and a failing gRPC status (unknown, deadline-exceeded, unimplemented, internal, unavailable, data-loss), by direction, caller, destination and route',
    labelNames: ['reporter', 'source_workload', 'destination_service', 'route'] as const,
    registers: [this.registry],
  });
  readonly tcpConnections = new Counter({
    name: 'trellis_tcp_connections_total',
    help: 'TCP connections to tcp service ports, by direction, caller, destination and result (opened, or the proxy error code that refused it)',
    labelNames: ['reporter', 'source_workload', 'destination_service', 'result'] as const,
    registers: [this.registry],
  });
  readonly tcpBytes = new Counter({
    name: 'trellis_tcp_bytes_total',
    help: 'Bytes carried over TCP connections, by direction, caller, destination and way (sent toward the destination, received from it)',
    labelNames: ['reporter', 'source_workload', 'destination_service', 'direction'] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'trellis_request_duration_seconds',
    help: 'Time from request received to response headers sent, in seconds',
    labelNames: ['reporter', 'source_workload', 'destination_service', 'route', 'response_code'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly retries = new Counter({
    name: 'trellis_retries_total',
    help: 'Retries sent, by destination and what caused them (status code, connect_failure, upstream_reset, timeout)',
    labelNames: ['destination_service', 'reason'] as const,
    registers: [this.registry],
  });
  readonly retriesDenied = new Counter({
    name: 'trellis_retries_denied_total',
    help: 'Retries not sent because the retry budget was spent',
    labelNames: ['destination_service'] as const,
    registers: [this.registry],
  });
  readonly ejections = new Counter({
    name: 'trellis_outlier_ejections_total',
    help: 'Endpoints ejected by outlier detection',
    labelNames: ['destination_service'] as const,
    registers: [this.registry],
  });
  readonly breakerRejections = new Counter({
    name: 'trellis_circuit_breaker_rejections_total',
    help: 'Requests refused because a circuit breaker limit was reached',
    labelNames: ['destination_service'] as const,
    registers: [this.registry],
  });
  readonly configStoreFailures = new Counter({
    name: 'trellis_config_store_failures_total',
    help: 'Applied configs that could not be written to --state-dir (they run; a restart without --config would not find them)',
    registers: [this.registry],
  });
  readonly bodyTimeouts = new Counter({
    name: 'trellis_request_body_timeouts_total',
    help: 'Requests whose body did not arrive within --body-timeout (answered 408 request_body_timeout, upstream request aborted), by listener',
    labelNames: ['reporter'] as const,
    registers: [this.registry],
  });
  readonly active = new Gauge({
    name: 'trellis_active_requests',
    help: 'Requests in flight',
    labelNames: ['reporter'] as const,
    registers: [this.registry],
  });
  readonly configInfo = new Gauge({
    name: 'trellis_config_info',
    help: 'The config this sidecar runs (value 1, version in a label)',
    labelNames: ['service', 'version'] as const,
    registers: [this.registry],
  });
  readonly configApplies = new Counter({
    name: 'trellis_config_applies_total',
    help: 'Configs offered to this sidecar, by result (accepted, rejected) and source (file, stored, admin, control)',
    labelNames: ['result', 'source'] as const,
    registers: [this.registry],
  });

  readonly accessDecisions = new Counter({
    name: 'trellis_access_decisions_total',
    help: 'Inbound access decisions, by result (allowed, denied, audited: would be denied, let through in audit mode) and reason (the admitting policy, no_matching_rule, or default_<mesh default>)',
    labelNames: ['result', 'reason'] as const,
    registers: [this.registry],
  });
  readonly inboundConnections = new Counter({
    name: 'trellis_inbound_connections_total',
    help: 'Connections accepted on the inbound port, by transport (mtls, plaintext)',
    labelNames: ['transport'] as const,
    registers: [this.registry],
  });
  readonly tlsFailures = new Counter({
    name: 'trellis_tls_failures_total',
    help: 'mTLS connections refused, by direction (inbound, outbound) and reason (plaintext_refused, untrusted_certificate, expired_certificate, no_client_certificate, bad_identity, other_trust_domain, identity_mismatch, no_identity, handshake_failed)',
    labelNames: ['direction', 'reason'] as const,
    registers: [this.registry],
  });
  readonly certificateExpiry = new Gauge({
    name: 'trellis_certificate_expiry_timestamp_seconds',
    help: "When this sidecar's workload certificate expires (Unix seconds)",
    registers: [this.registry],
  });
  readonly certificateRenewals = new Counter({
    name: 'trellis_certificate_renewals_total',
    help: 'Certificate requests to the mesh CA, by result (ok, failed)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'trellis_' });
  }

  /**
   * The request counter's and histogram's children per label set, so a request costs a map
   * lookup instead of prom-client hashing two label objects (label values are bounded by the
   * config; the cache is emptied past MAX_CACHED_LABEL_SETS all the same).
   */
  readonly #children = new Map<string, { readonly requests: { inc(): void }; readonly duration: { observe(v: number): void } }>();
  readonly #active = { outbound: this.active.labels({ reporter: 'outbound' }), inbound: this.active.labels({ reporter: 'inbound' }) };

  /** The in-flight gauge of one reporter. */
  activeOf(reporter: Reporter): { inc(): void; dec(): void } {
    return this.#active[reporter];
  }

  /** Records one finished request. */
  observe(labels: RequestLabels, seconds: number): void {
    const key = `${labels.reporter}\u0000${labels.source_workload}\u0000${labels.destination_service}\u0000${labels.route}\u0000${labels.response_code}\u0000${labels.response_flags}`;
    let children = this.#children.get(key);
    if (children === undefined) {
      if (this.#children.size >= MAX_CACHED_LABEL_SETS) this.#children.clear();
      children = {
        requests: this.requests.labels(labels),
        duration: this.duration.labels({ reporter: labels.reporter, source_workload: labels.source_workload, destination_service: labels.destination_service, route: labels.route, response_code: labels.response_code }),
      };
      this.#children.set(key, children);
    }
    children.requests.inc();
    children.duration.observe(seconds);
  }

  setConfig(service: string, version: string): void {
    this.configInfo.reset();
    this.configInfo.set({ service, version }, 1);
  }
}
