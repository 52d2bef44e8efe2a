/**
 * Property tests: the compiler never crashes or hangs on any input, and its output
 * depends on the spec alone, not on how the spec is laid out in files.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import * as YAML from 'yaml';
import { compileFiles, type CompileResult } from '../../src/compiler/compile.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';
import { parseWithFastPath } from '../../src/compiler/load.ts';

const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));

function exampleFiles(name: string): SourceFile[] {
  const root = join(EXAMPLES, name);
  const out: SourceFile[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (/\.ya?ml$/.test(e.name)) out.push(new SourceFile(relative(root, join(dir, e.name)), readFileSync(join(dir, e.name), 'utf8')));
    }
  };
  walk(root);
  return out;
}

/** Every document of a spec, as separate YAML texts. */
function documents(files: readonly SourceFile[]): string[] {
  return files.flatMap((f) => YAML.parseAllDocuments(f.text).filter((d) => d.contents !== null).map((d) => d.toString()));
}

/** A result must be well-formed whatever the input: diagnostics with codes, configs only without errors. */
function assertWellFormed(result: CompileResult): void {
  assert.ok(Array.isArray(result.diagnostics));
  for (const d of result.diagnostics) assert.match(d.code, /^TRL\d{4}$/);
  const errors = result.diagnostics.some((d) => d.severity === 'error');
  assert.equal(result.mesh === undefined, errors);
}

const SHOP = exampleFiles('shop');
const SHOP_DOCS = documents(SHOP);
const REFERENCE = compileFiles(SHOP);

describe('the compiler never crashes or hangs', () => {
  test('on random edits of a real spec (deleted, inserted, duplicated text)', () => {
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 40 }) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: fc.string({ unit: fc.constantFrom(...' \n:-[]{}&*!|>\'"#,?0aZ/'), maxLength: 12 }) }),
      fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 200 }) }),
    );
    fc.assert(
      fc.property(fc.nat({ max: SHOP.length - 1 }), fc.array(edit, { minLength: 1, maxLength: 4 }), (which, edits) => {
        const files = SHOP.map((f, i) => {
          if (i !== which) return f;
          let text = f.text;
          for (const e of edits) {
            const at = e.at % (text.length + 1);
            if (e.kind === 'delete') text = text.slice(0, at) + text.slice(at + e.len);
            else if (e.kind === 'insert') text = text.slice(0, at) + e.text + text.slice(at);
            else text = text.slice(0, at) + text.slice(at, at + e.len) + text.slice(at);
          }
          return new SourceFile(f.path, text);
        });
        assertWellFormed(compileFiles(files));
      }),
      { numRuns: 300 },
    );
  });

  test('on random documents of every kind', () => {
    const kinds = ['Mesh', 'Service', 'HTTPRoute', 'TrafficPolicy', 'AccessPolicy', 'Other'];
    const doc = fc.record({
      apiVersion: fc.constantFrom('trellis.dev/v1alpha1', 'gateway.networking.k8s.io/v1', 'v1'),
      kind: fc.constantFrom(...kinds),
      metadata: fc.record({ name: fc.constantFrom('a', 'b', 'web', 'api', 'Bad Name', '') }),
      spec: fc.anything({ maxDepth: 4 }),
    });
    fc.assert(
      fc.property(fc.array(doc, { maxLength: 6 }), (docs) => {
        const text = docs.map((d) => YAML.stringify(d)).join('---\n');
        assertWellFormed(compileFiles([new SourceFile('random.yaml', text)]));
      }),
      { numRuns: 300 },
    );
  });
});

describe('output depends on the spec, not its layout', () => {
  test('the example shop compiles cleanly', () => {
    assert.deepEqual(REFERENCE.diagnostics.filter((d) => d.severity === 'error'), []);
    assert.ok(REFERENCE.mesh && REFERENCE.mesh.configs.size >= 8);
  });

  test('documents shuffled and regrouped into other files give byte-identical configs', () => {
    fc.assert(
      fc.property(fc.shuffledSubarray(SHOP_DOCS, { minLength: SHOP_DOCS.length, maxLength: SHOP_DOCS.length }), fc.integer({ min: 1, max: 6 }), (docs, fileCount) => {
        const groups: string[][] = Array.from({ length: fileCount }, () => []);
        docs.forEach((d, i) => groups[i % fileCount]!.push(d));
        const files = groups.map((g, i) => new SourceFile(`f${fileCount - i}.yaml`, g.join('---\n')));
        const result = compileFiles(files);
        assert.equal(result.mesh?.version, REFERENCE.mesh!.version);
        for (const [name, config] of REFERENCE.mesh!.configs) assert.equal(JSON.stringify(result.mesh!.configs.get(name)), JSON.stringify(config));
      }),
      { numRuns: 40 },
    );
  });
});

describe('the fast YAML path reads documents exactly as the positional parser does', () => {
  // Plain scalars of every YAML 1.2 core type, in the spellings spec authors use.
  const scalar = fc.oneof(
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.boolean(),
    fc.constant(null),
    fc.string({ maxLength: 12 }),
    fc.constantFrom('true', 'True', 'FALSE', 'yes', 'no', 'on', 'off', '~', 'null', 'Null', '0x1F', '0o17', '017', '1e3', '.5', '1_000', '0b101', '2026-01-01', '12:30', '-0', '+1', '.inf', '.NaN'),
  );
  const value = fc.letrec((tie) => ({
    node: fc.oneof({ depthSize: 'small' }, scalar, fc.array(tie('node'), { maxLength: 4 }), fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), tie('node'), { maxKeys: 4 })),
  })).node;

  test('on random documents, written both as YAML would and as bare plain scalars', () => {
    fc.assert(
      fc.property(fc.array(value, { minLength: 1, maxLength: 3 }), fc.array(fc.constantFrom('true', 'True', 'yes', '~', 'null', '0x1F', '0o17', '017', '1e3', '.5', '1_000', '0b101', '2026-01-01', '12:30', '-0', '+1', '.inf', '.NaN', 'x: 1'), { maxLength: 4 }), (docs, bare) => {
        const text = [...docs.map((d) => YAML.stringify(d)), ...bare.map((b) => `k: ${b}\n`)].join('---\n');
        const fast = parseWithFastPath(text);
        if (fast === undefined) return; // the file needs the careful path anyway
        const careful = YAML.parseAllDocuments(text, { uniqueKeys: true, strict: true })
          .filter((d) => d.contents !== null && !(YAML.isScalar(d.contents) && d.contents.value === null))
          .map((d) => d.toJS());
        // Compared as JSON, which is all later stages see of these values (-0 and 0 alike).
        assert.equal(JSON.stringify(fast), JSON.stringify(careful), text);
      }),
      { numRuns: 300 },
    );
  });

  test('on the example specs', () => {
    for (const f of [...SHOP, ...exampleFiles('minimal')]) {
      const fast = parseWithFastPath(f.text);
      assert.ok(fast, `${f.path} should take the fast path`);
      assert.deepEqual(fast, documents([f]).map((d) => YAML.parse(d)), f.path);
    }
  });
});
