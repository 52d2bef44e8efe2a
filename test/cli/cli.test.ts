import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BASE_SPEC } from '../helpers/spec.ts';
import { syntheticMesh } from '../../bench/synthetic-mesh.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `trellis` command in a child process. */
function trellis(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function specDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-cli-'));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

const BROKEN_ROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: apii, port: 80 }]
`;

describe('trellis validate', () => {
  test('exits 0 on a valid spec', async () => {
    const run = await trellis(['validate', 'examples/minimal']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /examples\/minimal: valid/);
  });

  test('exits 1 on an invalid spec, printing file:line:col, the source line, a caret and a hint', async () => {
    const dir = await specDir({ 'base.yaml': BASE_SPEC, 'route.yaml': BROKEN_ROUTE });
    const run = await trellis(['validate', dir]);
    assert.equal(run.code, 1);
    assert.ok(run.stderr.includes(`${dir}/route.yaml:7:29: error TRL3003: backendRef names unknown service "apii"`), run.stderr);
    assert.ok(run.stderr.includes(' 7 |     - backendRefs: [{ name: apii, port: 80 }]\n   |                             ^^^^'), run.stderr);
    assert.match(run.stderr, /hint: did you mean "api"\?/);
    assert.match(run.stderr, /1 error/);
    assert.doesNotMatch(run.stderr, /\x1b\[/, 'NO_COLOR means no escape codes');
  });

  test('info notes only with --verbose; errors and warnings always', async () => {
    const quiet = await trellis(['validate', 'examples/shop']);
    assert.equal(quiet.code, 0);
    assert.doesNotMatch(quiet.stderr, /TRL4013/);
    const verbose = await trellis(['validate', 'examples/shop', '--verbose']);
    assert.match(verbose.stderr, /info TRL4013: service "payment-gateway" runs no sidecar/);
  });

  test('colours only when asked for', async () => {
    const dir = await specDir({ 'base.yaml': BASE_SPEC, 'route.yaml': BROKEN_ROUTE });
    const run = await trellis(['validate', dir], { NO_COLOR: '', FORCE_COLOR: '1' });
    assert.match(run.stderr, /\x1b\[31merror TRL3003/);
  });

  test('--format json prints the same diagnostics as data on stdout', async () => {
    const dir = await specDir({ 'base.yaml': BASE_SPEC, 'route.yaml': BROKEN_ROUTE });
    const run = await trellis(['validate', dir, '--format', 'json']);
    assert.equal(run.code, 1);
    const out = JSON.parse(run.stdout) as { valid: boolean; errors: number; diagnostics: Array<Record<string, unknown>> };
    assert.equal(out.valid, false);
    assert.equal(out.errors, 1);
    assert.deepEqual(out.diagnostics[0], {
      code: 'TRL3003',
      name: 'unknown-backend',
      severity: 'error',
      message: 'backendRef names unknown service "apii"',
      file: `${dir}/route.yaml`,
      line: 7,
      col: 29,
      endLine: 7,
      endCol: 33,
      hint: 'did you mean "api"?',
    });
  });
});

describe('trellis compile', () => {
  test('--out writes one config per meshed service and an index, and prunes services that left', async () => {
    const spec = await specDir({ 'base.yaml': BASE_SPEC });
    const out = join(spec, 'out');
    const first = await trellis(['compile', spec, '--out', out]);
    assert.equal(first.code, 0, first.stderr);
    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { services: Record<string, { version: string; file: string }> };
    assert.deepEqual(Object.keys(index.services), ['api', 'api-v2', 'web']);
    const web = JSON.parse(await readFile(join(out, 'web.json'), 'utf8')) as { version: string; service: string };
    assert.equal(web.service, 'web');
    assert.equal(web.version, index.services.web!.version);

    await writeFile(join(spec, 'base.yaml'), BASE_SPEC.replace(/---\napiVersion: trellis.dev\/v1alpha1\nkind: Service\nmetadata: \{ name: api-v2 \}[\s\S]*$/, ''));
    const second = await trellis(['compile', spec, '--out', out]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(existsSync(join(out, 'api-v2.json')), false, 'config of a removed service is deleted');
    assert.equal(existsSync(join(out, 'web.json')), true);
  });

  test('--stdout prints index and configs as one JSON document', async () => {
    const run = await trellis(['compile', 'examples/minimal', '--stdout']);
    assert.equal(run.code, 0, run.stderr);
    const doc = JSON.parse(run.stdout) as { index: { services: object }; configs: Record<string, { kind: string }> };
    assert.deepEqual(Object.keys(doc.configs), Object.keys(doc.index.services));
    assert.equal(Object.values(doc.configs)[0]!.kind, 'ProxyConfig');
  });

  test('--stdout into a reader that stops early (`| head`) ends quietly, with no EPIPE error', async () => {
    // Output well past what a pipe holds (a few megabytes), so the command is still writing when the pipe closes.
    const spec = await specDir(Object.fromEntries(syntheticMesh(150, { seed: 2 }).files.map((f) => [f.path.replaceAll('/', '_'), f.text])));
    const child = spawn(process.execPath, [BIN, 'compile', spec, '--stdout'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Like `head -c 1`: read one chunk, then close the pipe while the command is still writing.
    child.stdout.once('data', () => child.stdout.destroy());
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.doesNotMatch(stderr, /EPIPE|Error:|at .*\(node:/);
    assert.equal(code, 0);
  });

  test('an invalid spec writes nothing and exits 1', async () => {
    const spec = await specDir({ 'base.yaml': BASE_SPEC, 'route.yaml': BROKEN_ROUTE });
    const out = join(spec, 'out');
    const run = await trellis(['compile', spec, '--out', out]);
    assert.equal(run.code, 1);
    assert.equal(existsSync(out), false);
  });
});

describe('usage', () => {
  test('--help and --version work on every command', async () => {
    for (const args of [['--help'], ['validate', '--help'], ['compile', '--help']]) {
      const run = await trellis(args);
      assert.equal(run.code, 0, args.join(' '));
      assert.match(run.stdout, /Usage: trellis/);
    }
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const args of [['--version'], ['validate', '--version'], ['compile', '--version']]) {
      const run = await trellis(args);
      assert.equal(run.code, 0);
      assert.equal(run.stdout.trim(), pkg.version);
    }
  });

  test('usage errors exit 2', async () => {
    assert.equal((await trellis(['validate', '--bogus'])).code, 2);
    assert.equal((await trellis(['frobnicate'])).code, 2);
    assert.equal((await trellis(['compile', 'examples/minimal'])).code, 2, 'compile needs --out or --stdout');
    assert.equal((await trellis(['validate', '.', '--format', 'xml'])).code, 2);
  });
});
