/**
 * The dashboard's endpoints on a real reconciler: the page and its script are served with a
 * strict Content-Security-Policy, /v1/dashboard puts revision, sync, graph and splits
 * together (configured weights beside what the traffic did), /v1/explain traces a request
 * through the applied revision, and a rejected revision is listed with its diagnostics.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { commitOf, type DashboardData } from '../../src/dashboard/dashboard-data.ts';
import { send, waitFor } from '../helpers/sidecar-harness.ts';
import { startStatsMesh, type StatsMesh } from './stats-mesh.ts';

let mesh: StatsMesh;
before(async () => {
  mesh = await startStatsMesh({ delayMs: 1, weights: { api: 75, apiV2: 25 } });
});
after(() => mesh.stop());

const data = async (): Promise<DashboardData> => (await (await fetch(`${mesh.url}/v1/dashboard?window=1m`)).json()) as DashboardData;

test('the page and its bundled script are served, with a CSP that lets the page load nothing from elsewhere', async () => {
  const page = await fetch(`${mesh.url}/dashboard`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type')!, /text\/html/);
  assert.match(page.headers.get('content-security-policy')!, /default-src 'none'; script-src 'self'/);
  const html = await page.text();
  assert.match(html, /<script src="\/dashboard\/app.js"><\/script>/);
  assert.doesNotMatch(html, /https?:\/\//, 'nothing from the network');
  const script = await fetch(`${mesh.url}/dashboard/app.js`);
  assert.equal(script.status, 200);
  assert.ok((await script.text()).length > 100_000, 'cytoscape is bundled in');
  const styles = await fetch(`${mesh.url}/dashboard/app.css`);
  assert.equal(styles.status, 200);
  assert.match(await styles.text(), /\.uplot/, "uPlot's stylesheet is bundled in");
  assert.equal((await fetch(`${mesh.url}/dashboard/..%2F..%2Fpackage.json`)).status, 404, 'only the page\'s own files are served');
  assert.equal((await fetch(`${mesh.url}/dashboard/secret.txt`)).status, 404);
});

test('/v1/dashboard: the applied revision, sidecars in sync, the graph, and the configured split beside the observed one', async () => {
  for (let i = 0; i < 200; i++) await send(mesh.client.outbound, 'api', '/');
  await mesh.report();
  const d = await data();
  assert.match(d.applied!.description, /^folder /);
  assert.deepEqual(d.sync, { inSync: 3, connected: 3, sidecars: 3 });
  assert.ok(d.propagation.count >= 3);
  const client = d.services.find((s) => s.service === 'client')!;
  assert.deepEqual(client.callees, ['api', 'api-v2']);
  assert.equal(client.mtlsTo.api, true);
  const split = d.splits.find((s) => s.service === 'api')!;
  assert.equal(split.route, 'api-split');
  assert.equal(split.rule, 'split');
  assert.deepEqual(split.configured.map((c) => [c.service, c.weight, c.share]), [['api', 75, 0.75], ['api-v2', 25, 0.25]]);
  const observed = split.observed.map((o) => o.requests);
  assert.equal(observed[0]! + observed[1]!, 200);
  // 200 draws at 25%: 50 expected, below 25 or above 75 happens with p < 1e-5.
  assert.ok(observed[1]! > 25 && observed[1]! < 75, `api-v2 got ${observed[1]} of 200`);
});

test('/v1/explain traces a request through the applied revision; unknown services are a 404 with the reason', async () => {
  const res = await fetch(`${mesh.url}/v1/explain?from=client&to=api&method=GET&path=/x`);
  assert.equal(res.status, 200);
  const body = (await res.json()) as { text: string };
  assert.match(body.text, /api-split/);
  assert.match(body.text, /api-v2/);
  const unknown = await fetch(`${mesh.url}/v1/explain?from=client&to=nowhere`);
  assert.equal(unknown.status, 404);
  assert.equal((await fetch(`${mesh.url}/v1/explain?from=client`)).status, 400);
});

test('a revision that does not compile is listed as rejected, with file:line:col diagnostics; the applied one stays', async () => {
  const before = (await data()).applied!.revision;
  writeFileSync(join(mesh.dir, 'broken.yaml'), 'apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: broken }\nspec:\n  parentRefs: [{ kind: Service, name: api }]\n  rules: [{ backendRefs: [{ name: api-v3, port: 80 }] }]\n');
  await waitFor(async () => (await data()).failing !== null, 'the broken revision to be rejected', 10_000);
  const d = await data();
  assert.equal(d.applied!.revision, before);
  const error = d.failing!.diagnostics.find((x) => x.code === 'TRL3003')!;
  assert.deepEqual([error.file, error.line], ['broken.yaml', 6]);
  assert.ok(d.revisions.some((r) => !r.ok && r.revision === d.failing!.revision), 'the rejected revision is in the list');
});

test('git revision descriptions give sha, message and author', () => {
  assert.deepEqual(commitOf('3f2a1c9 Move 25% (to v2) to checkout-v2 (Ana Lima)'), { sha: '3f2a1c9', message: 'Move 25% (to v2) to checkout-v2', author: 'Ana Lima' });
  assert.equal(commitOf('folder examples/shop (0123456789ab)'), null);
});
