/** MeshStats on an injected clock: windows, ring eviction, the series cap, quantiles; and the sidecar's report arithmetic. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MeshStats, parseWindow, quantile } from '../../src/dashboard/mesh-stats.ts';
import { SidecarMetrics } from '../../src/sidecar/metrics.ts';
import { readSample, reportBetween, type StatsReport } from '../../src/sidecar/stats-report.ts';

const BOUNDS = [0.01, 0.1, 1];

function report(requests: Array<[source: string, destination: string, code: string, count: number]>, latencies: number[][] = []): StatsReport {
  return {
    service: 'client',
    node: 'client-0',
    intervalMs: 10_000,
    bounds: BOUNDS,
    requests: requests.map(([source, destination, code, count]) => ({ reporter: 'outbound', source, destination, route: 'r', code, flags: '-', count })),
    latencies: latencies.map((buckets) => ({ reporter: 'outbound', source: 'client', destination: 'api', route: 'r', buckets })),
    access: [],
    tls: [],
  };
}

test('quantile interpolates inside the bucket like histogram_quantile, and answers the top bound for the overflow', () => {
  assert.equal(quantile(0.5, BOUNDS, [0, 0, 0, 0]), null);
  assert.equal(quantile(0.5, BOUNDS, [10, 0, 0, 0]), 0.005);
  // 100 requests in (0.01, 0.1]: the median is halfway through it.
  assert.equal(quantile(0.5, BOUNDS, [0, 100, 0, 0]), 0.055);
  assert.equal(quantile(0.99, BOUNDS, [90, 9, 0, 1]), 0.1);
  assert.equal(quantile(0.999, BOUNDS, [90, 9, 0, 1]), 1);
});

test('rates cover the window, or the time since the first report; old buckets leave the window', () => {
  let now = 1_000_000_000;
  const stats = new MeshStats({ bucketMs: 10_000, now: () => now });
  stats.record(report([['client', 'api', '200', 90], ['client', 'api', '500', 10]], [[0, 100, 0, 0]]));
  let edge = stats.query({ windowMs: 60_000 }).edges[0]!;
  assert.deepEqual([edge.requests, edge.failures, edge.successRate, edge.p50], [100, 10, 0.9, 0.055]);
  // The first report covers its 10 s interval: 100 requests over 10 s.
  assert.equal(edge.rps, 10);
  now += 30_000;
  stats.record(report([['client', 'api', '200', 200]]));
  edge = stats.query({ windowMs: 60_000 }).edges[0]!;
  assert.equal(edge.requests, 300);
  assert.equal(edge.rps, 7.5);
  // 70 s on, the first bucket is out of a one-minute window and only the second counts.
  now += 40_000;
  edge = stats.query({ windowMs: 60_000 }).edges[0]!;
  assert.deepEqual([edge.requests, edge.failures, edge.successRate], [200, 0, 1]);
  // Long after, nothing is left in the window; the series stays (bounded), with no traffic.
  now += 20 * 60_000;
  assert.deepEqual(stats.query({ windowMs: 60_000 }).edges, []);
  assert.equal(stats.query({ windowMs: 60_000 }).limits.series, 1);
});

test('series beyond the cap are counted as dropped, never stored', () => {
  const stats = new MeshStats({ maxSeries: 2, now: () => 5_000_000 });
  stats.record(report([['a', 'b', '200', 1], ['a', 'c', '200', 1], ['a', 'd', '200', 1], ['a', 'e', '200', 1]]));
  const view = stats.query({ windowMs: 60_000 });
  assert.equal(view.edges.length, 2);
  assert.deepEqual(view.limits, { series: 2, maxSeries: 2, droppedSeries: 2 });
});

test('a 403 is a denial, a proxy error or a 5xx a failure', () => {
  const stats = new MeshStats({ now: () => 5_000_000 });
  stats.record({
    ...report([]),
    requests: [
      { reporter: 'outbound', source: 'a', destination: 'b', route: 'r', code: '403', flags: '-', count: 2 },
      { reporter: 'outbound', source: 'a', destination: 'b', route: 'r', code: '504', flags: 'timeout', count: 3 },
      { reporter: 'outbound', source: 'a', destination: 'b', route: 'r', code: '404', flags: '-', count: 5 },
    ],
  });
  const edge = stats.query({ windowMs: 60_000 }).edges[0]!;
  assert.deepEqual([edge.requests, edge.failures, edge.denied, edge.successRate], [10, 3, 2, 0.7]);
});

test('a sidecar reports increases since the report it last had taken, and starts over when its counters restart', async () => {
  const metrics = new SidecarMetrics();
  const labels = { reporter: 'outbound', source_workload: 'client', destination_service: 'api', route: 'r', response_code: '200', response_flags: '-' } as const;
  for (let i = 0; i < 3; i++) metrics.observe(labels, 0.02);
  const first = await readSample(metrics);
  const r1 = reportBetween(undefined, first, { service: 'client', node: 'n', intervalMs: 1000 });
  assert.deepEqual(r1.requests.map((r) => r.count), [3]);
  assert.equal(r1.latencies[0]!.buckets.reduce((a, b) => a + b, 0), 3);
  metrics.observe(labels, 2);
  const second = await readSample(metrics);
  const r2 = reportBetween(first, second, { service: 'client', node: 'n', intervalMs: 1000 });
  assert.deepEqual(r2.requests.map((r) => r.count), [1]);
  // The one new request took 2 s: it lies in the (1, 2.5] bucket alone.
  const i = r2.bounds.indexOf(2.5);
  assert.equal(r2.latencies[0]!.buckets[i], 1);
  assert.equal(r2.latencies[0]!.buckets.reduce((a, b) => a + b, 0), 1);
  // Nothing new: nothing reported.
  assert.deepEqual(reportBetween(second, await readSample(metrics), { service: 'client', node: 'n', intervalMs: 1000 }).requests, []);
  // A restarted sidecar (fresh counters below the last sample) reports its counts whole.
  const fresh = new SidecarMetrics();
  fresh.observe(labels, 0.02);
  assert.deepEqual(reportBetween(second, await readSample(fresh), { service: 'client', node: 'n', intervalMs: 1000 }).requests.map((r) => r.count), [1]);
});

test('windows are durations: 30s, 1m, 1m30s, 500ms', () => {
  assert.equal(parseWindow('30s'), 30_000);
  assert.equal(parseWindow('1m'), 60_000);
  assert.equal(parseWindow('1m30s'), 90_000);
  assert.equal(parseWindow('500ms'), 500);
  assert.equal(parseWindow('1h'), 3_600_000);
  assert.equal(parseWindow('soon'), undefined);
  assert.equal(parseWindow(''), undefined);
});

test('a first report without latency buckets (a sidecar that served only TCP or access decisions) does not fix the buckets', () => {
  const stats = new MeshStats({ bucketMs: 10_000, now: () => 1_000_000_000 });
  stats.record({ ...report([]), service: 'audit-log', node: 'audit-log-0', bounds: [], access: [{ result: 'allowed', reason: 'default_allow', count: 3 }] });
  stats.record(report([['client', 'api', '200', 100]], [[0, 100, 0, 0]]));
  const edge = stats.query({ windowMs: 60_000 }).edges[0]!;
  assert.equal(edge.p50, 0.055, 'the latencies of the later report count');
});

test('gRPC calls answered HTTP 200 with a failing gRPC status count as failures', () => {
  const stats = new MeshStats({ bucketMs: 10_000, now: () => 1_000_000_000 });
  stats.record({ ...report([['client', 'api', '200', 10]]), grpcFailures: [{ reporter: 'outbound', source: 'client', destination: 'api', route: 'r', count: 3 }] });
  const edge = stats.query({ windowMs: 60_000 }).edges[0]!;
  assert.deepEqual([edge.requests, edge.failures, edge.successRate], [10, 3, 0.7]);
});
