/**
 * mTLS between real sidecars, with real certificates from test CAs: who is admitted on
 * each side (chain, SPIFFE ID, trust domain, expiry), what each mTLS mode does with
 * plaintext, and access policy enforced with the verified identity on normalised paths.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect as tlsConnect } from 'node:tls';
import { after, describe, test } from 'node:test';
import { MeshCertificateAuthority } from '../../src/identity/ca.ts';
import { spiffeId } from '../../src/identity/spiffe.ts';
import { credentialFor, testCa, type TestCredential } from '../helpers/identity.ts';
import { cleanup, metricValue, send, startSidecar, startUpstream, waitFor, type RunningSidecar, type Upstream } from '../helpers/sidecar-harness.ts';
import { clientApiSpec, compileTexts } from '../helpers/spec.ts';

after(cleanup);

interface Pair {
  readonly client: RunningSidecar;
  readonly api: RunningSidecar;
  readonly app: Upstream;
}

/**
 * A meshed `client` calling a meshed `api` (whose instance is a real sidecar in front of
 * `app`), under `mesh` (extra Mesh spec lines) and `extra` documents. Each sidecar gets
 * `clientCredential`/`apiCredential`, or a valid certificate for its own service.
 */
async function pair(options: { mesh?: string; extra?: string; clientCredential?: TestCredential; apiCredential?: TestCredential } = {}): Promise<Pair> {
  const app = await startUpstream('app');
  const api = await startSidecar(undefined, { app: { host: '127.0.0.1', port: app.port }, identity: null });
  const spec = clientApiSpec(api.inbound, options.mesh, options.extra);
  const result = compileTexts({ 'mesh.yaml': spec });
  assert.ok(result.mesh, JSON.stringify(result.diagnostics.map((d) => d.message)));
  assert.ok(api.sidecar.store.apply(result.mesh.configs.get('api'), 'file').ok);
  assert.ok(api.sidecar.identity.offer(options.apiCredential ?? (await credentialFor('api'))).ok);
  const client = await startSidecar(result.mesh.configs.get('client'), { identity: null });
  assert.ok(client.sidecar.identity.offer(options.clientCredential ?? (await credentialFor('client'))).ok);
  return { client, api, app };
}

async function metrics(sc: RunningSidecar): Promise<string> {
  return (await fetch(`http://127.0.0.1:${sc.admin}/metrics`)).text();
}

/** A plaintext request straight to a port, on a fresh connection: the reply, or the connection error's code. */
function plaintext(port: number, path = '/'): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host: 'api:80' }, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.end();
  });
}

/** An mTLS request straight to an inbound port as a non-sidecar peer presenting `credential`: the reply, or the error. */
function tlsRequest(port: number, credential: TestCredential, path = '/'): Promise<{ status: number } | { error: string }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, key: credential.privateKeyPem, cert: credential.certificatePem, ca: [...credential.trustBundle], checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' });
    let data = '';
    socket.on('secureConnect', () => socket.write(`GET ${path} HTTP/1.1\r\nhost: api:80\r\nconnection: close\r\n\r\n`));
    socket.on('data', (c: Buffer) => (data += c.toString()));
    socket.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    socket.on('close', () => resolve(data.startsWith('HTTP/1.1 ') ? { status: Number(data.slice(9, 12)) } : { error: 'closed without a response' }));
  });
}

describe('mTLS between sidecars (strict)', () => {
  test('a mirror to a meshed service goes over mTLS like any call to it', async () => {
    const shadowApp = await startUpstream('shadow');
    const shadow = await startSidecar(undefined, { app: { host: '127.0.0.1', port: shadowApp.port }, identity: 'shadow' });
    const extra = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: shadow }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${shadow.inbound} }] } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: shadow, port: 80 } } }]
      backendRefs: [{ name: api, port: 80 }]
`;
    const { client } = await pair({ extra });
    assert.ok(shadow.sidecar.store.apply(compileTexts({ 'mesh.yaml': clientApiSpec(1, undefined, extra) }).mesh!.configs.get('shadow')!, 'file').ok);
    assert.equal((await send(client.outbound, 'api', '/copy', { method: 'POST', body: 'payload' })).status, 200);
    await waitFor(() => shadowApp.seen.length === 1, 'the mirrored copy');
    assert.equal(shadowApp.seen[0]!.body, 'payload');
    assert.equal(shadowApp.seen[0]!.headers['x-trellis-mirror'], '1');
    assert.equal(shadowApp.seen[0]!.headers['x-trellis-peer-identity'], 'spiffe://test.local/svc/client');
  });

  test('a new certificate on either side: the next call goes over a new HTTP/2 connection, handshaken with it', async () => {
    const { client, api } = await pair();
    assert.equal((await send(client.outbound, 'api', '/a')).status, 200);
    assert.equal((await send(client.outbound, 'api', '/b')).status, 200);
    // Two calls, one multiplexed connection.
    assert.equal(metricValue(await metrics(api), 'trellis_inbound_connections_total', { transport: 'mtls' }), 1);
    assert.ok(client.sidecar.identity.offer(await credentialFor('client')).ok);
    assert.equal((await send(client.outbound, 'api', '/c')).status, 200);
    assert.equal(metricValue(await metrics(api), 'trellis_inbound_connections_total', { transport: 'mtls' }), 2, 'the caller rotated: a new connection');
    assert.ok(api.sidecar.identity.offer(await credentialFor('api')).ok);
    assert.equal((await send(client.outbound, 'api', '/d')).status, 200);
    assert.equal(metricValue(await metrics(api), 'trellis_inbound_connections_total', { transport: 'mtls' }), 3, 'the callee rotated: it sent GOAWAY, the caller connected again');
  });

  test('a call with valid identities on both sides reaches the app, which learns the verified caller', async () => {
    const { client, api, app } = await pair();
    const r = await send(client.outbound, 'api', '/hello');
    assert.equal(r.status, 200);
    assert.equal(app.seen.at(-1)!.headers['x-trellis-peer-identity'], 'spiffe://test.local/svc/client');
    const m = await metrics(api);
    assert.equal(metricValue(m, 'trellis_inbound_connections_total', { transport: 'mtls' }), 1);
    assert.equal(metricValue(m, 'trellis_inbound_connections_total', { transport: 'plaintext' }), 0);
    assert.equal(metricValue(m, 'trellis_requests_total', { reporter: 'inbound', source_workload: 'client', response_code: '200' }), 1);
    const shown = (await (await fetch(`http://127.0.0.1:${api.admin}/identity`)).json()) as Record<string, unknown>;
    assert.equal(shown.identity, 'spiffe://test.local/svc/api');
    assert.equal(shown.serialNumber, api.sidecar.identity.current!.serialNumber);
    assert.ok(!JSON.stringify(shown).includes('PRIVATE KEY'), 'the admin API never shows the key');
  });

  test('plaintext to the inbound port is refused before any request is read', async () => {
    const { api, app } = await pair();
    const r = await plaintext(api.inbound);
    assert.ok('error' in r, `plaintext got an answer: ${JSON.stringify(r)}`);
    assert.equal(app.seen.length, 0);
    assert.equal(metricValue(await metrics(api), 'trellis_tls_failures_total', { direction: 'inbound', reason: 'plaintext_refused' }), 1);
  });

  test('a backend presenting another service identity is refused by the caller (tls_failure)', async () => {
    const { client, app } = await pair({ apiCredential: await credentialFor('payments') });
    const r = await send(client.outbound, 'api', '/');
    assert.equal(r.status, 503);
    assert.equal(r.headers['x-trellis-error'], 'tls_failure');
    assert.equal(app.seen.length, 0);
    assert.ok(metricValue(await metrics(client), 'trellis_tls_failures_total', { direction: 'outbound', reason: 'identity_mismatch' }) >= 1);
  });

  test('a caller from another trust domain is refused by the destination', async () => {
    const { client, api, app } = await pair({ clientCredential: await credentialFor('client', { trustDomain: 'other.example' }) });
    const r = await send(client.outbound, 'api', '/');
    assert.equal(r.status, 403);
    assert.equal(r.headers['x-trellis-error'], 'peer_rejected');
    assert.equal(r.headers['x-trellis-peer-rejected'], 'other_trust_domain');
    assert.equal(app.seen.length, 0);
    assert.ok(metricValue(await metrics(api), 'trellis_tls_failures_total', { direction: 'inbound', reason: 'other_trust_domain' }) >= 1);
  });

  test('a caller whose certificate chains to no trusted root is refused by the destination', async () => {
    const rogue = await MeshCertificateAuthority.generate('rogue');
    const issued = await rogue.issueKeyPair(spiffeId('test.local', 'client'), 3600_000);
    // The caller trusts the mesh root too, so it accepts the destination; the destination does not trust the rogue root.
    const clientCredential = { certificatePem: issued.certificatePem, privateKeyPem: issued.privateKeyPem, trustBundle: [rogue.rootPem, (await testCa()).rootPem] };
    const { client, api, app } = await pair({ clientCredential });
    const r = await send(client.outbound, 'api', '/');
    assert.equal(r.headers['x-trellis-error'], 'peer_rejected', 'the destination tells the caller why');
    assert.equal(r.headers['x-trellis-peer-rejected'], 'untrusted_certificate');
    assert.equal(app.seen.length, 0);
    assert.ok(metricValue(await metrics(api), 'trellis_tls_failures_total', { direction: 'inbound', reason: 'untrusted_certificate' }) >= 1);
  });

  test('a caller whose backend chains to no root it trusts refuses the backend', async () => {
    const rogue = await MeshCertificateAuthority.generate('rogue');
    const issued = await rogue.issueKeyPair(spiffeId('test.local', 'api'), 3600_000);
    const { client, app } = await pair({ apiCredential: { certificatePem: issued.certificatePem, privateKeyPem: issued.privateKeyPem, trustBundle: [rogue.rootPem, (await testCa()).rootPem] } });
    const r = await send(client.outbound, 'api', '/');
    assert.equal(r.headers['x-trellis-error'], 'tls_failure');
    assert.equal(app.seen.length, 0);
  });

  test('an expired client certificate is refused', async () => {
    const { api, app } = await pair();
    const ca = await testCa();
    // Issued 60 s back-dated and expired 30 s ago.
    const expired = await ca.issueKeyPair(spiffeId('test.local', 'client'), -30_000);
    const r = await tlsRequest(api.inbound, { certificatePem: expired.certificatePem, privateKeyPem: expired.privateKeyPem, trustBundle: ca.trustBundle });
    assert.deepEqual(r, { status: 403 }, 'refused with peer_rejected');
    assert.equal(app.seen.length, 0);
    assert.equal(metricValue(await metrics(api), 'trellis_tls_failures_total', { direction: 'inbound', reason: 'expired_certificate' }), 1);
    // The same peer with a valid certificate is served.
    assert.deepEqual(await tlsRequest(api.inbound, await credentialFor('client')), { status: 200 });
  });

  test('roots in rollover: certificates from the old and the new root are both accepted', async () => {
    const oldRoot = await testCa();
    const newRoot = await MeshCertificateAuthority.generate('new root', [oldRoot.rootPem]);
    const fromNew = await newRoot.issueKeyPair(spiffeId('test.local', 'client'), 3600_000);
    const fromOld = await credentialFor('api');
    const bundle = [oldRoot.rootPem, newRoot.rootPem];
    const { client, app } = await pair({
      clientCredential: { certificatePem: fromNew.certificatePem, privateKeyPem: fromNew.privateKeyPem, trustBundle: bundle },
      apiCredential: { ...fromOld, trustBundle: bundle },
    });
    assert.equal((await send(client.outbound, 'api', '/')).status, 200);
    assert.equal(app.seen.length, 1);
  });
});

describe('mTLS modes', () => {
  test('permissive: plaintext callers are served unauthenticated, sidecars still use mTLS', async () => {
    const { client, api, app } = await pair({ mesh: '  mtls: { mode: permissive }\n  access: { default: allow }' });
    const r = await plaintext(api.inbound, '/plain');
    assert.deepEqual(r, { status: 200, body: 'app' });
    assert.equal(app.seen.at(-1)!.headers['x-trellis-peer-identity'], undefined);
    assert.equal((await send(client.outbound, 'api', '/tls')).status, 200);
    assert.equal(app.seen.at(-1)!.headers['x-trellis-peer-identity'], 'spiffe://test.local/svc/client');
    const m = await metrics(api);
    assert.equal(metricValue(m, 'trellis_inbound_connections_total', { transport: 'plaintext' }), 1);
    assert.equal(metricValue(m, 'trellis_inbound_connections_total', { transport: 'mtls' }), 1);
  });

  test('the inbound port keeps idle peer connections longer than callers pool them (no handshake per idle gap)', async () => {
    const { api } = await pair({ mesh: '  mtls: { mode: permissive }\n  access: { default: allow }' });
    const r = await send(api.inbound, 'api:80', '/');
    assert.equal(r.status, 200);
    // Callers' pools keep idle connections up to 60 s (less undici's 2 s margin on this hint).
    assert.equal(r.headers['keep-alive'], 'timeout=75');
  });

  test('permissive with access policies: a plaintext caller is unauthenticated, so denied', async () => {
    const policy = `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api }
spec: { targetRefs: [{ kind: Service, name: api }], rules: [{ from: [{ service: client }] }] }`;
    const { client, api, app } = await pair({ mesh: '  mtls: { mode: permissive }\n  access: { default: deny }', extra: policy });
    const r = await plaintext(api.inbound);
    assert.ok('status' in r && r.status === 403, JSON.stringify(r));
    assert.equal(app.seen.length, 0);
    assert.equal((await send(client.outbound, 'api', '/')).status, 200);
  });

  test('off: sidecars call each other in plaintext', async () => {
    const { client, api } = await pair({ mesh: '  mtls: { mode: "off" }\n  access: { default: allow }' });
    assert.equal((await send(client.outbound, 'api', '/')).status, 200);
    const m = await metrics(api);
    assert.equal(metricValue(m, 'trellis_inbound_connections_total', { transport: 'plaintext' }), 1);
    assert.equal(metricValue(m, 'trellis_inbound_connections_total', { transport: 'mtls' }), 0);
  });
});

describe('access policy at the inbound port', () => {
  const policy = (mode: 'enforce' | 'audit') => `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api-public }
spec:
  targetRefs: [{ kind: Service, name: api }]
  mode: ${mode}
  rules:
    - from: [{ service: client }]
      to: [{ methods: [GET], paths: [{ type: PathPrefix, value: /public }] }]`;

  test('the verified caller, method and normalised path decide; the app gets the normalised path', async () => {
    const { client, api, app } = await pair({ mesh: '  access: { default: deny }', extra: policy('enforce') });
    const call = (path: string, method = 'GET') => send(client.outbound, 'api', path, { method });
    assert.equal((await call('/public/a')).status, 200);
    assert.equal(app.seen.at(-1)!.url, '/public/a');
    const r = await call('/public//b/./c?x=1');
    assert.equal(r.status, 200);
    assert.equal(app.seen.at(-1)!.url, '/public/b/c?x=1', 'the app gets the path that was checked');
    for (const path of ['/admin', '/public/../admin', '/public/%2e%2e/admin', '/public/.%2E/admin', '//admin', '/publicx']) {
      const denied = await call(path);
      assert.equal(denied.status, 403, path);
      assert.equal(denied.headers['x-trellis-error'], 'access_denied', path);
    }
    assert.equal((await call('/public/a', 'POST')).status, 403, 'method not granted');
    const encodedSlash = await call('/public/..%2Fadmin');
    assert.equal(encodedSlash.status, 400);
    assert.equal(encodedSlash.headers['x-trellis-error'], 'bad_request');
    assert.equal(app.seen.length, 2, 'nothing denied reached the app');
    const m = await metrics(api);
    assert.equal(metricValue(m, 'trellis_access_decisions_total', { result: 'allowed', reason: 'api-public' }), 2);
    assert.equal(metricValue(m, 'trellis_access_decisions_total', { result: 'denied', reason: 'no_matching_rule' }), 7);
  });

  test('another meshed service with a valid certificate is not admitted by a rule naming client', async () => {
    const { api, app } = await pair({ mesh: '  access: { default: deny }', extra: policy('enforce') });
    assert.deepEqual(await tlsRequest(api.inbound, await credentialFor('cart'), '/public/a'), { status: 403 });
    assert.deepEqual(await tlsRequest(api.inbound, await credentialFor('client'), '/public/a'), { status: 200 });
    assert.equal(app.seen.length, 1);
  });

  test('audit mode lets a call the rules would deny through, and counts it', async () => {
    const { client, api, app } = await pair({ mesh: '  access: { default: deny }', extra: policy('audit') });
    assert.equal((await send(client.outbound, 'api', '/admin')).status, 200);
    assert.equal(app.seen.length, 1);
    assert.equal(metricValue(await metrics(api), 'trellis_access_decisions_total', { result: 'audited' }), 1);
  });
});
