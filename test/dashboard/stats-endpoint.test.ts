/**
 * GET /v1/stats against a real mesh: a reconciler, three sidecars over mTLS and upstream
 * apps; the client sends known traffic (successes, failures, a slow answer, requests the
 * access policy refuses), every sidecar reports, and the reconciler's numbers must match
 * what was sent.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { StatsView } from '../../src/dashboard/mesh-stats.ts';
import { send, waitFor } from '../helpers/sidecar-harness.ts';
import { startStatsMesh, TOKEN, type StatsMesh } from './stats-mesh.ts';

let mesh: StatsMesh;
before(async () => {
  mesh = await startStatsMesh({ delayMs: 30 });
});
after(() => mesh.stop());

async function stats(query = ''): Promise<StatsView> {
  const res = await fetch(`${mesh.url}/v1/stats${query}`);
  assert.equal(res.status, 200);
  return (await res.json()) as StatsView;
}

test('the reconciler counts what the client sent: requests, failures, denials, latency quantiles, per edge, route and service', async () => {
  const statuses: number[] = [];
  /** The slowest answer as the client saw it, in seconds: no sidecar can have measured longer. */
  let slowest = 0;
  const timed = async (path: string, init?: { method: string }) => {
    const t0 = performance.now();
    statuses.push((await send(mesh.client.outbound, 'api', path, init)).status);
    slowest = Math.max(slowest, (performance.now() - t0) / 1000);
  };
  for (let i = 0; i < 30; i++) await timed('/');
  for (let i = 0; i < 10; i++) await timed('/status/503');
  // The access policy admits GET only: these are refused by api's sidecar.
  for (let i = 0; i < 4; i++) await timed('/', { method: 'DELETE' });
  assert.deepEqual(
    [statuses.filter((s) => s === 200).length, statuses.filter((s) => s === 503).length, statuses.filter((s) => s === 403).length],
    [30, 10, 4],
  );
  await mesh.report();

  const view = await stats('?window=1m');
  const edge = view.edges.find((e) => e.source === 'client' && e.destination === 'api');
  assert.ok(edge, `client → api edge in ${JSON.stringify(view.edges)}`);
  assert.equal(edge.requests, 44);
  assert.equal(edge.failures, 10);
  assert.equal(edge.denied, 4);
  assert.equal(edge.successRate, Number((34 / 44).toFixed(4)));
  // Every answer took at least the app's 30 ms (denials are answered at once, 4 of 44 < 5%), so p50, p95 and p99 lie
  // at or above the 25 ms bucket; and none above the histogram bucket holding the slowest answer the client saw
  // (on a quiet machine that is the 25–50 ms bucket; a busy one stretches some answers).
  const ceiling = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15].find((b) => b >= slowest) ?? 15;
  for (const [name, q] of [['p50', edge.p50], ['p95', edge.p95], ['p99', edge.p99]] as const) assert.ok(q! >= 0.025 && q! <= ceiling, `${name} ${q} (slowest answer ${slowest.toFixed(3)} s)`);
  assert.ok(Math.abs(edge.rps - 44 / view.coveredSeconds) <= 0.0005, `rps ${edge.rps} over ${view.coveredSeconds} s`);

  const route = view.routes.find((r) => r.source === 'client' && r.destination === 'api');
  assert.equal(route?.route, 'api-split');
  assert.equal(route.requests, 44);

  // What api served, as its own sidecar counted it (inbound).
  const api = view.services.find((s) => s.service === 'api');
  assert.equal(api?.reporter, 'inbound');
  assert.equal(api.requests, 44);
  assert.equal(api.failures, 10);
  assert.equal(api.denied, 4);
  const denials = view.access.filter((a) => a.service === 'api' && a.what === 'denied');
  assert.equal(denials.reduce((n, a) => n + a.count, 0), 4);
  assert.equal(view.access.filter((a) => a.service === 'api' && a.what === 'allowed').reduce((n, a) => n + a.count, 0), 40);
  assert.deepEqual(view.tls, []);

  // A report with nothing new adds nothing.
  await mesh.report();
  assert.equal((await stats()).edges.find((e) => e.source === 'client' && e.destination === 'api')?.requests, 44);
});

test('a plaintext connection to a strict sidecar shows as a refused mTLS connection of that service', async () => {
  // Plain HTTP to api's inbound port, which speaks mTLS only.
  await fetch(`http://127.0.0.1:${mesh.api.inbound}/`).catch(() => undefined);
  await waitFor(async () => (await mesh.api.sidecar.metrics.tlsFailures.get()).values.length > 0, 'the refusal to be counted');
  await mesh.report();
  const tls = (await stats()).tls.filter((t) => t.service === 'api');
  assert.deepEqual(tls.map((t) => [t.what, t.reason]), [['inbound', 'plaintext_refused']]);
  assert.ok(tls[0]!.count >= 1);
});

test('filters: --from, --to, --route and --namespace narrow the view; a bad window is refused', async () => {
  assert.deepEqual((await stats('?to=api-v2')).edges, []);
  assert.equal((await stats('?from=client')).edges.length, 1);
  assert.deepEqual((await stats('?route=other')).routes, []);
  assert.deepEqual((await stats('?namespace=elsewhere')).services, []);
  assert.equal((await stats('?namespace=default')).services.length, 1);
  const bad = await fetch(`${mesh.url}/v1/stats?window=soon`);
  assert.equal(bad.status, 400);
  assert.equal(((await bad.json()) as { error: string }).error, 'invalid_window');
});

test('reports need the control token and a well-formed body', async () => {
  const post = (token: string, body: unknown) => fetch(`${mesh.url}/v1/stats`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal((await post('wrong', { service: 'api' })).status, 401);
  const malformed = await post(TOKEN, { service: 'api', node: 'x', intervalMs: 1, bounds: [], requests: [{ count: 'many' }], latencies: [], access: [], tls: [] });
  assert.equal(malformed.status, 400);
});
