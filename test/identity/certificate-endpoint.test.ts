/**
 * The reconciler's certificate endpoint end to end: a real Reconciler over a FolderSource
 * on a temporary spec folder, its ReconcilerServer on 127.0.0.1:0 with the mesh CA, and
 * requests over real HTTP; then real sidecars getting, storing and reusing their identity.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { request } from 'undici';
import { CERTIFICATE_PATH, STREAM_PATH, type CertificateResponse, type ControlMessage } from '../../src/config/control-protocol.ts';
import { MeshCertificateAuthority } from '../../src/identity/ca.ts';
import { createCertificateRequest, generateKeyPair } from '../../src/identity/keys.ts';
import { x509 } from '../../src/identity/x509.ts';
import { CertificateIssuer } from '../../src/reconciler/certificates.ts';
import { FolderSource } from '../../src/reconciler/folder-source.ts';
import { ReconcilerMetrics } from '../../src/reconciler/metrics.ts';
import { Reconciler } from '../../src/reconciler/reconciler.ts';
import { ReconcilerServer } from '../../src/reconciler/server.ts';
import { cleanup, closedPort, metricValue, startSidecar, waitFor } from '../helpers/sidecar-harness.ts';

const TOKEN = 'certificate-endpoint-test-token';
const TRUST_DOMAIN = 'shop.local';
const SPEC = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: shop }
spec: { trustDomain: ${TRUST_DOMAIN}, access: { default: allow } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: checkout }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ledger }
spec: { sidecar: false, ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
`;
/** A route to a service that does not exist: the revision does not compile. */
const BROKEN = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: checkout }
spec:
  parentRefs: [{ kind: Service, name: checkout }]
  rules:
    - backendRefs: [{ name: nowhere, port: 80 }]
`;

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  await cleanup();
  for (const c of cleanups.reverse()) await c();
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Running {
  readonly url: string;
  readonly reconciler: Reconciler;
  readonly metrics: ReconcilerMetrics;
  readonly dir: string;
  start(): Promise<void>;
}

/** A reconciler and its server with `ca`, watching a new folder holding `files`; the reconciler is started unless `start: false`. */
async function startReconciler(ca: MeshCertificateAuthority, files: Record<string, string>, options: { start?: boolean; ttlMs?: number } = {}): Promise<Running> {
  const dir = tempDir('trellis-spec-');
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const log = pino({ level: 'silent' });
  const metrics = new ReconcilerMetrics();
  const reconciler = new Reconciler({ source: new FolderSource({ dir, debounceMs: 20 }), log, metrics });
  const certificates = new CertificateIssuer({ ca, ttlMs: options.ttlMs ?? 3600_000, reconciler, metrics, log });
  const server = new ReconcilerServer({ reconciler, metrics, token: TOKEN, certificates });
  const address = await server.listen('127.0.0.1', 0);
  let started = false;
  cleanups.push(async () => {
    if (started) await reconciler.stop();
    await server.close();
  });
  const running: Running = {
    url: `http://127.0.0.1:${address.port}`,
    reconciler,
    metrics,
    dir,
    start: async () => {
      started = true;
      await reconciler.start();
    },
  };
  if (options.start !== false) await running.start();
  return running;
}

async function applied(r: Running): Promise<void> {
  await waitFor(() => r.reconciler.applied !== null, 'the revision to be applied', 10_000);
}

interface Answer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

async function askCertificate(url: string, body: unknown, token: string | null = TOKEN): Promise<Answer> {
  const res = await request(`${url}${CERTIFICATE_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
}

async function csr(subject = 'checkout', extensions: x509.Extension[] = []): Promise<string> {
  if (extensions.length === 0) return createCertificateRequest(await generateKeyPair(), subject);
  const keys = await generateKeyPair();
  return (await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${subject}`, keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' }, extensions })).toString('pem');
}

let ca: MeshCertificateAuthority;
/** A second root listed in the bundle, as during a rollover. */
let nextRoot: MeshCertificateAuthority;
before(async () => {
  const made = await MeshCertificateAuthority.generate(TRUST_DOMAIN);
  nextRoot = await MeshCertificateAuthority.generate(TRUST_DOMAIN);
  ca = await MeshCertificateAuthority.load(made.rootPem, await made.exportPrivateKeyPem(), [nextRoot.rootPem]);
});

describe('POST /v1/certificate', () => {
  test('without the token: 401, and nothing is signed', async () => {
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC });
    await applied(r);
    const body = { service: 'checkout', node: 'n1', csr: await csr() };
    assert.equal((await askCertificate(r.url, body, null)).status, 401);
    assert.equal((await askCertificate(r.url, body, 'wrong-token')).status, 401);
    assert.equal(metricValue(await r.metrics.registry.metrics(), 'trellis_ca_certificates_total', { result: 'issued' }), 0);
  });

  test('before any revision is applied: 503 not_ready, then 200 once one is', async () => {
    // Not started yet: the reconciler knows no revision, so no trust domain.
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC, 'route.yaml': BROKEN }, { start: false });
    const body = { service: 'checkout', node: 'n1', csr: await csr() };
    let answer = await askCertificate(r.url, body);
    assert.equal(answer.status, 503);
    assert.equal(answer.body.error, 'not_ready');

    // Started on a spec that does not compile: still nothing applied.
    await r.start();
    await waitFor(() => r.reconciler.status().attempted?.ok === false, 'the broken revision to be attempted', 10_000);
    assert.equal(r.reconciler.applied, null);
    answer = await askCertificate(r.url, body);
    assert.equal(answer.status, 503);
    assert.equal(answer.body.error, 'not_ready');

    // Fixed: the next revision applies and certificates are issued.
    rmSync(join(r.dir, 'route.yaml'));
    await applied(r);
    answer = await askCertificate(r.url, body);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  });

  test('a service the applied revision does not mesh: 404', async () => {
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC });
    await applied(r);
    for (const service of ['billing', 'ledger']) {
      const answer = await askCertificate(r.url, { service, node: 'n1', csr: await csr(service) });
      assert.equal(answer.status, 404, service);
      assert.equal(answer.body.error, 'unknown_service');
    }
  });

  test('a request that does not parse, verify, or carry its fields: 400', async () => {
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC });
    await applied(r);
    const garbage = await askCertificate(r.url, { service: 'checkout', node: 'n1', csr: '-----BEGIN CERTIFICATE REQUEST-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE REQUEST-----\n' });
    assert.equal(garbage.status, 400);
    assert.equal(garbage.body.error, 'invalid_csr');
    assert.equal((await askCertificate(r.url, { service: 'checkout', node: 'n1', csr: 'hello' })).body.error, 'invalid_csr');
    for (const body of [{ node: 'n1', csr: await csr() }, { service: 'checkout', csr: await csr() }, { service: 'checkout', node: 'n1' }, { service: 'Checkout', node: 'n1', csr: await csr() }, { service: 'checkout', node: '', csr: await csr() }]) {
      const answer = await askCertificate(r.url, body);
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.equal(answer.body.error, 'invalid_request');
    }
    assert.equal((await askCertificate(r.url, '{not json')).body.error, 'invalid_json');
    const tooLarge = await askCertificate(r.url, { service: 'checkout', node: 'n1', csr: 'x'.repeat(17 * 1024) });
    assert.equal(tooLarge.status, 413);
    assert.equal(metricValue(await r.metrics.registry.metrics(), 'trellis_ca_certificates_total', { result: 'issued' }), 0);
  });

  test('a valid request: the identity of the service in the spec\'s trust domain, whatever the request names, and the trust bundle', async () => {
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC });
    await applied(r);
    // The request claims another identity in its subject and in a SAN extension: both are ignored.
    const claimed = await csr('admin', [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://evil.local/svc/admin' }])]);
    const answer = await askCertificate(r.url, { service: 'checkout', node: 'n1', csr: claimed });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const body = answer.body as unknown as CertificateResponse;
    const identity = `spiffe://${TRUST_DOMAIN}/svc/checkout`;
    assert.equal(body.identity, identity);
    const leaf = new X509Certificate(body.certificate);
    assert.equal(leaf.subjectAltName, `URI:${identity}`);
    assert.ok(leaf.verify(new X509Certificate(ca.rootPem).publicKey), 'signed by the mesh root');
    assert.deepEqual(body.trustBundle, [ca.rootPem, nextRoot.rootPem], 'own root first, then the rollover root');
    assert.ok(Math.abs(Date.parse(body.notAfter) - leaf.validToDate.getTime()) < 1000, 'notAfter is the certificate\'s');
    assert.equal(metricValue(await r.metrics.registry.metrics(), 'trellis_ca_certificates_total', { result: 'issued' }), 1);
  });

  test('the trust domain follows the applied revision', async () => {
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC });
    await applied(r);
    const first = r.reconciler.applied!.revision.id;
    writeFileSync(join(r.dir, 'mesh.yaml'), SPEC.replace(`trustDomain: ${TRUST_DOMAIN}`, 'trustDomain: payments.example'));
    await waitFor(() => r.reconciler.applied?.revision.id !== first, 'the new revision', 10_000);
    const answer = await askCertificate(r.url, { service: 'checkout', node: 'n1', csr: await csr() });
    assert.equal(answer.body.identity, 'spiffe://payments.example/svc/checkout');
    assert.equal(new X509Certificate(answer.body.certificate as string).subjectAltName, 'URI:spiffe://payments.example/svc/checkout');
  });
});

describe('the control stream', () => {
  test('its first line is the trust bundle', async () => {
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC });
    await applied(r);
    const aborter = new AbortController();
    const res = await request(`${r.url}${STREAM_PATH}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ service: 'checkout', node: 'n1', version: null, resources: {} }),
      signal: aborter.signal,
    });
    assert.equal(res.statusCode, 200);
    let text = '';
    try {
      for await (const chunk of res.body) {
        text += (chunk as Buffer).toString('utf8');
        // Up to the config line, which follows the bundle at once (later lines are pings, 15 s apart).
        if (text.split('\n').slice(0, -1).some((l) => (JSON.parse(l) as ControlMessage).type === 'config')) break;
      }
    } finally {
      aborter.abort();
    }
    const lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as ControlMessage);
    assert.deepEqual(lines[0], { type: 'trust-bundle', roots: [ca.rootPem, nextRoot.rootPem] });
    assert.equal(lines[1]?.type, 'config', 'then the config');
  });
});

describe('CertificateClient against the reconciler', () => {
  test('a sidecar obtains its certificate and stores it (key 0600); restarted with the reconciler away, it starts with the stored identity', async () => {
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC });
    await applied(r);
    const stateDir = tempDir('trellis-state-');
    const first = await startSidecar(undefined, { service: 'checkout', stateDir, control: { url: r.url, token: TOKEN, node: 'checkout-1' } });
    await waitFor(() => first.sidecar.identity.current !== undefined, 'the certificate from the mesh CA', 10_000);
    const credential = first.sidecar.identity.current!;
    assert.equal(credential.identity, `spiffe://${TRUST_DOMAIN}/svc/checkout`);
    assert.deepEqual(credential.trustBundle, [ca.rootPem, nextRoot.rootPem]);
    assert.ok(new X509Certificate(credential.certificatePem).verify(new X509Certificate(ca.rootPem).publicKey));

    const keyFile = join(stateDir, 'identity', 'key.pem');
    await waitFor(() => existsSync(keyFile), 'the stored key', 5000);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(statSync(join(stateDir, 'identity')).mode & 0o077, 0, 'the identity folder is not open to others');
    assert.equal(readFileSync(keyFile, 'utf8'), credential.privateKeyPem);
    assert.equal(readFileSync(join(stateDir, 'identity', 'cert.pem'), 'utf8'), credential.certificatePem);
    assert.equal(readFileSync(join(stateDir, 'identity', 'bundle.pem'), 'utf8'), ca.rootPem + nextRoot.rootPem);
    await first.stop();

    const unreachable = `http://127.0.0.1:${await closedPort()}`;
    const second = await startSidecar(undefined, { service: 'checkout', stateDir, control: { url: unreachable, token: TOKEN, node: 'checkout-1' } });
    const restored = second.sidecar.identity.current;
    assert.ok(restored, 'the stored identity is in use as soon as the sidecar has started');
    assert.equal(restored.serialNumber, credential.serialNumber);
    assert.equal(restored.identity, credential.identity);
    assert.deepEqual(restored.trustBundle, credential.trustBundle);
    await second.stop();
  });

  test('a sidecar refused while its service is not in the mesh gets its certificate as soon as the service joins, not after its backoff', async () => {
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC });
    await applied(r);
    const running = await startSidecar(undefined, { service: 'billing', control: { url: r.url, token: TOKEN, node: 'billing-1' } });
    // Four refusals: the next retry is then 4–8 s away (backoff from 500 ms, doubling).
    const refused = async () => metricValue(await r.metrics.registry.metrics(), 'trellis_ca_certificates_total', { result: 'refused' });
    await waitFor(async () => (await refused()) >= 4, 'four refused requests', 15_000);
    const joinedAt = Date.now();
    writeFileSync(join(r.dir, 'billing.yaml'), `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: billing }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
`);
    await waitFor(() => running.sidecar.identity.current !== undefined, 'the certificate once billing is meshed', 10_000);
    // Waiting out the backoff would take at least 2 s from the fourth refusal.
    assert.ok(Date.now() - joinedAt < 1800, `took ${Date.now() - joinedAt} ms after the service joined`);
    assert.equal(running.sidecar.identity.current!.identity, `spiffe://${TRUST_DOMAIN}/svc/billing`);
    await running.stop();
  });

  test('a sidecar renews its certificate at about half its life, and stores the new one', async () => {
    // Certificates of three seconds: renewed after 1.2–1.8 s.
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC }, { ttlMs: 3000 });
    await applied(r);
    const stateDir = tempDir('trellis-state-');
    const running = await startSidecar(undefined, { service: 'checkout', stateDir, control: { url: r.url, token: TOKEN, node: 'checkout-1' } });
    await waitFor(() => running.sidecar.identity.current !== undefined, 'the first certificate', 10_000);
    const first = running.sidecar.identity.current!;
    await waitFor(() => running.sidecar.identity.current !== first, 'the renewed certificate', 10_000);
    const renewed = running.sidecar.identity.current!;
    assert.ok(Date.now() < first.notAfter, 'renewed before the first one expired');
    assert.notEqual(renewed.serialNumber, first.serialNumber);
    assert.notEqual(renewed.privateKeyPem, first.privateKeyPem, 'a fresh key for every certificate');
    assert.equal(renewed.identity, first.identity);
    await waitFor(() => readFileSync(join(stateDir, 'identity', 'cert.pem'), 'utf8') === renewed.certificatePem, 'the renewed certificate to be stored', 5000);
    assert.equal(readFileSync(join(stateDir, 'identity', 'key.pem'), 'utf8'), renewed.privateKeyPem);
    assert.equal(statSync(join(stateDir, 'identity', 'key.pem')).mode & 0o777, 0o600);
    await running.stop();
  });

  test('a sidecar of a service the mesh does not know gets no certificate, and stores nothing', async () => {
    const r = await startReconciler(ca, { 'mesh.yaml': SPEC });
    await applied(r);
    const stateDir = tempDir('trellis-state-');
    const running = await startSidecar(undefined, { service: 'billing', stateDir, control: { url: r.url, token: TOKEN, node: 'billing-1' } });
    await waitFor(async () => metricValue(await r.metrics.registry.metrics(), 'trellis_ca_certificates_total', { result: 'refused' }) >= 1, 'the refused request', 10_000);
    assert.equal(running.sidecar.identity.current, undefined);
    assert.equal(existsSync(join(stateDir, 'identity', 'key.pem')), false);
    await running.stop();
  });
});
