/** `trellis dashboard` as a process: it serves the page and passes the reconciler's dashboard data through, and nothing else. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { DashboardData } from '../../src/dashboard/dashboard-data.ts';
import { closedPort, send, waitFor } from '../helpers/sidecar-harness.ts';
import { startStatsMesh, type StatsMesh } from './stats-mesh.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));

let mesh: StatsMesh;
before(async () => {
  mesh = await startStatsMesh({ delayMs: 1 });
});
after(() => mesh.stop());

function startDashboard(url: string) {
  const child = spawn(process.execPath, [BIN, 'dashboard', '--control', url, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, exited, output: () => out };
}

test('the page from this machine, the data from the reconciler', async () => {
  for (let i = 0; i < 10; i++) await send(mesh.client.outbound, 'api', '/');
  await mesh.report();
  const d = startDashboard(mesh.url);
  try {
    await waitFor(() => /dashboard http:\/\/127\.0\.0\.1:\d+\/dashboard/.test(d.output()), 'the dashboard URL', 10_000);
    const page = /dashboard (http:\/\/\S+)/.exec(d.output())![1]!;
    const html = await fetch(page);
    assert.equal(html.status, 200);
    assert.match(await html.text(), /<div id="graph"/);
    assert.equal((await fetch(new URL('/dashboard/app.js', page))).status, 200);
    const data = (await (await fetch(new URL('/v1/dashboard?window=1m', page))).json()) as DashboardData;
    assert.equal(data.stats.edges.find((e) => e.source === 'client' && e.destination === 'api')?.requests, 10);
    assert.equal((await fetch(new URL('/v1/explain?from=client&to=api', page))).status, 200);
    // Only the page's data is passed through: not the reconciler's status, stats intake or streams.
    assert.equal((await fetch(new URL('/status', page))).status, 404);
    assert.equal((await fetch(new URL('/v1/stats', page), { method: 'POST', body: '{}' })).status, 405);
  } finally {
    d.child.kill('SIGINT');
  }
  assert.equal(await d.exited, 0);
});

test('an unreachable reconciler is a 502 with the reason, the page still loads', async () => {
  const d = startDashboard(`http://127.0.0.1:${await closedPort()}`);
  try {
    await waitFor(() => /dashboard http:\/\/\S+/.test(d.output()), 'the dashboard URL', 10_000);
    const page = /dashboard (http:\/\/\S+)/.exec(d.output())![1]!;
    assert.equal((await fetch(page)).status, 200);
    const data = await fetch(new URL('/v1/dashboard', page));
    assert.equal(data.status, 502);
    assert.match(((await data.json()) as { message: string }).message, /cannot reach the reconciler/);
  } finally {
    d.child.kill('SIGINT');
  }
  assert.equal(await d.exited, 0);
});
