import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { RouteBody } from '../../src/config/types.ts';
import { compileTexts, BASE_SPEC } from '../helpers/spec.ts';

/** Compiles BASE_SPEC plus the given HTTPRoute documents and returns api's route table. */
function routeTable(routes: string): RouteBody {
  const result = compileTexts({ 'base.yaml': BASE_SPEC, 'routes.yaml': routes });
  assert.deepEqual(result.diagnostics.filter((d) => d.severity === 'error'), [], 'spec should compile');
  const web = result.mesh!.configs.get('web')!;
  return web.resources.find((r) => r.name === 'route/api')!.body as RouteBody;
}

function route(name: string, rules: string): string {
  return `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name} }
spec:
  parentRefs: [{ group: "", kind: Service, name: api, port: 80 }]
  rules:
${rules}`;
}

describe('route precedence (Gateway API order)', () => {
  test('exact path beats regular expression beats longest prefix', () => {
    const table = routeTable(
      route(
        'r',
        `  - matches: [{ path: { type: PathPrefix, value: /a } }]
    backendRefs: [{ name: api, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /a/b } }]
    backendRefs: [{ name: api, port: 80 }]
  - matches: [{ path: { type: RegularExpression, value: "/a/[0-9]+" } }]
    backendRefs: [{ name: api, port: 80 }]
  - matches: [{ path: { type: Exact, value: /a/b/c } }]
    backendRefs: [{ name: api, port: 80 }]
`,
      ),
    );
    assert.deepEqual(
      table.rules.map((r) => `${r.match.path.type} ${r.match.path.value}`),
      ['Exact /a/b/c', 'RegularExpression /a/[0-9]+', 'PathPrefix /a/b', 'PathPrefix /a'],
    );
  });

  test('then method, then most headers, then most query params', () => {
    const table = routeTable(
      route(
        'r',
        `  - matches: [{ path: { value: /x }, queryParams: [{ name: q, value: "1" }] }]
    backendRefs: [{ name: api, port: 80 }]
  - matches: [{ path: { value: /x }, headers: [{ name: h1, value: a }, { name: h2, value: b }] }]
    backendRefs: [{ name: api, port: 80 }]
  - matches: [{ path: { value: /x }, headers: [{ name: h1, value: a }] }]
    backendRefs: [{ name: api, port: 80 }]
  - matches: [{ path: { value: /x }, method: GET }]
    backendRefs: [{ name: api, port: 80 }]
`,
      ),
    );
    assert.deepEqual(
      table.rules.map((r) => r.id),
      ['r/3/0', 'r/1/0', 'r/2/0', 'r/0/0'],
    );
  });

  test('remaining ties go to the route name, then rule order', () => {
    const rule = `  - matches: [{ path: { value: /same } }]
    backendRefs: [{ name: api-v2, port: 80 }]
  - matches: [{ path: { value: /same } }]
    backendRefs: [{ name: api, port: 80 }]
`;
    const result = compileTexts({ 'base.yaml': BASE_SPEC, 'b.yaml': route('bravo', rule), 'a.yaml': route('alpha', rule) });
    const web = result.mesh!.configs.get('web')!;
    const table = web.resources.find((r) => r.name === 'route/api')!.body as RouteBody;
    assert.deepEqual(table.rules.map((r) => r.id), ['alpha/0/0', 'alpha/1/0', 'bravo/0/0', 'bravo/1/0']);
    // Every later copy is shadowed by alpha/0/0, and says so.
    assert.equal(result.diagnostics.filter((d) => d.code === 'TRL4002').length, 3);
  });

  test('a service with no route sends everything to itself with mesh defaults', () => {
    const result = compileTexts({ 'base.yaml': BASE_SPEC });
    const web = result.mesh!.configs.get('web')!;
    const table = web.resources.find((r) => r.name === 'route/api')!.body as RouteBody;
    assert.equal(table.rules.length, 1);
    assert.equal(table.rules[0]!.id, 'default');
    assert.deepEqual(table.rules[0]!.backends, [{ service: 'api', port: 80, weight: 1, filters: [] }]);
    assert.equal(table.rules[0]!.timeouts.requestMs, 15000);
  });

  test('ports that no route claims keep the default rule; claimed ports do not', () => {
    const twoPorts = BASE_SPEC.replace('ports: [{ name: http, port: 80, targetPort: 8081 }]', 'ports: [{ name: http, port: 80, targetPort: 8081 }, { name: admin, port: 9000 }]');
    const result = compileTexts({
      'base.yaml': twoPorts,
      'r.yaml': route('r', `  - backendRefs: [{ name: api-v2, port: 80 }]\n`),
    });
    assert.deepEqual(result.diagnostics.filter((d) => d.severity === 'error'), []);
    const table = result.mesh!.configs.get('web')!.resources.find((r) => r.name === 'route/api')!.body as RouteBody;
    assert.deepEqual(
      table.rules.map((r) => [r.id, r.match.port, r.backends[0]!.service]),
      [
        ['r/0/0', 80, 'api-v2'],
        ['default/9000', 9000, 'api'],
      ],
    );
  });
});

describe('shadowed rules', () => {
  test('a catch-all prefix before a narrower match is reported at the narrower one', () => {
    const result = compileTexts({
      'base.yaml': BASE_SPEC,
      'r.yaml': route(
        'r',
        `  - matches: [{ path: { value: /api }, headers: [{ name: x-user, value: a }] }]
    backendRefs: [{ name: api, port: 80 }]
  - matches: [{ path: { value: /api }, headers: [{ name: x-user, value: a }] }, { path: { value: /other } }]
    backendRefs: [{ name: api-v2, port: 80 }]
`,
      ),
    });
    const shadowed = result.diagnostics.filter((d) => d.code === 'TRL4002');
    assert.equal(shadowed.length, 1);
    const pos = shadowed[0]!.span!.file.position(shadowed[0]!.span!.start);
    assert.equal(pos.line, 10, 'points at the shadowed match, not the rule that wins');
  });

  test('different methods or headers do not shadow each other', () => {
    const result = compileTexts({
      'base.yaml': BASE_SPEC,
      'r.yaml': route(
        'r',
        `  - matches: [{ path: { value: /api }, method: GET }]
    backendRefs: [{ name: api, port: 80 }]
  - matches: [{ path: { value: /api }, method: POST }]
    backendRefs: [{ name: api-v2, port: 80 }]
  - matches: [{ path: { value: /apix } }]
    backendRefs: [{ name: api-v2, port: 80 }]
`,
      ),
    });
    assert.deepEqual(result.diagnostics.filter((d) => d.code === 'TRL4002'), []);
  });
});
