import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { compileDir } from '../../src/compiler/compile.ts';
import { readSpecDir } from '../../src/compiler/load.ts';
import { formatLocation } from '../../src/diagnostics/render.ts';
import { BASE_SPEC, codes, compileTexts } from '../helpers/spec.ts';

describe('YAML is parsed with limits', () => {
  test('a billion-laughs alias bomb is rejected, quickly and without expanding it', () => {
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 12; i++) {
      const prev = String.fromCharCode(96 + i);
      const cur = String.fromCharCode(97 + i);
      levels.push(`${cur}: &${cur} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    const result = compileTexts({ 'bomb.yaml': levels.join('\n') + '\n' });
    assert.deepEqual(codes(result), ['TRL1004']);
  });

  test('deep nesting is rejected before the parser recurses into it', () => {
    const result = compileTexts({ 'deep.yaml': 'a: ' + '['.repeat(50_000) + ']'.repeat(50_000) + '\n' });
    assert.deepEqual(codes(result), ['TRL1005']);
  });

  test('duplicate keys are errors at the second key', () => {
    const result = compileTexts({ 'dup.yaml': 'apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nkind: Mesh\nmetadata: { name: m }\nspec: {}\n' });
    assert.deepEqual(codes(result), ['TRL1003']);
    assert.equal(formatLocation(result.diagnostics[0]!.span!), 'dup.yaml:3:1');
  });

  test('YAML warnings (unknown tags) are errors', () => {
    const result = compileTexts({ 'tag.yaml': 'apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: { name: !custom m }\nspec: {}\n' });
    assert.deepEqual(codes(result), ['TRL1006']);
  });

  test('unknown kinds and apiVersions are named, with the likely intent', () => {
    const result = compileTexts({
      'k.yaml': 'apiVersion: trellis.dev/v1alpha1\nkind: Servise\nmetadata: { name: x }\nspec: {}\n---\napiVersion: trellis.dev/v1\nkind: Service\nmetadata: { name: y }\nspec: {}\n',
    });
    assert.deepEqual(codes(result), ['TRL1008', 'TRL1009']);
    assert.match(result.diagnostics[0]!.hint!, /did you mean "Service"/);
    assert.equal(result.diagnostics[1]!.message, 'kind Service has no apiVersion "trellis.dev/v1"');
    assert.equal(result.diagnostics[1]!.hint, 'use "trellis.dev/v1alpha1"');
  });

  test('a syntax error in one file does not hide problems in another', () => {
    const result = compileTexts({ 'a.yaml': 'key: [unclosed\n', 'b.yaml': BASE_SPEC + '---\nkind: Nope\n' });
    assert.deepEqual(codes(result), ['TRL1002', 'TRL1008']);
  });
});

describe('reading a spec folder', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  async function folder(files: Record<string, string>): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'trellis-load-'));
    dirs.push(dir);
    for (const [path, text] of Object.entries(files)) {
      await mkdir(join(dir, path, '..'), { recursive: true });
      await writeFile(join(dir, path), text);
    }
    return dir;
  }

  test('reads *.yaml and *.yml in sub-folders, skips hidden folders and other files, sorted', async () => {
    const dir = await folder({ 'b/x.yml': 'a: 1', 'a.yaml': 'a: 1', '.github/w.yaml': 'a: 1', 'README.md': '#', '.hidden.yaml': 'a: 1' });
    await symlink(join(dir, 'a.yaml'), join(dir, 'link.yaml'));
    const loaded = readSpecDir(dir);
    assert.deepEqual(loaded.files.map((f) => f.path), ['a.yaml', 'b/x.yml']);
  });

  test('a file over the size limit is reported and not read', async () => {
    const dir = await folder({ 'big.yaml': '# ' + 'x'.repeat(2000) + '\n', 'ok.yaml': BASE_SPEC });
    const result = await compileDir(dir, { limits: { maxFileBytes: 1000, maxAliasCount: 100, maxDepth: 64 } });
    assert.deepEqual(codes(result), ['TRL1001']);
    assert.equal(result.mesh, undefined);
  });

  test('a missing folder and an empty folder are errors, not crashes', async () => {
    assert.deepEqual(codes(await compileDir(join(tmpdir(), 'trellis-no-such-dir-x'))), ['TRL1010']);
    assert.deepEqual(codes(await compileDir(await folder({ 'notes.txt': 'hi' }))), ['TRL1011']);
  });
});
