/**
 * Certificate rotation under continuous traffic: a reconciler whose CA issues one-minute
 * certificates, two meshed sidecars calling each other over mTLS with a fresh connection
 * (a fresh handshake) for nearly every request, for longer than the first certificates
 * live. Every request must succeed, each sidecar must have renewed, and traffic must go
 * on after the first certificates expired. Runs about 70 s.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { MIN_CERT_TTL_MS } from '../../src/identity/ca.ts';
import { CertificateIssuer } from '../../src/reconciler/certificates.ts';
import { FolderSource } from '../../src/reconciler/folder-source.ts';
import { ReconcilerMetrics } from '../../src/reconciler/metrics.ts';
import { Reconciler } from '../../src/reconciler/reconciler.ts';
import { ReconcilerServer } from '../../src/reconciler/server.ts';
import { testCa } from '../helpers/identity.ts';
import { clientApiSpec } from '../helpers/spec.ts';
import { cleanup, closedPort, metricValue, send, startSidecar, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';

const TOKEN = 'rotation-test-token-0123456789';
const dirs: string[] = [];
after(async () => {
  await cleanup();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test('one-minute certificates rotate under continuous mTLS traffic with no failed request', { timeout: 150_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-rotation-'));
  dirs.push(dir);
  const apiInbound = await closedPort();
  writeFileSync(
    join(dir, 'mesh.yaml'),
    clientApiSpec(
      apiInbound,
      '  mtls: { mode: strict }\n  access: { default: deny }',
      `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api }
spec: { targetRefs: [{ kind: Service, name: api }], rules: [{ from: [{ service: client }] }] }
---
# Pooled connections close 1 ms after their last request, so nearly every request opens
# a new connection and proves the certificates in use at that moment.
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: { name: api }
spec: { targetRefs: [{ kind: Service, name: api }], connection: { idleTimeout: 1ms } }
`,
    ),
  );
  const metrics = new ReconcilerMetrics();
  const log = pino({ level: 'silent' });
  const reconciler = new Reconciler({ source: new FolderSource({ dir }), log, metrics });
  const certificates = new CertificateIssuer({ ca: await testCa(), ttlMs: MIN_CERT_TTL_MS, reconciler, metrics, log });
  const server = new ReconcilerServer({ reconciler, metrics, token: TOKEN, certificates });
  const address = await server.listen('127.0.0.1', 0);
  await reconciler.start();
  after(async () => {
    await reconciler.stop();
    await server.close();
  });
  const control = { url: `http://127.0.0.1:${address.port}`, token: TOKEN };
  const app = await startUpstream('api');
  const api = await startSidecar(undefined, { service: 'api', inbound: { host: '127.0.0.1', port: apiInbound }, app: { host: '127.0.0.1', port: app.port }, control: { ...control, node: 'api-0' } });
  const client = await startSidecar(undefined, { service: 'client', control: { ...control, node: 'client-0' } });
  await waitFor(() => api.sidecar.ready && client.sidecar.ready, 'both sidecars to hold a config and a certificate');

  const first = { api: api.sidecar.identity.current!, client: client.sidecar.identity.current! };
  const firstExpiry = Math.max(first.api.notAfter, first.client.notAfter);
  const statuses = new Map<number, number>();
  let requests = 0;
  let afterExpiry = 0;
  // Bounded by time (past the first certificates' expiry) and by count.
  const until = firstExpiry + 5000;
  while (Date.now() < until && requests < 20_000) {
    const r = await send(client.outbound, 'api', `/r/${requests}`);
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    requests++;
    if (Date.now() > firstExpiry) afterExpiry++;
    // Paced, so idle pooled connections close between requests.
    await new Promise((resolve) => setTimeout(resolve, 15));
  }
  assert.deepEqual([...statuses.keys()], [200], `statuses over ${requests} requests: ${JSON.stringify([...statuses])}`);
  assert.ok(afterExpiry > 50, `traffic after the first certificates expired: ${afterExpiry} requests`);
  for (const [name, sc] of [['api', api], ['client', client]] as const) {
    assert.notEqual(sc.sidecar.identity.current!.serialNumber, first[name].serialNumber, `${name} rotated its certificate`);
    assert.ok(sc.sidecar.identity.current!.notAfter > firstExpiry, `${name} holds a certificate that outlives the first`);
    const m = await (await fetch(`http://127.0.0.1:${sc.admin}/metrics`)).text();
    assert.ok(metricValue(m, 'trellis_certificate_renewals_total', { result: 'ok' }) >= 2, `${name} renewed at least once after its first certificate`);
  }
  const apiMetrics = await (await fetch(`http://127.0.0.1:${api.admin}/metrics`)).text();
  assert.ok(metricValue(apiMetrics, 'trellis_inbound_connections_total', { transport: 'mtls' }) > requests / 2, 'most requests came on a new mTLS connection');
  assert.equal(metricValue(apiMetrics, 'trellis_tls_failures_total'), 0);
});
