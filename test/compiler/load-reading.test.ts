/**
 * What the loader's fast paths share between files stays out of their results: the plain
 * reader writes every file's node records into one reused buffer, and readSpecDir builds the
 * paths it shows name by name, so these check that each file keeps its own positions and
 * that paths come out the same whichever way the spec folder is named.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import * as YAML from 'yaml';
import { readSpecDir } from '../../src/compiler/load.ts';
import { locatePlain, parsePlainYaml } from '../../src/compiler/plain-yaml.ts';

/** A mapping of `n` keys, each with a list of two under it: 4n nodes. */
function bigMapping(n: number, tag: string): string {
  let text = '';
  for (let i = 0; i < n; i++) text += `${tag}${i}:\n  - ${i}\n  - "v${i}"\n`;
  return text;
}

const parsed = new Map<string, YAML.Document.Parsed>();

/** The `yaml` package's [start, end) for the value at `path` (and for its key, with `key`). */
function yamlSpan(text: string, path: Array<string | number>, key: boolean): [number, number] {
  let doc = parsed.get(text);
  // uniqueKeys off: the package's own check is quadratic in a mapping's keys.
  if (!doc) parsed.set(text, (doc = YAML.parseDocument(text, { uniqueKeys: false })));
  const parent = doc.getIn(path.slice(0, -1), true) as YAML.YAMLMap | YAML.YAMLSeq;
  const last = path[path.length - 1]!;
  const node = YAML.isMap(parent) ? (parent.items.find((p) => (p.key as YAML.Scalar).value === last)![key ? 'key' : 'value'] as YAML.Node) : (parent.items[last as number] as YAML.Node);
  return [node.range![0], node.range![1]];
}

test('files read one after another keep their own node positions (the records buffer is reused and grown)', () => {
  // Over the buffer's first size (16 384 nodes), then small, then over twice that.
  const texts = [bigMapping(5_000, 'a'), 'kind: Service\nmetadata:\n  name: x\n', bigMapping(9_000, 'b'), 'list: [1, 2]\nname: "q"\n'];
  const docs = texts.map((t) => parsePlainYaml(t));
  const probes: Array<[number, Array<string | number>]> = [
    [0, ['a0', 1]],
    [0, ['a4999', 0]],
    [1, ['metadata', 'name']],
    [2, ['b0', 0]],
    [2, ['b4500', 1]],
    [2, ['b8999', 1]],
    [3, ['list', 1]],
    [3, ['name']],
  ];
  for (const [i, path] of probes) {
    const plain = docs[i]?.[0];
    assert.ok(plain, `file ${i} is read by the plain reader`);
    for (const key of typeof path[path.length - 1] === 'string' ? [false, true] : [false]) {
      assert.deepEqual(locatePlain(texts[i]!, plain, path, key), yamlSpan(texts[i]!, path, key), `file ${i} ${path.join('.')}${key ? ' (key)' : ''}`);
    }
  }
  assert.deepEqual((docs[2]![0]!.value as Record<string, unknown>).b8999, [8999, 'v8999']);
});

test('readSpecDir shows the same paths however the spec folder is named', (t) => {
  const base = mkdtempSync(join(tmpdir(), 'trellis-load-reading-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const spec = join(base, 'spec');
  mkdirSync(join(spec, 'team', 'deep'), { recursive: true });
  writeFileSync(join(spec, 'mesh.yaml'), 'a: 1\n');
  writeFileSync(join(spec, 'team', 'svc.yml'), 'b: 2\n');
  writeFileSync(join(spec, 'team', 'deep', 'route.yaml'), 'c: 3\n');
  const expected = ['mesh.yaml', 'team/deep/route.yaml', 'team/svc.yml'];
  for (const root of [spec, `${spec}/`, `${spec}//`, join(spec, 'team', '..'), relative(process.cwd(), spec)]) {
    const { files, diagnostics } = readSpecDir(root);
    assert.deepEqual(diagnostics, [], root);
    assert.deepEqual(
      files.map((f) => f.path),
      expected,
      root,
    );
  }
  assert.deepEqual(
    readSpecDir(join(spec, 'team')).files.map((f) => [f.path, f.text]),
    [
      ['deep/route.yaml', 'c: 3\n'],
      ['svc.yml', 'b: 2\n'],
    ],
  );
});
