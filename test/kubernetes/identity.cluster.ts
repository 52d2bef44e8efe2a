/**
 * Identity from ServiceAccounts against a real kube-apiserver: sidecars present projected
 * ServiceAccount tokens (made here with TokenRequest, as the kubelet would), a real Reconciler
 * and ReconcilerServer check them with TokenReview, and each token gets exactly its own
 * ServiceAccount's certificate and config; bad tokens get 401 with stable codes, and an API
 * server that is down gets 503, never an acceptance.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { pino } from 'pino';
import { request } from 'undici';
import { ACK_PATH, CERTIFICATE_PATH, STREAM_PATH, type ControlMessage } from '../../src/config/control-protocol.ts';
import { MeshCertificateAuthority } from '../../src/identity/ca.ts';
import { generateKeyPair, SIGNING_ALGORITHM } from '../../src/identity/keys.ts';
import { spiffeIdOfAltNames } from '../../src/identity/spiffe.ts';
import { x509 } from '../../src/identity/x509.ts';
import { kubernetesTokenReviewer, TokenReviewAuthenticator } from '../../src/reconciler/auth.ts';
import { CertificateIssuer } from '../../src/reconciler/certificates.ts';
import { FolderSource } from '../../src/reconciler/folder-source.ts';
import { ReconcilerMetrics } from '../../src/reconciler/metrics.ts';
import { Reconciler } from '../../src/reconciler/reconciler.ts';
import { ReconcilerServer } from '../../src/reconciler/server.ts';
import { createNamespace, serviceAccountToken, startKubeEnv, type KubeEnv } from '../helpers/kube-env.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

const TD = 'shop.test';
const SHARED = 'identity-cluster-shared-token';
const CHECKOUT_ID = `spiffe://${TD}/ns/shop/sa/checkout`;
const LEDGER_ID = `spiffe://${TD}/ns/shop/sa/ledger`;
/** Two Kubernetes-backed services with their own ServiceAccounts, one service with static endpoints (no ServiceAccount), one in another namespace. */
const SPEC = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: shop }
spec: { trustDomain: ${TD}, access: { default: allow } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: checkout, namespace: shop }
spec: { serviceAccount: checkout, ports: [{ port: 80 }], endpoints: { kubernetes: {} } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ledger, namespace: shop }
spec: { serviceAccount: ledger, ports: [{ port: 80 }], endpoints: { kubernetes: {} } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: legacy, namespace: shop }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: checkout, namespace: bank }
spec: { serviceAccount: checkout, ports: [{ port: 80 }], endpoints: { kubernetes: {} } }
`;

let env: KubeEnv;
let url: string;
/** The in-process reconciler and the folder it watches. */
let reconciler: Reconciler;
let specDir: string;
let checkoutToken: string;
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  env = await startKubeEnv();
  await createNamespace(env, 'shop', ['checkout', 'ledger', 'gone']);
  await createNamespace(env, 'bank', ['checkout']);
  checkoutToken = await serviceAccountToken(env, 'shop', 'checkout', 'trellis');

  const dir = (specDir = mkdtempSync(join(tmpdir(), 'trellis-identity-')));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'mesh.yaml'), SPEC);
  const log = pino({ level: process.env.TRELLIS_TEST_LOG ?? 'silent' });
  const metrics = new ReconcilerMetrics();
  reconciler = new Reconciler({ source: new FolderSource({ dir, debounceMs: 20 }), log, metrics });
  const ca = await MeshCertificateAuthority.generate(TD);
  const certificates = new CertificateIssuer({ ca, ttlMs: 3600_000, reconciler, metrics, log });
  // The admin's credentials may create TokenReviews (least privilege is another test's business).
  const authenticator = new TokenReviewAuthenticator({ review: kubernetesTokenReviewer(env.kubeConfig, 2000) });
  const server = new ReconcilerServer({ reconciler, metrics, token: SHARED, authenticator, certificates });
  const address = await server.listen('127.0.0.1', 0);
  url = `http://127.0.0.1:${address.port}`;
  cleanups.push(async () => {
    await reconciler.stop();
    await server.close();
  });
  await reconciler.start();
  await waitFor(() => reconciler.applied !== null, 'the revision to be applied', 20_000);
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  await env?.stop();
});

interface Answer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

async function post(path: string, body: unknown, token: string | null): Promise<Answer> {
  const res = await request(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
    body: JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

/** A certificate request whose subject and URI SAN claim `claimed` (the CA must ignore both). */
async function csrClaiming(claimed: string): Promise<string> {
  const keys = await generateKeyPair();
  const req = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${claimed.slice(claimed.lastIndexOf('/') + 1)}`,
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: claimed }])],
  });
  return req.toString('pem');
}

async function certificate(service: string, token: string | null, claimed = CHECKOUT_ID): Promise<Answer> {
  return post(CERTIFICATE_PATH, { service, node: 'pod-1', csr: await csrClaiming(claimed) }, token);
}

function uriSan(answer: Answer): string | null {
  return spiffeIdOfAltNames(new X509Certificate(answer.body.certificate as string).subjectAltName);
}

/** Subscribes as `service`; for a 200, reads messages until the config arrives and hangs up. */
async function subscribe(service: string, token: string): Promise<{ status: number; body: Record<string, unknown>; config?: ControlMessage }> {
  const controller = new AbortController();
  const res = await request(`${url}${STREAM_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ service, node: 'pod-1', version: null, resources: {} }),
    signal: controller.signal,
  });
  if (res.statusCode !== 200) return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
  let buffered = '';
  // A config that never comes is a failure, not a hang: the longest the reconciler may hold one back is 5 s.
  const timer = setTimeout(() => controller.abort(new Error(`no config for ${service} within 15 s`)), 15_000);
  try {
    for await (const chunk of res.body) {
      buffered += (chunk as Buffer).toString();
      for (const line of buffered.split('\n').slice(0, -1)) {
        const m = JSON.parse(line) as ControlMessage;
        if (m.type === 'config' || m.type === 'unknown-service') return { status: 200, body: {}, config: m };
      }
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return { status: 200, body: {} };
}

/** `promise`, or a failure after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A control stream held open: the messages so far, and when the reconciler ends it. */
async function openStream(service: string, token: string): Promise<{ readonly messages: ControlMessage[]; readonly ended: Promise<void>; close(): void }> {
  const controller = new AbortController();
  const res = await request(`${url}${STREAM_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ service, node: 'pod-held', version: null, resources: {} }),
    signal: controller.signal,
  });
  assert.equal(res.statusCode, 200);
  const messages: ControlMessage[] = [];
  const ended = (async () => {
    let buffered = '';
    try {
      for await (const chunk of res.body) {
        buffered += (chunk as Buffer).toString();
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const line of lines) messages.push(JSON.parse(line) as ControlMessage);
      }
    } catch {
      // aborted by close()
    }
  })();
  cleanups.push(() => controller.abort());
  return { messages, ended, close: () => controller.abort() };
}

describe('identity from ServiceAccounts (TokenReview)', () => {
  test('a ServiceAccount\'s token gets a certificate naming its own SPIFFE ID, whatever the request claims', async () => {
    const own = await certificate('shop/checkout', checkoutToken, LEDGER_ID);
    assert.equal(own.status, 200, JSON.stringify(own.body));
    assert.equal(own.body.identity, CHECKOUT_ID);
    assert.equal(uriSan(own), CHECKOUT_ID);
    // A service of its namespace with no ServiceAccount of its own: still the token's identity, not the service's.
    const legacy = await certificate('shop/legacy', checkoutToken, `spiffe://${TD}/ns/shop/svc/legacy`);
    assert.equal(legacy.status, 200, JSON.stringify(legacy.body));
    assert.equal(uriSan(legacy), CHECKOUT_ID);
  });

  test('a token for ServiceAccount checkout never yields ledger\'s certificate, config or acknowledgements: 403 identity_mismatch', async () => {
    const cert = await certificate('shop/ledger', checkoutToken, LEDGER_ID);
    assert.equal(cert.status, 403);
    assert.equal(cert.body.error, 'identity_mismatch');
    assert.match(cert.body.message as string, /ServiceAccount "shop\/ledger"/);
    const sub = await subscribe('shop/ledger', checkoutToken);
    assert.equal(sub.status, 403);
    assert.equal(sub.body.error, 'identity_mismatch');
    const ack = await post(ACK_PATH, { service: 'shop/ledger', node: 'pod-1', version: null, revision: 'r', ok: true }, checkoutToken);
    assert.equal(ack.status, 403);
    assert.equal(ack.body.error, 'identity_mismatch');
    // The same ServiceAccount name in another namespace is another ServiceAccount.
    const bank = await certificate('bank/checkout', checkoutToken);
    assert.equal(bank.status, 403);
    assert.equal(bank.body.error, 'identity_mismatch');
    const bankToken = await serviceAccountToken(env, 'bank', 'checkout', 'trellis');
    const bankOwn = await certificate('bank/checkout', bankToken);
    assert.equal(bankOwn.status, 200, JSON.stringify(bankOwn.body));
    assert.equal(uriSan(bankOwn), `spiffe://${TD}/ns/bank/sa/checkout`);
  });

  test('a ServiceAccount subscribes to its own service\'s config', async () => {
    const sub = await subscribe('shop/checkout', checkoutToken);
    assert.equal(sub.status, 200);
    assert.equal(sub.config?.type, 'config');
    assert.equal(sub.config?.type === 'config' && sub.config.config.service, 'shop/checkout');
  });

  test('bad tokens get 401 with stable codes: wrong audience, garbage, forged, a deleted ServiceAccount\'s, a user\'s, none', async () => {
    const other = await certificate('shop/checkout', await serviceAccountToken(env, 'shop', 'checkout', 'other'));
    assert.deepEqual([other.status, other.body.error], [401, 'token_audience']);
    const garbage = await certificate('shop/checkout', 'garbage');
    assert.deepEqual([garbage.status, garbage.body.error], [401, 'token_invalid']);
    // The right claims, signed by no one the API server trusts.
    const [header, , signature] = checkoutToken.split('.');
    const claims = Buffer.from(JSON.stringify({ aud: ['trellis'], sub: 'system:serviceaccount:shop:ledger', exp: Math.floor(Date.now() / 1000) + 600 })).toString('base64url');
    const forged = await certificate('shop/ledger', `${header}.${claims}.${signature}`, LEDGER_ID);
    assert.deepEqual([forged.status, forged.body.error], [401, 'token_invalid']);
    assert.deepEqual([(await certificate('shop/checkout', null)).status, (await certificate('shop/checkout', null)).body.error], [401, 'token_missing']);

    // A token of a ServiceAccount deleted since: the API server refuses it once it sees the deletion.
    const goneToken = await serviceAccountToken(env, 'shop', 'gone', 'trellis');
    const core = env.kubeConfig.makeApiClient(k8s.CoreV1Api);
    await core.deleteNamespacedServiceAccount({ name: 'gone', namespace: 'shop' });
    const auth = env.kubeConfig.makeApiClient(k8s.AuthenticationV1Api);
    await waitFor(async () => (await auth.createTokenReview({ body: { spec: { token: goneToken, audiences: ['trellis'] } } })).status?.authenticated !== true, 'the API server to refuse the deleted ServiceAccount\'s token', 10_000);
    const gone = await certificate('shop/legacy', goneToken);
    assert.deepEqual([gone.status, gone.body.error], [401, 'token_invalid']);

    // A user's static token is valid for the API server's own audiences only, so not for "trellis".
    const user = await certificate('shop/checkout', env.userToken);
    assert.deepEqual([user.status, user.body.error], [401, 'token_invalid']);
  });

  test('the shared token still works beside TokenReview (sidecars off the cluster), with the identity the mesh gives the service', async () => {
    const cert = await certificate('shop/ledger', SHARED, CHECKOUT_ID);
    assert.equal(cert.status, 200, JSON.stringify(cert.body));
    assert.equal(uriSan(cert), LEDGER_ID);
    const legacy = await certificate('shop/legacy', SHARED);
    assert.equal(uriSan(legacy), `spiffe://${TD}/ns/shop/svc/legacy`);
    const sub = await subscribe('shop/ledger', SHARED);
    assert.equal(sub.status, 200);
  });

  test('a revision that moves a service to another ServiceAccount ends the old ServiceAccount\'s open stream before the config goes out', async () => {
    const stream = await openStream('shop/checkout', checkoutToken);
    await waitFor(() => stream.messages.some((m) => m.type === 'config'), 'the first config', 10_000);
    const first = stream.messages.find((m) => m.type === 'config')!;
    assert.ok(first.type === 'config');
    // Acknowledge it as a sidecar would (the ServiceAccount may acknowledge its own service), so the next revision is sent at once.
    const ack = await post(ACK_PATH, { service: 'shop/checkout', node: 'pod-held', version: first.config.version, revision: first.revision, ok: true }, checkoutToken);
    assert.equal(ack.status, 204, JSON.stringify(ack.body));

    const before = reconciler.applied!.revision.id;
    writeFileSync(join(specDir, 'mesh.yaml'), SPEC.replace('serviceAccount: checkout, ports', 'serviceAccount: ledger, ports'));
    try {
      await waitFor(() => reconciler.applied!.revision.id !== before, 'the moved revision to be applied', 10_000);
      await within(stream.ended, 10_000, 'the reconciler to end checkout\'s stream');
      const sent = stream.messages.filter((m) => m.type === 'config' || m.type === 'delta');
      assert.equal(sent.length, 1, `only the first config went out: ${JSON.stringify(sent.map((m) => m.type))}`);
      const again = await subscribe('shop/checkout', checkoutToken);
      assert.equal(again.status, 403);
      assert.equal(again.body.error, 'identity_mismatch');
      assert.match(again.body.message as string, /ServiceAccount "shop\/ledger"/);
    } finally {
      const moved = reconciler.applied!.revision.id;
      writeFileSync(join(specDir, 'mesh.yaml'), SPEC);
      await waitFor(() => reconciler.applied!.revision.id !== moved, `the original revision to be applied again: ${JSON.stringify({ attempted: reconciler.status().attempted, applied: reconciler.status().applied })}`, 10_000);
    }
  });

  test('with the API server down a token that is not cached gets 503 token_review_unavailable, never a certificate; the shared token keeps working', async () => {
    const fresh = await serviceAccountToken(env, 'shop', 'ledger', 'trellis');
    assert.equal((await certificate('shop/checkout', checkoutToken)).status, 200);
    await env.stopApiServer();
    const down = await certificate('shop/ledger', fresh, LEDGER_ID);
    assert.deepEqual([down.status, down.body.error], [503, 'token_review_unavailable']);
    assert.equal((await certificate('shop/legacy', SHARED)).status, 200);
    // A token reviewed a moment ago is still trusted for the rest of its cache minute.
    assert.equal((await certificate('shop/checkout', checkoutToken)).status, 200);
    await env.startApiServer();
    const up = await certificate('shop/ledger', fresh, LEDGER_ID);
    assert.equal(up.status, 200, JSON.stringify(up.body));
    assert.equal(uriSan(up), LEDGER_ID);
  });
});

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));

interface Proc {
  readonly child: ChildProcess;
  readonly listening: Record<string, number>;
  output(): string;
}

/** Starts `trellis <args>` without any shared control token in its environment, and waits for its "listening" log line. */
async function trellis(args: string[]): Promise<Proc> {
  const env = { ...process.env };
  delete env.TRELLIS_CONTROL_TOKEN;
  delete env.KUBECONFIG;
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  });
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const listening = await new Promise<Record<string, number>>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.includes('"type":"listening"'));
      if (line) resolve(JSON.parse(line) as Record<string, number>);
    });
    child.once('exit', (code) => reject(new Error(`trellis ${args[0]} exited with ${code}: ${out}`)));
  });
  return { child, listening, output: () => out };
}

describe('trellis reconcile --kubernetes with real sidecars presenting ServiceAccount tokens', () => {
  test('a sidecar refused for its token\'s audience recovers when the token file is rewritten, gets its ServiceAccount\'s identity and config and turns ready (strict mTLS); one claiming another ServiceAccount\'s service gets neither', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-identity-e2e-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const specDir = join(dir, 'spec');
    mkdirSync(specDir);
    writeFileSync(join(specDir, 'mesh.yaml'), SPEC.replace('access: { default: allow } }', 'access: { default: allow }, mtls: { mode: strict } }'));
    const tokenFile = join(dir, 'checkout.token');
    const wrongAudienceFile = join(dir, 'checkout-other.token');
    // Projected the wrong way first (audience "other"), fixed in place later, as the kubelet rewrites a projected token.
    writeFileSync(wrongAudienceFile, await serviceAccountToken(env, 'shop', 'checkout', 'other'), { mode: 0o600 });
    writeFileSync(tokenFile, await serviceAccountToken(env, 'shop', 'checkout', 'trellis'), { mode: 0o600 });

    // A cluster where checkout runs: its EndpointSlice, as the EndpointSlice controller would write it
    // (a documentation address: nothing here calls it).
    const discovery = env.kubeConfig.makeApiClient(k8s.DiscoveryV1Api);
    await discovery.createNamespacedEndpointSlice({
      namespace: 'shop',
      body: {
        metadata: { name: 'checkout-abc12', labels: { 'kubernetes.io/service-name': 'checkout' } },
        addressType: 'IPv4',
        endpoints: [{ addresses: ['192.0.2.10'], conditions: { ready: true, serving: true, terminating: false } }],
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      },
    });
    // No --token-file: with --kubernetes the reconciler accepts ServiceAccount tokens alone.
    const reconciler = await trellis(['reconcile', '--dir', specDir, '--listen', '127.0.0.1:0', '--ca-dir', join(dir, 'ca'), '--kubernetes', '--kubeconfig', env.kubeconfigPath]);
    const control = `http://127.0.0.1:${reconciler.listening.port}`;
    await waitFor(async () => (await fetch(`${control}/readyz`).catch(() => undefined))?.status === 200, 'the reconciler to apply the spec', 20_000);

    const sidecarArgs = (service: string, file: string) => ['sidecar', '--service', service, '--control', control, '--control-token-file', file, '--outbound', '0', '--inbound', '0', '--admin', '0', '--node', `${service.replace('/', '-')}-pod`];
    const checkout = await trellis(sidecarArgs('shop/checkout', wrongAudienceFile));
    const admin = `http://127.0.0.1:${checkout.listening.admin}`;
    await waitFor(() => checkout.output().includes('token_audience'), `the checkout sidecar to hear token_audience: ${checkout.output()}`, 20_000);
    assert.equal((await fetch(`${admin}/identity`)).status, 404);
    // The sidecar reads the file again on every try: the right token takes effect without a restart.
    writeFileSync(wrongAudienceFile, readFileSync(tokenFile));
    await waitFor(async () => (await fetch(`${admin}/readyz`).catch(() => undefined))?.status === 200, `the checkout sidecar to be ready: ${checkout.output()}\nreconciler: ${reconciler.output()}`, 20_000);
    const identity = (await (await fetch(`${admin}/identity`)).json()) as { identity: string };
    assert.equal(identity.identity, CHECKOUT_ID);

    const impostor = await trellis(sidecarArgs('shop/ledger', tokenFile));
    await waitFor(() => impostor.output().includes('identity_mismatch'), `the ledger impostor to hear identity_mismatch: ${impostor.output()}`, 20_000);
    const impostorAdmin = `http://127.0.0.1:${impostor.listening.admin}`;
    assert.notEqual((await fetch(`${impostorAdmin}/readyz`)).status, 200);
    assert.equal((await fetch(`${impostorAdmin}/identity`)).status, 404);
    const status = (await (await fetch(`${control}/status`)).json()) as { sidecars: Array<{ service: string; connected: boolean; inSync: boolean }> };
    assert.deepEqual(status.sidecars.map((s) => [s.service, s.connected, s.inSync]), [['shop/checkout', true, true]]);

    // The operator sees each refusal in the reconciler's log, with its code and ServiceAccount, and never a token.
    const refusals = reconciler.output().split('\n').filter((l) => l.includes('"type":"control_refused"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(refusals.some((r) => r.code === 'token_audience' && r.status === 401), JSON.stringify(refusals));
    assert.ok(refusals.some((r) => r.code === 'identity_mismatch' && r.principal === 'system:serviceaccount:shop:checkout' && r.service === 'shop/ledger'), JSON.stringify(refusals));
    assert.ok(!reconciler.output().includes(readFileSync(tokenFile, 'utf8').split('.')[1]!), 'no token in the reconciler\'s log');
  });
});
