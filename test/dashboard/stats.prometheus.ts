/**
 * Prometheus mode with a real Prometheus (Debian's `prometheus`): it scrapes the sidecars it
 * finds through the reconciler's service discovery, with the scrape config Trellis generates,
 * and the reconciler answers /v1/stats (and so `trellis stat` and the dashboard) with PromQL
 * over what it scraped — the same numbers as the sidecars' reports, within what
 * `increase()`'s extrapolation allows.
 *
 * Runs on its own (npm run test:prometheus): it needs /usr/bin/prometheus (apt-get install
 * prometheus) or PROMETHEUS_PATH.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { DashboardData } from '../../src/dashboard/dashboard-data.ts';
import type { StatsView } from '../../src/dashboard/mesh-stats.ts';
import { PrometheusStats, prometheusConfig } from '../../src/dashboard/prometheus.ts';
import { closedPort, send, waitFor } from '../helpers/sidecar-harness.ts';
import { startStatsMesh, type StatsMesh } from './stats-mesh.ts';

const PROMETHEUS = process.env.PROMETHEUS_PATH ?? '/usr/bin/prometheus';

let mesh: StatsMesh;
let prometheus: ChildProcess;
let stats: PrometheusStats;
let dir: string;
let output = '';

before(async () => {
  assert.ok(existsSync(PROMETHEUS), `no Prometheus at ${PROMETHEUS}: apt-get install prometheus (or set PROMETHEUS_PATH)`);
  const port = await closedPort();
  stats = new PrometheusStats(`http://127.0.0.1:${port}`);
  mesh = await startStatsMesh({ delayMs: 1, prometheus: stats });
  dir = mkdtempSync(join(tmpdir(), 'trellis-prometheus-'));
  // Scraped every second so the test is short; the generated default is 5 s.
  writeFileSync(join(dir, 'prometheus.yml'), prometheusConfig(mesh.url, 1));
  prometheus = spawn(PROMETHEUS, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  prometheus.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  prometheus.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  await waitFor(async () => (await fetch(`${stats.url}/-/ready`).catch(() => undefined))?.status === 200, `Prometheus to be ready:\n${output.slice(-2000)}`, 30_000);
});

after(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((r) => prometheus.once('exit', r));
    prometheus.kill('SIGTERM');
    await exited;
  }
  await stats?.close();
  await mesh?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const view = async (): Promise<StatsView> => {
  const res = await fetch(`${mesh.url}/v1/stats?window=1m`);
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as StatsView;
};

test('the reconciler lists the sidecars for Prometheus and generates its scrape config', async () => {
  const targets = (await (await fetch(`${mesh.url}/v1/prometheus/targets`)).json()) as Array<{ targets: string[]; labels: Record<string, string> }>;
  assert.deepEqual(targets.map((t) => t.labels.service).sort(), ['api', 'api-v2', 'client']);
  assert.match(targets[0]!.targets[0]!, /^127\.0\.0\.1:\d+$/);
  const config = await (await fetch(`${mesh.url}/v1/prometheus/config`)).text();
  assert.equal(config, prometheusConfig(mesh.url));
  // Prometheus found and scrapes all three.
  await waitFor(async () => {
    const up = (await (await fetch(`${stats.url}/api/v1/query?query=${encodeURIComponent('up{job="trellis-sidecars"}')}`)).json()) as { data: { result: Array<{ value: [number, string] }> } };
    return up.data.result.length === 3 && up.data.result.every((r) => r.value[1] === '1');
  }, 'Prometheus to scrape the three sidecars', 20_000);
});

test('trellis stat and the dashboard read PromQL: counts, success rate, latency and denials match the traffic sent', async () => {
  // Every series first, so that Prometheus has a sample of each before the counted traffic.
  await send(mesh.client.outbound, 'api', '/');
  await send(mesh.client.outbound, 'api', '/status/503');
  await send(mesh.client.outbound, 'api', '/', { method: 'DELETE' });
  await waitFor(async () => (await view()).edges.some((e) => e.source === 'client' && e.destination === 'api'), 'the first requests in Prometheus', 20_000);
  for (let i = 0; i < 60; i++) await send(mesh.client.outbound, 'api', '/');
  for (let i = 0; i < 20; i++) await send(mesh.client.outbound, 'api', '/status/503');
  for (let i = 0; i < 5; i++) await send(mesh.client.outbound, 'api', '/', { method: 'DELETE' });
  // 88 requests in all. increase() over the minute extrapolates what was scraped towards the
  // window's edges (a series a few seconds old is stretched by up to about half again, and
  // more for a handful of samples), so counts are checked to lie between what was sent and
  // twice that, and the success rate (both series stretched alike) closely. Waits until every sidecar's last counts were scraped (the client's and api's).
  const deniedAt = (v: StatsView) => v.access.filter((a) => a.service === 'api' && a.what === 'denied').reduce((n, a) => n + a.count, 0);
  let v: StatsView | undefined;
  await waitFor(async () => {
    v = await view();
    const e = v.edges.find((x) => x.source === 'client' && x.destination === 'api');
    return e !== undefined && e.requests >= 85 && e.denied >= 5 && deniedAt(v) >= 5;
  }, 'the counted traffic in Prometheus', 20_000);
  const edge = v!.edges.find((e) => e.source === 'client' && e.destination === 'api')!;
  assert.equal(v!.source, 'prometheus');
  assert.ok(edge.requests >= 85 && edge.requests <= 88 * 2, `requests ${edge.requests}`);
  assert.ok(Math.abs(edge.successRate! - 67 / 88) < 0.06, `success rate ${edge.successRate}, sent ${67 / 88}`);
  assert.ok(edge.denied >= 5 && edge.denied <= 6 * 2, `denied ${edge.denied}`);
  assert.ok(edge.p50! > 0 && edge.p99! < 0.25, `p50 ${edge.p50}, p99 ${edge.p99}`);
  // Denials per service come from the `service` label the service discovery gives each target.
  assert.ok(deniedAt(v!) <= 6 * 2, `denials at api: ${deniedAt(v!)}`);
  const d = (await (await fetch(`${mesh.url}/v1/dashboard?window=1m`)).json()) as DashboardData;
  assert.equal(d.stats.source, 'prometheus');
  assert.ok(d.stats.edges.some((e) => e.source === 'client' && e.destination === 'api' && e.requests >= 85));
});
