/** `trellis explain` over the shop example: golden explanations, and agreement with the sidecar's own routing. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileDir } from '../../src/compiler/compile.ts';
import { explain, ExplainError, renderExplanation, type ExplainRequest } from '../../src/explain/explain.ts';
import { assertGolden } from '../helpers/golden.ts';

const SHOP = fileURLToPath(new URL('../../examples/shop', import.meta.url));
const GOLDEN = fileURLToPath(new URL('../golden/explain/', import.meta.url));
const shop = await compileDir(SHOP);

function req(from: string, to: string, extra: Partial<ExplainRequest> = {}): ExplainRequest {
  return { from, to, method: 'GET', path: '/', query: '', headers: {}, ...extra };
}

const CASES: Record<string, ExplainRequest> = {
  'canary-opt-in': req('frontend', 'checkout', { path: '/cart', headers: { 'x-canary': '1' } }),
  'canary-split': req('frontend', 'checkout', { method: 'POST', path: '/orders' }),
  'regex-product-page': req('cart', 'catalog', { path: '/products/42' }),
  'rewritten-legacy-path': req('frontend', 'catalog', { path: '/v1/items/42' }),
  'denied-at-destination': req('cart', 'catalog', { method: 'DELETE', path: '/products/1' }),
  'caller-may-not-call': req('frontend', 'payments', { method: 'POST', path: '/charges' }),
  'no-rule-matches': req('checkout', 'payments', { method: 'PATCH', path: '/charges/1' }),
};

describe('trellis explain on the shop', () => {
  for (const [name, request] of Object.entries(CASES)) {
    test(name, () => {
      const e = explain(shop, request, 'examples/shop');
      assertGolden(join(GOLDEN, `${name}.txt`), renderExplanation(e));
    });
  }

  test('the header route wins over the split, and each step points at its spec line', () => {
    const e = explain(shop, CASES['canary-opt-in']!, 'examples/shop');
    assert.equal(e.matched?.id, 'checkout/0/0');
    assert.deepEqual(e.matched?.backends.map((b) => [b.service, b.share]), [['checkout-v2', 1]]);
    assert.match(e.rules[0]!.at!, /^examples\/shop\/routes\/checkout\.yaml:\d+:\d+$/);
    assert.equal(e.matched?.timeouts.request.source, 'spec');
    assert.equal(e.matched?.retry.origin.source, 'mesh-default');
  });

  test('access is decided on the normalised path, as the destination sidecar does', () => {
    // inventory admits catalog for GET /stock only; a dot segment must not smuggle /reservations past it.
    const e = explain(shop, req('catalog', 'inventory', { path: '/stock/../reservations' }), 'examples/shop');
    assert.equal(e.clusters[0]!.access?.allowed, false);
    assert.equal(explain(shop, req('catalog', 'inventory', { path: '/stock//42' }), 'examples/shop').clusters[0]!.access?.allowed, true);
  });

  test('an admitting rule of the second policy on a service points at that rule', async () => {
    const { compileTexts } = await import('../helpers/spec.ts');
    const { BASE_SPEC } = await import('../helpers/spec.ts');
    const policy = (name: string, service: string) => `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ${name} }
spec: { targetRefs: [{ kind: Service, name: api }], rules: [{ from: [{ service: ${service} }] }] }`;
    const result = compileTexts({ 'mesh.yaml': BASE_SPEC.replace('default: allow', 'default: deny'), 'a.yaml': policy('first', 'api-v2'), 'b.yaml': policy('second', 'web') });
    const e = explain(result, req('web', 'api'), '');
    const access = e.clusters[0]!.access!;
    assert.equal(access.allowed, true);
    assert.equal(access.at, 'b.yaml:4:61', 'points at the admitting rule itself');
  });

  test('earlier rules say what they needed', () => {
    const e = explain(shop, CASES['denied-at-destination']!, 'examples/shop');
    assert.deepEqual(e.rules.map((r) => r.failed), ['method GET', 'path prefix /v1/items', null]);
    assert.equal(e.clusters[0]!.access?.allowed, false);
  });

  test('unknown services are errors, not explanations', () => {
    assert.throws(() => explain(shop, req('frontend', 'nosuch'), 'examples/shop'), ExplainError);
    assert.throws(() => explain(shop, req('payment-gateway', 'payments'), 'examples/shop'), /runs no sidecar/);
  });
});

describe('trellis explain --rev', () => {
  test('explains the spec as committed, not as in the working tree', async () => {
    const { createRepo } = await import('../helpers/git.ts');
    const { readFileSync, writeFileSync } = await import('node:fs');
    const { execFile } = await import('node:child_process');
    const repo = createRepo();
    try {
      const files: Record<string, string> = {};
      for (const f of ['mesh.yaml', 'services.yaml', 'route.yaml', 'access.yaml']) files[`spec/${f}`] = readFileSync(fileURLToPath(new URL(`../../examples/minimal/${f}`, import.meta.url)), 'utf8');
      repo.commit(files, 'minimal');
      // Uncommitted: api's route now redirects.
      writeFileSync(join(repo.work, 'spec/route.yaml'), files['spec/route.yaml']!.replace(/backendRefs:[\s\S]*$/, 'filters: [{ type: RequestRedirect, requestRedirect: { statusCode: 302 } }]\n'));
      const run = (args: string[]) =>
        new Promise<string>((resolve, reject) =>
          execFile(process.execPath, [fileURLToPath(new URL('../../bin/trellis.js', import.meta.url)), 'explain', join(repo.work, 'spec'), '--from', 'web', '--to', 'api', ...args], (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout))),
        );
      assert.match(await run([]), /Redirect: 302/);
      const committed = await run(['--rev', 'HEAD']);
      assert.match(committed, /Backends: api:80 100%/);
      assert.doesNotMatch(committed, /Redirect/);
    } finally {
      repo.remove();
    }
  });
});

const namespacesMesh = await compileDir(fileURLToPath(new URL('../../examples/namespaces', import.meta.url)));

describe('trellis explain across namespaces (examples/namespaces)', () => {
  const mesh = namespacesMesh;
  const NS_CASES: Record<string, ExplainRequest> = {
    'namespaces-consumer-route': req('shop/checkout', 'payments/api', { method: 'POST', path: '/charges' }),
    'namespaces-producer-route': req('payments/reports', 'payments/api', { path: '/summaries' }),
    'namespaces-namespace-denied': req('shop/frontend', 'payments/ledger'),
  };
  for (const [name, request] of Object.entries(NS_CASES)) {
    test(name, () => assertGolden(join(GOLDEN, `${name}.txt`), renderExplanation(explain(mesh, request, 'examples/namespaces'))));
  }

  test('a caller in the consumer route\'s namespace follows it; a caller elsewhere follows the producer route', () => {
    const shop = explain(mesh, NS_CASES['namespaces-consumer-route']!, 'examples/namespaces');
    assert.equal(shop.consumerNamespace, 'shop');
    assert.equal(shop.matched?.id, 'shop/payments-api/0/0');
    assert.deepEqual(shop.matched?.backends.map((b) => [b.service, b.share]), [['payments/api', 0.9], ['payments/api-v2', 0.1]]);
    assert.match(shop.rules[0]!.at!, /^examples\/namespaces\/shop\/payments-route\.yaml:\d+:\d+$/);
    const reports = explain(mesh, NS_CASES['namespaces-producer-route']!, 'examples/namespaces');
    assert.equal(reports.consumerNamespace, null);
    assert.equal(reports.matched?.id, 'payments/api/0/0');
    assert.equal(reports.matched?.retry.origin.source, 'spec');
  });

  test('access is decided with the caller\'s own identity, namespace prefixes included', () => {
    const e = explain(mesh, NS_CASES['namespaces-consumer-route']!, 'examples/namespaces');
    assert.equal(e.clusters[0]!.access?.allowed, true);
    assert.match(e.clusters[0]!.access!.at!, /payments\/access\.yaml/);
    const denied = explain(mesh, NS_CASES['namespaces-namespace-denied']!, 'examples/namespaces');
    assert.equal(denied.reachable.ok, false);
    assert.match(denied.reachable.reason, /spiffe:\/\/cluster\.example\/ns\/shop\/sa\/frontend/);
  });

  test('an unknown host is explained by the Mesh egress setting', () => {
    assert.throws(() => explain(mesh, req('shop/frontend', 'example.com'), 'examples/namespaces'), /refused with 404 unknown_service \(Mesh egress mode refuse\)/);
  });
});
