/** `trellis explain` and TrafficTests for gRPC calls and TCP connections, on the shop example and small specs. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { compileDir } from '../../src/compiler/compile.ts';
import { explain, grpcExplainRequest, renderExplanation } from '../../src/explain/explain.ts';
import { compileTexts } from '../helpers/spec.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SHOP = fileURLToPath(new URL('../../examples/shop', import.meta.url));
const REVIEWS = 'shop.reviews.v1.Reviews';

function trellis(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, ['bin/trellis.js', ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' } }, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr })),
  );
}

describe('explain: gRPC calls on the shop', async () => {
  const shop = await compileDir(SHOP);

  test('a gRPC call is shown as one, GRPCRoute rules are named, and the split and retry are explained', () => {
    const e = explain(shop, grpcExplainRequest('frontend', 'reviews', REVIEWS, 'ListReviews'), 'examples/shop');
    assert.deepEqual(
      e.rules.map((r) => [r.kind, r.ruleName, r.matched, r.failed]),
      [
        ['GRPCRoute', 'canary-opt-in', false, 'header x-canary = "1"'],
        ['GRPCRoute', 'weighted-split', true, null],
      ],
    );
    assert.deepEqual(e.matched?.retry.grpcCodes, [14]);
    assert.equal(e.protocol, 'grpc');
    const text = renderExplanation(e);
    assert.match(text, /^gRPC shop\.reviews\.v1\.Reviews\/ListReviews \(POST \/shop\.reviews\.v1\.Reviews\/ListReviews\) from frontend to reviews:50051\n/);
    assert.match(text, /✓ GRPCRoute reviews\/1\/0 "weighted-split"  \[examples\/shop\/routes\/reviews\.yaml:\d+:\d+\]  matches/);
    assert.match(text, /Retries: up to 1 on gRPC unavailable and on connect failures/);
    assert.match(text, /Outcome: gRPC shop\.reviews\.v1\.Reviews\/ListReviews from frontend goes to reviews 90%, reviews-v2 10%/);
    assert.doesNotMatch(text, /content-type/, 'the gRPC content type is implied, not listed as a header');
  });

  test('what an earlier rule needed reads as the service it selects; no match answers unimplemented', () => {
    const e = explain(shop, grpcExplainRequest('frontend', 'reviews', 'shop.other.Other', 'Get', { 'x-canary': '1' }), 'examples/shop');
    assert.deepEqual(
      e.rules.map((r) => r.failed),
      [`gRPC ${REVIEWS}/*`, `gRPC ${REVIEWS}/*`],
    );
    assert.match(e.outcome, /answers gRPC status unimplemented \(no_route\)/);
  });

  test('a plain HTTP request to the gRPC service does not take a GRPCRoute rule', () => {
    const e = explain(shop, { from: 'frontend', to: 'reviews', method: 'POST', path: `/${REVIEWS}/ListReviews`, query: '', headers: {} }, '');
    assert.deepEqual(
      e.rules.map((r) => r.failed),
      ['a gRPC call (content-type application/grpc)', 'a gRPC call (content-type application/grpc)'],
    );
    assert.equal(e.matched, null);
  });

  test('a TCP port is explained as a connection', () => {
    const e = explain(shop, { from: 'checkout', to: 'audit-log', method: 'GET', path: '/', query: '', headers: {} }, '');
    assert.equal(e.protocol, 'tcp');
    assert.match(e.outcome, /^a TCP connection from checkout goes to audit-log 100%/);
    const denied = explain(shop, { from: 'frontend', to: 'audit-log', method: 'GET', path: '/', query: '', headers: {} }, '');
    assert.equal(denied.reachable.ok, false);
  });

  test('trellis explain --grpc on the command line, and a malformed --grpc is a usage error', async () => {
    const ok = await trellis(['explain', 'examples/shop', '--from', 'frontend', '--to', 'reviews', '--grpc', `${REVIEWS}/ListReviews`, '--header', 'x-canary=1']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /✓ GRPCRoute reviews\/0\/0 "canary-opt-in"/);
    assert.match(ok.stdout, /Outcome: gRPC shop\.reviews\.v1\.Reviews\/ListReviews from frontend goes to reviews-v2 100%/);
    const bad = await trellis(['explain', 'examples/shop', '--from', 'frontend', '--to', 'reviews', '--grpc', 'no-slash']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--grpc takes package\.Service\/Method/);
  });
});

describe('explain: access to a tcp port', () => {
  const spec = (to: string) => `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: t }
spec: { trustDomain: t.local, access: { default: deny } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: client }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: raw }
spec: { ports: [{ port: 5140, appProtocol: tcp }], endpoints: { static: [{ address: 127.0.0.1, port: 10 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: raw }
spec:
  targetRefs: [{ kind: Service, name: raw }]
  rules:
  - from: [{ service: client }]
${to}`;
  const connect = (to: string) => {
    const result = compileTexts({ 's.yaml': spec(to) });
    return explain(result, { from: 'client', to: 'raw', method: 'GET', path: '/', query: '', headers: {} }, '');
  };

  test('a rule with `to` admits no connection, whatever it names; a rule without `to` does', () => {
    for (const to of ['    to: [{ methods: [CONNECT] }]\n', '    to: [{ paths: [{ value: / }] }]\n']) {
      const e = connect(to);
      assert.equal(e.clusters[0]!.access!.allowed, false, to);
    }
    const open = connect('');
    assert.equal(open.clusters[0]!.access!.allowed, true);
    assert.match(open.clusters[0]!.access!.reason, /admitted by AccessPolicy "raw"/);
  });
});

describe('TrafficTests with request.grpc', () => {
  const spec = (test: string) => `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: t }
spec: { trustDomain: t.local, access: { default: allow } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: client }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: echo }
spec: { ports: [{ port: 7070, appProtocol: grpc }], endpoints: { static: [{ address: 127.0.0.1, port: 10 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: echo-v2 }
spec: { ports: [{ port: 7070, appProtocol: grpc }], endpoints: { static: [{ address: 127.0.0.1, port: 11 }] } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: echo }
spec:
  parentRefs: [{ kind: Service, name: echo }]
  rules:
  - matches: [{ method: { service: pkg.Echo, method: Two } }]
    backendRefs: [{ name: echo-v2 }]
    retry: { attempts: 3, codes: [unavailable, resource-exhausted] }
---
apiVersion: trellis.dev/v1alpha1
kind: TrafficTest
metadata: { name: t }
spec:
${test}`;

  test('expectations hold for the call named, and fail with an explain hint naming --grpc', () => {
    const pass = compileTexts({ 's.yaml': spec('  request: { from: client, to: echo, grpc: { service: pkg.Echo, method: Two } }\n  expect: { backend: echo-v2, retries: { max: 3 } }\n') });
    assert.deepEqual(pass.diagnostics.filter((d) => d.severity === 'error'), []);
    assert.equal(pass.trafficTests?.[0]?.ok, true);
    const fail = compileTexts({ 's.yaml': spec('  request: { from: client, to: echo, grpc: { service: pkg.Echo, method: One } }\n  expect: { outcome: routed }\n') });
    const d = fail.diagnostics.find((x) => x.code === 'TRL5001');
    assert.ok(d, 'a call no rule matches is no-route');
    assert.match(d.message, /expected outcome routed, got no-route/);
    assert.match(d.hint ?? '', /--grpc pkg\.Echo\/One/);
    const retries = compileTexts({ 's.yaml': spec('  request: { from: client, to: echo, grpc: { service: pkg.Echo, method: Two } }\n  expect: { retries: { max: 1 } }\n') });
    assert.match(retries.diagnostics.find((x) => x.code === 'TRL5001')!.message, /at most 1 retries, the rule allows 3/);
  });

  test('request.grpc with method or path is refused (TRL5002)', () => {
    const result = compileTexts({ 's.yaml': spec('  request: { from: client, to: echo, method: POST, grpc: { service: pkg.Echo, method: Two } }\n  expect: { backend: echo-v2 }\n') });
    const d = result.diagnostics.find((x) => x.code === 'TRL5002');
    assert.ok(d);
    assert.match(d.message, /request\.grpc names the call, so request\.method may not be given too/);
  });
});
