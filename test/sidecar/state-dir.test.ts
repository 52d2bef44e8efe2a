/**
 * A state folder that cannot be written never costs a config: the sidecar starts from
 * --config with one it cannot use, and a config applied while the folder has become
 * unusable runs, is reported (200 with stored: false, a warning, a metric), shows in the
 * metrics as the running version, and leaves no temporary file. Tests run as root, for
 * whom permission bits block nothing: the folder is made unusable by putting a regular
 * file where a folder must be (ENOTDIR, EEXIST) or a folder where the file must be (EISDIR).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { backendsSpec, cleanup, configOf, metricValue, send, startSidecar, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
const TOKEN = 'state-dir-token-0123456789';
const dirs: string[] = [];
const children: Array<import('node:child_process').ChildProcess> = [];
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await cleanup();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'trellis-state-'));
  dirs.push(d);
  return d;
}

async function put(port: number, config: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`http://127.0.0.1:${port}/config`, { method: 'PUT', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(config) });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

/** Log lines written to a pino destination, parsed. */
function logCollector(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

describe('an unusable --state-dir', () => {
  test('the process starts from --config when --state-dir lies inside a regular file', { timeout: 15_000 }, async () => {
    const api = await startUpstream('api');
    const dir = tempDir();
    const config = configOf(backendsSpec({ api: [api.port] }), 'client');
    writeFileSync(join(dir, 'client.json'), JSON.stringify(config));
    writeFileSync(join(dir, 'a-file'), 'not a folder');
    const child = spawn(process.execPath, [BIN, 'sidecar', '--config', join(dir, 'client.json'), '--state-dir', join(dir, 'a-file', 'state'), '--outbound', '0', '--inbound', '0', '--admin', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    let code: number | null | undefined;
    void exited.then((c) => (code = c));
    await waitFor(() => stdout.includes('"type":"listening"') || code !== undefined, 'the sidecar to listen or exit', 10_000);
    assert.equal(code, undefined, `the sidecar exited: ${stderr}`);
    const listening = JSON.parse(stdout.split('\n').find((l) => l.includes('"type":"listening"'))!) as { outbound: number; admin: number };
    assert.match(stdout, /"type":"config_store_failed"/, 'the failure to store is logged with its code');
    assert.equal((await send(listening.outbound, 'api', '/')).body, 'api', 'the config from --config runs');
    const m = await (await fetch(`http://127.0.0.1:${listening.admin}/metrics`)).text();
    assert.equal(metricValue(m, 'trellis_config_info', { version: config.version }), 1);
    assert.equal(metricValue(m, 'trellis_config_store_failures_total'), 1);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  });

  for (const [how, breakIt] of [
    ['the folder replaced by a regular file', (state: string) => (rmSync(state, { recursive: true, force: true }), writeFileSync(state, 'gone'))],
    ['config.json replaced by a folder, so the final rename fails', (state: string) => (rmSync(join(state, 'config.json'), { force: true }), mkdirSync(join(state, 'config.json', 'x'), { recursive: true }))],
  ] as const) {
    test(`a config applied after the state folder broke (${how}) runs, is reported, and leaves no temporary file`, async () => {
      const [a, b] = [await startUpstream('a'), await startUpstream('b')];
      const dir = tempDir();
      const state = join(dir, 'state');
      const first = configOf(backendsSpec({ api: [a.port] }), 'client');
      const second = configOf(backendsSpec({ api: [b.port] }), 'client');
      const { logger, lines } = logCollector();
      const sc = await startSidecar(first, { stateDir: state, adminToken: TOKEN, logger, identity: 'client' });
      assert.deepEqual(readdirSync(state), ['config.json'], 'the first config was stored');
      breakIt(state);
      const r = await put(sc.admin, second);
      assert.equal(r.status, 200, `PUT /config: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.version, second.version);
      assert.equal(r.body.stored, false, 'the answer says the config was not stored');
      assert.equal(sc.sidecar.store.current?.version, second.version);
      const m = await (await fetch(`http://127.0.0.1:${sc.admin}/metrics`)).text();
      assert.equal(metricValue(m, 'trellis_config_info', { version: second.version }), 1, 'metrics show the running version');
      assert.equal(metricValue(m, 'trellis_config_info', { version: first.version }), 0);
      assert.equal(metricValue(m, 'trellis_config_store_failures_total'), 1);
      assert.ok(lines.some((l) => l.type === 'config_store_failed' && l.level === 40 && l.version === second.version), 'a warning with the stable code and the version');
      const leftovers = readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.tmp'));
      assert.deepEqual(leftovers, [], 'no temporary file left');
    });
  }
});
