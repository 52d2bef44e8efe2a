/**
 * Namespaces in the spec language: services are `namespace/name`, references resolve in the
 * referring document's namespace, cross-namespace backendRefs need a ReferenceGrant, GAMMA
 * consumer routes apply only to their namespace's callers, and Kubernetes-related fields
 * (endpoints, ServiceAccount identities, namespace-wide access, egress) reach the configs.
 * Every test compiles real specs with the real compiler.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { admitsCaller, decideAccess } from '../../src/config/access.ts';
import type { EndpointsBody, InboundBody, ProxyConfig, RouteBody } from '../../src/config/types.ts';
import { formatLocation } from '../../src/diagnostics/render.ts';
import { codes, compileTexts } from '../helpers/spec.ts';

function body<T>(config: ProxyConfig | undefined, name: string): T {
  assert.ok(config, 'config should exist');
  const r = config.resources.find((x) => x.name === name);
  assert.ok(r, `config of ${config.service} should carry ${name}; it has ${config.resources.map((x) => x.name).join(', ')}`);
  return r.body as T;
}

const MESH = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec:
  trustDomain: test.local
  access: { default: allow }
`;

/** A meshed Service `name` in `namespace` (none: default) with one static instance. */
function service(name: string, namespace: string | undefined, port: number, extra = ''): string {
  return `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name}${namespace ? `, namespace: ${namespace}` : ''} }
spec:
  ports: [{ port: 80 }]
  endpoints: { static: [{ address: 127.0.0.1, port: ${port} }] }
${extra}`;
}

const docs = (...parts: string[]) => parts.join('---\n');

describe('services are namespace/name', () => {
  test('the same name in two namespaces is two services, with their own keys, resources and identities', () => {
    const result = compileTexts({
      'mesh.yaml': MESH,
      'services.yaml': docs(service('api', 'shop', 16001), service('api', 'payments', 16002), service('web', undefined, 16003)),
    });
    assert.deepEqual(codes(result), []);
    assert.deepEqual([...result.mesh!.configs.keys()], ['payments/api', 'shop/api', 'web']);
    const web = result.mesh!.configs.get('web')!;
    assert.equal(body<InboundBody>(web, 'inbound').identity, 'spiffe://test.local/svc/web', 'namespace default keeps the bare form');
    assert.equal(body<InboundBody>(result.mesh!.configs.get('shop/api'), 'inbound').identity, 'spiffe://test.local/ns/shop/svc/api');
    assert.equal(body<InboundBody>(result.mesh!.configs.get('payments/api'), 'inbound').service, 'payments/api');
    assert.deepEqual(body<EndpointsBody>(web, 'endpoints/shop/api').static.map((e) => e.port), [16001]);
    assert.deepEqual(body<EndpointsBody>(web, 'endpoints/payments/api').service, 'payments/api');
  });

  test('a duplicate name within one namespace is TRL3001, in another namespace it is not', () => {
    const result = compileTexts({
      'mesh.yaml': MESH,
      'a.yaml': docs(service('api', 'shop', 16001), service('api', 'payments', 16002)),
      'b.yaml': service('api', 'shop', 16003),
    });
    const dups = result.diagnostics.filter((d) => d.code === 'TRL3001');
    assert.equal(dups.length, 1);
    assert.equal(dups[0]!.message, 'Service "shop/api" is defined twice');
    assert.equal(formatLocation(dups[0]!.span!), 'b.yaml:3:19');
  });

  test('a namespace that is not a DNS label is a positioned schema error', () => {
    const result = compileTexts({ 'mesh.yaml': MESH, 's.yaml': service('api', 'Shop_1', 16001) });
    const d = result.diagnostics.find((x) => x.code === 'TRL2005');
    assert.ok(d, `expected TRL2005, got ${codes(result).join(', ')}`);
    assert.match(d.message, /metadata\.namespace/);
    assert.equal(formatLocation(d.span!), 's.yaml:3:35');
  });

  test('references resolve in the referring document\'s namespace', () => {
    const result = compileTexts({
      'mesh.yaml': MESH,
      'services.yaml': docs(service('api', 'shop', 16001), service('api', undefined, 16002), service('api-v2', 'shop', 16003)),
      'route.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: api, weight: 1 }, { name: api-v2, weight: 1 }]
`,
    });
    assert.deepEqual(codes(result), []);
    const route = body<RouteBody>(result.mesh!.configs.get('api'), 'route/shop/api');
    assert.equal(route.rules[0]!.route, 'shop/api');
    assert.equal(route.rules[0]!.id, 'shop/api/0/0');
    assert.deepEqual(route.rules[0]!.backends.map((b) => b.service), ['shop/api', 'shop/api-v2']);
    // The default-namespace api has no route attached: it keeps its implicit rule.
    assert.equal(body<RouteBody>(result.mesh!.configs.get('api'), 'route/api').rules[0]!.route, null);
  });

  test('a reference to a name that exists only in another namespace is unknown, with the key as a hint', () => {
    const result = compileTexts({
      'mesh.yaml': MESH,
      'services.yaml': docs(service('api', 'shop', 16001), service('web', 'payments', 16002)),
      'policy.yaml': `apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: { name: p, namespace: payments }
spec:
  targetRefs: [{ kind: Service, name: api }]
  loadBalancer: { type: round-robin }
`,
    });
    const d = result.diagnostics.find((x) => x.code === 'TRL3004');
    assert.ok(d);
    assert.equal(d.message, 'TrafficPolicy targets unknown service "payments/api"');
  });
});

describe('cross-namespace backendRefs need a ReferenceGrant', () => {
  const services = docs(service('checkout', 'shop', 16001), service('ledger', 'payments', 16002), service('ledger-v2', 'payments', 16003));
  const route = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: checkout, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: checkout }]
  rules:
    - backendRefs:
        - name: ledger
          namespace: payments
`;
  const grant = (from: string, to: string) => `apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: g, namespace: payments }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: ${from} }]
  to: [${to}]
`;

  test('without one: TRL3009 at the backendRef\'s namespace, saying which grant is missing', () => {
    const result = compileTexts({ 'mesh.yaml': MESH, 'services.yaml': services, 'route.yaml': route });
    assert.deepEqual(codes(result), ['TRL3009']);
    const d = result.diagnostics[0]!;
    assert.equal(formatLocation(d.span!), 'route.yaml:9:22');
    assert.match(d.message, /no ReferenceGrant in "payments" lets HTTPRoutes from namespace "shop" refer to it/);
    assert.match(d.hint!, /namespace: shop/);
    assert.equal(result.mesh, undefined, 'an error blocks the configs');
  });

  test('with one naming the Service, or naming no Service: compiles and routes there', () => {
    for (const to of ['{ group: "", kind: Service, name: ledger }', '{ group: trellis.dev, kind: Service }']) {
      const result = compileTexts({ 'mesh.yaml': MESH, 'services.yaml': services, 'route.yaml': route, 'grant.yaml': grant('shop', to) });
      assert.deepEqual(codes(result), [], to);
      const table = body<RouteBody>(result.mesh!.configs.get('shop/checkout'), 'route/shop/checkout');
      assert.deepEqual(table.rules[0]!.backends.map((b) => b.service), ['payments/ledger']);
    }
  });

  test('a grant for another namespace, another Service, or in the wrong namespace does not count', () => {
    const wrong = [
      grant('web', '{ group: "", kind: Service, name: ledger }'),
      grant('shop', '{ group: "", kind: Service, name: ledger-v2 }'),
      grant('shop', '{ group: "", kind: Service, name: ledger }').replace('namespace: payments', 'namespace: shop'),
    ];
    for (const g of wrong) assert.deepEqual(codes(compileTexts({ 'mesh.yaml': MESH, 'services.yaml': services, 'route.yaml': route, 'grant.yaml': g })), ['TRL3009'], g);
  });

  test('mirror backendRefs are held to the same rule', () => {
    const mirrored = route.replace(
      '    - backendRefs:',
      '    - filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: ledger-v2, namespace: payments } } }]\n      backendRefs:',
    );
    const result = compileTexts({ 'mesh.yaml': MESH, 'services.yaml': services, 'route.yaml': mirrored, 'grant.yaml': grant('shop', '{ group: "", kind: Service, name: ledger }') });
    assert.deepEqual(codes(result), ['TRL3009']);
    assert.match(result.diagnostics[0]!.message, /^mirror backendRef refers to service "payments\/ledger-v2"/);
  });
});

describe('GAMMA consumer routes', () => {
  const spec = {
    'mesh.yaml': MESH,
    'services.yaml': docs(
      service('api', 'payments', 16001),
      service('api-v2', 'payments', 16002),
      service('web', 'shop', 16003),
      service('reports', 'payments', 16004),
      service('batch', undefined, 16005),
    ),
    'producer.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api, namespace: payments }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: api }]
      timeouts: { request: 5s }
`,
    'consumer.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: fast-api, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: api, namespace: payments }]
  rules:
    - backendRefs: [{ name: api, namespace: payments }]
      timeouts: { request: 100ms }
`,
  };

  test('callers in the route\'s namespace get the consumer table; everyone else the producer table', () => {
    const result = compileTexts(spec);
    assert.deepEqual(codes(result), [], 'a consumer route may send to its own parent without a ReferenceGrant');
    const shop = body<RouteBody>(result.mesh!.configs.get('shop/web'), 'route/payments/api');
    assert.deepEqual(shop.rules.map((r) => [r.route, r.timeouts.requestMs]), [['shop/fast-api', 100]]);
    for (const caller of ['payments/reports', 'batch', 'payments/api-v2']) {
      const table = body<RouteBody>(result.mesh!.configs.get(caller), 'route/payments/api');
      assert.deepEqual(table.rules.map((r) => [r.route, r.timeouts.requestMs]), [['payments/api', 5000]], caller);
    }
  });

  test('the two tables are different resources under one name; other services are untouched', () => {
    const result = compileTexts(spec);
    const shopApi = result.mesh!.configs.get('shop/web')!.resources.find((r) => r.name === 'route/payments/api')!;
    const otherApi = result.mesh!.configs.get('batch')!.resources.find((r) => r.name === 'route/payments/api')!;
    assert.notEqual(shopApi.version, otherApi.version);
    const v2 = (caller: string) => result.mesh!.configs.get(caller)!.resources.find((r) => r.name === 'route/payments/api-v2')!.version;
    assert.equal(v2('shop/web'), v2('batch'), 'a service without consumer routes has one table for all');
  });

  test('without producer routes, the consumer route still applies only to its namespace', () => {
    const { 'producer.yaml': _, ...rest } = spec;
    const result = compileTexts(rest);
    assert.deepEqual(codes(result), []);
    assert.equal(body<RouteBody>(result.mesh!.configs.get('shop/web'), 'route/payments/api').rules[0]!.route, 'shop/fast-api');
    assert.equal(body<RouteBody>(result.mesh!.configs.get('batch'), 'route/payments/api').rules[0]!.route, null, 'the implicit rule');
  });

  test('a consumer table is checked against its own namespace\'s callers only (TRL4016)', () => {
    const grant = `apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: g, namespace: payments }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop }]
  to: [{ group: "", kind: Service }]
`;
    const v2Access = `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: v2, namespace: payments }
spec:
  targetRefs: [{ kind: Service, name: api-v2 }]
  rules: [{ from: [{ namespace: payments }] }]
`;
    const consumer = spec['consumer.yaml'].replace('name: api, namespace: payments }]\n      timeouts', 'name: api-v2, namespace: payments }]\n      timeouts');
    const result = compileTexts({ ...spec, 'consumer.yaml': consumer, 'grant.yaml': grant, 'v2.yaml': v2Access });
    const warnings = result.diagnostics.filter((d) => d.code === 'TRL4016');
    assert.equal(warnings.length, 1, codes(result).join(', '));
    assert.match(warnings[0]!.message, /does not admit 1 of "payments\/api"'s callers \(shop\/web\)/);
    assert.equal(formatLocation(warnings[0]!.span!), 'consumer.yaml:7:29');
  });

  test('a consumer route that sends elsewhere in the Service\'s namespace needs a ReferenceGrant', () => {
    const result = compileTexts({ ...spec, 'consumer.yaml': spec['consumer.yaml'].replace('name: api, namespace: payments }]\n      timeouts', 'name: api-v2, namespace: payments }]\n      timeouts') });
    assert.deepEqual(codes(result), ['TRL3009']);
  });
});

describe('Kubernetes endpoints and identities', () => {
  test('kubernetes endpoints compile to an empty static list the reconciler fills, and ServiceAccount identities', () => {
    const result = compileTexts({
      'mesh.yaml': MESH,
      'services.yaml': docs(
        service('web', 'shop', 16001),
        `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: checkout, namespace: shop }
spec:
  ports: [{ port: 80 }]
  serviceAccount: checkout-sa
  endpoints: { kubernetes: {} }
`,
        `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: legacy, namespace: shop }
spec:
  ports: [{ port: 80 }]
  sidecar: false
  endpoints: { kubernetes: { service: legacy-svc, namespace: old, port: http } }
`,
        `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: cart }
spec:
  ports: [{ port: 80 }]
  endpoints: { kubernetes: { port: 8080 } }
`,
      ),
    });
    assert.deepEqual(codes(result), []);
    const web = result.mesh!.configs.get('shop/web')!;
    assert.deepEqual(body<EndpointsBody>(web, 'endpoints/shop/checkout'), { service: 'shop/checkout', static: [], dns: null, kubernetes: { namespace: 'shop', service: 'checkout', port: null } });
    assert.deepEqual(body<EndpointsBody>(web, 'endpoints/shop/legacy').kubernetes, { namespace: 'old', service: 'legacy-svc', port: 'http' });
    assert.deepEqual(body<EndpointsBody>(web, 'endpoints/cart').kubernetes, { namespace: 'default', service: 'cart', port: 8080 });
    assert.equal(body<InboundBody>(result.mesh!.configs.get('shop/checkout'), 'inbound').identity, 'spiffe://test.local/ns/shop/sa/checkout-sa');
    assert.equal(body<InboundBody>(result.mesh!.configs.get('cart'), 'inbound').identity, 'spiffe://test.local/ns/default/sa/default', 'ServiceAccount default when none is named');
    assert.equal(body<InboundBody>(web, 'inbound').identity, 'spiffe://test.local/ns/shop/svc/web', 'off Kubernetes outside default');
    assert.equal(body<{ identity: string | null }>(web, 'cluster/shop/legacy').identity, null, 'unmeshed: no identity');
  });

  test('kubernetes endpoints together with a static list is a schema error', () => {
    const result = compileTexts({
      'mesh.yaml': MESH,
      's.yaml': `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api }
spec:
  ports: [{ port: 80 }]
  endpoints: { kubernetes: {}, static: [] }
`,
    });
    assert.deepEqual(codes(result), ['TRL2006']);
    assert.match(result.diagnostics[0]!.message, /spec\.endpoints may hold at most 1 field/);
    assert.equal(formatLocation(result.diagnostics[0]!.span!), 's.yaml:6:14');
  });

  test('two Kubernetes services of one namespace under one ServiceAccount: TRL4025, and policy cannot tell them apart', () => {
    const k8s = (name: string, sa: string | undefined, ns = 'shop') => `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name}, namespace: ${ns} }
spec:
  ports: [{ port: 80 }]
${sa ? `  serviceAccount: ${sa}\n` : ''}  endpoints: { kubernetes: {} }
`;
    const result = compileTexts({
      'mesh.yaml': MESH.replace('default: allow', 'default: deny'),
      'services.yaml': docs(k8s('a', undefined), k8s('b', undefined), k8s('c', 'c'), k8s('d', undefined, 'other'), service('api', 'shop', 16001)),
      'access.yaml': `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api, namespace: shop }
spec:
  targetRefs: [{ kind: Service, name: api }]
  rules: [{ from: [{ service: a }] }]
`,
    });
    assert.deepEqual(codes(result), ['TRL4025'], 'a and b share shop/default; c has its own; d is in another namespace');
    assert.match(result.diagnostics[0]!.message, /"shop\/a" and "shop\/b" both run as ServiceAccount "default"/);
    // Admitting a admits b: both get a route to api.
    assert.ok(result.mesh!.configs.get('shop/b')!.resources.some((r) => r.name === 'route/shop/api'));
    assert.ok(!result.mesh!.configs.get('shop/c')!.resources.some((r) => r.name === 'route/shop/api'));
  });
});

describe('Mesh egress', () => {
  test('passthrough reaches every inbound; refuse and absent leave the field out', () => {
    const inbound = (mesh: string) => body<InboundBody>(compileTexts({ 'mesh.yaml': mesh, 's.yaml': service('api', undefined, 16001) }).mesh!.configs.get('api'), 'inbound');
    assert.equal(inbound(MESH + '  egress: { mode: passthrough }\n').egress, 'passthrough');
    assert.equal('egress' in inbound(MESH + '  egress: { mode: refuse }\n'), false);
    assert.equal('egress' in inbound(MESH), false);
  });
});

describe('AccessPolicy sources across namespaces', () => {
  const services = docs(service('api', 'payments', 16001), service('web', 'shop', 16002), service('cart', 'shop', 16003), service('reports', 'payments', 16004), service('batch', undefined, 16005));
  const policy = (from: string) => `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api, namespace: payments }
spec:
  targetRefs: [{ kind: Service, name: api }]
  rules: [{ from: [${from}] }]
`;
  const compile = (from: string) => compileTexts({ 'mesh.yaml': MESH.replace('default: allow', 'default: deny'), 'services.yaml': services, 'access.yaml': policy(from) });

  test('namespace: NAME admits every identity under spiffe://<td>/ns/NAME/, and gives those callers the route', () => {
    const result = compile('{ namespace: shop }');
    assert.deepEqual(codes(result), []);
    const access = body<InboundBody>(result.mesh!.configs.get('payments/api'), 'inbound').access;
    assert.deepEqual(access.rules[0]!.from, ['spiffe://test.local/ns/shop/*']);
    assert.equal(access.rules[0]!.policy, 'payments/api');
    assert.equal(decideAccess(access, 'spiffe://test.local/ns/shop/sa/anything', 'GET', '/').allowed, true);
    assert.equal(decideAccess(access, 'spiffe://test.local/ns/shopping/svc/web', 'GET', '/').allowed, false, 'a prefix ends at the slash');
    const callers = [...result.mesh!.configs].filter(([, c]) => c.resources.some((r) => r.name === 'route/payments/api')).map(([k]) => k);
    assert.deepEqual(callers, ['shop/cart', 'shop/web']);
  });

  test('namespace: default also admits the bare identities of default services off Kubernetes', () => {
    const result = compile('{ namespace: default }');
    const from = body<InboundBody>(result.mesh!.configs.get('payments/api'), 'inbound').access.rules[0]!.from;
    assert.deepEqual(from, ['spiffe://test.local/ns/default/*', 'spiffe://test.local/svc/*']);
    assert.ok(from.some((f) => admitsCaller(f, 'spiffe://test.local/svc/batch')));
    assert.ok(result.mesh!.configs.get('batch')!.resources.some((r) => r.name === 'route/payments/api'));
  });

  test('service: name resolves in the policy\'s namespace; ns/name names another', () => {
    const result = compile('{ service: reports }, { service: shop/web }');
    assert.deepEqual(codes(result), []);
    const from = body<InboundBody>(result.mesh!.configs.get('payments/api'), 'inbound').access.rules[0]!.from;
    assert.deepEqual(from, ['spiffe://test.local/ns/payments/svc/reports', 'spiffe://test.local/ns/shop/svc/web']);
    const bad = compile('{ service: web }');
    assert.deepEqual(codes(bad), ['TRL3005']);
    assert.match(bad.diagnostics[0]!.message, /unknown service "payments\/web"/);
  });
});

describe('traffic tests name services across namespaces', () => {
  test('names resolve in the test\'s namespace; ns/name reaches another', () => {
    const result = compileTexts({
      'mesh.yaml': MESH,
      'services.yaml': docs(service('api', 'payments', 16001), service('web', 'shop', 16002)),
      'test.yaml': `apiVersion: trellis.dev/v1alpha1
kind: TrafficTest
metadata: { name: t, namespace: shop }
spec:
  request: { from: web, to: payments/api }
  expect: { backend: payments/api }
---
apiVersion: trellis.dev/v1alpha1
kind: TrafficTest
metadata: { name: wrong, namespace: shop }
spec:
  request: { from: web, to: api }
  expect: { outcome: routed }
`,
    });
    assert.deepEqual(codes(result), ['TRL5002']);
    assert.match(result.diagnostics[0]!.message, /traffic test "shop\/wrong": request.to names no service "shop\/api"/);
    assert.deepEqual(result.trafficTests?.map((t) => [t.name, t.ok]), [['shop/t', true], ['shop/wrong', false]]);
  });
});
