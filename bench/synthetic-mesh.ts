/**
 * A synthetic spec repo of any size, for benchmarks and scale tests: one Mesh and N
 * Services with the routing and policy a real repo of that size would carry. Deterministic:
 * the same `(services, seed)` always gives byte-identical files, so runs compare.
 *
 * Shape of the generated repo (the proportions are what a mid-size mesh tends to look like):
 *
 *   mesh.yaml                          the Mesh: access default `deny`, mTLS strict, defaults
 *   services/team-07/orders-42.yaml    one file per app: its Service (plus `orders-42-v2` for a
 *                                      canary), its HTTPRoute, its AccessPolicy, its TrafficPolicy
 *
 * - Every app calls about `callsPerApp` other apps, chosen by a seeded PRNG; the callee's
 *   AccessPolicy admits exactly its callers (and their `-v2` canaries), so the spec
 *   compiles with no errors and no caller-denied warnings.
 * - About `canaryShare` of apps run a `-v2` canary: a second Service, a header opt-in rule
 *   and a 90/10 weighted split; their policies target both tracks.
 * - About `trafficPolicyShare` of apps get a TrafficPolicy (breaker, outlier detection,
 *   sometimes a load balancer choice).
 * - Endpoints are 1–3 static instances on 127.0.0.1 with distinct ports (another loopback
 *   address every 40 000 instances, so any size stays within valid ports).
 */
import { SourceFile } from '../src/diagnostics/source-file.ts';
import { seededRandom } from '../src/sidecar/clock.ts';

export interface SyntheticMeshOptions {
  /** PRNG seed; default 1. */
  readonly seed?: number;
  /** Mean number of other apps each app calls; default 3 (each app calls 2–4). */
  readonly callsPerApp?: number;
  /** Share of apps with a `-v2` canary Service; default 0.1. */
  readonly canaryShare?: number;
  /** Share of apps with a TrafficPolicy; default 0.3. */
  readonly trafficPolicyShare?: number;
}

/** A generated spec repo, held in memory. */
export interface SyntheticMesh {
  /** Spec files with paths relative to the repo root, sorted by path. */
  readonly files: SourceFile[];
  /** Service documents: exactly the `services` asked for. */
  readonly services: number;
  /** YAML documents of every kind across all files. */
  readonly documents: number;
  /** Total size of the files' text in UTF-8 bytes. */
  readonly bytes: number;
}

/** One app of the synthetic repo: a primary Service and maybe its canary. */
interface App {
  readonly name: string;
  readonly team: string;
  readonly canary: boolean;
}

/** Name stems, so names vary in length and look like a real repo's (`orders-42`, not `s42`). */
const DOMAINS = [
  'accounts', 'audit', 'billing', 'cart', 'catalog', 'checkout', 'coupons', 'search', 'inventory', 'invoices',
  'ledger', 'loyalty', 'notifications', 'orders', 'payments', 'pricing', 'profiles', 'ratings', 'recommendations', 'returns',
  'reviews', 'sessions', 'shipping', 'tax', 'users', 'warehouse', 'wishlist', 'fraud', 'media', 'reports',
];

/** Files per team folder, about what one team owns in a large repo. */
const APPS_PER_TEAM = 40;

/** First instance port; below it sit the example specs' ports (16xxx) and common dev servers. */
const FIRST_INSTANCE_PORT = 20_000;
/** Instances per loopback address: 20 000 + 40 000 stays below 65 536. */
const INSTANCES_PER_ADDRESS = 40_000;

const RESOURCES = ['items', 'orders', 'accounts', 'events', 'quotes', 'records', 'batches', 'jobs'];

/**
 * Generates a spec repo with exactly `services` Service documents (a canary counts as one;
 * `services` ≥ 1). The spec compiles with no errors; see the module comment for its shape.
 */
export function syntheticMesh(services: number, options: SyntheticMeshOptions = {}): SyntheticMesh {
  if (!Number.isInteger(services) || services < 1) throw new RangeError(`services must be a positive integer, got ${services}`);
  const random = seededRandom(options.seed ?? 1);
  const callsPerApp = options.callsPerApp ?? 3;
  const canaryShare = options.canaryShare ?? 0.1;
  const trafficPolicyShare = options.trafficPolicyShare ?? 0.3;
  const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));

  // Apps, until their Services (a canary app has two) add up to `services` exactly.
  const apps: App[] = [];
  for (let left = services, k = 0; left > 0; k++) {
    const canary = left >= 2 && random() < canaryShare;
    apps.push({ name: `${DOMAINS[k % DOMAINS.length]}-${k}`, team: `team-${String(Math.floor(k / APPS_PER_TEAM)).padStart(3, '0')}`, canary });
    left -= canary ? 2 : 1;
  }

  // Call graph: who calls whom, then inverted into each callee's admitted callers.
  const callers = new Map<string, Set<string>>(apps.map((a) => [a.name, new Set()]));
  for (const [i, app] of apps.entries()) {
    const want = Math.min(apps.length - 1, int(callsPerApp - 1, callsPerApp + 1));
    const chosen = new Set<number>();
    while (chosen.size < want) {
      const j = Math.floor(random() * apps.length);
      if (j !== i) chosen.add(j);
    }
    for (const j of chosen) {
      const admitted = callers.get(apps[j]!.name)!;
      admitted.add(app.name);
      if (app.canary) admitted.add(`${app.name}-v2`);
    }
  }

  let instance = 0;
  const endpoints = (count: number): string => {
    const lines: string[] = [];
    for (let e = 0; e < count; e++, instance++) {
      const address = `127.0.0.${1 + Math.floor(instance / INSTANCES_PER_ADDRESS)}`;
      const port = FIRST_INSTANCE_PORT + (instance % INSTANCES_PER_ADDRESS);
      lines.push(`      - address: ${address}\n        port: ${port}\n        zone: local-${e % 2 === 0 ? 'a' : 'b'}`);
    }
    return lines.join('\n');
  };

  const files: SourceFile[] = [new SourceFile('mesh.yaml', meshDocument(services))];
  let documents = 1;
  for (const app of apps) {
    const docs: string[] = [serviceDocument(app.name, app.team, app.canary ? 'stable' : undefined, endpoints(int(1, 3)))];
    if (app.canary) docs.push(serviceDocument(`${app.name}-v2`, app.team, 'canary', endpoints(1)));
    docs.push(routeDocument(app, RESOURCES[int(0, RESOURCES.length - 1)]!, app.canary || random() < 0.5));
    const admitted = [...callers.get(app.name)!].sort();
    if (admitted.length > 0) docs.push(accessDocument(app, admitted, random() < 0.5));
    if (random() < trafficPolicyShare) docs.push(trafficDocument(app, random()));
    documents += docs.length;
    files.push(new SourceFile(`services/${app.team}/${app.name}.yaml`, docs.join('---\n')));
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const bytes = files.reduce((sum, f) => sum + Buffer.byteLength(f.text), 0);
  return { files, services, documents, bytes };
}

function meshDocument(services: number): string {
  return `# yaml-language-server: $schema=../schema/mesh.schema.json
#
# Synthetic mesh of ${services} services (bench/synthetic-mesh.ts). Nothing is accepted
# unless an AccessPolicy says so.
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata:
  name: synthetic
spec:
  trustDomain: trellis.local
  mtls:
    mode: strict
  access:
    default: deny
  defaults:
    timeouts:
      request: 15s
    retry:
      codes: [503]
      attempts: 1
      backoff: 25ms
`;
}

function serviceDocument(name: string, team: string, track: 'stable' | 'canary' | undefined, endpoints: string): string {
  return `# yaml-language-server: $schema=../../../schema/service.schema.json
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata:
  name: ${name}
  labels:
    team: ${team}${track ? `\n    track: ${track}` : ''}
spec:
  ports:
    - name: http
      port: 80
      targetPort: 8080
  endpoints:
    static:
${endpoints}
`;
}

/**
 * Rules, in the order written: a header-matched rule (canary opt-in, or a beta tenant), a
 * path-prefix API rule with a tight deadline and retries, and a catch-all — the weighted
 * canary split, or plain defaults. Without the catch-all, other paths get 404, as a route
 * that spells out its API does.
 */
function routeDocument(app: App, resource: string, catchAll: boolean): string {
  const v2 = `${app.name}-v2`;
  const header = app.canary
    ? `    - name: canary-opt-in
      matches:
        - headers:
            - name: x-canary
              value: "1"
      backendRefs:
        - name: ${v2}
          port: 80
`
    : `    - name: beta-tenants
      matches:
        - headers:
            - name: x-tenant-tier
              value: beta
      backendRefs:
        - name: ${app.name}
          port: 80
      timeouts:
        request: 30s
`;
  const api = `    - name: api
      matches:
        - path:
            type: PathPrefix
            value: /api/v1/${resource}
      backendRefs:
        - name: ${app.name}
          port: 80
      timeouts:
        request: 2s
        backendRequest: 500ms
      retry:
        codes: [502, 503, 504]
        attempts: 2
        backoff: 25ms
`;
  const rest = !catchAll
    ? ''
    : app.canary
      ? `    - name: weighted-split
      backendRefs:
        - name: ${app.name}
          port: 80
          weight: 90
        - name: ${v2}
          port: 80
          weight: 10
      timeouts:
        request: 10s
`
      : `    - name: default
      backendRefs:
        - name: ${app.name}
          port: 80
      timeouts:
        request: 5s
`;
  return `# yaml-language-server: $schema=../../../schema/httproute.schema.json
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ${app.name}
spec:
  parentRefs:
    - kind: Service
      name: ${app.name}
      port: 80
  rules:
${header}${api}${rest}`;
}

/** Both tracks of a canary app are targeted: a split sends callers to either. */
function targetRefs(app: App): string {
  const refs = [`    - kind: Service\n      name: ${app.name}`];
  if (app.canary) refs.push(`    - kind: Service\n      name: ${app.name}-v2`);
  return refs.join('\n');
}

function accessDocument(app: App, admitted: readonly string[], restrictMethods: boolean): string {
  const from = admitted.map((c) => `        - service: ${c}`).join('\n');
  const to = restrictMethods ? '\n      to:\n        - methods: [GET, HEAD, POST]' : '';
  return `# yaml-language-server: $schema=../../../schema/accesspolicy.schema.json
apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: ${app.name}
spec:
  targetRefs:
${targetRefs(app)}
  rules:
    - from:
${from}${to}
`;
}

function trafficDocument(app: App, draw: number): string {
  const balancer = draw < 0.3 ? '\n  loadBalancer:\n    type: least-request' : '';
  return `# yaml-language-server: $schema=../../../schema/trafficpolicy.schema.json
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: ${app.name}
spec:
  targetRefs:
${targetRefs(app)}${balancer}
  circuitBreaker:
    maxConnections: 256
    maxPendingRequests: 128
    maxRequests: 512
  outlierDetection:
    consecutive5xx: 5
    interval: 10s
    baseEjectionTime: 30s
    maxEjectionPercent: 30
`;
}
