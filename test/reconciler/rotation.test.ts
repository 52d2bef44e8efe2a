/**
 * Certificate rotation under continuous traffic: a reconciler whose CA issues four-second
 * certificates, two meshed sidecars calling each other over mTLS with a fresh connection
 * (a fresh handshake) for nearly every request, for three seconds past the expiry of the
 * first certificates (so through two or three rotations of each sidecar). Every request must
 * succeed, each sidecar must have renewed more than once, no TLS handshake may fail, and
 * traffic must go on after the first certificates expired. Runs about 8 s.
 *
 * The certificates are short rather than the clock fast: expiry is checked by OpenSSL
 * against the real time, so only real certificates that really expire prove that renewal
 * keeps ahead of them. The renewal schedule on an injected clock is tested apart
 * (test/identity/certificate-endpoint.test.ts and test/sidecar/certificate-schedule.test.ts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pino } from 'pino';
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

/** Lifetime of the workload certificates: renewed at 1.6–2.4 s, each sidecar rotates two or three times in the run. */
const CERT_TTL_MS = 4000;
/** How long traffic goes on after the first certificates expired. */
const PAST_EXPIRY_MS = 3000;

test('short-lived certificates rotate under continuous mTLS traffic with no failed request and no TLS failure', { timeout: 60_000 }, async () => {
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
  const certificates = new CertificateIssuer({ ca: await testCa(), ttlMs: CERT_TTL_MS, reconciler, metrics, log });
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
  const until = firstExpiry + PAST_EXPIRY_MS;
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
    assert.ok(metricValue(m, 'trellis_certificate_renewals_total', { result: 'ok' }) >= 3, `${name} renewed at least twice after its first certificate`);
    assert.equal(metricValue(m, 'trellis_certificate_renewals_total', { result: 'failed' }), 0, `${name}: no failed renewal`);
  }
  const apiMetrics = await (await fetch(`http://127.0.0.1:${api.admin}/metrics`)).text();
  assert.ok(metricValue(apiMetrics, 'trellis_inbound_connections_total', { transport: 'mtls' }) > requests / 2, 'most requests came on a new mTLS connection');
  assert.equal(metricValue(apiMetrics, 'trellis_tls_failures_total'), 0);
  const clientMetrics = await (await fetch(`http://127.0.0.1:${client.admin}/metrics`)).text();
  assert.equal(metricValue(clientMetrics, 'trellis_tls_failures_total'), 0);
});
