/** `trellis sidecar` as a real process: start from a file, restart from the stored config, drain on SIGTERM. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync, utimesSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { backendsSpec, cleanup, configOf, send, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';
import { credentialFor, writeCredentialFiles } from '../helpers/identity.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
const children: ChildProcess[] = [];
const dirs: string[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  await cleanup();
});

interface SidecarProcess {
  readonly child: ChildProcess;
  readonly outbound: number;
  readonly admin: number;
  readonly exited: Promise<number | null>;
  readonly stderr: () => string;
}

/** Starts `trellis sidecar` on port 0 and waits for its "listening" log line. */
async function startProcess(args: string[]): Promise<SidecarProcess> {
  const child = spawn(process.execPath, [BIN, 'sidecar', '--outbound', '0', '--inbound', '0', '--admin', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const listening = new Promise<{ outbound: number; admin: number }>((resolve, reject) => {
    let buffer = '';
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      for (const line of buffer.split('\n')) {
        if (line.includes('"type":"listening"')) resolve(JSON.parse(line) as { outbound: number; admin: number });
      }
    });
    void exited.then((code) => reject(new Error(`sidecar exited with ${code} before listening: ${stderr}`)));
  });
  const ports = await listening;
  return { child, outbound: ports.outbound, admin: ports.admin, exited, stderr: () => stderr };
}

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'trellis-sidecar-'));
  dirs.push(d);
  return d;
}

describe('trellis sidecar process', () => {
  test('runs as one process: the sidecar bundle in place of bin/trellis.js (same pid), with its V8 settings; a source newer than the bundle gets it rebuilt', async () => {
    const api = await startUpstream('api');
    const dir = await tempDir();
    await writeFile(join(dir, 'client.json'), JSON.stringify(configOf(backendsSpec({ api: [api.port] }), 'client')));
    // A bundle older than the sources is rebuilt before it runs.
    const bundle = fileURLToPath(new URL('../../dist/sidecar/trellis-sidecar.mjs', import.meta.url));
    if (existsSync(bundle)) utimesSync(bundle, new Date(0), new Date(0));
    const sc = await startProcess(['--config', join(dir, 'client.json')]);
    const argv = readFileSync(`/proc/${sc.child.pid}/cmdline`, 'utf8').split('\0');
    assert.equal(argv[1], '--max-semi-space-size=4');
    assert.equal(argv[2], bundle);
    assert.equal(argv[3], 'sidecar');
    assert.ok(statSync(bundle).mtimeMs > Date.now() - 120_000, 'the stale bundle was rebuilt');
    const children = readFileSync(`/proc/${sc.child.pid}/task/${sc.child.pid}/children`, 'utf8').trim();
    assert.equal(children, '', 'no second process next to it');
    assert.equal((await send(sc.outbound, 'api', '/')).body, 'api');
    sc.child.kill('SIGTERM');
    assert.equal(await sc.exited, 0);
  });

  test('restarts from the stored config when no --config is given', async () => {
    const api = await startUpstream('api');
    const dir = await tempDir();
    const config = configOf(backendsSpec({ api: [api.port] }), 'client');
    await writeFile(join(dir, 'client.json'), JSON.stringify(config));
    const tls = writeCredentialFiles(await credentialFor('client'));
    dirs.push(tls.dir);
    const identity = ['--tls-cert', tls.cert, '--tls-key', tls.key, '--tls-ca', tls.ca];
    const first = await startProcess(['--config', join(dir, 'client.json'), '--state-dir', join(dir, 'state'), ...identity]);
    assert.equal((await send(first.outbound, 'api', '/')).body, 'api');
    first.child.kill('SIGTERM');
    assert.equal(await first.exited, 0);

    const second = await startProcess(['--state-dir', join(dir, 'state'), ...identity]);
    const ready = (await (await fetch(`http://127.0.0.1:${second.admin}/readyz`)).json()) as { ready: boolean; version: string };
    assert.deepEqual(ready, { ready: true, version: config.version });
    assert.equal((await send(second.outbound, 'api', '/')).body, 'api');
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  });

  test('a SIGTERM as soon as it logs listening (its identity files still loading) drains it: exit 0, not killed by the signal', async () => {
    const api = await startUpstream('api');
    const dir = await tempDir();
    await writeFile(join(dir, 'client.json'), JSON.stringify(configOf(backendsSpec({ api: [api.port] }), 'client')));
    const tls = writeCredentialFiles(await credentialFor('client'));
    dirs.push(tls.dir);
    const sc = await startProcess(['--config', join(dir, 'client.json'), '--tls-cert', tls.cert, '--tls-key', tls.key, '--tls-ca', tls.ca]);
    sc.child.kill('SIGTERM');
    assert.equal(await sc.exited, 0, sc.stderr());
  });

  test('on SIGTERM: not ready at once, in-flight requests finish, then exit 0', async () => {
    let release: (() => void) | undefined;
    const api = await startUpstream('api', (_req, res) => (release = () => res.end('finished')));
    const dir = await tempDir();
    await writeFile(join(dir, 'client.json'), JSON.stringify(configOf(backendsSpec({ api: [api.port] }), 'client')));
    const sc = await startProcess(['--config', join(dir, 'client.json'), '--drain-timeout', '10s']);
    const inFlight = send(sc.outbound, 'api', '/slow');
    await waitFor(() => release !== undefined, 'the request to reach the upstream');
    sc.child.kill('SIGTERM');
    await waitFor(async () => (await fetch(`http://127.0.0.1:${sc.admin}/readyz`).then((r) => r.status).catch(() => 0)) === 503, 'readiness to go false');
    release!();
    const r = await inFlight;
    assert.equal(r.status, 200);
    assert.equal(r.body, 'finished');
    assert.equal(await sc.exited, 0);
  });

  test('an invalid --config file stops it with the reasons and exit 1', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'bad.json'), JSON.stringify({ apiVersion: 'trellis.dev/proxy/v1alpha1', kind: 'ProxyConfig', service: 'x', version: 'nope', resources: [] }));
    const child = spawn(process.execPath, [BIN, 'sidecar', '--config', join(dir, 'bad.json'), '--outbound', '0', '--inbound', '0', '--admin', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    assert.equal(code, 1);
    assert.match(stderr, /is not a valid proxy config \(invalid_config\)/);
    assert.match(stderr, /version/);
  });

  test('the admin listener refuses a non-loopback address without --admin-allow-remote', async () => {
    const child = spawn(process.execPath, [BIN, 'sidecar', '--admin', '0.0.0.0:0', '--outbound', '0', '--inbound', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    assert.equal(await new Promise<number | null>((r) => child.on('exit', r)), 2);
    assert.match(stderr, /--admin-allow-remote/);
  });

  test('the outbound listener refuses a non-loopback address without --outbound-allow-remote (it is an open proxy to whoever reaches it)', { timeout: 10_000 }, async () => {
    const child = spawn(process.execPath, [BIN, 'sidecar', '--outbound', '0.0.0.0:0', '--inbound', '0', '--admin', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    assert.equal(await new Promise<number | null>((r) => child.on('exit', r)), 2);
    assert.match(stderr, /--outbound-allow-remote/);
  });

  test('--outbound-allow-remote lets the outbound listener bind elsewhere; --inbound binds any address (the mTLS port)', async () => {
    const p = await startProcess(['--outbound', '0.0.0.0:0', '--outbound-allow-remote', '--inbound', '0.0.0.0:0']);
    assert.ok(p.outbound > 0);
    p.child.kill('SIGTERM');
    assert.equal(await p.exited, 0);
  });
});
