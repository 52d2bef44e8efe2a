/**
 * Identity from ServiceAccounts against a real kube-apiserver: sidecars present projected
 * ServiceAccount tokens (made here with TokenRequest, as the kubelet would), a real Reconciler
 * and ReconcilerServer check them with TokenReview, and each token gets exactly its own
 * ServiceAccount's certificate and config; bad tokens get 401 with stable codes, and an API
 * server that is down gets 503, never an acceptance.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
let checkoutToken: string;
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  env = await startKubeEnv();
  await createNamespace(env, 'shop', ['checkout', 'ledger', 'gone']);
  await createNamespace(env, 'bank', ['checkout']);
  checkoutToken = await serviceAccountToken(env, 'shop', 'checkout', 'trellis');

  const dir = mkdtempSync(join(tmpdir(), 'trellis-identity-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'mesh.yaml'), SPEC);
  const log = pino({ level: 'silent' });
  const metrics = new ReconcilerMetrics();
  const reconciler = new Reconciler({ source: new FolderSource({ dir, debounceMs: 20 }), log, metrics });
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
  try {
    for await (const chunk of res.body) {
      buffered += (chunk as Buffer).toString();
      for (const line of buffered.split('\n').slice(0, -1)) {
        const m = JSON.parse(line) as ControlMessage;
        if (m.type === 'config' || m.type === 'unknown-service') return { status: 200, body: {}, config: m };
      }
    }
  } finally {
    controller.abort();
  }
  return { status: 200, body: {} };
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

    // A user's token (kte-user) is no ServiceAccount, whatever the API server thinks of its audience.
    const user = await certificate('shop/checkout', env.userToken);
    assert.equal(user.status, 401);
    assert.ok(['not_a_service_account', 'token_audience', 'token_invalid'].includes(user.body.error as string), JSON.stringify(user.body));
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
