/**
 * Loader edge cases (issue 16, item 12): deep block nesting used to overflow the parser's
 * stack and be reported as "Maximum call stack size exceeded" (TRL1002); bytes that are
 * not UTF-8 were silently replaced; binary and UTF-16 files got a misleading code and
 * their bytes echoed; a 900 KB line printed megabytes of excerpt and carets. Each case
 * here uses real files in a folder, and renders as `trellis validate` does.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { compileDir } from '../../src/compiler/compile.ts';
import { formatLocation, renderDiagnostic, renderDiagnostics } from '../../src/diagnostics/render.ts';
import { BASE_SPEC, codes, compileTexts } from '../helpers/spec.ts';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** A spec folder holding BASE_SPEC and the given files (bytes or text). */
async function folder(files: Record<string, string | Uint8Array>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-load-'));
  dirs.push(dir);
  await writeFile(join(dir, 'base.yaml'), BASE_SPEC);
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
  return dir;
}

async function validate(files: Record<string, string | Uint8Array>) {
  const result = await compileDir(await folder(files));
  return { result, codes: codes(result), text: renderDiagnostics(result.diagnostics, { pathPrefix: 'spec' }) };
}

describe('deep block nesting reports the nesting limit', () => {
  const cases: Array<[string, string]> = [
    ['nested mappings, one space per level', Array.from({ length: 5000 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n') + ' x\n'],
    ['nested block sequences', Array.from({ length: 5000 }, (_, i) => `${' '.repeat(i)}-`).join('\n') + ' x\n'],
    ['compact sequences on one line', '- '.repeat(20_000) + 'x\n'],
    ['mappings in sequences', Array.from({ length: 3000 }, (_, i) => `${'  '.repeat(i)}- k:`).join('\n') + ' x\n'],
  ];
  for (const [name, text] of cases) {
    test(name, () => {
      const result = compileTexts({ 'deep.yaml': text });
      assert.deepEqual(codes(result), ['TRL1005'], JSON.stringify(result.diagnostics.map((d) => d.message)));
      assert.doesNotMatch(result.diagnostics[0]!.message, /call stack/);
    });
  }

  test('the limit counts block and flow levels together', () => {
    const block = Array.from({ length: 40 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n');
    const result = compileTexts({ 'deep.yaml': `${block} ${'['.repeat(40)}${']'.repeat(40)}\n` });
    assert.deepEqual(codes(result), ['TRL1005']);
  });

  test('block scalars and real specs are not counted as nesting', () => {
    const text = BASE_SPEC.replace('metadata: { name: web }', `metadata:
  name: web
  annotations:
    note: |
${Array.from({ length: 80 }, (_, i) => `      ${' '.repeat(i)}line ${i}`).join('\n')}`);
    assert.deepEqual(codes(compileTexts({ 'base.yaml': text })).filter((c) => c.startsWith('TRL1')), []);
  });
});

describe('files that are not UTF-8 text', () => {
  test('invalid UTF-8 is reported at its line and column, not silently replaced', async () => {
    const bytes = Buffer.concat([Buffer.from('apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: caf'), Buffer.from([0xe9]), Buffer.from(' }\nspec: {}\n')]);
    const { result, codes: got, text } = await validate({ 'latin1.yaml': bytes });
    assert.deepEqual(got, ['TRL1012']);
    const d = result.diagnostics[0]!;
    assert.equal(formatLocation(d.span!), 'latin1.yaml:3:22');
    assert.match(d.message, /not valid UTF-8/);
    assert.match(d.message, /0xe9/);
    assert.doesNotMatch(text, /[\x80-\x9f\u0000]/);
  });

  const shortAndClean = (text: string) => {
    assert.ok(text.length < 600, `${text.length} bytes of output:\n${text}`);
    assert.doesNotMatch(text, /[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]/, 'no raw or replaced bytes are echoed');
  };

  for (const [name, bom] of [['UTF-16 LE', 'utf16le'], ['UTF-16 BE', 'utf16be']] as const) {
    test(`${name} with a byte order mark gets a diagnostic that says so`, async () => {
      const le = Buffer.from('\ufeff' + BASE_SPEC.replace(/name: web/, 'name: web16'), 'utf16le');
      const bytes = bom === 'utf16le' ? le : Buffer.from(le).swap16();
      const { codes: got, text, result } = await validate({ 'utf16.yaml': bytes });
      assert.deepEqual(got, ['TRL1012']);
      assert.match(result.diagnostics[0]!.message, /UTF-16/);
      assert.match(text, /^spec\/utf16\.yaml: error TRL1012/m);
      shortAndClean(text);
    });
  }

  test('a binary file named .yaml gets a diagnostic that says so, without its bytes', async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x1b, 0x5b, 0x32, 0x4a, ...Array(2000).fill(0x9b)]);
    const { codes: got, text, result } = await validate({ 'logo.yaml': png });
    assert.deepEqual(got, ['TRL1012']);
    assert.match(result.diagnostics[0]!.message, /binary/);
    shortAndClean(text);
  });

  test('UTF-16 without a byte order mark is recognised too', async () => {
    for (const bytes of [Buffer.from(BASE_SPEC, 'utf16le'), Buffer.from(BASE_SPEC, 'utf16le').swap16()]) {
      const { codes: got, text, result } = await validate({ 'utf16.yaml': bytes });
      assert.deepEqual(got, ['TRL1012']);
      assert.match(result.diagnostics[0]!.message, /looks like UTF-16/);
      shortAndClean(text);
    }
  });

  test('text that reached the parser from elsewhere (a git blob) with NULs is called binary, not echoed', () => {
    const result = compileTexts({ 'blob.yaml': 'apiVersion: trellis.dev/v1alpha1\nkind: \0\x1b[2J\n' });
    assert.deepEqual(codes(result), ['TRL1012']);
    assert.equal(result.diagnostics[0]!.span, undefined);
  });

  test('a UTF-8 byte order mark is fine', async () => {
    const { codes: got } = await validate({ 'bom.yaml': '\ufeff' + 'apiVersion: trellis.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: { name: p }\nspec: { targetRefs: [{ name: api }] }\n' });
    assert.deepEqual(got, []);
  });
});

describe('source excerpts of very long lines are cut', () => {
  const long = 'x'.repeat(900 * 1024);
  const half = 'x'.repeat(450 * 1024);
  const cases: Array<[string, string]> = [
    ['problem at the start of the line', `apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: web2 }\nspec: { bogus: 1, ports: [{ port: 80 }], endpoints: { static: [] }, annotations: "${long}" }\n`],
    ['problem in the middle of the line', `apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: web2, labels: { a: "${half}" }, bogus: 1, annotations: { b: "${half}" } }\nspec: { ports: [{ port: 80 }] }\n`],
    ['problem at the end of the line', `apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: web2, labels: { a: "${long}" }, bogus: 1 }\nspec: { ports: [{ port: 80 }] }\n`],
    ['a huge value quoted in the message', `apiVersion: trellis.dev/v1alpha1\nkind: "${long}"\n`],
  ];
  for (const [name, text] of cases) {
    test(name, async () => {
      const { text: out, result } = await validate({ 'long.yaml': text });
      assert.ok(result.diagnostics.length > 0);
      assert.ok(out.length < 4000, `${out.length} bytes of output`);
      for (const line of out.split('\n')) assert.ok(line.length <= 400, `a line of ${line.length} characters`);
      for (const d of result.diagnostics.filter((x) => x.span)) {
        const lines = renderDiagnostic(d).split('\n');
        const source = lines[1]!;
        assert.match(source, /^ \d+ \| /, 'the excerpt is still shown');
        if (d.span!.file.lineText(d.span!.file.position(d.span!.start).line).length > 120) assert.match(source, /…/);
        const caret = lines[2]!;
        // The caret sits under the characters it marks: the first caret is under the
        // first character of the diagnostic's node.
        const at = caret.indexOf('^');
        assert.ok(at > 0, caret);
        assert.equal(source[at], d.span!.file.text[d.span!.start], `caret under ${JSON.stringify(source[at])} in ${JSON.stringify(source.slice(0, 200))}`);
      }
    });
  }
});
