/** `trellis stat` through the real CLI (a child process) against a real mesh's reconciler. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { StatsView } from '../../src/dashboard/mesh-stats.ts';
import { closedPort, send } from '../helpers/sidecar-harness.ts';
import { startStatsMesh, TOKEN, type StatsMesh } from './stats-mesh.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));

function trellis(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, NO_COLOR: '1' }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

let mesh: StatsMesh;
before(async () => {
  mesh = await startStatsMesh({ delayMs: 5 });
  for (let i = 0; i < 18; i++) await send(mesh.client.outbound, 'api', '/');
  for (let i = 0; i < 2; i++) await send(mesh.client.outbound, 'api', '/status/500');
  await send(mesh.client.outbound, 'api', '/', { method: 'POST' });
  await mesh.report();
});
after(() => mesh.stop());

test('the text table shows success rate, rps and latencies per service, edge and route, and the denial', async () => {
  const run = await trellis(['stat', '--url', mesh.url, '--window', '5m']);
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.split('\n');
  const row = (prefix: RegExp) => lines.find((l) => prefix.test(l)) ?? assert.fail(`no row ${prefix} in\n${run.stdout}`);
  assert.match(lines[0]!, /^SERVICES {2}last 5m/);
  // 21 requests: 2 failed (500), 1 denied (403, not a failure).
  assert.match(row(/^ {2}api +itself /), /api +itself +90\.48% +\S+ +\d+(\.\d)?ms +\d+(\.\d)?ms +\d+(\.\d)?ms +21 +1$/);
  assert.match(row(/^ {2}client +api /), /client +api +90\.48% .* 21 +1$/);
  assert.match(row(/^ {2}client +api +api-split /), / 21 +1$/);
  assert.match(run.stdout, /REFUSED\n {2}api: 1 denied by access policy \(no_matching_rule\)/);
});

test('--format json, --from/--to filters, and a bad window is a usage error', async () => {
  const json = await trellis(['stat', '--url', mesh.url, '--format', 'json', '--to', 'api']);
  assert.equal(json.code, 0, json.stderr);
  const view = JSON.parse(json.stdout) as StatsView;
  assert.deepEqual(view.edges.map((e) => [e.source, e.destination, e.requests, e.failures, e.denied]), [['client', 'api', 21, 2, 1]]);
  const none = JSON.parse((await trellis(['stat', '--url', mesh.url, '--format', 'json', '--from', 'api'])).stdout) as StatsView;
  assert.deepEqual(none.edges, []);
  const bad = await trellis(['stat', '--url', mesh.url, '--window', 'forever']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /window is a duration/);
});

test('names from reports are escaped; an unreachable reconciler is exit 1', async () => {
  const evil = { reporter: 'outbound', source: 'x\u001b[31mred', destination: 'api', route: 'r', code: '200', flags: '-', count: 1 };
  const posted = await fetch(`${mesh.url}/v1/stats`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ service: 'client', node: 'n', intervalMs: 1000, bounds: [], requests: [evil], latencies: [], access: [], tls: [] }),
  });
  assert.equal(posted.status, 204);
  const run = await trellis(['stat', '--url', mesh.url]);
  assert.equal(run.code, 0);
  assert.ok(!run.stdout.includes('\u001b'), 'no raw escape character reaches the terminal');
  assert.match(run.stdout, /x\\x1b\[31mred/);
  const away = await trellis(['stat', '--url', `http://127.0.0.1:${await closedPort()}`]);
  assert.equal(away.code, 1);
  assert.match(away.stderr, /cannot reach the reconciler/);
});
