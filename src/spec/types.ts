/**
 * The spec model: the shape of every document kind a mesh spec repo may hold, as it
 * stands after JSON Schema validation (so every field here has already been checked
 * for type and range). Optional fields are absent, never null.
 *
 * The JSON Schemas in `schema/` are the user-facing source of truth for these shapes;
 * a test keeps the two in agreement through the example specs.
 */

/** apiVersion of Trellis' own kinds. */
export const TRELLIS_API_VERSION = 'trellis.dev/v1alpha1';
/** apiVersions accepted for HTTPRoute (v1beta1 is the same schema; docs still use it). */
export const GATEWAY_API_VERSIONS = ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'] as const;

/** apiVersions accepted for GRPCRoute (Gateway API v1; the GRPCRoute schema did not change from v1alpha2). */
export const GRPC_ROUTE_API_VERSIONS = ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1alpha2'] as const;

/** apiVersions accepted for ReferenceGrant (Gateway API serves it as v1beta1; v1alpha2 is the same shape). */
export const REFERENCE_GRANT_API_VERSIONS = ['gateway.networking.k8s.io/v1beta1', 'gateway.networking.k8s.io/v1alpha2'] as const;

/** Every kind the compiler knows, with the apiVersions it accepts. */
export const KIND_API_VERSIONS: Readonly<Record<SpecKind, readonly string[]>> = {
  Mesh: [TRELLIS_API_VERSION],
  Service: [TRELLIS_API_VERSION],
  HTTPRoute: GATEWAY_API_VERSIONS,
  GRPCRoute: GRPC_ROUTE_API_VERSIONS,
  TrafficPolicy: [TRELLIS_API_VERSION],
  AccessPolicy: [TRELLIS_API_VERSION],
  TrafficTest: [TRELLIS_API_VERSION],
  ReferenceGrant: REFERENCE_GRANT_API_VERSIONS,
};

export type SpecKind = 'Mesh' | 'Service' | 'HTTPRoute' | 'TrafficPolicy' | 'AccessPolicy' | 'TrafficTest' | 'ReferenceGrant' | 'GRPCRoute';

/** The route kinds: both attach to Services through parentRefs and compile into one route table per Service. */
export type RouteKind = 'HTTPRoute' | 'GRPCRoute';

/**
 * Kubernetes-style object metadata. `namespace` places the document in a namespace
 * (absent: `default`); names are unique per kind and namespace, and references in a
 * document resolve in its namespace unless they name another (spec/names.ts).
 */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** A Gateway API duration string such as `500ms`, `10s`, `1m30s`. */
export type Duration = string;

// ---------------------------------------------------------------- Mesh

export type MtlsMode = 'strict' | 'permissive' | 'off';
export type AccessDefault = 'deny' | 'all-authenticated' | 'allow';

export interface MeshSpec {
  /** SPIFFE trust domain; identities are `spiffe://<trustDomain>/svc/<name>` (and the namespaced forms). Default `trellis.local`. */
  trustDomain?: string;
  /** What a sidecar does with a call to a host the mesh does not know. Default `refuse` (404 `unknown_service`). */
  egress?: { mode?: 'refuse' | 'passthrough' };
  mtls?: { mode?: MtlsMode };
  /** What a service with no AccessPolicy accepts. Default `all-authenticated`. */
  access?: { default?: AccessDefault };
  /** Port each sidecar's inbound listener uses unless an endpoint says otherwise. Default 15006. */
  sidecar?: { inboundPort?: number };
  defaults?: {
    trafficPolicy?: TrafficPolicySettings;
    timeouts?: HTTPRouteTimeouts;
    retry?: HTTPRouteRetry;
  };
}

// ---------------------------------------------------------------- Service

export interface ServicePort {
  /** Port name, referenced by a parentRef's `sectionName`. */
  name?: string;
  /** Port callers name (`Host: checkout:80`); matched against parentRef/backendRef `port`. */
  port: number;
  /** Port the app listens on inside each instance. Default: `port`. */
  targetPort?: number;
  /**
   * What the app speaks on this port: `http` (HTTP/1.1, the default), `http2` (h2c, prior
   * knowledge), `grpc` (gRPC over h2c) or `tcp` (opaque streams, no L7 rules).
   * `kubernetes.io/h2c` (Kubernetes' standard name) means `http2`.
   */
  appProtocol?: ServiceAppProtocol;
}

/** The values `appProtocol` accepts; `kubernetes.io/h2c` is read as `http2`. */
export type ServiceAppProtocol = 'http' | 'http2' | 'grpc' | 'tcp' | 'kubernetes.io/h2c';

export interface StaticEndpoint {
  /** IP address or host name of one instance. */
  address: string;
  /** Port callers connect to: the instance's sidecar inbound port for meshed services
   *  (default Mesh `sidecar.inboundPort`), the app's `targetPort` for unmeshed ones. */
  port?: number;
  /** Relative load-balancing weight, default 1. */
  weight?: number;
  zone?: string;
}

export interface DnsEndpoints {
  hostname: string;
  port?: number;
  /** How often the sidecar re-resolves. Default `30s`. */
  refreshInterval?: Duration;
}

/** Instances taken from a Kubernetes Service's EndpointSlices (runtime state, never in git). */
export interface KubernetesEndpoints {
  /** Kubernetes Service name. Default: the Trellis Service's own name. */
  service?: string;
  /** Its namespace. Default: the Trellis Service's own namespace. */
  namespace?: string;
  /** EndpointSlice port (name or number) used for unmeshed services. Default: chosen by the reconciler. */
  port?: string | number;
}

export interface ServiceSpec {
  ports: ServicePort[];
  /** At most one of `static`, `dns`, `kubernetes`. */
  endpoints?: { static?: StaticEndpoint[]; dns?: DnsEndpoints; kubernetes?: KubernetesEndpoints };
  /** Kubernetes ServiceAccount its pods run as (identity with Kubernetes endpoints). Default `default`. */
  serviceAccount?: string;
  /** Whether instances run a Trellis sidecar (are part of the mesh). Default true. */
  sidecar?: boolean;
}

// ---------------------------------------------------------------- HTTPRoute (Gateway API v1, mesh form)

export interface ParentReference {
  group?: string;
  kind?: string;
  namespace?: string;
  name: string;
  sectionName?: string;
  port?: number;
}

export interface HTTPPathMatch { type?: 'Exact' | 'PathPrefix' | 'RegularExpression'; value?: string }
export interface HTTPHeaderMatch { type?: 'Exact' | 'RegularExpression'; name: string; value: string }
export interface HTTPQueryParamMatch { type?: 'Exact' | 'RegularExpression'; name: string; value: string }
export type HTTPMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE' | 'CONNECT' | 'OPTIONS' | 'TRACE' | 'PATCH';

export interface HTTPRouteMatch {
  path?: HTTPPathMatch;
  headers?: HTTPHeaderMatch[];
  queryParams?: HTTPQueryParamMatch[];
  method?: HTTPMethod;
}

export interface HTTPHeader { name: string; value: string }
export interface HTTPHeaderFilter { set?: HTTPHeader[]; add?: HTTPHeader[]; remove?: string[] }

export interface HTTPPathModifier {
  type: 'ReplaceFullPath' | 'ReplacePrefixMatch';
  replaceFullPath?: string;
  replacePrefixMatch?: string;
}

export interface BackendObjectReference {
  group?: string;
  kind?: string;
  namespace?: string;
  name: string;
  port?: number;
}

export interface HTTPRouteFilter {
  type: 'RequestHeaderModifier' | 'ResponseHeaderModifier' | 'RequestMirror' | 'RequestRedirect' | 'URLRewrite';
  requestHeaderModifier?: HTTPHeaderFilter;
  responseHeaderModifier?: HTTPHeaderFilter;
  requestMirror?: {
    backendRef: BackendObjectReference;
    percent?: number;
    fraction?: { numerator: number; denominator?: number };
  };
  requestRedirect?: {
    scheme?: 'http' | 'https';
    hostname?: string;
    path?: HTTPPathModifier;
    port?: number;
    statusCode?: 301 | 302 | 303 | 307 | 308;
  };
  urlRewrite?: { hostname?: string; path?: HTTPPathModifier };
}

export interface HTTPBackendRef extends BackendObjectReference {
  weight?: number;
  filters?: HTTPRouteFilter[];
}

export interface HTTPRouteTimeouts { request?: Duration; backendRequest?: Duration }
export interface HTTPRouteRetry { codes?: number[]; attempts?: number; backoff?: Duration }

export interface HTTPRouteRule {
  name?: string;
  matches?: HTTPRouteMatch[];
  filters?: HTTPRouteFilter[];
  backendRefs?: HTTPBackendRef[];
  timeouts?: HTTPRouteTimeouts;
  retry?: HTTPRouteRetry;
}

export interface HTTPRouteSpec {
  parentRefs?: ParentReference[];
  /** Accepted for compatibility; ignored for mesh routes, as GAMMA specifies. */
  hostnames?: string[];
  rules?: HTTPRouteRule[];
}

// ---------------------------------------------------------------- GRPCRoute (Gateway API v1, mesh form)

/**
 * A gRPC service/method condition: `Exact` compares the names case-sensitively,
 * `RegularExpression` matches each given part against its pattern. At least one of
 * `service` and `method` is present (the schema checks it).
 */
export interface GRPCMethodMatch { type?: 'Exact' | 'RegularExpression'; service?: string; method?: string }

export interface GRPCRouteMatch {
  method?: GRPCMethodMatch;
  headers?: HTTPHeaderMatch[];
}

/** GRPCRoute has no redirect and no rewrite. */
export interface GRPCRouteFilter {
  type: 'RequestHeaderModifier' | 'ResponseHeaderModifier' | 'RequestMirror';
  requestHeaderModifier?: HTTPHeaderFilter;
  responseHeaderModifier?: HTTPHeaderFilter;
  requestMirror?: HTTPRouteFilter['requestMirror'];
}

export interface GRPCBackendRef extends BackendObjectReference {
  weight?: number;
  filters?: GRPCRouteFilter[];
}

/** gRPC status names as Trellis writes them: lower-case kebab (`unavailable`, `resource-exhausted`). */
export type GRPCStatusName =
  | 'cancelled'
  | 'unknown'
  | 'invalid-argument'
  | 'deadline-exceeded'
  | 'not-found'
  | 'already-exists'
  | 'permission-denied'
  | 'resource-exhausted'
  | 'failed-precondition'
  | 'aborted'
  | 'out-of-range'
  | 'unimplemented'
  | 'internal'
  | 'unavailable'
  | 'data-loss'
  | 'unauthenticated';

/** Trellis extension: retries of a GRPCRoute rule, by gRPC status. */
export interface GRPCRouteRetry { codes?: GRPCStatusName[]; attempts?: number; backoff?: Duration }

export interface GRPCRouteRule {
  name?: string;
  matches?: GRPCRouteMatch[];
  filters?: GRPCRouteFilter[];
  backendRefs?: GRPCBackendRef[];
  /** Trellis extension (GEP-1742's fields, as on HTTPRoute rules). */
  timeouts?: HTTPRouteTimeouts;
  /** Trellis extension: retries on gRPC status codes. */
  retry?: GRPCRouteRetry;
}

export interface GRPCRouteSpec {
  parentRefs?: ParentReference[];
  /** Accepted for compatibility; ignored for mesh routes, as for HTTPRoute. */
  hostnames?: string[];
  rules?: GRPCRouteRule[];
}

// ---------------------------------------------------------------- TrafficPolicy

export type LoadBalancerType = 'round-robin' | 'least-request' | 'peak-ewma';

/** The policy settings a TrafficPolicy carries, also used for Mesh defaults. */
export interface TrafficPolicySettings {
  loadBalancer?: {
    type?: LoadBalancerType;
    /** peak-EWMA: decay window of the latency average (default 10s) and RTT assumed for a new endpoint (default 30ms). */
    ewma?: { decay?: Duration; defaultRTT?: Duration };
  };
  circuitBreaker?: { maxConnections?: number; maxPendingRequests?: number; maxRequests?: number };
  outlierDetection?: {
    consecutive5xx?: number;
    consecutiveGatewayErrors?: number;
    interval?: Duration;
    baseEjectionTime?: Duration;
    maxEjectionPercent?: number;
  };
  /** Retries may add at most `ratio` × requests, plus `minRetriesPerSecond`, over a sliding `ttl` window. */
  retryBudget?: { ratio?: number; minRetriesPerSecond?: number; ttl?: Duration };
  connection?: { connectTimeout?: Duration; idleTimeout?: Duration };
  faultInjection?: {
    delay?: { fixedDelay: Duration; percentage: number };
    abort?: { httpStatus: number; percentage: number };
  };
}

/** A Service of the policy's own namespace (Gateway API's LocalPolicyTargetReference has no namespace). */
export interface PolicyTargetReference { group?: string; kind?: string; name: string }

export interface TrafficPolicySpec extends TrafficPolicySettings {
  targetRefs: PolicyTargetReference[];
}

// ---------------------------------------------------------------- AccessPolicy

/** Exactly one field: a service (`name` in the policy's namespace, or `namespace/name`), a SPIFFE ID, or a whole namespace. */
export interface AccessSource { service?: string; identity?: string; namespace?: string }
export interface AccessPathMatch { type?: 'Exact' | 'PathPrefix'; value: string }
export interface AccessRule {
  from: AccessSource[];
  to?: Array<{ methods?: HTTPMethod[]; paths?: AccessPathMatch[] }>;
}

export interface AccessPolicySpec {
  targetRefs: PolicyTargetReference[];
  /** `audit` logs what would be denied without denying. Default `enforce`. */
  mode?: 'enforce' | 'audit';
  rules: AccessRule[];
}

// ---------------------------------------------------------------- TrafficTest

/** Service names here (`from`, `to`, backends) are a name in the test's namespace, or `namespace/name`. */
export interface TrafficTestSpec {
  /** `grpc` (a gRPC call to `/<service>/<method>`, sent as POST with `content-type: application/grpc`) replaces `method` and `path`. */
  request: { from: string; to: string; method?: HTTPMethod; path?: string; grpc?: { service: string; method: string }; headers?: Record<string, string>; port?: number };
  expect: {
    outcome?: 'routed' | 'redirect' | 'no-route' | 'denied';
    backend?: string;
    share?: { backend: string; min?: number; max?: number };
    timeout?: { max?: Duration; min?: Duration };
    retries?: { max: number };
  };
}

// ---------------------------------------------------------------- ReferenceGrant (Gateway API v1beta1)

/** Who may refer: routes of `kind` in `namespace`. */
export interface ReferenceGrantFrom { group: string; kind: string; namespace: string }
/** What they may refer to in the grant's namespace: Services (`group` '' or `trellis.dev`), one by `name` or all. */
export interface ReferenceGrantTo { group: string; kind: string; name?: string }

export interface ReferenceGrantSpec {
  from: ReferenceGrantFrom[];
  to: ReferenceGrantTo[];
}

// ---------------------------------------------------------------- documents

interface DocumentOf<K extends SpecKind, S> { apiVersion: string; kind: K; metadata: ObjectMeta; spec: S }

export type MeshDocument = DocumentOf<'Mesh', MeshSpec>;
export type ServiceDocument = DocumentOf<'Service', ServiceSpec>;
export type HTTPRouteDocument = DocumentOf<'HTTPRoute', HTTPRouteSpec>;
export type TrafficPolicyDocument = DocumentOf<'TrafficPolicy', TrafficPolicySpec>;
export type AccessPolicyDocument = DocumentOf<'AccessPolicy', AccessPolicySpec>;
export type TrafficTestDocument = DocumentOf<'TrafficTest', TrafficTestSpec>;
export type ReferenceGrantDocument = DocumentOf<'ReferenceGrant', ReferenceGrantSpec>;
export type GRPCRouteDocument = DocumentOf<'GRPCRoute', GRPCRouteSpec>;
/** An HTTPRoute or a GRPCRoute: what attaches rules to a Service. */
export type RouteDocument = HTTPRouteDocument | GRPCRouteDocument;
export type SpecDocument = MeshDocument | ServiceDocument | HTTPRouteDocument | TrafficPolicyDocument | AccessPolicyDocument | TrafficTestDocument | ReferenceGrantDocument | GRPCRouteDocument;
