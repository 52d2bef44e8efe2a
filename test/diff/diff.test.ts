/** The diff's own rules: pairing, determinism, escaping, bounds. Specs are built in memory. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileFiles } from '../../src/compiler/compile.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';
import { changesTraffic } from '../../src/diff/change-set.ts';
import { diffMeshes } from '../../src/diff/diff-meshes.ts';
import { unifiedLineDiff } from '../../src/diff/line-diff.ts';
import { codeBlock, escapeMarkdown } from '../../src/diff/markdown-escape.ts';
import { affectedEdges, MAX_EDGES, renderFlowchart } from '../../src/diff/mermaid.ts';
import { fitMarkdown, renderMarkdown } from '../../src/diff/render-markdown.ts';
import { renderJson } from '../../src/diff/render-json.ts';
import { BASE_SPEC, compileTexts } from '../helpers/spec.ts';

const route = (rules: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
${rules}`;

const CANARY = (v1: number, v2: number, extra = '') => route(`    - matches: [{ headers: [{ name: x-canary, value: "1" }] }]
      backendRefs: [{ name: api-v2, port: 80 }]
    - backendRefs: [{ name: api, port: 80, weight: ${v1} }, { name: api-v2, port: 80, weight: ${v2} }]
${extra}`);

function diffTexts(base: Record<string, string>, head: Record<string, string>) {
  return diffMeshes(compileTexts(base), compileTexts(head));
}

describe('diffMeshes', () => {
  test('identical specs: no change at all', () => {
    const set = diffTexts({ 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(90, 10) }, { 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(90, 10) });
    assert.equal(changesTraffic(set), false);
    assert.deepEqual([set.services, set.access, set.sidecars, set.risks], [[], [], [], []]);
  });

  test('rules pair by match: reordering files or documents changes nothing, and the output is byte-identical', () => {
    const a = diffTexts({ 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(90, 10) }, { 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(50, 50) });
    const files = [new SourceFile('z.yaml', CANARY(50, 50)), new SourceFile('a.yaml', BASE_SPEC)];
    const b = diffMeshes(compileTexts({ 'r.yaml': CANARY(90, 10), 'a.yaml': BASE_SPEC }), compileFiles(files));
    assert.equal(renderJson(a), renderJson(b));
    assert.equal(renderMarkdown(a), renderMarkdown(b));
    const rule = a.services[0]!.rules[0]!;
    assert.equal(rule.change, 'changed');
    assert.deepEqual(rule.shares, [{ backend: 'api', before: 90, after: 50 }, { backend: 'api-v2', before: 10, after: 50 }]);
    assert.deepEqual(a.risks.map((r) => r.kind), ['large-shift', 'large-shift']);
  });

  test('a small canary step is not a large shift; a backend new to traffic is flagged once', () => {
    const small = diffTexts({ 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(95, 5) }, { 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(90, 10) });
    assert.deepEqual(small.risks, []);
    // Default deny: nobody may call api-v2 directly, so before the canary it gets no traffic at all.
    const deny = BASE_SPEC.replace('default: allow', 'default: deny') + `---
apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api-from-web }
spec:
  targetRefs: [{ kind: Service, name: api }]
  rules: [{ from: [{ service: web }] }]
`;
    const first = diffTexts({ 'a.yaml': deny, 'r.yaml': route('    - backendRefs: [{ name: api, port: 80 }]\n') }, { 'a.yaml': deny, 'r.yaml': CANARY(95, 5) });
    assert.deepEqual(first.risks.filter((r) => r.kind !== 'diagnostics').map((r) => [r.kind, r.service]), [['first-traffic', 'api-v2']]);
  });

  test('an edited match keeps its rule id and is one change with matchBefore', () => {
    const r = (path: string) => route(`    - matches: [{ path: { type: PathPrefix, value: ${path} } }]\n      backendRefs: [{ name: api-v2, port: 80 }]\n    - backendRefs: [{ name: api, port: 80 }]\n`);
    const set = diffTexts({ 'a.yaml': BASE_SPEC, 'r.yaml': r('/v2') }, { 'a.yaml': BASE_SPEC, 'r.yaml': r('/beta') });
    const rules = set.services[0]!.rules;
    assert.equal(rules.length, 1);
    assert.deepEqual([rules[0]!.change, rules[0]!.matchBefore, rules[0]!.match], ['changed', '/v2/*', '/beta/*']);
  });

  test('retries and timeouts set to none are flagged', () => {
    const set = diffTexts(
      { 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(95, 5, '      timeouts: { request: 2s }\n      retry: { attempts: 2, codes: [503] }\n') },
      { 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(95, 5, '      timeouts: { request: 0s }\n      retry: { attempts: 0 }\n') },
    );
    assert.deepEqual(set.risks.filter((r) => r.kind !== 'diagnostics').map((r) => r.kind), ['retry-removed', 'timeout-removed']);
  });

  test('a head that does not compile: no changes, a diagnostics risk, the head marked invalid', () => {
    const set = diffTexts({ 'a.yaml': BASE_SPEC }, { 'a.yaml': BASE_SPEC, 'r.yaml': route('    - backendRefs: [{ name: nope, port: 80 }]\n') });
    assert.equal(set.head.valid, false);
    assert.equal(changesTraffic(set), false);
    assert.equal(set.risks[0]!.kind, 'diagnostics');
    assert.equal(set.head.diagnostics[0]!.code, 'TRL3003');
  });
});

describe('markdown safety and bounds', () => {
  test('user text cannot mention people, link issues, break tables or inject HTML', () => {
    const text = escapeMarkdown('@octocat | #12 <img src=x> `code` [a](b) **x** :smile:\nnext');
    assert.doesNotMatch(text.replace(/&#?\w+;/g, ''), /[@|#<>`[\]*:\n]/);
    assert.match(text, /&#64;octocat &#124; &#35;12 &lt;img src=x&gt;/);
  });

  test('a code block is never closed by its content', () => {
    const block = codeBlock('a ``` b\n````\n', 'text');
    assert.ok(block.startsWith('`````text\n') && block.endsWith('\n`````'));
  });

  test('a header value with markdown and a mention comes out escaped in every table', () => {
    const evil = route(`    - matches: [{ headers: [{ name: x-user, value: "@admin|**x**" }] }]\n      backendRefs: [{ name: api-v2, port: 80 }]\n`);
    const md = renderMarkdown(diffTexts({ 'a.yaml': BASE_SPEC }, { 'a.yaml': BASE_SPEC, 'r.yaml': evil }));
    const outsideCode = md.replace(/^(`{3,})[a-z]*\n[\s\S]*?^\1$/gm, '');
    assert.doesNotMatch(outsideCode, /@admin|\*\*x\*\*/);
    assert.match(outsideCode, /x-user&#58; &#64;admin&#124;&#42;&#42;x&#42;&#42;/);
  });

  test('the flowchart is bounded and replaced by a table past MAX_EDGES', () => {
    const many = Array.from({ length: MAX_EDGES + 1 }, (_, i) => ({ from: `a${i}`, to: 'b', kind: 'granted' as const, label: 'may now call' }));
    assert.equal(renderFlowchart(many), null);
    assert.match(renderFlowchart(many.slice(0, 2))!, /^flowchart LR\n/);
  });

  test('fitMarkdown stays under any limit and says what it left out', () => {
    const set = diffTexts({ 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(90, 10) }, { 'a.yaml': BASE_SPEC, 'r.yaml': CANARY(10, 90) });
    const full = renderMarkdown(set);
    assert.equal(fitMarkdown(set), full);
    for (const limit of [full.length - 1, 900, 400]) {
      const fit = fitMarkdown(set, { limit, where: 'the job summary' });
      assert.ok(fit.length <= limit, `${fit.length} > ${limit}`);
      assert.match(fit, /The full diff is in the job summary\./);
      assert.ok(fit.startsWith('### Trellis traffic diff: 1 traffic change'), 'the summary line survives');
    }
    assert.ok(affectedEdges(set).length > 0);
  });
});

describe('unifiedLineDiff', () => {
  test('shows changed lines with context and hunk breaks', () => {
    const a = ['1', '2', '3', '4', '5', '6', '7', '8', '9'].join('\n') + '\n';
    const b = ['1', 'two', '3', '4', '5', '6', '7', '8', 'nine'].join('\n') + '\n';
    assert.equal(unifiedLineDiff(a, b, 1), ' 1\n-2\n+two\n 3\n@@\n 8\n-9\n+nine\n');
    assert.equal(unifiedLineDiff(a, a), '');
    assert.equal(unifiedLineDiff(null, 'x\n'), '+x\n');
  });
});
