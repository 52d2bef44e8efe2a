/**
 * The proxy config: what the compiler emits for one service and what its sidecar runs.
 * Every value is resolved (defaults applied, durations in milliseconds, references
 * checked), so a sidecar never guesses. Configs are split into named resources, each
 * with its own content hash, so a change to one backend reaches a sidecar as a small delta.
 *
 * Resource names (`<service>` is a service key, `name` or `namespace/name`: spec/names.ts):
 *   `inbound`               the local service: identity, ports, compiled access rules
 *   `route/<service>`       the ordered rule table for calls to <service>
 *   `cluster/<service>`     how to call <service>: balancer, breaker, outlier detection, budget
 *   `endpoints/<service>`   the instances of <service>
 *
 * Optional fields below are *absent* (never null or false) when they hold their default,
 * so configs of meshes that do not use them keep their bytes and content hashes.
 */
import type { AccessDefault, HTTPMethod, LoadBalancerType, MtlsMode } from '../spec/types.ts';

export const PROXY_CONFIG_API_VERSION = 'trellis.dev/proxy/v1alpha1';

/** One named, versioned piece of a proxy config. `version` is the sha256 of the body's canonical JSON. */
export interface Resource<B = ResourceBody> {
  readonly name: string;
  readonly version: string;
  readonly body: B;
}

export type ResourceBody = InboundBody | RouteBody | ClusterBody | EndpointsBody;

/** The whole config of one service's sidecar. `version` hashes the resources' names and versions. */
export interface ProxyConfig {
  readonly apiVersion: typeof PROXY_CONFIG_API_VERSION;
  readonly kind: 'ProxyConfig';
  readonly service: string;
  readonly version: string;
  /** Sorted by name. */
  readonly resources: readonly Resource[];
}

// ------------------------------------------------------------------ inbound

/**
 * What a service port speaks (Service `appProtocol`):
 * - `http`: HTTP/1.1 to the app (callers may also speak h2c to their sidecar);
 * - `http2`: HTTP/2 without TLS (h2c, prior knowledge) to the app;
 * - `grpc`: gRPC, which is HTTP/2: h2c to the app, and gRPC semantics in the sidecars
 *   (errors as gRPC statuses, `grpc-timeout` deadlines, retries on gRPC status codes);
 * - `tcp`: opaque byte streams; no route rule or L7 access rule applies.
 * Between sidecars every protocol rides HTTP/2 over mTLS (TCP as CONNECT tunnels).
 */
export type PortProtocol = 'http' | 'http2' | 'grpc' | 'tcp';

export interface CompiledPort {
  readonly name: string | null;
  readonly port: number;
  readonly targetPort: number;
  readonly protocol: PortProtocol;
}

export interface CompiledAccessRule {
  /**
   * Caller identities (SPIFFE IDs) this rule admits; services are already turned into
   * identities. An entry ending in `/*` admits every identity that starts with what comes
   * before the `*` (a whole namespace: `spiffe://<td>/ns/<namespace>/*`).
   */
  readonly from: readonly string[];
  /** Empty: any method and path. Otherwise one of these must match. */
  readonly to: ReadonlyArray<{ readonly methods: readonly HTTPMethod[]; readonly paths: ReadonlyArray<{ readonly type: 'Exact' | 'PathPrefix'; readonly value: string }> }>;
  /** `AccessPolicy` name this rule came from, for logs and metrics. */
  readonly policy: string;
}

export interface InboundBody {
  /** Service key of the local service (`name`, or `namespace/name` outside `default`). */
  readonly service: string;
  readonly identity: string;
  readonly trustDomain: string;
  readonly mtls: { readonly mode: MtlsMode };
  readonly ports: readonly CompiledPort[];
  readonly access: {
    /**
     * `policy`: the service has AccessPolicies, only their rules admit callers (default deny);
     * otherwise the mesh default applies as is.
     */
    readonly default: AccessDefault | 'policy';
    readonly mode: 'enforce' | 'audit';
    readonly rules: readonly CompiledAccessRule[];
  };
  /**
   * Present (`passthrough`) when the mesh lets calls to hosts it does not know go out as
   * named (Mesh `spec.egress.mode: passthrough`); absent, they are refused (404 `unknown_service`).
   */
  readonly egress?: 'passthrough';
}

// ------------------------------------------------------------------ route

export interface CompiledStringMatch {
  readonly type: 'Exact' | 'RegularExpression';
  readonly name: string;
  readonly value: string;
}

export interface CompiledMatch {
  /** Service port the rule applies to; null for every port. */
  readonly port: number | null;
  readonly path: { readonly type: 'Exact' | 'PathPrefix' | 'RegularExpression'; readonly value: string };
  readonly method: HTTPMethod | null;
  /** Header names are lower-cased. */
  readonly headers: readonly CompiledStringMatch[];
  readonly queryParams: readonly CompiledStringMatch[];
}

export interface CompiledHeaderModifier {
  /** Header names are lower-cased. */
  readonly set: ReadonlyArray<{ readonly name: string; readonly value: string }>;
  readonly add: ReadonlyArray<{ readonly name: string; readonly value: string }>;
  readonly remove: readonly string[];
}

export interface CompiledPathModifier {
  readonly type: 'ReplaceFullPath' | 'ReplacePrefixMatch';
  readonly value: string;
}

export type CompiledFilter =
  | { readonly type: 'RequestHeaderModifier'; readonly headers: CompiledHeaderModifier }
  | { readonly type: 'ResponseHeaderModifier'; readonly headers: CompiledHeaderModifier }
  | {
      readonly type: 'RequestMirror';
      readonly backend: { readonly service: string; readonly port: number | null };
      /** Share of requests mirrored, as numerator / denominator. */
      readonly numerator: number;
      readonly denominator: number;
    }
  | {
      readonly type: 'RequestRedirect';
      readonly scheme: 'http' | 'https' | null;
      readonly hostname: string | null;
      readonly path: CompiledPathModifier | null;
      readonly port: number | null;
      readonly statusCode: 301 | 302 | 303 | 307 | 308;
    }
  | { readonly type: 'URLRewrite'; readonly hostname: string | null; readonly path: CompiledPathModifier | null };

export interface CompiledBackend {
  readonly service: string;
  /** Port of the backend service to call; null means the port the caller named. */
  readonly port: number | null;
  readonly weight: number;
  readonly filters: readonly CompiledFilter[];
}

export interface CompiledRetry {
  /** Retries after the first try (0: none). */
  readonly attempts: number;
  /** Response codes that are retried. Connect failures and resets before a response are always retryable. */
  readonly codes: readonly number[];
  /** Base of the exponential backoff between tries, in ms. */
  readonly backoffMs: number;
  /**
   * gRPC status codes (numbers: 14 is `unavailable`) that are retried when a gRPC call
   * ends with them. Present only on rules of GRPCRoutes (and the implicit rule of a `grpc`
   * service), absent elsewhere.
   */
  readonly grpcCodes?: readonly number[];
}

export interface CompiledRule {
  /** `<route>/<rule index>/<match index>`; stable while the route keeps its shape. The implicit rule is `default`. */
  readonly id: string;
  /** HTTPRoute or GRPCRoute name; null for the implicit rule of a service without routes. */
  readonly route: string | null;
  /**
   * Present (`GRPCRoute`) for a rule compiled from a GRPCRoute; absent for HTTPRoute rules.
   * A GRPCRoute match is compiled to path matches on `/<service>/<method>` (gRPC's
   * request path), so the sidecar's router matches both kinds the same way.
   */
  readonly kind?: 'GRPCRoute';
  readonly ruleName: string | null;
  readonly match: CompiledMatch;
  readonly filters: readonly CompiledFilter[];
  readonly backends: readonly CompiledBackend[];
  readonly timeouts: {
    /** Whole request including retries, in ms; 0 disables. */
    readonly requestMs: number;
    /** One try, in ms; 0 disables. */
    readonly backendRequestMs: number;
  };
  readonly retry: CompiledRetry;
}

export interface RouteBody {
  readonly service: string;
  /** The service's port numbers, in declared order; a caller that names no port gets the first. */
  readonly ports: readonly number[];
  /** In precedence order: a sidecar takes the first rule that matches. */
  readonly rules: readonly CompiledRule[];
}

// ------------------------------------------------------------------ cluster

export interface ClusterBody {
  readonly service: string;
  /** Whether instances run a sidecar (callers then speak to their inbound port, and later over mTLS). */
  readonly meshed: boolean;
  /** Identity the instances must present; null when unmeshed. */
  readonly identity: string | null;
  readonly ports: readonly CompiledPort[];
  readonly loadBalancer: { readonly type: LoadBalancerType; readonly ewmaDecayMs: number; readonly ewmaDefaultRttMs: number };
  readonly circuitBreaker: { readonly maxConnections: number; readonly maxPendingRequests: number; readonly maxRequests: number };
  readonly outlierDetection: {
    /** 0 disables that trigger. */
    readonly consecutive5xx: number;
    readonly consecutiveGatewayErrors: number;
    readonly intervalMs: number;
    readonly baseEjectionMs: number;
    readonly maxEjectionPercent: number;
  };
  readonly retryBudget: { readonly ratio: number; readonly minRetriesPerSecond: number; readonly ttlMs: number };
  readonly connection: { readonly connectTimeoutMs: number; readonly idleTimeoutMs: number };
  readonly faultInjection: {
    readonly delay: { readonly delayMs: number; readonly percentage: number } | null;
    readonly abort: { readonly httpStatus: number; readonly percentage: number } | null;
  };
}

// ------------------------------------------------------------------ endpoints

export interface CompiledEndpoint {
  readonly address: string;
  /** Port to connect to; null means the targetPort of the called service port (unmeshed services). */
  readonly port: number | null;
  readonly weight: number;
  readonly zone: string | null;
  /**
   * Present (true) for an instance that is shutting down but still serving (a Kubernetes
   * endpoint with `serving` and `terminating`): it gets no new requests while any other
   * instance is available, and only then serves as a last resort.
   */
  readonly terminating?: true;
}

export interface EndpointsBody {
  readonly service: string;
  /** Sorted by address then port. */
  readonly static: readonly CompiledEndpoint[];
  readonly dns: { readonly hostname: string; readonly port: number | null; readonly refreshIntervalMs: number } | null;
  /**
   * Present when the instances come from the cluster: the Kubernetes Service whose
   * EndpointSlices list them. The compiler leaves `static` empty; the reconciler fills it
   * from its discovery at snapshot time (runtime state, never in git), so an endpoint change
   * reaches sidecars as an `endpoints/<service>` delta without a commit. `port` names the
   * EndpointSlice port to use for unmeshed services (meshed instances are called on the
   * mesh's inbound port); null: the slice's only port, or the one matching the service port.
   */
  readonly kubernetes?: { readonly namespace: string; readonly service: string; readonly port: string | number | null };
}
