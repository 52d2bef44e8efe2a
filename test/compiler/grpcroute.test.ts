/**
 * GRPCRoute: compiled into the same route table as HTTPRoute, matched by the sidecar's own
 * router (RouteTable) and route plan (planRoute). The matching cases are transcribed from
 * the Gateway API conformance tests (kubernetes-sigs/gateway-api, conformance/tests/
 * grpcroute-exact-method-matching, grpcroute-header-matching, and the mesh ones
 * mesh/grpcroute-weight, mesh/grpcroute-request-header-modifier, mesh/grpcroute-request-mirror):
 * the same routes, the same calls, the backend (or "no route": Unimplemented there) each must reach.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RouteTable } from '../../src/config/router.ts';
import type { CompiledRule, InboundBody, RouteBody } from '../../src/config/types.ts';
import { planRoute } from '../../src/sidecar/route-plan.ts';
import { grpcPath } from '../../src/spec/grpc.ts';
import { compileTexts } from '../helpers/spec.ts';
import type { CompileResult } from '../../src/compiler/compile.ts';

const ECHO = 'gateway_api_conformance.echo_basic.grpcecho.GrpcEcho';

/** Mesh `test`, caller `client`, gRPC services `echo`, `echo-v1`, `echo-v2` on port 7070, then `documents`. */
function meshWith(...documents: string[]): string {
  const svc = (name: string, port: number) => `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec:
  ports: [{ name: grpc, port: 7070, appProtocol: grpc }]
  endpoints: { static: [{ address: 127.0.0.1, port: ${port} }] }
`;
  return [
    `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec:
  trustDomain: test.local
  access: { default: allow }
`,
    `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: client }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
`,
    svc('echo', 16101),
    svc('echo-v1', 16102),
    svc('echo-v2', 16103),
    ...documents,
  ].join('---\n');
}

function compile(...documents: string[]): CompileResult {
  return compileTexts({ 'spec.yaml': meshWith(...documents) });
}

function errors(result: CompileResult) {
  return result.diagnostics.filter((d) => d.severity === 'error').map((d) => `${d.code} ${d.message}`);
}

/** The route table `client`'s sidecar holds for `service`, with no compile errors. */
function tableOf(result: CompileResult, service = 'echo'): RouteTable {
  assert.deepEqual(errors(result), [], 'spec should compile');
  const body = result.mesh!.configs.get('client')!.resources.find((r) => r.name === `route/${service}`)!.body as RouteBody;
  return new RouteTable(body);
}

/** A gRPC call as a gRPC client sends it: POST to /<service>/<method> with content-type application/grpc. */
function grpcCall(service: string, method: string, metadata: Record<string, string> = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/grpc' };
  for (const [k, v] of Object.entries(metadata)) headers[k.toLowerCase()] = v;
  return { port: undefined, method: 'POST', path: grpcPath(service, method), query: '', authority: 'echo:7070', headers };
}

/** Where the route plan sends a call: the backend service, or `no_route` (gRPC Unimplemented in the conformance tests). */
function reach(table: RouteTable, call: ReturnType<typeof grpcCall>, random = () => 0.5): string {
  const plan = planRoute(table, call, random);
  return plan.kind === 'forward' ? plan.backend.service : plan.kind;
}

describe('GRPCRoute conformance: exact method matching (grpcroute-exact-method-matching)', () => {
  const table = tableOf(
    compile(`apiVersion: gateway.networking.k8s.io/v1alpha2
kind: GRPCRoute
metadata: { name: exact-matching }
spec:
  parentRefs: [{ kind: Service, name: echo, port: 7070 }]
  rules:
  - matches:
    - method: { service: ${ECHO}, method: Echo }
    backendRefs: [{ name: echo-v1, port: 7070 }]
  - matches:
    - method: { service: ${ECHO}, method: EchoTwo }
    backendRefs: [{ name: echo-v2, port: 7070 }]
`),
  );
  test('Echo goes to v1, EchoTwo to v2, EchoThree matches nothing', () => {
    assert.equal(reach(table, grpcCall(ECHO, 'Echo')), 'echo-v1');
    assert.equal(reach(table, grpcCall(ECHO, 'EchoTwo')), 'echo-v2');
    assert.equal(reach(table, grpcCall(ECHO, 'EchoThree')), 'no_route');
  });
  test('an exact service and method compile to one exact path; the longer method comes first', () => {
    const rules = table.rules.filter((r) => r.kind === 'GRPCRoute');
    assert.deepEqual(
      rules.map((r) => [r.match.path.type, r.match.path.value, r.match.method]),
      [
        ['Exact', `/${ECHO}/EchoTwo`, null],
        ['Exact', `/${ECHO}/Echo`, null],
      ],
    );
  });
  test('names compare case-sensitively, and the service must match too', () => {
    assert.equal(reach(table, grpcCall(ECHO, 'echo')), 'no_route');
    assert.equal(reach(table, grpcCall(ECHO.toLowerCase(), 'Echo')), 'no_route');
    assert.equal(reach(table, grpcCall('other.Service', 'Echo')), 'no_route');
  });
});

describe('GRPCRoute conformance: header matching (grpcroute-header-matching)', () => {
  // The conformance route (HTTPRoute header-matching's rules, in GRPCRoute form).
  const table = tableOf(
    compile(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: grpc-header-matching }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - matches: [{ headers: [{ name: version, value: one }] }]
    backendRefs: [{ name: echo-v1 }]
  - matches: [{ headers: [{ name: version, value: two }] }]
    backendRefs: [{ name: echo-v2 }]
  - matches: [{ headers: [{ name: version, value: two }, { name: color, value: orange }] }]
    backendRefs: [{ name: echo-v1 }]
  - matches: [{ headers: [{ name: color, value: blue }] }, { headers: [{ name: color, value: green }] }]
    backendRefs: [{ name: echo-v1 }]
  - matches: [{ headers: [{ name: color, value: red }] }, { headers: [{ name: color, value: yellow }] }]
    backendRefs: [{ name: echo-v2 }]
`),
  );
  const cases: Array<[Record<string, string>, string]> = [
    [{ Version: 'one' }, 'echo-v1'],
    [{ Version: 'two' }, 'echo-v2'],
    [{ Version: 'two', Color: 'orange' }, 'echo-v1'],
    [{ Version: 'two', Color: 'blue' }, 'echo-v2'],
    [{ Color: 'orange' }, 'no_route'],
    [{ 'Some-Other-Header': 'one' }, 'no_route'],
    [{ Color: 'blue' }, 'echo-v1'],
    [{ Color: 'green' }, 'echo-v1'],
    [{ Color: 'red' }, 'echo-v2'],
    [{ Color: 'yellow' }, 'echo-v2'],
    [{ Color: 'purple' }, 'no_route'],
  ];
  for (const [metadata, expected] of cases) {
    test(`${JSON.stringify(metadata)} → ${expected}`, () => {
      assert.equal(reach(table, grpcCall(ECHO, 'Echo', metadata)), expected);
    });
  }
});

describe('GRPCRoute conformance (mesh): weights (mesh/grpcroute-weight)', () => {
  const table = tableOf(
    compile(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: mesh-grpc-weighted-backends }
spec:
  parentRefs: [{ group: "", kind: Service, name: echo, port: 7070 }]
  rules:
  - backendRefs:
    - { name: echo-v1, port: 7070, weight: 70 }
    - { name: echo-v2, port: 7070, weight: 30 }
`),
  );
  test('calls split 70/30 by weight, each call on its own draw', () => {
    const counts = new Map<string, number>();
    const draws = 1000;
    for (let i = 0; i < draws; i++) {
      const backend = reach(table, grpcCall(ECHO, 'Echo'), () => (i + 0.5) / draws);
      counts.set(backend, (counts.get(backend) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(counts), { 'echo-v1': 700, 'echo-v2': 300 });
  });
  test('a rule without matches takes every gRPC call, and no plain HTTP request', () => {
    assert.equal(reach(table, grpcCall('any.Service', 'Any')), 'echo-v1');
    const plain = { port: undefined, method: 'GET', path: '/a/b', query: '', authority: 'echo:7070', headers: {} };
    assert.equal(planRoute(table, plain, () => 0.5).kind, 'no_route');
  });
});

describe('GRPCRoute conformance (mesh): request header modifier (mesh/grpcroute-request-header-modifier)', () => {
  const result = compile(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: grpc-request-header-modifier }
spec:
  parentRefs: [{ group: "", kind: Service, name: echo, port: 7070 }]
  rules:
  - matches: [{ method: { service: ${ECHO}, method: Echo } }]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: { set: [{ name: X-Header-Set, value: set-overwrites-values }] }
    backendRefs: [{ name: echo-v1, port: 7070 }]
  - matches: [{ method: { service: ${ECHO}, method: Echo } }]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: { add: [{ name: X-Header-Add, value: add-appends-values }] }
    backendRefs: [{ name: echo-v1, port: 7070 }]
  - matches: [{ method: { service: ${ECHO}, method: Echo } }]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: { remove: [X-Header-Remove] }
    backendRefs: [{ name: echo-v1, port: 7070 }]
  - matches: [{ method: { service: ${ECHO}, method: EchoTwo } }]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{ name: X-Header-Set-1, value: header-set-1 }, { name: X-Header-Set-2, value: header-set-2 }]
        add: [{ name: X-Header-Add-1, value: header-add-1 }, { name: X-Header-Add-2, value: header-add-2 }]
        remove: [X-Header-Remove-1, X-Header-Remove-2]
    backendRefs: [{ name: echo-v2, port: 7070 }]
`);
  const table = tableOf(result);
  test('Echo takes the first rule (set), EchoTwo sets, adds and removes at once', () => {
    const echo = planRoute(table, grpcCall(ECHO, 'Echo'), () => 0.5);
    assert.equal(echo.kind, 'forward');
    if (echo.kind !== 'forward') return;
    assert.equal(echo.backend.service, 'echo-v1');
    assert.deepEqual(echo.requestHeaders, [{ set: [{ name: 'x-header-set', value: 'set-overwrites-values' }], add: [], remove: [] }]);
    const two = planRoute(table, grpcCall(ECHO, 'EchoTwo'), () => 0.5);
    assert.equal(two.kind, 'forward');
    if (two.kind !== 'forward') return;
    assert.equal(two.backend.service, 'echo-v2');
    assert.deepEqual(two.requestHeaders, [
      {
        set: [
          { name: 'x-header-set-1', value: 'header-set-1' },
          { name: 'x-header-set-2', value: 'header-set-2' },
        ],
        add: [
          { name: 'x-header-add-1', value: 'header-add-1' },
          { name: 'x-header-add-2', value: 'header-add-2' },
        ],
        remove: ['x-header-remove-1', 'x-header-remove-2'],
      },
    ]);
  });
  test('the two later Echo rules can never be chosen, and the compiler says so', () => {
    const shadowed = result.diagnostics.filter((d) => d.code === 'TRL4002');
    assert.equal(shadowed.length, 2);
    assert.match(shadowed[0]!.message, /rules\[0\] of GRPCRoute "grpc-request-header-modifier"/);
  });
});

describe('GRPCRoute conformance (mesh): request mirror (mesh/grpcroute-request-mirror)', () => {
  const table = tableOf(
    compile(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: mesh-grpc-request-mirror }
spec:
  parentRefs: [{ group: "", kind: Service, name: echo, port: 7070 }]
  rules:
  - matches: [{ headers: [{ name: x-mirror-only, value: "true" }] }]
    filters:
    - type: RequestMirror
      requestMirror: { backendRef: { name: echo-v2, port: 7070 } }
    backendRefs: [{ name: echo-v1, port: 7070 }]
  - matches: [{ headers: [{ name: x-mirror-and-modify, value: "true" }] }]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{ name: X-Header-Set, value: set-overwrites-values }]
        add: [{ name: X-Header-Add, value: header-val-1 }, { name: X-Header-Add-Append, value: header-val-2 }]
        remove: [X-Header-Remove]
    - type: RequestMirror
      requestMirror: { backendRef: { name: echo-v2, port: 7070 } }
    backendRefs: [{ name: echo-v1, port: 7070 }]
`),
  );
  test('mirror only: the call goes to v1 and a copy of every call to v2', () => {
    const plan = planRoute(table, grpcCall(ECHO, 'Echo', { 'x-mirror-only': 'true' }), () => 0.5);
    assert.equal(plan.kind, 'forward');
    if (plan.kind !== 'forward') return;
    assert.equal(plan.backend.service, 'echo-v1');
    assert.deepEqual(plan.mirrors.map((m) => [m.backend.service, m.backend.port, m.numerator / m.denominator]), [['echo-v2', 7070, 1]]);
    assert.deepEqual(plan.requestHeaders, []);
  });
  test('mirror and modify: headers changed and mirrored', () => {
    const plan = planRoute(table, grpcCall(ECHO, 'Echo', { 'x-mirror-and-modify': 'true' }), () => 0.5);
    assert.equal(plan.kind, 'forward');
    if (plan.kind !== 'forward') return;
    assert.equal(plan.backend.service, 'echo-v1');
    assert.equal(plan.mirrors.length, 1);
    assert.deepEqual(plan.requestHeaders[0]!.remove, ['x-header-remove']);
  });
});

describe('GRPCRoute match compilation and precedence', () => {
  const route = (rules: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: r }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
${rules}`;

  test('service only, method only, and regular expressions select exactly the gRPC calls they name', () => {
    const table = tableOf(
      compile(
        route(`  - name: service-only
    matches: [{ method: { service: pkg.Svc } }]
    backendRefs: [{ name: echo-v1 }]
  - name: method-only
    matches: [{ method: { method: Get } }]
    backendRefs: [{ name: echo-v2 }]
  - name: regex
    matches: [{ method: { type: RegularExpression, service: "other\\\\.v[0-9]+\\\\.Svc|third\\\\.Svc", method: "List.*" } }]
    backendRefs: [{ name: echo }]
`),
      ),
    );
    const named = (call: ReturnType<typeof grpcCall>) => table.match({ ...call, port: 7070 })?.ruleName ?? 'none';
    // service only: any method of pkg.Svc, and not pkgXSvc (the dot is literal).
    assert.equal(named(grpcCall('pkg.Svc', 'Anything')), 'service-only');
    assert.equal(named(grpcCall('pkgXSvc', 'Anything')), 'none');
    assert.equal(named(grpcCall('pkg.Svc.Sub', 'Anything')), 'none');
    // method only: Get of any service, not GetAll.
    assert.equal(named(grpcCall('any.Service', 'Get')), 'method-only');
    assert.equal(named(grpcCall('any.Service', 'GetAll')), 'none');
    // regular expressions: each part matches its whole segment, alternatives stay inside their part.
    assert.equal(named(grpcCall('other.v2.Svc', 'ListAll')), 'regex');
    assert.equal(named(grpcCall('third.Svc', 'List')), 'regex');
    assert.equal(named(grpcCall('third.Svc', 'Get')), 'method-only');
    assert.equal(named(grpcCall('x.third.Svc', 'List')), 'none');
    assert.equal(named(grpcCall('other.v2.Svc', 'XList')), 'none');
    // The service wins over the method: pkg.Svc/Get has 7 service characters against none.
    assert.equal(named(grpcCall('pkg.Svc', 'Get')), 'service-only');
    const paths = Object.fromEntries(table.rules.filter((r) => r.kind).map((r) => [r.ruleName, `${r.match.path.type} ${r.match.path.value}`]));
    assert.deepEqual(paths, {
      'service-only': 'RegularExpression /pkg\\.Svc/[^/]+',
      'method-only': 'RegularExpression /[^/]+/Get',
      regex: 'RegularExpression /(?:other\\.v[0-9]+\\.Svc|third\\.Svc)/(?:List.*)',
    });
  });

  test('precedence: most service characters, then method characters, then headers; ties by route name then rule order', () => {
    const result = compile(
      route(`  - name: short-service
    matches: [{ method: { service: a.B } }]
    backendRefs: [{ name: echo-v1 }]
  - name: long-service
    matches: [{ method: { service: a.Longer } }]
    backendRefs: [{ name: echo-v1 }]
  - name: exact
    matches: [{ method: { service: a.B, method: M } }]
    backendRefs: [{ name: echo-v1 }]
  - name: with-header
    matches: [{ method: { service: a.B, method: M }, headers: [{ name: x, value: "1" }] }]
    backendRefs: [{ name: echo-v2 }]
  - name: method-only
    matches: [{ method: { method: LongMethodName } }]
    backendRefs: [{ name: echo-v1 }]
`),
      `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: q }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - name: any
    backendRefs: [{ name: echo }]
`,
    );
    const table = tableOf(result);
    assert.deepEqual(
      table.rules.map((r) => r.ruleName ?? r.id),
      ['long-service', 'with-header', 'exact', 'short-service', 'method-only', 'any'],
    );
    assert.equal(table.match({ ...grpcCall('a.B', 'M', { x: '1' }), port: 7070 })?.ruleName, 'with-header');
    assert.equal(table.match({ ...grpcCall('a.B', 'M'), port: 7070 })?.ruleName, 'exact');
    assert.equal(table.match({ ...grpcCall('a.B', 'N'), port: 7070 })?.ruleName, 'short-service');
    assert.equal(table.match({ ...grpcCall('z.Z', 'LongMethodName'), port: 7070 })?.ruleName, 'method-only');
    assert.equal(table.match({ ...grpcCall('z.Z', 'Other'), port: 7070 })?.ruleName, 'any');
  });

  test('GRPCRoute rules come before HTTPRoute rules on the same service; plain HTTP reaches the HTTPRoute', () => {
    const result = compile(
      route(`  - matches: [{ method: { service: pkg.Svc } }]
    backendRefs: [{ name: echo-v2 }]
`),
      `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: a-http }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - matches: [{ path: { type: Exact, value: /pkg.Svc/Get } }]
    backendRefs: [{ name: echo-v1 }]
`,
    );
    const table = tableOf(result);
    assert.deepEqual(
      table.rules.map((r) => `${r.kind ?? 'HTTPRoute'} ${r.route}`),
      ['GRPCRoute r', 'HTTPRoute a-http'],
    );
    assert.equal(reach(table, grpcCall('pkg.Svc', 'Get')), 'echo-v2');
    const plain = { port: undefined, method: 'POST', path: '/pkg.Svc/Get', query: '', authority: 'echo', headers: { 'content-type': 'application/json' } };
    assert.equal((planRoute(table, plain, () => 0.5) as { backend?: { service: string } }).backend?.service, 'echo-v1');
  });

  test('gRPC content types with a codec or parameters are gRPC calls; grpc-web and JSON are not', () => {
    const table = tableOf(compile(route(`  - backendRefs: [{ name: echo-v1 }]\n`)));
    const withType = (type: string) => reach(table, { ...grpcCall('a.B', 'C'), headers: { 'content-type': type } });
    assert.equal(withType('application/grpc'), 'echo-v1');
    assert.equal(withType('application/grpc+proto'), 'echo-v1');
    assert.equal(withType('application/grpc;charset=utf-8'), 'echo-v1');
    assert.equal(withType('application/grpc-web'), 'no_route');
    assert.equal(withType('application/json'), 'no_route');
  });
});

describe('GRPCRoute timeouts and retries (Trellis extensions)', () => {
  const rule = (result: CompileResult, name: string): CompiledRule => tableOf(result).rules.find((r) => r.ruleName === name)!;

  test('codes by name compile to gRPC numbers; HTTP codes stay empty; default is unavailable', () => {
    const result = compile(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: r }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - name: named
    matches: [{ method: { method: A } }]
    retry: { codes: [resource-exhausted, unavailable, deadline-exceeded], attempts: 3, backoff: 50ms }
    timeouts: { request: 2s, backendRequest: 500ms }
    backendRefs: [{ name: echo-v1 }]
  - name: defaulted
    matches: [{ method: { method: B } }]
    backendRefs: [{ name: echo-v1 }]
  - name: off
    matches: [{ method: { method: C } }]
    retry: { attempts: 0 }
    backendRefs: [{ name: echo-v1 }]
`);
    assert.deepEqual(rule(result, 'named').retry, { attempts: 3, codes: [], backoffMs: 50, grpcCodes: [4, 8, 14] });
    assert.deepEqual(rule(result, 'named').timeouts, { requestMs: 2000, backendRequestMs: 500 });
    assert.deepEqual(rule(result, 'defaulted').retry, { attempts: 2, codes: [], backoffMs: 25, grpcCodes: [14] });
    assert.deepEqual(rule(result, 'off').retry, { attempts: 0, codes: [], backoffMs: 25, grpcCodes: [] });
    assert.equal(rule(result, 'named').kind, 'GRPCRoute');
  });

  test('Mesh defaults apply to GRPCRoute rules, and the implicit rule of a grpc service retries unavailable', () => {
    const mesh = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec:
  trustDomain: test.local
  access: { default: allow }
  defaults:
    timeouts: { request: 3s }
    retry: { attempts: 1, backoff: 10ms, codes: [503] }
`;
    const text = meshWith(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: r }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - name: only
    backendRefs: [{ name: echo-v1 }]
`).replace(/^apiVersion: trellis.dev\/v1alpha1\nkind: Mesh\n[\s\S]*?(?=---)/, mesh);
    const result = compileTexts({ 'spec.yaml': text });
    const only = rule(result, 'only');
    assert.deepEqual(only.retry, { attempts: 1, codes: [], backoffMs: 10, grpcCodes: [14] });
    assert.equal(only.timeouts.requestMs, 3000);
    const implicit = tableOf(result, 'echo-v1').rules;
    assert.deepEqual(
      implicit.map((r) => [r.id, r.retry]),
      [['default', { attempts: 1, codes: [503], backoffMs: 10, grpcCodes: [14] }]],
    );
  });

  test('an HTTP service keeps its implicit rule without gRPC codes', () => {
    const table = tableOf(compile(), 'client');
    assert.equal(table.rules[0]!.retry.grpcCodes, undefined);
    assert.equal(table.rules[0]!.kind, undefined);
  });
});

describe('appProtocol and the routes that may attach', () => {
  const svc = (name: string, ports: string) => `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec:
  ports: ${ports}
  endpoints: { static: [{ address: 127.0.0.1, port: 16200 }] }
`;
  const grpcRoute = (parent: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: g }
spec:
  parentRefs: [${parent}]
  rules:
  - backendRefs: [{ name: echo-v1 }]
`;
  const httpRoute = (parent: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: h }
spec:
  parentRefs: [${parent}]
  rules:
  - backendRefs: [{ name: echo-v1 }]
`;

  test('ports carry their protocol into inbound and cluster; kubernetes.io/h2c is http2', () => {
    const result = compile(svc('mixed', '[{ name: web, port: 80 }, { name: h2, port: 81, appProtocol: kubernetes.io/h2c }, { name: rpc, port: 82, appProtocol: grpc }, { name: raw, port: 83, appProtocol: tcp }]'));
    assert.deepEqual(errors(result), []);
    const inbound = result.mesh!.configs.get('mixed')!.resources.find((r) => r.name === 'inbound')!.body as InboundBody;
    assert.deepEqual(inbound.ports.map((p) => p.protocol), ['http', 'http2', 'grpc', 'tcp']);
    // Only the grpc port's implicit rule retries gRPC statuses; each port keeps its own.
    const table = tableOf(result, 'mixed');
    assert.deepEqual(
      table.rules.map((r) => [r.id, r.retry.grpcCodes ?? null]),
      [
        ['default/80', null],
        ['default/81', null],
        ['default/82', [14]],
        ['default/83', null],
      ],
    );
  });

  test('a route on a tcp port is an error (TRL4027); on the whole service it leaves the tcp port to its implicit rule', () => {
    const onTcp = compile(svc('raw', '[{ port: 5140, appProtocol: tcp }]'), httpRoute('{ kind: Service, name: raw }'));
    assert.deepEqual(
      onTcp.diagnostics.filter((d) => d.severity === 'error').map((d) => d.code),
      ['TRL4027'],
    );
    const grpcOnTcp = compile(svc('raw', '[{ name: s, port: 5140, appProtocol: tcp }]'), grpcRoute('{ kind: Service, name: raw, sectionName: s }'));
    assert.deepEqual(grpcOnTcp.diagnostics.filter((d) => d.severity === 'error').map((d) => d.code), ['TRL4027']);
    const mixed = compile(svc('both', '[{ port: 80 }, { port: 5140, appProtocol: tcp }]'), httpRoute('{ kind: Service, name: both }'));
    const table = tableOf(mixed, 'both');
    assert.deepEqual(
      table.rules.map((r) => `${r.id} port ${r.match.port}`),
      ['h/0/0 port 80', 'default/5140 port 5140'],
    );
  });

  test('a GRPCRoute on an HTTP/1.1 port is an error (TRL4028); on the whole service it attaches to the HTTP/2 ports only', () => {
    const onHttp = compile(svc('web1', '[{ port: 80 }]'), grpcRoute('{ kind: Service, name: web1 }'));
    assert.deepEqual(onHttp.diagnostics.filter((d) => d.severity === 'error').map((d) => d.code), ['TRL4028']);
    const explicit = compile(svc('web1', '[{ port: 80 }, { port: 90, appProtocol: grpc }]'), grpcRoute('{ kind: Service, name: web1, port: 80 }'));
    assert.deepEqual(explicit.diagnostics.filter((d) => d.severity === 'error').map((d) => d.code), ['TRL4028']);
    const mixed = compile(svc('both', '[{ port: 80 }, { port: 90, appProtocol: grpc }, { port: 91, appProtocol: http2 }]'), grpcRoute('{ kind: Service, name: both }'));
    assert.deepEqual(
      tableOf(mixed, 'both').rules.map((r) => `${r.id} port ${r.match.port}`),
      ['g/0/0 port 90', 'g/0/0 port 91', 'default/80 port 80'],
    );
    // An HTTPRoute may route gRPC paths on a grpc port: no diagnostic.
    const httpOnGrpc = compile(httpRoute('{ kind: Service, name: echo }'));
    assert.deepEqual(errors(httpOnGrpc), []);
  });

  test('an AccessPolicy rule with `to` on a tcp service is warned about (TRL4029), one without is not', () => {
    const policy = (to: string) => `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: p }
spec:
  targetRefs: [{ kind: Service, name: raw }]
  rules:
  - from: [{ service: client }]
${to}`;
    const withTo = compile(svc('raw', '[{ port: 5140, appProtocol: tcp }]'), policy('    to: [{ methods: [GET] }]\n'));
    const warned = withTo.diagnostics.filter((d) => d.code === 'TRL4029');
    assert.equal(warned.length, 1);
    assert.match(warned[0]!.message, /speaks only tcp/);
    const without = compile(svc('raw', '[{ port: 5140, appProtocol: tcp }]'), policy(''));
    assert.deepEqual(without.diagnostics.filter((d) => d.code === 'TRL4029'), []);
    const mixed = compile(svc('raw', '[{ port: 80 }, { port: 5140, appProtocol: tcp }]'), policy('    to: [{ methods: [GET] }]\n'));
    assert.match(mixed.diagnostics.find((d) => d.code === 'TRL4029')!.message, /port 5140 of service "raw" speaks tcp/);
  });

  test('schema: appProtocol values, GRPCRoute method matches and status names', () => {
    const bad = compile(
      svc('x', '[{ port: 80, appProtocol: udp }]'),
      `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: bad }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - matches: [{ method: { type: Exact } }, { method: { service: "not/valid" } }, { method: { method: "Get.All" } }]
    retry: { codes: [unavailible] }
    filters: [{ type: RequestRedirect }]
    backendRefs: [{ name: echo-v1 }]
`,
    );
    const found = bad.diagnostics.map((d) => `${d.code} ${d.message}`);
    assert.ok(found.some((m) => /^TRL2004 spec\.ports\[0\]\.appProtocol may not be "udp"/.test(m)), found.join('\n'));
    assert.ok(found.some((m) => m === 'TRL2001 spec.rules[0].matches[0].method needs at least one of "service", "method"'), found.join('\n'));
    assert.ok(found.some((m) => /^TRL2005 spec\.rules\[0\]\.matches\[1\]\.method\.service is "not\/valid", which is not a gRPC service name/.test(m)), found.join('\n'));
    assert.ok(found.some((m) => /^TRL2005 spec\.rules\[0\]\.matches\[2\]\.method\.method/.test(m)), found.join('\n'));
    assert.ok(found.some((m) => /^TRL2004 spec\.rules\[0\]\.retry\.codes\[0\] may not be "unavailible"/.test(m)), found.join('\n'));
    assert.ok(found.some((m) => /^TRL2004 spec\.rules\[0\]\.filters\[0\]\.type may not be "RequestRedirect"/.test(m)), found.join('\n'));
    const bad2 = compile(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: re }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - matches: [{ method: { type: RegularExpression, service: "a)|(b" } }]
    backendRefs: [{ name: echo-v1 }]
`);
    assert.deepEqual(bad2.diagnostics.filter((d) => d.severity === 'error').map((d) => d.code), ['TRL4007']);
  });

  test('a backend that cannot carry the calls is warned about (TRL4030)', () => {
    const result = compile(
      svc('legacy', '[{ port: 7070 }]'),
      svc('raw', '[{ port: 5140, appProtocol: tcp }]'),
      `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: g }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - backendRefs: [{ name: echo-v1 }, { name: legacy }]
    filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: raw } } }]
`,
      `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: h }
spec:
  parentRefs: [{ kind: Service, name: client }]
  rules:
  - backendRefs: [{ name: raw }, { name: echo-v1 }]
`,
    );
    assert.deepEqual(
      result.diagnostics.filter((d) => d.code === 'TRL4030').map((d) => d.message.replace(/, so they will fail$/, '')),
      [
        'GRPCRoute "g" sends calls to service "legacy", which speaks HTTP/1.1 (appProtocol http): gRPC calls need HTTP/2 to the app',
        'GRPCRoute "g" sends calls to service "raw", which speaks tcp: gRPC calls need HTTP/2 to the app',
        'HTTPRoute "h" sends calls to service "raw", which speaks tcp: an HTTP request cannot be carried to a TCP port',
      ],
    );
  });

  test('a GRPCRoute in another namespace is a consumer route: only callers of its namespace follow it', () => {
    const team = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: caller, namespace: team }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 16400 }] } }
`;
    const consumer = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: to-echo, namespace: team }
spec:
  parentRefs: [{ kind: Service, name: echo, namespace: default }]
  rules:
  - backendRefs: [{ name: echo, namespace: default }]
    timeouts: { request: 1s }
`;
    const result = compile(team, consumer, grpcRoute('{ kind: Service, name: echo }'));
    assert.deepEqual(errors(result), []);
    const tableFor = (caller: string) => new RouteTable(result.mesh!.configs.get(caller)!.resources.find((r) => r.name === 'route/echo')!.body as RouteBody);
    assert.equal(reach(tableFor('team/caller'), grpcCall('a.B', 'C')), 'echo');
    assert.equal(tableFor('team/caller').rules[0]!.timeouts.requestMs, 1000);
    assert.equal(reach(tableFor('client'), grpcCall('a.B', 'C')), 'echo-v1');
  });

  test('a cross-namespace backendRef of a GRPCRoute needs a ReferenceGrant from GRPCRoutes', () => {
    const other = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: far, namespace: other }
spec:
  ports: [{ port: 7070, appProtocol: grpc }]
  endpoints: { static: [{ address: 127.0.0.1, port: 16300 }] }
`;
    const route = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: g }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - backendRefs: [{ name: far, namespace: other }]
`;
    const grant = (kind: string) => `apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: g, namespace: other }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: ${kind}, namespace: default }]
  to: [{ group: "", kind: Service }]
`;
    const missing = compile(other, route);
    assert.match(missing.diagnostics.find((d) => d.code === 'TRL3009')!.message, /lets GRPCRoutes from namespace "default"/);
    assert.ok(compile(other, route, grant('HTTPRoute')).diagnostics.some((d) => d.code === 'TRL3009'), 'a grant for HTTPRoutes does not admit GRPCRoutes');
    assert.ok(!compile(other, route, grant('GRPCRoute')).diagnostics.some((d) => d.code === 'TRL3009'));
  });
});
