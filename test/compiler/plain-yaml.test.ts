/**
 * The plain YAML reader (the loader's fastest path) reads what it accepts exactly as the
 * general parsers do: the same values as js-yaml and the `yaml` package, and for every
 * node the span the `yaml` package's ranges give, so diagnostics point at the same
 * characters whichever path read a file.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import * as YAML from 'yaml';
import { parseWithFastPath } from '../../src/compiler/load.ts';
import { locatePlain, parsePlainYaml } from '../../src/compiler/plain-yaml.ts';
import { syntheticMesh } from '../../bench/synthetic-mesh.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Every *.yaml under a folder of the repo. */
function yamlFiles(folder: string): Array<{ path: string; text: string }> {
  const out: Array<{ path: string; text: string }> = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (/\.ya?ml$/.test(e.name)) out.push({ path: join(dir, e.name), text: readFileSync(join(dir, e.name), 'utf8') });
    }
  };
  walk(join(ROOT, folder));
  return out;
}

/**
 * Checks one text: when the plain reader accepts it, the `yaml` package must read it
 * without a problem, to the same values, and every node's span (and every key's) must be
 * what the plain reader's locator says, or the locator must defer (undefined) on it.
 * Returns whether the plain reader accepted the text.
 */
function agrees(text: string): boolean {
  const plain = parsePlainYaml(text);
  if (!plain) return false;
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true, strict: true, prettyErrors: false });
  const list = Array.isArray(docs) ? docs : [];
  for (const d of list) assert.deepEqual([...d.errors, ...d.warnings].map((e) => e.message), [], `the plain reader took a text the yaml package refuses:\n${text}`);
  const nonEmpty = list.filter((d) => !(d.contents === null || (YAML.isScalar(d.contents) && d.contents.value === null)));
  assert.equal(plain.length, nonEmpty.length, `document count:\n${text}`);
  assert.equal(JSON.stringify(plain.map((p) => p.value)), JSON.stringify(nonEmpty.map((d) => d.toJS())), `values (yaml):\n${text}`);
  assert.equal(JSON.stringify(plain.map((p) => p.value)), JSON.stringify(parseWithFastPath(text)), `values (js-yaml):\n${text}`);
  nonEmpty.forEach((doc, index) => {
    const walk = (node: unknown, path: Array<string | number>) => {
      const range = (node as { range?: number[] } | null)?.range;
      const got = locatePlain(text, plain[index]!, path, false);
      if (got) assert.deepEqual(got, [range![0], range![1]], `span of ${JSON.stringify(path)}:\n${text}`);
      else assert.ok(!YAML.isScalar(node) || node.value === null, `a non-empty scalar always has a span (${JSON.stringify(path)}):\n${text}`);
      if (YAML.isMap(node)) {
        for (const pair of node.items) {
          const key = String((pair.key as YAML.Scalar).value);
          const k = (pair.key as YAML.Scalar).range!;
          assert.deepEqual(locatePlain(text, plain[index]!, [...path, key], true), [k[0], k[1]], `key span of ${JSON.stringify([...path, key])}:\n${text}`);
          walk(pair.value, [...path, key]);
        }
        // A path that runs off the tree points at the deepest node that exists.
        assert.deepEqual(locatePlain(text, plain[index]!, [...path, 'no-such-key', 1], false), got);
      } else if (YAML.isSeq(node)) node.items.forEach((item, i) => walk(item, [...path, i]));
    };
    walk(doc.contents, []);
  });
  return true;
}

describe('the plain YAML reader', () => {
  test('takes every example and fixture file it can, and agrees with the yaml package on each', () => {
    let taken = 0;
    const files = [...yamlFiles('examples'), ...yamlFiles('test/fixtures')];
    for (const f of files) if (agrees(f.text)) taken++;
    // The examples are written in the plain subset; most fixtures are too (the rest test YAML errors).
    for (const f of yamlFiles('examples')) assert.ok(parsePlainYaml(f.text), `${f.path} should be read by the plain reader`);
    assert.ok(taken > files.length / 2, `${taken} of ${files.length}`);
  });

  test('takes every file of a synthetic mesh, and agrees on each', () => {
    for (const f of syntheticMesh(60, { seed: 5 }).files) assert.ok(agrees(f.text), f.path);
  });

  // Scalars, written plain when that is how an author would, in the spellings that matter.
  const tricky = fc.constantFrom(
    '', ' a', 'a ', 'a: b', 'a:b', 'a #b', 'a#b', '#', '-', '- a', '-1', '-x', '0x1F', '0o17', '017', '1e3', '.5', '1_000', '0b101', '+1', '-0', '.inf', '-.INF', '.NaN',
    "it's", '"q"', "'q'", '[x]', 'x]', '{', '}', '~', 'null', 'Null', 'true', 'False', 'yes', '2026-01-01', '12:30', 'a,b', 'é', 'a\\b', '@x', '`x', '%x', '!x', '&a', '*a', '|', '>', '?', '? x', ':x', 'x:',
    '/api/v1', 'http://x', 'a  b', '---', '...', '--- x', 'x\ty', '\u0085', '\ufeff', 'a\u2028b',
  );
  // Mostly what specs hold, sometimes something odd: one odd scalar sends a whole text to the careful path.
  const scalar = fc.oneof(
    { arbitrary: fc.constantFrom('web', 'GET', '/api/v1/items', '500ms', '80', '0', '-3', '1.5', 'true', '', 'null', 'x-tenant', 'a b', 'it is', 'spiffe://x/y'), weight: 12 },
    { arbitrary: fc.integer().map(String), weight: 2 },
    { arbitrary: tricky, weight: 1 },
    { arbitrary: fc.string({ maxLength: 6 }), weight: 1 },
  );
  const key = fc.oneof(
    { arbitrary: fc.constantFrom('name', 'port', 'spec', 'rules', 'a.b', 'x-y', 'a/b', '_k', 'value', 'timeouts'), weight: 12 },
    { arbitrary: fc.constantFrom('true', 'null', '1', '1.5', 'a b', '__proto__', 'k:', '"q"', '-k', 'é', 'k #x'), weight: 1 },
    { arbitrary: fc.string({ minLength: 1, maxLength: 6 }), weight: 1 },
  );
  /** Mappings with distinct keys (a repeated key only sends the text to the careful path). */
  const mapOf = (value: fc.Arbitrary<Tree>) => fc.uniqueArray(fc.tuple(key, value), { minLength: 1, maxLength: 4, selector: ([k]) => k }).map((pairs): Tree => ({ pairs }));
  type Tree = string | Tree[] | { readonly pairs: Array<[string, Tree]> };
  const tree: fc.Arbitrary<Tree> = fc.letrec<{ node: Tree }>((tie) => ({
    node: fc.oneof(
      { depthSize: 'small' },
      scalar,
      fc.array(fc.oneof({ arbitrary: tie('node'), weight: 1 }, { arbitrary: scalar, weight: 3 }), { maxLength: 3 }),
      mapOf(tie('node')),
    ),
  })).node;
  const style = fc.record({
    indent: fc.constantFrom(1, 2, 3, 4),
    quote: fc.constantFrom('none', 'double', 'single', 'mixed'),
    flow: fc.boolean(),
    comments: fc.boolean(),
    blank: fc.boolean(),
    seqIndented: fc.boolean(),
    finalNewline: fc.boolean(),
  });

  /** Block YAML text for a tree, written as an author might (or might wrongly) write it. */
  function write(root: Tree, s: { indent: number; quote: string; flow: boolean; comments: boolean; blank: boolean; seqIndented: boolean }, draw: () => number): string {
    const lines: string[] = [];
    const pad = (n: number) => ' '.repeat(n);
    const scalarText = (v: string) => {
      const q = s.quote === 'mixed' ? ['none', 'double', 'single'][Math.floor(draw() * 3)] : s.quote;
      if (q === 'double') return `"${v}"`;
      if (q === 'single') return `'${v.replace(/'/g, "''")}'`;
      return v;
    };
    const tail = () => (s.comments && draw() < 0.3 ? '  # note' : '');
    const extra = (col: number) => {
      if (s.blank && draw() < 0.2) lines.push('');
      if (s.comments && draw() < 0.2) lines.push(`${pad(col)}# about the next line`);
    };
    const isScalarList = (v: Tree) => Array.isArray(v) && v.every((x) => typeof x === 'string');
    const isMap = (v: Tree): v is { readonly pairs: Array<[string, Tree]> } => typeof v === 'object' && !Array.isArray(v);
    const block = (v: Tree, col: number, prefix: string) => {
      // `prefix` is what precedes the first line's content (`- ` of a compact item), already written.
      if (typeof v === 'string') {
        lines.push(`${prefix}${scalarText(v)}${tail()}`);
      } else if (isMap(v)) {
        v.pairs.forEach(([k, val], i) => {
          if (i > 0) extra(col);
          const lead = i === 0 ? prefix : pad(col);
          if (typeof val === 'string') lines.push(`${lead}${k}: ${scalarText(val)}${tail()}`);
          else if (s.flow && isScalarList(val)) lines.push(`${lead}${k}: [${(val as string[]).map(scalarText).join(', ')}]${tail()}`);
          else if (Array.isArray(val) && val.length === 0) lines.push(`${lead}${k}: []`);
          else {
            lines.push(`${lead}${k}:${tail()}`);
            const inner = isMap(val) || s.seqIndented ? col + s.indent : col;
            block(val, inner, pad(inner));
          }
        });
      } else if (v.length === 0) {
        lines.push(`${prefix}[]`);
      } else {
        (v as Tree[]).forEach((item, i) => {
          if (i > 0) extra(col);
          const lead = `${i === 0 ? prefix : pad(col)}- `;
          if (isMap(item)) block(item, col + 2, lead);
          else if (typeof item === 'string') lines.push(`${lead}${scalarText(item)}${tail()}`);
          else {
            lines.push(`${lead.trimEnd()}`);
            block(item, col + s.indent, pad(col + s.indent));
          }
        });
      }
    };
    block(root, 0, '');
    return lines.join('\n');
  }

  test('agrees with the yaml package and js-yaml on random block YAML (or declines it)', () => {
    let accepted = 0;
    fc.assert(
      fc.property(fc.array(mapOf(tree), { minLength: 1, maxLength: 3 }), style, fc.infiniteStream(fc.double({ min: 0, max: 0.999, noNaN: true })), (docs, s, stream) => {
        const it = stream[Symbol.iterator]();
        const draw = () => it.next().value as number;
        const text = docs.map((d) => write(d, s, draw)).join('\n---\n') + (s.finalNewline ? '\n' : '');
        if (agrees(text)) accepted++;
      }),
      { numRuns: 1500 },
    );
    // The generator is only useful if the reader accepts a good share of what it writes.
    assert.ok(accepted > 200, `the plain reader accepted only ${accepted} of 1500 texts`);
  });

  test('agrees on what the yaml package itself writes', () => {
    const value = fc.letrec((tie) => ({
      node: fc.oneof({ depthSize: 'small' }, fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.string({ maxLength: 10 }), tricky), fc.array(tie('node'), { maxLength: 4 }), fc.dictionary(key, tie('node'), { maxKeys: 4 })),
    })).node;
    fc.assert(
      fc.property(fc.array(value, { minLength: 1, maxLength: 3 }), fc.constantFrom(1, 2, 4), fc.boolean(), (docs, indent, indentSeq) => {
        agrees(docs.map((d) => YAML.stringify(d, { indent, indentSeq })).join('---\n'));
      }),
      { numRuns: 500 },
    );
  });

  test('reads and locates in time linear in the file: many small mappings, and one mapping of many keys', () => {
    // Quadratic work shows as about 16× for 4× the size; linear as about 4×. Best of three each.
    const text = (n: number) => `items:\n${Array.from({ length: n }, (_, i) => `  - name: n${i}\n    value: ${i}`).join('\n')}\nkeys:\n${Array.from({ length: n }, (_, i) => `  k${i}: ${i}`).join('\n')}\n`;
    const run = (n: number) => {
      const t = text(n);
      let best = Infinity;
      for (let r = 0; r < 3; r++) {
        const start = performance.now();
        const [doc] = parsePlainYaml(t)!;
        for (let i = 0; i < n; i++) assert.ok(locatePlain(t, doc!, ['keys', `k${i}`], true));
        best = Math.min(best, performance.now() - start);
      }
      return best;
    };
    run(1_000); // warm up
    const small = run(10_000);
    const large = run(40_000);
    assert.ok(large < 8 * small, `10 000: ${small.toFixed(0)} ms, 40 000: ${large.toFixed(0)} ms (${(large / small).toFixed(1)}×)`);
  });

  test('declines what it does not read: anchors, tags, block scalars, escapes, duplicate keys, tabs', () => {
    for (const text of ['a: &x 1\nb: *x\n', 'a: !env X\n', 'a: |\n  text\n', 'a: "x\\ny"\n', 'a: 1\na: 2\n', 'a:\n\tb: 1\n', 'a: b\n  c\n', 'a: {b: 1}\n', '%YAML 1.2\n---\na: 1\n', 'a: 1\r\n', '? a\n: b\n']) {
      assert.equal(parsePlainYaml(text), undefined, JSON.stringify(text));
    }
  });
});
