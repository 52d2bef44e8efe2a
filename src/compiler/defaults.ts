/**
 * Built-in defaults and the layering that resolves every setting at compile time:
 *   built-in → Mesh `spec.defaults` → TrafficPolicy (per target) → HTTPRoute rule.
 * A sidecar receives only resolved values.
 */
import { parseDuration } from '../spec/duration.ts';
import { kubernetesIdentity, spiffeId } from '../identity/spiffe.ts';
import { DEFAULT_NAMESPACE } from '../spec/names.ts';
import type { AccessDefault, HTTPRouteRetry, HTTPRouteTimeouts, LoadBalancerType, MeshDocument, MtlsMode, ServiceDocument, TrafficPolicySettings } from '../spec/types.ts';

/** Mesh-wide settings after defaults. */
export interface MeshSettings {
  readonly name: string;
  readonly trustDomain: string;
  readonly mtlsMode: MtlsMode;
  readonly accessDefault: AccessDefault;
  readonly inboundPort: number;
  /** What sidecars do with calls to hosts the mesh does not know. */
  readonly egress: 'refuse' | 'passthrough';
  readonly timeouts: HTTPRouteTimeouts;
  readonly retry: HTTPRouteRetry;
  readonly trafficPolicy: TrafficPolicySettings;
}

/**
 * Built-in values. Reasons:
 * - request timeout 15s: bounded, and long enough for slow but healthy calls (Envoy's route default);
 * - 2 retries on connect failure only: always safe, since nothing reached the app;
 * - 25ms backoff base: a few RTTs inside a data centre;
 * - connect 1s: a mesh talks over a LAN, where a SYN that takes longer is lost;
 * - idle 60s: below common load-balancer idle cut-offs, so pooled sockets are rarely stale;
 * - breaker 1024: Envoy's long-standing defaults, high enough never to bite by surprise;
 * - outlier 5 consecutive failures, 10s / 30s, at most 50% ejected: quick to react, never empties a pool;
 * - retry budget 20% + 10/s over 10s: Linkerd's proven budget;
 * - peak-EWMA decay 10s, default RTT 30ms: Linkerd's balancer defaults.
 */
export const BUILTIN = {
  trustDomain: 'trellis.local',
  mtlsMode: 'strict' as MtlsMode,
  accessDefault: 'all-authenticated' as AccessDefault,
  inboundPort: 15006,
  requestTimeout: '15s',
  retryAttempts: 2,
  retryBackoff: '25ms',
  loadBalancer: 'peak-ewma' as LoadBalancerType,
  ewmaDecay: '10s',
  ewmaDefaultRTT: '30ms',
  maxConnections: 1024,
  maxPendingRequests: 1024,
  maxRequests: 1024,
  consecutive5xx: 5,
  consecutiveGatewayErrors: 5,
  outlierInterval: '10s',
  baseEjectionTime: '30s',
  maxEjectionPercent: 50,
  retryBudgetRatio: 0.2,
  minRetriesPerSecond: 10,
  retryBudgetTtl: '10s',
  connectTimeout: '1s',
  idleTimeout: '60s',
  dnsRefresh: '30s',
} as const;

export function meshSettings(mesh: MeshDocument | undefined): MeshSettings {
  const s = mesh?.spec ?? {};
  return {
    name: mesh?.metadata.name ?? 'default',
    trustDomain: s.trustDomain ?? BUILTIN.trustDomain,
    mtlsMode: s.mtls?.mode ?? BUILTIN.mtlsMode,
    accessDefault: s.access?.default ?? BUILTIN.accessDefault,
    inboundPort: s.sidecar?.inboundPort ?? BUILTIN.inboundPort,
    egress: s.egress?.mode ?? 'refuse',
    timeouts: s.defaults?.timeouts ?? {},
    retry: s.defaults?.retry ?? {},
    trafficPolicy: s.defaults?.trafficPolicy ?? {},
  };
}

/** Milliseconds of a duration that the schema has already checked. */
export function ms(duration: string): number {
  const value = parseDuration(duration);
  if (value === undefined) throw new Error(`bug: unchecked duration ${JSON.stringify(duration)}`);
  return value;
}

/** SPIFFE identity of a service in namespace `default` off Kubernetes. */
export function identityOf(trustDomain: string, service: string): string {
  return spiffeId(trustDomain, service);
}

/** The SPIFFE ID of service `name` in a namespace other than `default`, off Kubernetes. */
export function namespacedServiceId(trustDomain: string, namespace: string, name: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/svc/${name}`;
}

/**
 * The identity a service's instances present. With Kubernetes endpoints, the one its pods
 * prove with their ServiceAccount token (`…/ns/<ns>/sa/<serviceAccount>`, ServiceAccount
 * `default` when none is named, as for a pod that names none); otherwise `…/svc/<name>` in
 * namespace `default` (unchanged since before namespaces) and `…/ns/<ns>/svc/<name>` elsewhere.
 */
export function serviceIdentity(trustDomain: string, service: ServiceDocument): string {
  const namespace = service.metadata.namespace ?? DEFAULT_NAMESPACE;
  if (service.spec.endpoints?.kubernetes) return kubernetesIdentity(trustDomain, namespace, service.spec.serviceAccount ?? 'default');
  return namespace === DEFAULT_NAMESPACE ? spiffeId(trustDomain, service.metadata.name) : namespacedServiceId(trustDomain, namespace, service.metadata.name);
}

/**
 * The `from` entries an AccessPolicy's `namespace: <ns>` source compiles to: every identity
 * under `…/ns/<ns>/`, and for `default` also `…/svc/`, where services of `default` off
 * Kubernetes keep their pre-namespace identities.
 */
export function namespaceSources(trustDomain: string, namespace: string): string[] {
  const prefixes = [`spiffe://${trustDomain}/ns/${namespace}/*`];
  if (namespace === DEFAULT_NAMESPACE) prefixes.push(`spiffe://${trustDomain}/svc/*`);
  return prefixes;
}

/**
 * The leaves of a TrafficPolicy that merge independently: two policies on one target may
 * set different leaves, but not the same leaf to different values. Fault injection's
 * `delay` and `abort` are leaves as a whole (their fields mean nothing apart).
 */
export const POLICY_LEAVES: ReadonlyArray<readonly string[]> = [
  ['loadBalancer', 'type'],
  ['loadBalancer', 'ewma', 'decay'],
  ['loadBalancer', 'ewma', 'defaultRTT'],
  ['circuitBreaker', 'maxConnections'],
  ['circuitBreaker', 'maxPendingRequests'],
  ['circuitBreaker', 'maxRequests'],
  ['outlierDetection', 'consecutive5xx'],
  ['outlierDetection', 'consecutiveGatewayErrors'],
  ['outlierDetection', 'interval'],
  ['outlierDetection', 'baseEjectionTime'],
  ['outlierDetection', 'maxEjectionPercent'],
  ['retryBudget', 'ratio'],
  ['retryBudget', 'minRetriesPerSecond'],
  ['retryBudget', 'ttl'],
  ['connection', 'connectTimeout'],
  ['connection', 'idleTimeout'],
  ['faultInjection', 'delay'],
  ['faultInjection', 'abort'],
];

export function getLeaf(settings: object, path: readonly string[]): unknown {
  let v: unknown = settings;
  for (const k of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

/** Resolved cluster settings: the most specific layer that sets each leaf wins. Keys in sorted order (see routes.ts). */
export function resolveTrafficSettings(layers: ReadonlyArray<TrafficPolicySettings>) {
  const pick = <T>(path: readonly string[], fallback: T): T => {
    for (let i = layers.length - 1; i >= 0; i--) {
      const v = getLeaf(layers[i]!, path);
      if (v !== undefined) return v as T;
    }
    return fallback;
  };
  const delay = pick<{ fixedDelay: string; percentage: number } | null>(['faultInjection', 'delay'], null);
  const abort = pick<{ httpStatus: number; percentage: number } | null>(['faultInjection', 'abort'], null);
  return {
    loadBalancer: {
      ewmaDecayMs: ms(pick(['loadBalancer', 'ewma', 'decay'], BUILTIN.ewmaDecay)),
      ewmaDefaultRttMs: ms(pick(['loadBalancer', 'ewma', 'defaultRTT'], BUILTIN.ewmaDefaultRTT)),
      type: pick<LoadBalancerType>(['loadBalancer', 'type'], BUILTIN.loadBalancer),
    },
    circuitBreaker: {
      maxConnections: pick(['circuitBreaker', 'maxConnections'], BUILTIN.maxConnections),
      maxPendingRequests: pick(['circuitBreaker', 'maxPendingRequests'], BUILTIN.maxPendingRequests),
      maxRequests: pick(['circuitBreaker', 'maxRequests'], BUILTIN.maxRequests),
    },
    outlierDetection: {
      baseEjectionMs: ms(pick(['outlierDetection', 'baseEjectionTime'], BUILTIN.baseEjectionTime)),
      consecutive5xx: pick(['outlierDetection', 'consecutive5xx'], BUILTIN.consecutive5xx),
      consecutiveGatewayErrors: pick(['outlierDetection', 'consecutiveGatewayErrors'], BUILTIN.consecutiveGatewayErrors),
      intervalMs: ms(pick(['outlierDetection', 'interval'], BUILTIN.outlierInterval)),
      maxEjectionPercent: pick(['outlierDetection', 'maxEjectionPercent'], BUILTIN.maxEjectionPercent),
    },
    retryBudget: {
      minRetriesPerSecond: pick(['retryBudget', 'minRetriesPerSecond'], BUILTIN.minRetriesPerSecond),
      ratio: pick(['retryBudget', 'ratio'], BUILTIN.retryBudgetRatio),
      ttlMs: ms(pick(['retryBudget', 'ttl'], BUILTIN.retryBudgetTtl)),
    },
    connection: {
      connectTimeoutMs: ms(pick(['connection', 'connectTimeout'], BUILTIN.connectTimeout)),
      idleTimeoutMs: ms(pick(['connection', 'idleTimeout'], BUILTIN.idleTimeout)),
    },
    faultInjection: {
      abort: abort ? { httpStatus: abort.httpStatus, percentage: abort.percentage } : null,
      delay: delay ? { delayMs: ms(delay.fixedDelay), percentage: delay.percentage } : null,
    },
  };
}
