/**
 * `trellis ca init|issue`, and the mesh-CA flags of `trellis reconcile`, run as the real
 * command in child processes (every one bounded by a timeout) on temporary folders.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { createCertificateRequest, generateKeyPair } from '../../src/identity/keys.ts';
import { MeshCertificateAuthority, splitPemCertificates } from '../../src/identity/ca.ts';
import { buildCredential } from '../../src/sidecar/identity.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SPEC_DIR = join(ROOT, 'examples', 'minimal');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

const dirs: string[] = [];
const children: Array<ReturnType<typeof spawn>> = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-cli-ca-'));
  dirs.push(dir);
  return dir;
}

/** The environment of every child: no colour, a home of its own (nothing lands in the real ~/.local). */
function childEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, NO_COLOR: '1', HOME: home, TRELLIS_CONTROL_TOKEN: 'cli-ca-test-token', ...extra };
}

/** Runs `trellis` to completion (killed after 30 s, which fails the exit-code assertions). */
function trellis(args: string[], home = tempDir()): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: childEnv(home), timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const fileMode = (path: string) => statSync(path).mode & 0o777;

describe('trellis ca', () => {
  test('init makes a root; issue makes a key (0600), a certificate for the service\'s SPIFFE ID and the bundle', async () => {
    const dir = join(tempDir(), 'root');
    const out = join(tempDir(), 'checkout');
    const init = await trellis(['ca', 'init', dir, '--trust-domain', 'shop.local']);
    assert.equal(init.code, 0, init.stderr);
    assert.equal(fileMode(join(dir, 'ca.key')), 0o600);
    const root = new X509Certificate(readFileSync(join(dir, 'ca.crt')));
    assert.equal(root.ca, true);
    assert.ok(root.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'ca.key')))));

    const issue = await trellis(['ca', 'issue', '--ca', dir, '--service', 'checkout', '--trust-domain', 'shop.local', '--out', out, '--ttl', '1h']);
    assert.equal(issue.code, 0, issue.stderr);
    assert.match(issue.stdout, /spiffe:\/\/shop\.local\/svc\/checkout: wrote/);
    for (const f of ['cert.pem', 'key.pem', 'ca.pem']) assert.ok(existsSync(join(out, f)), f);
    assert.equal(fileMode(join(out, 'key.pem')), 0o600);
    const cert = new X509Certificate(readFileSync(join(out, 'cert.pem')));
    assert.equal(cert.subjectAltName, 'URI:spiffe://shop.local/svc/checkout');
    assert.equal(cert.ca, false);
    assert.ok(cert.checkIssued(root) && cert.verify(root.publicKey), 'chains to ca.crt');
    assert.ok(cert.checkPrivateKey(createPrivateKey(readFileSync(join(out, 'key.pem')))), 'key.pem is the certificate\'s key');
    assert.equal(cert.validToDate.getTime() - cert.validFromDate.getTime(), 3600_000 + 60_000, '--ttl 1h (plus the 60 s back-dating)');
    assert.equal(readFileSync(join(out, 'ca.pem'), 'utf8'), readFileSync(join(dir, 'ca.crt'), 'utf8'));

    // The three files are what a standalone sidecar of checkout accepts.
    const credential = buildCredential(
      { certificatePem: readFileSync(join(out, 'cert.pem'), 'utf8'), privateKeyPem: readFileSync(join(out, 'key.pem'), 'utf8'), trustBundle: splitPemCertificates(readFileSync(join(out, 'ca.pem'), 'utf8')) },
      'checkout',
    );
    assert.ok(credential.ok, JSON.stringify(credential));
  });

  test('init refuses to replace an existing root (exit 1)', async () => {
    const dir = tempDir();
    assert.equal((await trellis(['ca', 'init', dir])).code, 0);
    const before = readFileSync(join(dir, 'ca.crt'), 'utf8');
    const keyBefore = readFileSync(join(dir, 'ca.key'), 'utf8');
    const again = await trellis(['ca', 'init', dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /refusing to replace a root/);
    assert.equal(readFileSync(join(dir, 'ca.crt'), 'utf8'), before);
    assert.equal(readFileSync(join(dir, 'ca.key'), 'utf8'), keyBefore);

    // A folder holding only the root certificate (an operator's, say) is not overwritten either.
    rmSync(join(dir, 'ca.key'));
    const certOnly = await trellis(['ca', 'init', dir]);
    assert.equal(certOnly.code, 1);
    assert.match(certOnly.stderr, /ca\.crt exists; refusing to replace a root/);
    assert.equal(readFileSync(join(dir, 'ca.crt'), 'utf8'), before);
  });

  test('usage errors exit 2: a bad --ttl, a bad service or trust domain', async () => {
    const dir = tempDir();
    assert.equal((await trellis(['ca', 'init', dir])).code, 0);
    for (const ttl of ['10s', '721h', 'banana']) {
      const out = join(tempDir(), 'out');
      const run = await trellis(['ca', 'issue', '--ca', dir, '--service', 'checkout', '--trust-domain', 'shop.local', '--out', out, '--ttl', ttl]);
      assert.equal(run.code, 2, `--ttl ${ttl}: ${run.stderr}`);
      assert.equal(existsSync(join(out, 'key.pem')), false, 'nothing written');
    }
    const out = join(tempDir(), 'out');
    assert.equal((await trellis(['ca', 'issue', '--ca', dir, '--service', 'Check_out', '--trust-domain', 'shop.local', '--out', out])).code, 2);
    assert.equal((await trellis(['ca', 'issue', '--ca', dir, '--service', 'checkout', '--trust-domain', 'Shop Local', '--out', out])).code, 2);
    assert.equal((await trellis(['ca', 'init', join(tempDir(), 'x'), '--trust-domain', 'Shop Local'])).code, 2);
  });

  test('issue without a root to load exits 1', async () => {
    const run = await trellis(['ca', 'issue', '--ca', tempDir(), '--service', 'checkout', '--trust-domain', 'shop.local', '--out', join(tempDir(), 'out')]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /cannot load the root/);
  });
});

describe('trellis reconcile: mesh CA flags', () => {
  const reconcile = (args: string[]) => trellis(['reconcile', '--dir', SPEC_DIR, '--listen', '127.0.0.1:0', '--ca-dir', join(tempDir(), 'ca'), ...args]);

  test('--ca-cert and --ca-key go together (exit 2)', async () => {
    const root = tempDir();
    assert.equal((await trellis(['ca', 'init', root])).code, 0);
    for (const args of [['--ca-cert', join(root, 'ca.crt')], ['--ca-key', join(root, 'ca.key')]]) {
      const run = await reconcile(args);
      assert.equal(run.code, 2, `${args[0]} alone: ${run.stderr}`);
      assert.match(run.stderr, /--ca-cert and --ca-key go together/);
    }
  });

  test('--cert-ttl outside 1m..720h (exit 2)', async () => {
    for (const ttl of ['10s', '721h']) {
      const run = await reconcile(['--cert-ttl', ttl]);
      assert.equal(run.code, 2, `--cert-ttl ${ttl}: ${run.stderr}`);
      assert.match(run.stderr, /--cert-ttl must be between 1m and 720h/);
    }
  });

  test('a --trust-bundle file without a certificate (exit 2)', async () => {
    const bundle = join(tempDir(), 'bundle.pem');
    writeFileSync(bundle, 'no certificates here\n');
    const run = await reconcile(['--trust-bundle', bundle]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /holds no PEM certificate/);
  });

  test('with --ca-cert/--ca-key and --trust-bundle it signs under the operator\'s root and hands out both roots', async () => {
    const root = tempDir();
    assert.equal((await trellis(['ca', 'init', root, '--trust-domain', 'example.org'])).code, 0);
    const next = await MeshCertificateAuthority.generate('example.org');
    const bundle = join(tempDir(), 'bundle.pem');
    writeFileSync(bundle, next.rootPem);
    const home = tempDir();
    const child = spawn(process.execPath, [BIN, 'reconcile', '--dir', SPEC_DIR, '--listen', '127.0.0.1:0', '--ca-cert', join(root, 'ca.crt'), '--ca-key', join(root, 'ca.key'), '--trust-bundle', bundle, '--cert-ttl', '2h'], { cwd: ROOT, env: childEnv(home), stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

    await waitFor(() => /"type":"listening"/.test(stdout) || child.exitCode !== null, 'the reconciler to listen', 20_000);
    assert.equal(child.exitCode, null, `the reconciler exited: ${stderr}`);
    const port = (JSON.parse(stdout.split('\n').find((l) => l.includes('"type":"listening"'))!) as { port: number }).port;
    const url = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await (await request(`${url}/readyz`)).body.json() as { ready: boolean }).ready, 'a revision to be applied', 20_000);

    const service = 'web';
    const res = await request(`${url}/v1/certificate`, {
      method: 'POST',
      headers: { authorization: 'Bearer cli-ca-test-token', 'content-type': 'application/json' },
      body: JSON.stringify({ service, node: 'n1', csr: await createCertificateRequest(await generateKeyPair(), service) }),
    });
    const answer = (await res.body.json()) as { identity: string; certificate: string; trustBundle: string[] };
    assert.equal(res.statusCode, 200, JSON.stringify(answer));
    const operatorRoot = new X509Certificate(readFileSync(join(root, 'ca.crt')));
    const leaf = new X509Certificate(answer.certificate);
    assert.ok(leaf.verify(operatorRoot.publicKey), 'signed with --ca-key');
    assert.equal(leaf.validToDate.getTime() - leaf.validFromDate.getTime(), 2 * 3600_000 + 60_000, '--cert-ttl 2h');
    assert.deepEqual(answer.trustBundle.map((p) => new X509Certificate(p).fingerprint256), [operatorRoot.fingerprint256, new X509Certificate(next.rootPem).fingerprint256]);
    assert.equal(existsSync(join(home, '.local', 'share', 'trellis', 'ca')), false, 'no generated CA next to an operator\'s root');

    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 15_000).unref())]);
    assert.equal(code, 0, `exit after SIGTERM: ${stderr}`);
  });
});
