/** The traffic diff and PR comment for GRPCRoute changes and gRPC/TCP ports. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { diffMeshes } from '../../src/diff/diff-meshes.ts';
import { renderMarkdown } from '../../src/diff/render-markdown.ts';
import { renderText } from '../../src/diff/render-text.ts';
import { compileTexts } from '../helpers/spec.ts';

const BASE = `apiVersion: trellis.dev/v1alpha1
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
metadata: { name: reviews }
spec: { ports: [{ port: 50051, appProtocol: grpc }], endpoints: { static: [{ address: 127.0.0.1, port: 10 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: reviews-v2 }
spec: { ports: [{ port: 50051, appProtocol: grpc }], endpoints: { static: [{ address: 127.0.0.1, port: 11 }] } }
`;

const route = (v1: number, v2: number, retry = '') => `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: reviews }
spec:
  parentRefs: [{ kind: Service, name: reviews }]
  rules:
  - matches: [{ method: { service: shop.Reviews }, headers: [{ name: x-canary, value: "1" }] }]
    backendRefs: [{ name: reviews-v2 }]
  - matches: [{ method: { service: shop.Reviews } }]
    backendRefs: [{ name: reviews, weight: ${v1} }, { name: reviews-v2, weight: ${v2} }]
${retry}`;

describe('diff of GRPCRoute changes', () => {
  test('a moved weight is a changed GRPCRoute rule, described by the gRPC call it selects', () => {
    const set = diffMeshes(compileTexts({ 'a.yaml': BASE, 'r.yaml': route(90, 10) }), compileTexts({ 'a.yaml': BASE, 'r.yaml': route(50, 50) }));
    const rules = set.services.find((s) => s.service === 'reviews')!.rules;
    assert.deepEqual(
      rules.map((r) => [r.change, r.kind, r.rule, r.match]),
      [['changed', 'GRPCRoute', 'reviews/1/0', 'gRPC shop.Reviews/*']],
    );
    assert.deepEqual(rules[0]!.shares, [
      { backend: 'reviews', before: 90, after: 50 },
      { backend: 'reviews-v2', before: 10, after: 50 },
    ]);
    const text = renderText(set, { color: false });
    assert.match(text, /changed GRPCRoute rule reviews\/1\/0: gRPC shop\.Reviews\/\*/);
    const md = renderMarkdown(set);
    assert.ok(md.includes('| reviews | gRPC shop.Reviews/&#42; (changed) | reviews-v2 | 10% | **50%** |'), md);
  });

  test('an added route lists its rules with kind, header match and gRPC retry codes', () => {
    const set = diffMeshes(compileTexts({ 'a.yaml': BASE }), compileTexts({ 'a.yaml': BASE, 'r.yaml': route(90, 10, '    retry: { attempts: 2, codes: [unavailable, resource-exhausted] }\n') }));
    const rules = set.services.find((s) => s.service === 'reviews')!.rules;
    const added = rules.filter((r) => r.change === 'added');
    assert.deepEqual(
      added.map((r) => [r.kind, r.match]),
      [
        ['GRPCRoute', 'gRPC shop.Reviews/* x-canary: 1'],
        ['GRPCRoute', 'gRPC shop.Reviews/*'],
      ],
    );
    assert.equal(added[1]!.settings.find((s) => s.setting === 'retries')!.after, '2× on gRPC resource-exhausted, gRPC unavailable, backoff 25ms');
    // The implicit rule that took every call before is gone.
    assert.deepEqual(
      rules.filter((r) => r.change === 'removed').map((r) => [r.kind, r.rule]),
      [[undefined, 'default']],
    );
    assert.match(renderMarkdown(set), /added GRPCRoute rule <code>reviews\/0\/0<\/code>/);
  });

  test('a port that changes protocol shows in the inbound settings', () => {
    const http = BASE.replace('{ port: 50051, appProtocol: grpc }], endpoints: { static: [{ address: 127.0.0.1, port: 10 }]', '{ port: 50051 }], endpoints: { static: [{ address: 127.0.0.1, port: 10 }]');
    const set = diffMeshes(compileTexts({ 'a.yaml': http }), compileTexts({ 'a.yaml': BASE }));
    const inbound = set.services.find((s) => s.service === 'reviews')!.inbound;
    assert.deepEqual(inbound, [{ setting: 'ports', before: '50051→50051', after: '50051→50051 grpc' }]);
  });
});
