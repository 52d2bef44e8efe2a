/**
 * The reconciler's control authentication (src/reconciler/auth.ts): decisions on what a
 * TokenReview answers, the review cache on an injected clock, the shared token tried first,
 * and which services a ServiceAccount may act for.
 *
 * The TokenReviews go through the real `@kubernetes/client-node` client to a small HTTP
 * server on 127.0.0.1:0 that answers as the API server would, so each answer (including ones
 * a real API server gives only in unusual set-ups, such as an authenticator that ignores
 * audiences) can be chosen; test/kubernetes/identity.cluster.ts runs the same code against a
 * real kube-apiserver.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import {
  authorizeService,
  certificateIdentity,
  controlAuthenticator,
  kubernetesTokenReviewer,
  parseServiceAccountUsername,
  SHARED_PRINCIPAL,
  TokenReviewAuthenticator,
  type AuthResult,
  type Authorization,
  type ServiceAccountPrincipal,
  type TokenReviewStatus,
} from '../../src/reconciler/auth.ts';

const T0 = Date.parse('2026-12-07T12:00:00Z');

/** A clock that moves only when told (wall-clock epoch ms, as token `exp` claims are). */
function manualClock(start = T0) {
  let now = start;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

/** An unsigned JWT carrying `claims`: the stand-in API server decides validity; auth.ts only peeks at `exp` and `aud`. */
function jwt(claims: Record<string, unknown>): string {
  const part = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${part({ alg: 'RS256' })}.${part(claims)}.c2lnbmF0dXJl`;
}

interface ReviewRequest {
  readonly token: string;
  readonly audiences: readonly string[];
  readonly authorization: string | undefined;
}

/** An HTTP server answering TokenReviews with what `answer` returns (undefined: never answer). */
class StandInApiServer {
  readonly requests: ReviewRequest[] = [];
  answer: (req: ReviewRequest) => { status: number; review?: TokenReviewStatus } | undefined = () => ({ status: 200, review: { authenticated: false } });
  readonly #server: Server;
  readonly #hung: IncomingMessage[] = [];
  port = 0;

  constructor() {
    this.#server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        if (req.method !== 'POST' || req.url?.split('?')[0] !== '/apis/authentication.k8s.io/v1/tokenreviews') {
          res.writeHead(404).end();
          return;
        }
        const parsed = JSON.parse(body) as { spec: { token: string; audiences: string[] } };
        const request = { token: parsed.spec.token, audiences: parsed.spec.audiences, authorization: req.headers.authorization };
        this.requests.push(request);
        const a = this.answer(request);
        if (!a) {
          this.#hung.push(req);
          return;
        }
        const out = JSON.stringify(a.status === 200 ? { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: parsed.spec, status: a.review } : { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: a.status, message: 'refused' });
        res.writeHead(a.status, { 'content-type': 'application/json' }).end(out);
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', r));
    this.port = (this.#server.address() as AddressInfo).port;
    return this;
  }

  kubeConfig(): k8s.KubeConfig {
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'stand-in', server: `http://127.0.0.1:${this.port}`, skipTLSVerify: true }],
      users: [{ name: 'reconciler', token: 'reconciler-credentials' }],
      contexts: [{ name: 'c', cluster: 'stand-in', user: 'reconciler' }],
      currentContext: 'c',
    });
    return kc;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}

const servers: StandInApiServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

async function setup(options: { cacheTtlMs?: number; cacheEntries?: number; timeoutMs?: number } = {}) {
  const api = await new StandInApiServer().start();
  servers.push(api);
  const clock = manualClock();
  const auth = new TokenReviewAuthenticator({
    review: kubernetesTokenReviewer(api.kubeConfig(), options.timeoutMs),
    now: clock.now,
    ...(options.cacheTtlMs !== undefined ? { cacheTtlMs: options.cacheTtlMs } : {}),
    ...(options.cacheEntries !== undefined ? { cacheEntries: options.cacheEntries } : {}),
  });
  return { api, clock, auth };
}

const accept = (username: string, audiences: readonly string[] = ['trellis']) => () => ({ status: 200, review: { authenticated: true, audiences: [...audiences], user: { username } } });

function refusal(result: AuthResult | Authorization): { status: number; code: string } {
  assert.equal(result.ok, false, `expected a refusal, got ${JSON.stringify(result)}`);
  return result.ok ? { status: 0, code: '' } : { status: result.status, code: result.code };
}

describe('TokenReviewAuthenticator', () => {
  test('a ServiceAccount token the API server accepts for audience trellis is that ServiceAccount; the review asks for audience trellis with the reconciler\'s own credentials', async () => {
    const { api, auth } = await setup();
    api.answer = accept('system:serviceaccount:shop:checkout');
    const token = jwt({ aud: ['trellis'], exp: T0 / 1000 + 3600, sub: 'system:serviceaccount:shop:checkout' });
    const result = await auth.authenticate(token);
    assert.deepEqual(result, { ok: true, principal: { kind: 'serviceAccount', namespace: 'shop', serviceAccount: 'checkout', username: 'system:serviceaccount:shop:checkout' } });
    assert.deepEqual(api.requests, [{ token, audiences: ['trellis'], authorization: 'Bearer reconciler-credentials' }]);
  });

  test('refusals carry stable codes: expired, wrong audience, invalid, not a ServiceAccount, accepted without the audience', async () => {
    const { api, auth } = await setup();
    api.answer = () => ({ status: 200, review: { authenticated: false, error: '[invalid bearer token, token has been invalidated]' } });
    assert.deepEqual(refusal(await auth.authenticate(jwt({ aud: ['trellis'], exp: T0 / 1000 - 5 }))), { status: 401, code: 'token_expired' });
    assert.deepEqual(refusal(await auth.authenticate(jwt({ aud: ['other'], exp: T0 / 1000 + 600 }))), { status: 401, code: 'token_audience' });
    const invalid = await auth.authenticate('not-a-jwt');
    assert.deepEqual(refusal(invalid), { status: 401, code: 'token_invalid' });
    assert.match((invalid as { message: string }).message, /token has been invalidated/);
    api.answer = accept('jane@example.com');
    const user = await auth.authenticate(jwt({ aud: ['trellis'] }));
    assert.deepEqual(refusal(user), { status: 401, code: 'not_a_service_account' });
    assert.match((user as { message: string }).message, /jane@example\.com/);
    // An authenticator that ignores audiences vouches for a token meant for anyone: not enough.
    api.answer = accept('system:serviceaccount:shop:checkout', []);
    assert.deepEqual(refusal(await auth.authenticate(jwt({ aud: ['trellis'] }))), { status: 401, code: 'token_audience' });
    assert.deepEqual(refusal(await auth.authenticate('')), { status: 401, code: 'token_missing' });
    assert.equal(auth.cached, 0);
  });

  test('an API server that cannot be asked is 503 token_review_unavailable, never an acceptance: down, refusing the reconciler, erring, or silent', async () => {
    const { api, auth } = await setup({ timeoutMs: 300 });
    const token = jwt({ aud: ['trellis'] });
    api.answer = () => ({ status: 403 });
    const forbidden = await auth.authenticate(token);
    assert.deepEqual(refusal(forbidden), { status: 503, code: 'token_review_unavailable' });
    assert.match((forbidden as { message: string }).message, /system:auth-delegator/);
    api.answer = () => ({ status: 500 });
    assert.deepEqual(refusal(await auth.authenticate(token)), { status: 503, code: 'token_review_unavailable' });
    api.answer = () => undefined;
    const silent = await auth.authenticate(token);
    assert.deepEqual(refusal(silent), { status: 503, code: 'token_review_unavailable' });
    assert.match((silent as { message: string }).message, /no answer in time/);
    await api.close();
    servers.splice(servers.indexOf(api), 1);
    assert.deepEqual(refusal(await auth.authenticate(token)), { status: 503, code: 'token_review_unavailable' });
  });

  test('a positive review is reused for a minute on the injected clock, then asked again', async () => {
    const { api, clock, auth } = await setup();
    api.answer = accept('system:serviceaccount:shop:checkout');
    const token = jwt({ aud: ['trellis'], exp: T0 / 1000 + 3600 });
    assert.equal((await auth.authenticate(token)).ok, true);
    clock.advance(59_999);
    assert.equal((await auth.authenticate(token)).ok, true);
    assert.equal(api.requests.length, 1);
    clock.advance(1);
    api.answer = () => ({ status: 200, review: { authenticated: false } });
    assert.deepEqual(refusal(await auth.authenticate(token)), { status: 401, code: 'token_invalid' });
    assert.equal(api.requests.length, 2);
  });

  test('a cached review never outlives the token\'s own exp claim', async () => {
    const { api, clock, auth } = await setup();
    api.answer = accept('system:serviceaccount:shop:checkout');
    const token = jwt({ aud: ['trellis'], exp: T0 / 1000 + 10 });
    assert.equal((await auth.authenticate(token)).ok, true);
    clock.advance(9_000);
    assert.equal((await auth.authenticate(token)).ok, true);
    assert.equal(api.requests.length, 1);
    clock.advance(1_000);
    api.answer = () => ({ status: 200, review: { authenticated: false } });
    assert.deepEqual(refusal(await auth.authenticate(token)), { status: 401, code: 'token_expired' });
    assert.equal(api.requests.length, 2);
  });

  test('refusals are not cached: a token refused a moment ago is accepted as soon as the API server accepts it', async () => {
    const { api, auth } = await setup();
    const token = jwt({ aud: ['trellis'] });
    api.answer = () => ({ status: 200, review: { authenticated: false } });
    assert.equal((await auth.authenticate(token)).ok, false);
    api.answer = () => ({ status: 503 });
    assert.equal((await auth.authenticate(token)).ok, false);
    api.answer = accept('system:serviceaccount:shop:checkout');
    assert.equal((await auth.authenticate(token)).ok, true);
    assert.equal(api.requests.length, 3);
  });

  test('the cache is bounded: beyond its size the oldest review goes first', async () => {
    const { api, auth } = await setup({ cacheEntries: 2 });
    api.answer = accept('system:serviceaccount:shop:checkout');
    const tokens = ['a', 'b', 'c'].map((jti) => jwt({ aud: ['trellis'], jti }));
    for (const t of tokens) assert.equal((await auth.authenticate(t)).ok, true);
    assert.equal(auth.cached, 2);
    assert.equal(api.requests.length, 3);
    await auth.authenticate(tokens[2]!);
    await auth.authenticate(tokens[1]!);
    assert.equal(api.requests.length, 3, 'the two newest are cached');
    await auth.authenticate(tokens[0]!);
    assert.equal(api.requests.length, 4, 'the oldest was evicted');
  });

  test('concurrent checks of one token share one review', async () => {
    const { api, auth } = await setup();
    api.answer = accept('system:serviceaccount:shop:checkout');
    const token = jwt({ aud: ['trellis'] });
    const results = await Promise.all([auth.authenticate(token), auth.authenticate(token), auth.authenticate(token)]);
    assert.ok(results.every((r) => r.ok));
    assert.equal(api.requests.length, 1);
  });
});

describe('controlAuthenticator', () => {
  test('the shared token is compared first and never reaches the API server; other bearers go to TokenReview', async () => {
    const { api, auth } = await setup();
    api.answer = accept('system:serviceaccount:shop:checkout');
    const control = controlAuthenticator({ sharedToken: 'shared-secret', serviceAccounts: auth });
    assert.deepEqual(await control.authenticate('shared-secret'), { ok: true, principal: SHARED_PRINCIPAL });
    assert.equal(api.requests.length, 0);
    const sa = await control.authenticate(jwt({ aud: ['trellis'] }));
    assert.equal(sa.ok && sa.principal.kind, 'serviceAccount');
    assert.equal(api.requests.length, 1);
    assert.deepEqual(refusal(await control.authenticate('')), { status: 401, code: 'token_missing' });
  });

  test('with the shared token alone (meshes outside Kubernetes) anything else is token_invalid; with neither it refuses to start', async () => {
    const control = controlAuthenticator({ sharedToken: 'shared-secret' });
    assert.deepEqual(refusal(await control.authenticate('shared-secret!')), { status: 401, code: 'token_invalid' });
    assert.deepEqual(refusal(await control.authenticate('')), { status: 401, code: 'token_missing' });
    assert.throws(() => controlAuthenticator({}), /shared control token, ServiceAccount authentication, or both/);
  });
});

describe('authorizeService', () => {
  const checkout: ServiceAccountPrincipal = { kind: 'serviceAccount', namespace: 'shop', serviceAccount: 'checkout', username: 'system:serviceaccount:shop:checkout' };

  test('a ServiceAccount acts for services of its namespace whose Kubernetes identity is its own', () => {
    assert.deepEqual(authorizeService(checkout, 'shop/checkout', 'spiffe://td/ns/shop/sa/checkout'), { ok: true });
    // A service without a Kubernetes identity constrains only the namespace.
    assert.deepEqual(authorizeService(checkout, 'shop/legacy', 'spiffe://td/ns/shop/svc/legacy'), { ok: true });
    assert.deepEqual(authorizeService(checkout, 'shop/new', undefined), { ok: true });
  });

  test('another ServiceAccount\'s service or another namespace is 403 identity_mismatch, naming the ServiceAccount the service expects', () => {
    const other = authorizeService(checkout, 'shop/ledger', 'spiffe://td/ns/shop/sa/ledger');
    assert.deepEqual(refusal(other), { status: 403, code: 'identity_mismatch' });
    assert.match((other as { message: string }).message, /runs as ServiceAccount "shop\/ledger"/);
    assert.deepEqual(refusal(authorizeService(checkout, 'bank/checkout', 'spiffe://td/ns/bank/sa/checkout')), { status: 403, code: 'identity_mismatch' });
    // A bare key is namespace default.
    assert.deepEqual(refusal(authorizeService(checkout, 'checkout', 'spiffe://td/svc/checkout')), { status: 403, code: 'identity_mismatch' });
  });

  test('the shared token acts for every service', () => {
    assert.deepEqual(authorizeService(SHARED_PRINCIPAL, 'shop/ledger', 'spiffe://td/ns/shop/sa/ledger'), { ok: true });
  });

  test('a certificate names the token\'s ServiceAccount; the shared token gets the service\'s applied identity', () => {
    assert.equal(certificateIdentity(checkout, 'td', 'spiffe://td/ns/shop/svc/legacy'), 'spiffe://td/ns/shop/sa/checkout');
    assert.equal(certificateIdentity(SHARED_PRINCIPAL, 'td', 'spiffe://td/ns/shop/svc/legacy'), 'spiffe://td/ns/shop/svc/legacy');
  });

  test('usernames: only system:serviceaccount:<namespace>:<name> is a ServiceAccount', () => {
    assert.deepEqual(parseServiceAccountUsername('system:serviceaccount:shop:checkout'), { namespace: 'shop', serviceAccount: 'checkout' });
    assert.equal(parseServiceAccountUsername('system:serviceaccount:shop'), null);
    assert.equal(parseServiceAccountUsername('system:serviceaccount:shop:a:b'), null);
    assert.equal(parseServiceAccountUsername('system:node:worker-1'), null);
    assert.equal(parseServiceAccountUsername('system:serviceaccount:Shop:checkout'), null);
  });
});
