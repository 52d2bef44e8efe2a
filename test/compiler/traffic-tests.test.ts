/** TrafficTests: each kind of expectation holds and fails as it should, and failures block the compile. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BASE_SPEC, codes, compileTexts } from '../helpers/spec.ts';

const ROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - matches: [{ headers: [{ name: x-canary, value: "1" }] }]
      backendRefs: [{ name: api-v2, port: 80 }]
    - backendRefs: [{ name: api, port: 80, weight: 90 }, { name: api-v2, port: 80, weight: 10 }]
      timeouts: { request: 3s }
      retry: { attempts: 3 }
`;

function withTest(expect: string, request = 'from: web\n    to: api'): Record<string, string> {
  return {
    'base.yaml': BASE_SPEC,
    'route.yaml': ROUTE,
    'test.yaml': `apiVersion: trellis.dev/v1alpha1
kind: TrafficTest
metadata: { name: t }
spec:
  request:
    ${request}
  expect:
    ${expect}
`,
  };
}

describe('traffic test expectations', () => {
  const cases: Array<[string, string, string | undefined, boolean]> = [
    ['backend holds for the header route', 'backend: api-v2', 'from: web\n    to: api\n    headers: { X-Canary: "1" }', true],
    ['backend fails for the split', 'backend: api-v2', undefined, false],
    ['share within bounds', 'share: { backend: api-v2, min: 5, max: 10 }', undefined, true],
    ['share out of bounds', 'share: { backend: api-v2, max: 5 }', undefined, false],
    ['outcome routed', 'outcome: routed', undefined, true],
    ['outcome no-route is wrong here', 'outcome: no-route', undefined, false],
    ['timeout at most 5s', 'timeout: { max: 5s }', undefined, true],
    ['timeout at most 1s fails', 'timeout: { max: 1s }', undefined, false],
    ['retries at most 3', 'retries: { max: 3 }', undefined, true],
    ['retries at most 1 fails', 'retries: { max: 1 }', undefined, false],
  ];
  for (const [name, expect, request, passes] of cases) {
    test(name, () => {
      const result = compileTexts(withTest(expect, request));
      assert.deepEqual(codes(result), passes ? [] : ['TRL5001']);
      assert.equal(result.trafficTests?.[0]?.ok, passes);
      assert.equal(result.mesh === undefined, !passes, 'a failing test blocks the compile');
    });
  }

  test('denied: a caller the destination does not admit', () => {
    const deny = BASE_SPEC.replace('access: { default: allow }', 'access: { default: deny }');
    const result = compileTexts({ ...withTest('outcome: denied'), 'base.yaml': deny });
    assert.deepEqual(codes(result), []);
  });

  test('a request naming no service is invalid', () => {
    assert.deepEqual(codes(compileTexts(withTest('outcome: routed', 'from: web\n    to: nope'))), ['TRL5002']);
  });

  test('tests can be skipped', async () => {
    const { compileFiles } = await import('../../src/compiler/compile.ts');
    const { SourceFile } = await import('../../src/diagnostics/source-file.ts');
    const files = Object.entries(withTest('backend: api-v2')).map(([p, t]) => new SourceFile(p, t));
    assert.deepEqual(codes(compileFiles(files, { trafficTests: false })), []);
  });
});

describe('trellis test', () => {
  test('reports every test of the shop like a test runner', async () => {
    const bin = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
    const out = await new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile(process.execPath, [bin, 'test', 'examples/shop'], { cwd: fileURLToPath(new URL('../..', import.meta.url)), env: { ...process.env, NO_COLOR: '1' } }, (err, stdout) =>
        resolve({ code: err ? Number(err.code) : 0, stdout }),
      ),
    );
    assert.equal(out.code, 0);
    assert.match(out.stdout, /✓ canary-testers-reach-checkout-v2\n/);
    assert.match(out.stdout, /✓ review-testers-reach-reviews-v2\n/);
    assert.match(out.stdout, /9 passed, 0 failed\n$/);
  });
});
