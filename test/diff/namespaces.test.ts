/** The diff across namespaces: service keys in the change set, consumer route tables kept apart from producer tables. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { consumerTableName, diffMeshes } from '../../src/diff/diff-meshes.ts';
import { renderMarkdown } from '../../src/diff/render-markdown.ts';
import { compileTexts } from '../helpers/spec.ts';

const SPEC = {
  'mesh.yaml': `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec: { trustDomain: test.local, access: { default: allow } }
`,
  'services.yaml': ['api', 'api-v2']
    .map((name, i) => `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name}, namespace: payments }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${16001 + i} }] } }
`)
    .concat(
      `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: web, namespace: shop }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 16009 }] } }
`,
      `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: batch }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 16010 }] } }
`,
    )
    .join('---\n'),
};

const CONSUMER = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api-canary, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: api, namespace: payments }]
  rules:
    - backendRefs: [{ name: api, namespace: payments, weight: 50 }, { name: api-v2, namespace: payments, weight: 50 }]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: shop, namespace: payments }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop }]
  to: [{ group: "", kind: Service }]
`;

describe('diff across namespaces', () => {
  test('adding a consumer route changes the shop\'s table only, and says so by name', () => {
    const base = compileTexts(SPEC);
    const head = compileTexts({ ...SPEC, 'consumer.yaml': CONSUMER });
    assert.deepEqual(head.diagnostics, []);
    const set = diffMeshes(base, head);
    const shopTable = consumerTableName('payments/api', 'shop');
    assert.equal(shopTable, 'payments/api (callers in shop)');
    assert.deepEqual(set.services.map((s) => [s.service, s.change]), [[shopTable, 'added']]);
    assert.deepEqual(set.servicesAdded, [], 'a consumer table is a routing change, not a new service');
    assert.equal(set.counts.traffic, 1);
    const added = set.services[0]!;
    assert.deepEqual(added.rules[0]!.shares.map((s) => [s.backend, s.after]), [['payments/api', 50], ['payments/api-v2', 50]]);
    // Only the shop's sidecar changes; batch and the payments services keep their configs.
    assert.deepEqual(set.sidecars.map((s) => s.service), ['shop/web']);
    assert.ok(set.sidecars[0]!.resources.includes('route/payments/api'));
    assert.match(renderMarkdown(set), /payments\/api \(callers in shop\)/);
  });

  test('the producer table is read from every caller alike, whatever order configs come in', () => {
    const head = compileTexts({ ...SPEC, 'consumer.yaml': CONSUMER });
    const same = diffMeshes(head, compileTexts({ 'consumer.yaml': CONSUMER, ...SPEC }));
    assert.deepEqual(same.services, []);
  });
});
