/**
 * The kind schemas are compiled to JavaScript ahead of time (scripts/build-validators.ts →
 * src/compiler/validators.generated.js). These tests hold the committed code to the
 * schemas (not stale), and its verdicts and errors to those of ajv compiling the same
 * schemas at runtime, on every document of the examples and golden specs and on thousands
 * of broken variants of them.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildValidators, createAjv, OUT_DTS, OUT_JS } from '../../scripts/build-validators.ts';
import { parseSpecFiles } from '../../src/compiler/load.ts';
import { validators } from '../../src/compiler/validators.generated.js';
import { equal, ucs2length, withinMaxDuration } from '../../src/compiler/validators-runtime.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';
import type { SpecKind } from '../../src/spec/types.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

test('the generated validators are not stale (run npm run build:validators and commit them)', () => {
  const { js, dts } = buildValidators();
  assert.ok(js === readFileSync(OUT_JS, 'utf8'), 'src/compiler/validators.generated.js differs from a fresh build: run npm run build:validators and commit it');
  assert.ok(dts === readFileSync(OUT_DTS, 'utf8'), 'src/compiler/validators.generated.d.ts differs from a fresh build: run npm run build:validators and commit it');
});

test('the build is deterministic', () => {
  assert.equal(buildValidators().js, buildValidators().js);
});

/** Every *.yaml under a folder. */
function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && /\.ya?ml$/.test(entry.name)) out.push(join(entry.parentPath, entry.name));
  }
  return out.sort();
}

/** Parsed documents of the example and golden specs (those of a known kind). */
function corpus(): Array<{ kind: SpecKind; value: Record<string, unknown> }> {
  const files = [...yamlFiles(join(ROOT, 'examples')), ...yamlFiles(join(ROOT, 'test/golden'))].map((p) => new SourceFile(p, readFileSync(p, 'utf8')));
  return parseSpecFiles(files).documents.map((d) => ({ kind: d.kind, value: d.value }));
}

/**
 * Broken variants of a document: each leaf replaced by values of other shapes and limits
 * (a number, long strings, durations over the bound, null, a mapping), an unknown field in
 * each mapping, and each list's first item repeated.
 */
function* variants(value: unknown): Generator<unknown> {
  // 40 emoji: 40 characters for JSON Schema's length limits, 80 UTF-16 units.
  const replacements: unknown[] = [7, -1, 'x'.repeat(300), '25h', '90000s', 'not a name!', null, {}, [], true, '\u{1F600}'.repeat(40)];
  function* at(node: unknown, rebuild: (v: unknown) => unknown): Generator<unknown> {
    if (Array.isArray(node)) {
      if (node.length > 0) yield rebuild([...node, structuredClone(node[0])]);
      for (let i = 0; i < node.length; i++) yield* at(node[i], (v) => rebuild(node.map((x, j) => (j === i ? v : x))));
    } else if (typeof node === 'object' && node !== null) {
      yield rebuild({ ...node, bogusField: 1 });
      for (const [k, v] of Object.entries(node)) yield* at(v, (w) => rebuild({ ...node, [k]: w }));
    } else {
      for (const r of replacements) if (r !== node) yield rebuild(structuredClone(r));
    }
  }
  yield* at(value, (v) => v);
}

test('the generated validators judge like ajv compiling the schemas at runtime, errors and all', () => {
  const { ajv, idOfKind } = createAjv();
  const docs = corpus();
  assert.ok(docs.length >= 40, `the corpus has ${docs.length} documents`);
  const kinds = new Set<SpecKind>();
  let checked = 0;
  let failing = 0;
  for (const { kind, value } of docs) {
    kinds.add(kind);
    const reference = ajv.getSchema(idOfKind[kind])!;
    for (const v of [value, ...variants(value)]) {
      const ok = validators[kind](v);
      assert.equal(ok, reference(v), `${kind} ${JSON.stringify(v)}`);
      if (!ok) {
        failing++;
        assert.deepEqual(validators[kind].errors, reference.errors, `${kind} ${JSON.stringify(v)}`);
      }
      checked++;
    }
  }
  assert.deepEqual([...kinds].sort(), Object.keys(idOfKind).sort(), 'the corpus has documents of every kind');
  assert.ok(failing > 5000, `only ${failing} of ${checked} variants were invalid`);
});

test('the runtime helpers of the generated code', () => {
  assert.equal(withinMaxDuration('24h', 86_400_000), true);
  assert.equal(withinMaxDuration('23h59m60s', 86_400_000), true);
  assert.equal(withinMaxDuration('24h1ms', 86_400_000), false);
  assert.equal(withinMaxDuration('not a duration', 86_400_000), true, 'left to the pattern');
  assert.equal(ucs2length(''), 0);
  assert.equal(ucs2length('ab\u{1F600}'), 3, 'a surrogate pair is one character');
  assert.equal(ucs2length('a\ud800'), 2, 'a lone surrogate is one character');
  assert.equal(ucs2length('\udc00\ud800'), 2);
  // Against the string iterator, which also yields a pair as one and a lone half as one.
  const units = [0x61, 0x7a, 0xd7ff, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xe000, 0xffff];
  let seed = 1;
  const next = () => (seed = (seed * 1103515245 + 12345) >>> 0) % units.length;
  for (let n = 0; n < 5000; n++) {
    let text = '';
    for (let k = n % 7; k > 0; k--) text += String.fromCharCode(units[next()]!);
    assert.equal(ucs2length(text), [...text].length, JSON.stringify(text));
  }
  assert.equal(equal({ a: [1, { b: null }] }, { a: [1, { b: null }] }), true);
  assert.equal(equal({ a: 1 }, { a: 1, b: undefined }), false);
  assert.equal(equal({ a: 1, b: 2 }, { b: 2, a: 1 }), true);
  assert.equal(equal([1, 2], { 0: 1, 1: 2 }), false);
  assert.equal(equal([], {}), false);
  assert.equal(equal(NaN, NaN), true);
  assert.equal(equal(1, '1'), false);
  assert.equal(equal(null, {}), false);
});
