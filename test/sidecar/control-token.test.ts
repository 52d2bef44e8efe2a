/**
 * The bearer a sidecar presents to the reconciler comes from a file read again for every
 * control request (subscription, ack, certificate request), so a token the kubelet rotated
 * is used without a restart; a refusal (401) is logged with its code and retried with
 * backoff, never a crash. The reconciler here is a tiny real HTTP server that records the
 * Authorization header of every request and accepts only the tokens it is told to.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { ACK_PATH, CERTIFICATE_PATH, STREAM_PATH } from '../../src/config/control-protocol.ts';
import type { ProxyConfig } from '../../src/config/types.ts';
import { tokenFromFile } from '../../src/sidecar/control-token.ts';
import { backendsSpec, cleanup, configOf, startSidecar, waitFor } from '../helpers/sidecar-harness.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
const children: ChildProcess[] = [];
const dirs: string[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  await cleanup();
});

interface Seen {
  readonly path: string;
  readonly authorization: string | undefined;
}

/** A stand-in reconciler: 401 `token_expired` for tokens not in `accepted`; streams `config` to the others. */
async function fakeReconciler(config: ProxyConfig, accepted: Set<string>) {
  const seen: Seen[] = [];
  const streams = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    seen.push({ path: req.url ?? '', authorization: req.headers.authorization });
    req.resume();
    req.on('end', () => {
      const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (!accepted.has(token)) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'token_expired', message: 'the token has expired' }));
      } else if (req.url === STREAM_PATH) {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(`${JSON.stringify({ type: 'config', revision: 'r1', config })}\n`);
        streams.add(res);
        res.on('close', () => streams.delete(res));
      } else if (req.url === ACK_PATH) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      } else {
        // Certificates are not what these tests are about.
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'ca_unavailable' }));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  after(close);
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    saw: (path: string, token: string) => seen.some((s) => s.path === path && s.authorization === `Bearer ${token}`),
    /** Ends the open config streams, as a reconciler restart would. */
    dropStreams: () => {
      for (const s of streams) s.end();
    },
  };
}

function tokenFile(token: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-token-'));
  dirs.push(dir);
  const file = join(dir, 'token');
  writeFileSync(file, `${token}\n`);
  return file;
}

/** Replaces the file in one step, as the kubelet does for a projected token. */
function rotate(file: string, token: string): void {
  writeFileSync(`${file}.new`, token);
  renameSync(`${file}.new`, file);
}

const CONFIG = configOf(backendsSpec({ api: [9] }, '', '  mtls: { mode: "off" }'), 'client');

describe('control credentials from a file', () => {
  test('a refused token is logged with its code and retried; the rotated token is read and used for the stream, acks and certificate requests', async () => {
    const reconciler = await fakeReconciler(CONFIG, new Set(['fresh']));
    const file = tokenFile('expired');
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>), done()) }));
    const sc = await startSidecar(undefined, { service: 'client', control: { url: reconciler.url, token: tokenFromFile(file) }, logger, identity: null });

    await waitFor(() => lines.some((l) => l.type === 'control_refused' && l.code === 'token_expired' && l.status === 401), 'the refusal logged with its code');
    await waitFor(() => reconciler.seen.filter((s) => s.path === STREAM_PATH).length >= 2, 'a retry after the refusal');
    assert.ok(reconciler.saw(CERTIFICATE_PATH, 'expired'));
    assert.ok(lines.some((l) => l.type === 'certificate_renewal_failed' && l.code === 'token_expired'));
    assert.equal(sc.sidecar.store.current, undefined, 'nothing applied while refused');

    rotate(file, 'fresh');
    await waitFor(() => reconciler.saw(STREAM_PATH, 'fresh'), 'a subscription with the rotated token', 10_000);
    await waitFor(() => sc.sidecar.store.current?.version === CONFIG.version, 'the config applied');
    await waitFor(() => reconciler.saw(ACK_PATH, 'fresh'), 'the ack with the rotated token');
    await waitFor(() => reconciler.saw(CERTIFICATE_PATH, 'fresh'), 'a certificate request with the rotated token', 15_000);
    assert.ok(sc.sidecar.controlConnected);
  });

  test('a token file that cannot be read is a logged, retried failure too', async () => {
    const reconciler = await fakeReconciler(CONFIG, new Set(['later']));
    const dir = mkdtempSync(join(tmpdir(), 'trellis-token-'));
    dirs.push(dir);
    const file = join(dir, 'token');
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>), done()) }));
    await startSidecar(undefined, { service: 'client', control: { url: reconciler.url, token: tokenFromFile(file) }, logger, identity: null });
    await waitFor(() => lines.some((l) => l.type === 'control_disconnected' && String(l.error).includes('cannot read the control token file')), 'the missing file logged');
    writeFileSync(file, 'later');
    await waitFor(() => reconciler.saw(STREAM_PATH, 'later'), 'the token once the file exists', 10_000);
  });
});

describe('trellis sidecar --control-token-file / TRELLIS_CONTROL_TOKEN', () => {
  async function startProcess(args: string[], env: Record<string, string> = {}): Promise<ChildProcess> {
    const child = spawn(process.execPath, [BIN, 'sidecar', '--outbound', '0', '--inbound', '0', '--admin', '0', '--service', 'client', ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, TRELLIS_CONTROL_TOKEN: '', ...env },
    });
    children.push(child);
    return child;
  }

  test('the process reads the file again when it reconnects', async () => {
    const reconciler = await fakeReconciler(CONFIG, new Set(['one', 'two']));
    const file = tokenFile('one');
    const child = await startProcess(['--control', reconciler.url, '--control-token-file', file]);
    await waitFor(() => reconciler.saw(STREAM_PATH, 'one'), 'the first token', 15_000);
    rotate(file, 'two');
    reconciler.dropStreams();
    await waitFor(() => reconciler.saw(STREAM_PATH, 'two'), 'the rotated token after reconnecting', 10_000);
    await waitFor(() => reconciler.saw(ACK_PATH, 'two'), 'an ack with the rotated token', 10_000);
    child.kill('SIGTERM');
  });

  test('TRELLIS_CONTROL_TOKEN still works; a missing file is a usage error', async () => {
    const reconciler = await fakeReconciler(CONFIG, new Set(['shared']));
    const child = await startProcess(['--control', reconciler.url], { TRELLIS_CONTROL_TOKEN: 'shared' });
    await waitFor(() => reconciler.saw(STREAM_PATH, 'shared'), 'the shared token', 15_000);
    child.kill('SIGTERM');
    const missing = await startProcess(['--control', reconciler.url, '--control-token-file', join(tmpdir(), 'trellis-no-such-token')]);
    let stderr = '';
    missing.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => missing.on('exit', (c) => r(c)));
    assert.equal(code, 2);
    assert.match(stderr, /--control-token-file/);
  });

  test('--service takes a service key (NAME or NAMESPACE/NAME)', async () => {
    const child = spawn(process.execPath, [BIN, 'sidecar', '--outbound', '0', '--inbound', '0', '--admin', '0', '--service', 'Shop/checkout'], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    assert.equal(await new Promise<number | null>((r) => child.on('exit', (c) => r(c))), 2);
    assert.match(stderr, /service key/);
  });
});
