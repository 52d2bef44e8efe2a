/**
 * What people read must not lie (issue 16, item 11): control characters and bidi overrides
 * that come from a spec (kinds, apiVersions, keys, values, source lines, file names) or
 * from the command line are printed escaped by every text output — validate and compile
 * diagnostics, `trellis diff`, `trellis explain`, `trellis test` — so a file named with a
 * newline cannot forge a diagnostic line and a spec cannot drive the reader's terminal.
 * Each case runs the real `trellis` command on real files.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BASE_SPEC } from '../helpers/spec.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Anything a terminal would act on rather than show: C0 but tab and newline, DEL, C1, bidi controls. */
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/u;

function trellis(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function specDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-escapes-'));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) {
    const path = join(dir, name);
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, text);
  }
  return dir;
}

function assertSafe(output: string, what: string): void {
  const m = UNSAFE.exec(output);
  assert.equal(m, null, `${what} prints U+${m?.[0].codePointAt(0)!.toString(16).padStart(4, '0')} raw:\n${JSON.stringify(output)}`);
}

/** A file name that, printed raw, would end the line and start a forged diagnostic. */
const FORGING_NAME = 'evil\nforged.yaml:1:1: error TRL9999: all good\n.yaml';

describe('validate and compile escape what comes from the spec', () => {
  const files = {
    'base.yaml': BASE_SPEC,
    // An unknown kind that clears the screen, with a bidi override in the file's source line.
    [FORGING_NAME]: 'apiVersion: trellis.dev/v1alpha1\nkind: "Serv\\e[2Jice"   # \u202eevil\nmetadata: { name: x }\nspec: {}\n',
    'api-version.yaml': 'apiVersion: "trellis.dev/v1alpha1\\u202e"\nkind: Service\nmetadata: { name: y }\nspec: {}\n',
    'keys.yaml': 'apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: z }\nspec:\n  ports: [{ port: 80 }]\n  "x\\a\\u2066bell": 1\n',
    'dup.yaml': 'apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: w }\n"sp\\u202eec": 1\n"sp\\u202eec": 2\n',
    // Raw control bytes in the source itself: YAML refuses them, and the excerpt shows the line.
    'raw.yaml': 'apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: "v\x1b]0;owned\x07\x9b" }\nspec: {}\n',
  };

  for (const command of ['validate', 'compile'] as const) {
    test(`trellis ${command}: nothing raw, no forged line, every problem still reported`, async () => {
      const dir = await specDir(files);
      const run = await trellis(command === 'compile' ? ['compile', dir, '--stdout'] : ['validate', dir]);
      assert.equal(run.code, 1);
      assertSafe(run.stderr, `trellis ${command}`);
      assert.doesNotMatch(run.stderr, /^forged\.yaml/m, 'a file name started a line of its own');
      assert.ok(run.stderr.includes('evil\\nforged.yaml:1:1: error TRL9999: all good\\n.yaml:2:7: error TRL1008: unknown kind "Serv\\x1b[2Jice"'), run.stderr);
      assert.ok(run.stderr.includes('# \\u202eevil'), 'the bidi override in the source line is shown escaped');
      assert.ok(run.stderr.includes('kind Service has no apiVersion "trellis.dev/v1alpha1\\u202e"'), run.stderr);
      assert.ok(run.stderr.includes('unknown field "x\\x07\\u2066bell"'), run.stderr);
      assert.ok(run.stderr.includes('duplicate key "sp\\u202eec"'), run.stderr);
      assert.ok(run.stderr.includes('\\x1b]0;owned\\x07\\x9b'), run.stderr);
    });
  }
});

const ROUTE = (value: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - matches: [{ headers: [{ name: x-mode, value: "${value}" }] }]
      backendRefs: [{ name: api-v2, port: 80 }]
`;

describe('diff, explain and test escape what comes from the spec and the command line', () => {
  test('trellis diff (text): match values and head diagnostics', async () => {
    const base = await specDir({ 'base.yaml': BASE_SPEC, 'route.yaml': ROUTE('plain') });
    const head = await specDir({ 'base.yaml': BASE_SPEC, 'route.yaml': ROUTE('\\e[31mred\\u202e') });
    const run = await trellis(['diff', '--base', base, '--head', head]);
    assert.equal(run.code, 1, run.stderr);
    assertSafe(run.stdout, 'trellis diff');
    assert.ok(run.stdout.includes('\\x1b[31mred\\u202e'), run.stdout);

    const broken = await specDir({ 'base.yaml': BASE_SPEC, [FORGING_NAME]: 'apiVersion: trellis.dev/v1alpha1\nkind: "K\\e[2J"\n' });
    const invalid = await trellis(['diff', '--base', base, '--head', broken]);
    assertSafe(invalid.stdout, 'trellis diff of an invalid head');
    assert.doesNotMatch(invalid.stdout, /^forged\.yaml/m);
    assert.ok(invalid.stdout.includes('evil\\nforged.yaml'), invalid.stdout);
  });

  test('trellis explain: rule conditions from the spec, the path and headers from the command line', async () => {
    const dir = await specDir({ 'base.yaml': BASE_SPEC, 'route.yaml': ROUTE('\\e[31mred\\u202e') });
    const run = await trellis(['explain', dir, '--from', 'web', '--to', 'api', '--path', '/a\x1b[2J\u202e', '--header', 'x-other=\x1b[5m']);
    assert.equal(run.code, 0, run.stderr);
    assertSafe(run.stdout, 'trellis explain');
    assert.ok(run.stdout.includes('\\x1b[31mred\\u202e'), run.stdout);
    assert.ok(run.stdout.includes('/a\\x1b[2J\\u202e'), run.stdout);

    const missing = await trellis(['explain', dir, '--from', 'web', '--to', 'no\x1b[2Jpe', '--path', '/']);
    assert.equal(missing.code, 1);
    assertSafe(missing.stderr, 'trellis explain of an unknown service');
  });

  test('trellis test: failures name files and request paths escaped', async () => {
    const dir = await specDir({
      'base.yaml': BASE_SPEC,
      'route.yaml': ROUTE('x'),
      [FORGING_NAME]: `apiVersion: trellis.dev/v1alpha1
kind: TrafficTest
metadata: { name: t }
spec:
  request: { from: web, to: api, path: "/p\\e[2J\\u202e", headers: { x-mode: x } }
  expect: { outcome: no-route }
`,
    });
    const run = await trellis(['test', dir]);
    assert.equal(run.code, 1, run.stderr);
    assertSafe(run.stdout + run.stderr, 'trellis test');
    assert.doesNotMatch(run.stdout, /^forged\.yaml/m);
    assert.ok(run.stdout.includes('evil\\nforged.yaml'), run.stdout);
    assert.ok(run.stdout.includes('/p\\x1b[2J\\u202e'), run.stdout);
  });
});
