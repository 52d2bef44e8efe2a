import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ClusterBody, EndpointsBody, InboundBody, ProxyConfig, RouteBody } from '../../src/config/types.ts';
import { formatLocation } from '../../src/diagnostics/render.ts';
import { BASE_SPEC, codes, compileTexts } from '../helpers/spec.ts';

function body<T>(config: ProxyConfig, name: string): T {
  const r = config.resources.find((x) => x.name === name);
  assert.ok(r, `config of ${config.service} should carry ${name}`);
  return r.body as T;
}

const denyMesh = BASE_SPEC.replace('access: { default: allow }', 'access: { default: deny }');

describe('defaults are resolved at compile time', () => {
  test('built-in → Mesh defaults → TrafficPolicy → route rule', () => {
    const mesh = BASE_SPEC.replace(
      '  access: { default: allow }',
      `  access: { default: allow }
  defaults:
    timeouts: { request: 9s }
    retry: { attempts: 1, codes: [503] }
    trafficPolicy:
      loadBalancer: { type: round-robin }
      circuitBreaker: { maxRequests: 100 }`,
    );
    const result = compileTexts({
      'mesh.yaml': mesh,
      'policy.yaml': `apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: { name: api-policy }
spec:
  targetRefs: [{ kind: Service, name: api }]
  circuitBreaker: { maxRequests: 7 }
`,
      'route.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: api, port: 80 }]
      timeouts: { request: 2s, backendRequest: 500ms }
`,
    });
    assert.deepEqual(codes(result), []);
    const web = result.mesh!.configs.get('web')!;
    const cluster = body<ClusterBody>(web, 'cluster/api');
    assert.equal(cluster.loadBalancer.type, 'round-robin', 'mesh default');
    assert.equal(cluster.circuitBreaker.maxRequests, 7, 'policy beats mesh default');
    assert.equal(cluster.circuitBreaker.maxConnections, 1024, 'built-in');
    const webV2 = body<ClusterBody>(web, 'cluster/web');
    assert.equal(webV2.circuitBreaker.maxRequests, 100, 'mesh default where no policy applies');
    const rule = body<RouteBody>(web, 'route/api').rules[0]!;
    assert.deepEqual(rule.timeouts, { requestMs: 2000, backendRequestMs: 500 });
    assert.deepEqual(rule.retry, { attempts: 1, codes: [503], backoffMs: 25 });
  });
});

describe('a service receives outbound resources only for services it may call', () => {
  const spec = {
    'mesh.yaml': denyMesh,
    'access.yaml': `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api-callers }
spec:
  targetRefs: [{ kind: Service, name: api }]
  rules:
    - from: [{ service: web }]
      to: [{ methods: [GET], paths: [{ type: PathPrefix, value: /v1 }] }]
`,
    'route.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api-canary }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: api, port: 80, weight: 90 }, { name: api-v2, port: 80, weight: 10 }]
`,
  };

  test('callers get the route and every backend it needs; others get nothing', () => {
    const result = compileTexts(spec);
    const web = result.mesh!.configs.get('web')!;
    assert.deepEqual(
      web.resources.map((r) => r.name),
      ['cluster/api', 'cluster/api-v2', 'endpoints/api', 'endpoints/api-v2', 'inbound', 'route/api'],
    );
    const api = result.mesh!.configs.get('api')!;
    assert.deepEqual(api.resources.map((r) => r.name), ['inbound']);
    const inbound = body<InboundBody>(api, 'inbound');
    assert.equal(inbound.identity, 'spiffe://test.local/svc/api');
    assert.deepEqual(inbound.access, {
      default: 'policy',
      mode: 'enforce',
      rules: [{ from: ['spiffe://test.local/svc/web'], to: [{ methods: ['GET'], paths: [{ type: 'PathPrefix', value: '/v1' }] }], policy: 'api-callers' }],
    });
  });

  test('a route to a backend that denies the caller is flagged', () => {
    const result = compileTexts({
      ...spec,
      'v2-access.yaml': `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: v2-callers }
spec:
  targetRefs: [{ kind: Service, name: api-v2 }]
  rules: [{ from: [{ service: api }] }]
`,
    });
    const d = result.diagnostics.find((x) => x.code === 'TRL4016');
    assert.ok(d, 'expected TRL4016');
    assert.match(d.message, /"api-v2".*1 of "api"'s callers \(web\)/);
  });

  test('shared resources are identical objects with identical versions in every config', () => {
    const result = compileTexts({ 'mesh.yaml': BASE_SPEC });
    const [a, b] = [result.mesh!.configs.get('web')!, result.mesh!.configs.get('api')!];
    const va = a.resources.find((r) => r.name === 'endpoints/api-v2')!;
    const vb = b.resources.find((r) => r.name === 'endpoints/api-v2')!;
    assert.equal(va.version, vb.version);
    assert.match(va.version, /^[0-9a-f]{64}$/);
  });
});

describe('output is a function of the spec alone', () => {
  const route = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - matches: [{ headers: [{ name: X-B, value: "2" }, { name: X-A, value: "1" }] }]
      backendRefs: [{ name: api-v2, port: 80 }]
`;
  const reordered = `kind: HTTPRoute
apiVersion: gateway.networking.k8s.io/v1
spec:
  rules:
    - backendRefs: [{ port: 80, name: api-v2 }]
      matches: [{ headers: [{ value: "1", name: x-a }, { name: x-b, value: "2" }] }]
  parentRefs: [{ name: api, kind: Service }]
metadata: { name: api }
`;

  test('file names, document order, key order and header order do not change any version', () => {
    const one = compileTexts({ 'a.yaml': BASE_SPEC, 'b.yaml': route });
    const two = compileTexts({ 'z/route.yml': reordered, 'all.yaml': BASE_SPEC.split('---').reverse().join('---\n') });
    assert.deepEqual(codes(one), []);
    assert.deepEqual(codes(two), []);
    assert.equal(one.mesh!.version, two.mesh!.version);
    for (const [name, config] of one.mesh!.configs) assert.equal(config.version, two.mesh!.configs.get(name)!.version, name);
  });

  test('a change to one backend changes only the resources that carry it', () => {
    const before = compileTexts({ 'a.yaml': BASE_SPEC });
    const after = compileTexts({ 'a.yaml': BASE_SPEC.replace('port: 16003', 'port: 16004') });
    const web0 = before.mesh!.configs.get('web')!;
    const web1 = after.mesh!.configs.get('web')!;
    const changed = web1.resources.filter((r) => web0.resources.find((x) => x.name === r.name)!.version !== r.version).map((r) => r.name);
    assert.deepEqual(changed, ['endpoints/api-v2']);
    assert.notEqual(web0.version, web1.version);
  });
});

describe('services without a sidecar', () => {
  test('get no config, and callers connect to the app port', () => {
    const result = compileTexts({
      'a.yaml': BASE_SPEC,
      'ext.yaml': `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: legacy }
spec:
  sidecar: false
  ports: [{ port: 80, targetPort: 9090 }]
  endpoints: { static: [{ address: 10.0.0.9 }] }
`,
    });
    assert.deepEqual(codes(result), []);
    assert.equal(result.mesh!.configs.has('legacy'), false);
    const web = result.mesh!.configs.get('web')!;
    assert.deepEqual(body<EndpointsBody>(web, 'endpoints/legacy').static, [{ address: '10.0.0.9', port: null, weight: 1, zone: null }]);
    assert.equal(body<ClusterBody>(web, 'cluster/legacy').identity, null);
    assert.deepEqual(body<ClusterBody>(web, 'cluster/legacy').ports, [{ name: null, port: 80, targetPort: 9090, protocol: 'http' }]);
  });
});

describe('diagnostics point at the YAML node', () => {
  test('an unknown field names the field, its place, and the likely intended one', () => {
    const result = compileTexts({
      'a.yaml': BASE_SPEC,
      'routes/api.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs:
        - name: api
          wieght: 3
`,
    });
    const d = result.diagnostics[0]!;
    assert.equal(d.code, 'TRL2002');
    assert.equal(formatLocation(d.span!), 'routes/api.yaml:9:11');
    assert.equal(d.message, 'unknown field "wieght" in spec.rules[0].backendRefs[0]');
    assert.equal(d.hint, 'did you mean "weight"?');
  });

  test('every problem in a run is reported, not just the first', () => {
    const result = compileTexts({
      'a.yaml': BASE_SPEC,
      'b.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: one }
spec:
  parentRefs: [{ kind: Service, name: nope }]
  rules: [{ backendRefs: [{ name: api, port: 81 }], timeouts: { request: 1s, backendRequest: 2s } }]
---
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: { name: p }
spec:
  targetRefs: [{ kind: Service, name: missing }]
  loadBalancer: { type: random }
`,
    });
    assert.deepEqual(codes(result).sort(), ['TRL2004', 'TRL3002', 'TRL3008', 'TRL4003']);
    assert.equal(result.mesh, undefined, 'a spec with errors yields no configs');
  });

  test('regular expressions that could backtrack are rejected', () => {
    const result = compileTexts({
      'a.yaml': BASE_SPEC,
      'b.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - matches: [{ path: { type: RegularExpression, value: "/(a+)\\\\1" } }]
      backendRefs: [{ name: api, port: 80 }]
`,
    });
    assert.deepEqual(codes(result), ['TRL4007']);
    assert.equal(formatLocation(result.diagnostics[0]!.span!), 'b.yaml:7:59');
  });

  test('two TrafficPolicies may not set one field differently, but may split fields', () => {
    const policy = (name: string, body: string) => `---
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: { name: ${name} }
spec:
  targetRefs: [{ kind: Service, name: api }]
${body}`;
    const ok = compileTexts({ 'a.yaml': BASE_SPEC, 'p.yaml': policy('a', '  circuitBreaker: { maxRequests: 5 }\n') + policy('b', '  circuitBreaker: { maxConnections: 9 }\n') });
    assert.deepEqual(codes(ok), []);
    const cluster = body<ClusterBody>(ok.mesh!.configs.get('web')!, 'cluster/api');
    assert.deepEqual(cluster.circuitBreaker, { maxConnections: 9, maxPendingRequests: 1024, maxRequests: 5 });
    const clash = compileTexts({ 'a.yaml': BASE_SPEC, 'p.yaml': policy('a', '  circuitBreaker: { maxRequests: 5 }\n') + policy('b', '  circuitBreaker: { maxRequests: 6 }\n') });
    assert.deepEqual(codes(clash), ['TRL4005']);
    assert.equal(clash.diagnostics[0]!.related?.length, 1);
  });
});

describe('checks the schema cannot express', () => {
  test('a service may not list one port number or name twice', () => {
    const result = compileTexts({ 'a.yaml': BASE_SPEC.replace('ports: [{ name: http, port: 80, targetPort: 8081 }]', 'ports: [{ name: http, port: 80 }, { name: http, port: 80 }]') });
    assert.deepEqual(codes(result), ['TRL4018', 'TRL4018']);
  });

  test('a mirror fraction above one is an error', () => {
    const result = compileTexts({
      'a.yaml': BASE_SPEC,
      'r.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: api-v2, port: 80 }, fraction: { numerator: 5, denominator: 4 } } }]
      backendRefs: [{ name: api, port: 80 }]
`,
    });
    assert.deepEqual(codes(result), ['TRL4019']);
  });
});
