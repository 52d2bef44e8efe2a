/**
 * The renderer prints at most DIAGNOSTICS_PER_FILE diagnostics per file, then one line
 * counting the rest of that file's: a file with thousands of problems does not bury the
 * first ones (or a terminal, or a PR comment) under megabytes of excerpts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileFiles } from '../../src/compiler/compile.ts';
import { DIAGNOSTICS_PER_FILE, renderDiagnostics } from '../../src/diagnostics/render.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';

function routeWithUnknownFields(name: string, n: number): string {
  const lines = Array.from({ length: n }, (_, i) => `  field${i}: ${i}`);
  return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name} }
spec:
  parentRefs: [{ kind: Service, name: api }]
${lines.join('\n')}
`;
}

test('each file prints its first diagnostics, then "… and N more in this file"; the summary counts all', () => {
  assert.equal(DIAGNOSTICS_PER_FILE, 50);
  const result = compileFiles([new SourceFile('a.yaml', routeWithUnknownFields('a', 200)), new SourceFile('b.yaml', routeWithUnknownFields('b', 3))]);
  assert.equal(result.diagnostics.length, 203);
  const text = renderDiagnostics(result.diagnostics, { pathPrefix: 'spec' });
  const blocks = text.trimEnd().split('\n\n');
  const headers = blocks.map((b) => b.split('\n')[0]!);
  assert.equal(headers.filter((h) => h.startsWith('spec/a.yaml:') && h.includes('error TRL2002')).length, 50);
  assert.equal(headers.filter((h) => h.startsWith('spec/b.yaml:') && h.includes('error TRL2002')).length, 3);
  // The count line follows a.yaml's 50th diagnostic, before b.yaml's.
  assert.match(headers[49]!, /unknown field "field49"/);
  assert.equal(headers[50], 'spec/a.yaml: … and 150 more in this file (150 errors)');
  assert.match(headers[51]!, /^spec\/b\.yaml:6:3: error TRL2002: unknown field "field0"/);
  assert.equal(headers.at(-1), '203 errors');
  assert.equal(blocks.length, 50 + 1 + 3 + 1);
});

test('maxPerFile sets the cap; Infinity prints every diagnostic', () => {
  const result = compileFiles([new SourceFile('a.yaml', routeWithUnknownFields('a', 60))]);
  const all = renderDiagnostics(result.diagnostics, { maxPerFile: Infinity });
  assert.equal(all.match(/error TRL2002/g)?.length, 60);
  assert.doesNotMatch(all, /more in this file/);
  const five = renderDiagnostics(result.diagnostics, { maxPerFile: 5 });
  assert.equal(five.match(/error TRL2002/g)?.length, 5);
  assert.match(five, /^a\.yaml: … and 55 more in this file \(55 errors\)$/m);
  // A file at the cap exactly prints no count line.
  assert.doesNotMatch(renderDiagnostics(result.diagnostics, { maxPerFile: 60 }), /more in this file/);
});
