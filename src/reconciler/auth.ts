/**
 * Who is calling the reconciler's control endpoints (`/v1/stream`, `/v1/ack`,
 * `/v1/certificate`), and which services that caller may act for.
 *
 * Two kinds of caller (principal):
 * - `shared`: the mesh's shared control token. For meshes outside Kubernetes, where there is
 *   nothing better to prove who a sidecar is; whoever holds it may act for every service.
 * - `serviceAccount`: a Kubernetes ServiceAccount, proven by the pod's projected token
 *   (audience `trellis`) and checked by the API server with a TokenReview. It may act only for
 *   services of its own namespace whose applied identity is its own ServiceAccount, and its
 *   certificate always names that ServiceAccount, whatever the request says.
 *
 * Every refusal carries a stable code (`token_missing`, `token_invalid`, `token_expired`,
 * `token_audience`, `not_a_service_account`, `token_review_unavailable`, `identity_mismatch`).
 * A failure to ask the API server is never an acceptance.
 */
import { createHash } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import { tokensMatch } from '../http/json-server.ts';
import { kubernetesIdentity, parseKubernetesIdentity } from '../identity/spiffe.ts';
import { parseServiceKey } from '../spec/names.ts';

/** The audience a sidecar's projected ServiceAccount token must carry. */
export const TRELLIS_AUDIENCE = 'trellis';

/** The holder of the mesh's shared control token. */
export interface SharedPrincipal {
  readonly kind: 'shared';
}

/** A Kubernetes ServiceAccount, as the API server vouched for it. */
export interface ServiceAccountPrincipal {
  readonly kind: 'serviceAccount';
  readonly namespace: string;
  readonly serviceAccount: string;
  /** `system:serviceaccount:<namespace>:<serviceAccount>`. */
  readonly username: string;
}

export type Principal = SharedPrincipal | ServiceAccountPrincipal;

export const SHARED_PRINCIPAL: SharedPrincipal = Object.freeze({ kind: 'shared' });

/** Why a bearer was refused. 401: the bearer proves nothing; 503: it could not be checked now (try again). */
export interface AuthRefusal {
  readonly ok: false;
  readonly status: 401 | 403 | 503;
  readonly code: string;
  readonly message: string;
}

export type AuthResult = { readonly ok: true; readonly principal: Principal } | AuthRefusal;

/**
 * Turns a bearer token into a principal. `bearer` is the token after `Bearer ` (empty when the
 * request carried none). Never throws: failures to check are refusals (503).
 */
export interface Authenticator {
  authenticate(bearer: string): Promise<AuthResult>;
}

/** What a TokenReview answered (`status` of `authentication.k8s.io/v1` TokenReview). */
export interface TokenReviewStatus {
  readonly authenticated?: boolean;
  readonly audiences?: readonly string[];
  readonly user?: { readonly username?: string };
  readonly error?: string;
}

/** Asks the API server about `token` for `audiences`; rejects when it cannot be asked (network, RBAC, timeout). */
export type TokenReviewer = (token: string, audiences: readonly string[]) => Promise<TokenReviewStatus>;

/** How long the reconciler waits for a TokenReview before answering 503: a sidecar retries with backoff. */
export const TOKEN_REVIEW_TIMEOUT_MS = 5000;

/** A TokenReviewer that calls `authentication.k8s.io/v1` TokenReview with the credentials of `kubeConfig`. */
export function kubernetesTokenReviewer(kubeConfig: k8s.KubeConfig, timeoutMs = TOKEN_REVIEW_TIMEOUT_MS): TokenReviewer {
  const api = kubeConfig.makeApiClient(k8s.AuthenticationV1Api);
  return async (token, audiences) => {
    // The generated client has no timeout of its own; a hung API server must not hang the sidecar's request.
    const signal = AbortSignal.timeout(timeoutMs);
    const review = await api.createTokenReview(
      { body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [...audiences] } } },
      {
        middleware: [
          {
            pre: (ctx) => {
              ctx.setSignal(signal);
              return new k8s.Observable(Promise.resolve(ctx));
            },
            post: (ctx) => new k8s.Observable(Promise.resolve(ctx)),
          },
        ],
        middlewareMergeStrategy: 'append',
      },
    );
    return review.status ?? {};
  };
}

/** Claims read from a JWT without verifying it: used only to word refusals and to shorten cache lifetimes, never to accept. */
export function unverifiedClaims(token: string): { readonly exp?: number; readonly aud?: readonly string[] } {
  const parts = token.split('.');
  if (parts.length !== 3) return {};
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown; aud?: unknown };
    const out: { exp?: number; aud?: readonly string[] } = {};
    if (typeof claims.exp === 'number' && Number.isFinite(claims.exp)) out.exp = claims.exp;
    if (typeof claims.aud === 'string') out.aud = [claims.aud];
    else if (Array.isArray(claims.aud) && claims.aud.every((a) => typeof a === 'string')) out.aud = claims.aud as string[];
    return out;
  } catch {
    return {};
  }
}

const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?):([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$/;

/** The namespace and name of a ServiceAccount's username; null for any other user. */
export function parseServiceAccountUsername(username: string): { readonly namespace: string; readonly serviceAccount: string } | null {
  const m = SERVICE_ACCOUNT_USER.exec(username);
  return m ? { namespace: m[1]!, serviceAccount: m[3]! } : null;
}

function refuse(status: 401 | 403 | 503, code: string, message: string): AuthRefusal {
  return { ok: false, status, code, message };
}

export interface TokenReviewAuthenticatorOptions {
  readonly review: TokenReviewer;
  /** Wall-clock epoch ms (compared with tokens' `exp`); injected so cache expiry is tested without waiting. */
  readonly now?: () => number;
  /** Longest a positive review is reused (ms). */
  readonly cacheTtlMs?: number;
  /** Most cached reviews; the oldest go first. */
  readonly cacheEntries?: number;
  readonly audience?: string;
}

/**
 * A positive review is reused for at most a minute: sidecars call three endpoints on every
 * (re)connect and renewal, and one TokenReview each would load the API server with every
 * reconnect storm. A minute bounds how long a deleted ServiceAccount's token keeps working.
 */
export const DEFAULT_REVIEW_CACHE_TTL_MS = 60_000;
/** Enough for every pod of a large cluster; an entry is about 200 bytes. */
export const DEFAULT_REVIEW_CACHE_ENTRIES = 10_000;

/**
 * Checks ServiceAccount tokens with TokenReview. Positive results are cached by the token's
 * SHA-256 (the token itself is never kept) until the earlier of `cacheTtlMs` and the token's
 * own `exp`; refusals are not cached, so a token that becomes valid (a ServiceAccount
 * created a moment later) works at once. Concurrent checks of one token share one review.
 */
export class TokenReviewAuthenticator implements Authenticator {
  readonly #review: TokenReviewer;
  readonly #now: () => number;
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #audience: string;
  readonly #cache = new Map<string, { readonly principal: ServiceAccountPrincipal; readonly until: number }>();
  readonly #inFlight = new Map<string, Promise<AuthResult>>();

  constructor(options: TokenReviewAuthenticatorOptions) {
    this.#review = options.review;
    this.#now = options.now ?? Date.now;
    this.#ttlMs = options.cacheTtlMs ?? DEFAULT_REVIEW_CACHE_TTL_MS;
    this.#maxEntries = options.cacheEntries ?? DEFAULT_REVIEW_CACHE_ENTRIES;
    this.#audience = options.audience ?? TRELLIS_AUDIENCE;
  }

  /** Number of cached positive reviews (for tests and metrics). */
  get cached(): number {
    return this.#cache.size;
  }

  async authenticate(bearer: string): Promise<AuthResult> {
    if (bearer === '') return refuse(401, 'token_missing', 'send the pod\'s projected ServiceAccount token (audience "trellis") as Authorization: Bearer');
    const key = createHash('sha256').update(bearer).digest('hex');
    const hit = this.#cache.get(key);
    if (hit) {
      if (this.#now() < hit.until) return { ok: true, principal: hit.principal };
      this.#cache.delete(key);
    }
    const pending = this.#inFlight.get(key);
    if (pending) return pending;
    const started = this.#check(bearer, key).finally(() => this.#inFlight.delete(key));
    this.#inFlight.set(key, started);
    return started;
  }

  async #check(token: string, key: string): Promise<AuthResult> {
    const claims = unverifiedClaims(token);
    let status: TokenReviewStatus;
    try {
      status = await this.#review(token, [this.#audience]);
    } catch (err) {
      return refuse(503, 'token_review_unavailable', `the Kubernetes API server could not review the token (${describeReviewError(err)}); try again`);
    }
    const now = this.#now();
    if (status.authenticated !== true) {
      // The API server says only "invalid"; the token's own (unverified) claims say why, for the operator.
      if (claims.exp !== undefined && claims.exp * 1000 <= now) return refuse(401, 'token_expired', `the token expired at ${new Date(claims.exp * 1000).toISOString()}; the kubelet refreshes projected tokens, so read the file again`);
      if (claims.aud !== undefined && !claims.aud.includes(this.#audience)) return refuse(401, 'token_audience', `the token is for audiences [${claims.aud.join(', ')}]; Trellis needs a projected ServiceAccount token with audience "${this.#audience}"`);
      return refuse(401, 'token_invalid', `the API server did not accept the token${status.error ? `: ${status.error}` : ''}`);
    }
    // An authenticator that ignores audiences answers without them: such a token may be meant for anyone, so not for us.
    if (!(status.audiences ?? []).includes(this.#audience)) return refuse(401, 'token_audience', `the API server accepted the token but not for audience "${this.#audience}" (audiences: [${(status.audiences ?? []).join(', ')}])`);
    const username = status.user?.username ?? '';
    const sa = parseServiceAccountUsername(username);
    if (!sa) return refuse(401, 'not_a_service_account', `the token belongs to "${username}", not to a ServiceAccount (system:serviceaccount:<namespace>:<name>)`);
    const principal: ServiceAccountPrincipal = Object.freeze({ kind: 'serviceAccount', namespace: sa.namespace, serviceAccount: sa.serviceAccount, username });
    let until = now + this.#ttlMs;
    if (claims.exp !== undefined) until = Math.min(until, claims.exp * 1000);
    if (until > now) {
      if (this.#cache.size >= this.#maxEntries) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(key, { principal, until });
    }
    return { ok: true, principal };
  }
}

function describeReviewError(err: unknown): string {
  if (err instanceof k8s.ApiException) {
    if (err.code === 401 || err.code === 403) return `HTTP ${err.code}: the reconciler's own credentials may not create tokenreviews.authentication.k8s.io (grant it system:auth-delegator)`;
    return `HTTP ${err.code}`;
  }
  const e = err as Error & { cause?: Error & { code?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'no answer in time';
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

/** The shared control token; anything else is refused. */
export class SharedTokenAuthenticator implements Authenticator {
  readonly #token: string;

  constructor(token: string) {
    if (token === '') throw new Error('the shared control token is empty');
    this.#token = token;
  }

  matches(bearer: string): boolean {
    return tokensMatch(bearer, this.#token);
  }

  async authenticate(bearer: string): Promise<AuthResult> {
    if (bearer === '') return refuse(401, 'token_missing', 'send the control token as Authorization: Bearer');
    return this.matches(bearer) ? { ok: true, principal: SHARED_PRINCIPAL } : refuse(401, 'token_invalid', 'not the mesh\'s control token');
  }
}

/**
 * The reconciler's authenticator: the shared token when one is configured (compared in
 * constant time first, so sidecars off the cluster never cost a TokenReview and the shared
 * token never reaches the API server), then the ServiceAccount check when enabled.
 */
export function controlAuthenticator(options: { readonly sharedToken?: string; readonly serviceAccounts?: Authenticator }): Authenticator {
  const shared = options.sharedToken !== undefined ? new SharedTokenAuthenticator(options.sharedToken) : undefined;
  const serviceAccounts = options.serviceAccounts;
  if (!shared && !serviceAccounts) throw new Error('the reconciler needs a shared control token, ServiceAccount authentication, or both');
  return {
    async authenticate(bearer) {
      if (shared?.matches(bearer)) return { ok: true, principal: SHARED_PRINCIPAL };
      if (serviceAccounts) return serviceAccounts.authenticate(bearer);
      return shared!.authenticate(bearer);
    },
  } satisfies Authenticator;
}

export type Authorization = { readonly ok: true } | AuthRefusal;

/**
 * Whether `principal` may subscribe, acknowledge or get a certificate as service `service`
 * (a service key). `identity` is the service's identity in the applied revision (its
 * `inbound` resource), or undefined when the revision does not mesh it or none is applied.
 *
 * The shared token may act for any service. A ServiceAccount may act only in its own
 * namespace, and, where the mesh gives the service a Kubernetes identity
 * (`spiffe://<td>/ns/<ns>/sa/<sa>`), only as that ServiceAccount.
 */
export function authorizeService(principal: Principal, service: string, identity: string | undefined): Authorization {
  if (principal.kind === 'shared') return { ok: true };
  const { namespace } = parseServiceKey(service);
  if (namespace !== principal.namespace) return refuse(403, 'identity_mismatch', `service "${service}" is in namespace "${namespace}"; this token is ServiceAccount "${principal.namespace}/${principal.serviceAccount}"`);
  const expected = identity === undefined ? null : parseKubernetesIdentity(identity);
  if (expected && (expected.namespace !== principal.namespace || expected.serviceAccount !== principal.serviceAccount)) {
    return refuse(403, 'identity_mismatch', `service "${service}" runs as ServiceAccount "${expected.namespace}/${expected.serviceAccount}" (${identity}); this token is ServiceAccount "${principal.namespace}/${principal.serviceAccount}"`);
  }
  return { ok: true };
}

/**
 * The identity a certificate for `service` names: a ServiceAccount's own SPIFFE ID, taken
 * from its token and never from the request; for the shared token, the identity the applied
 * revision gives the service.
 */
export function certificateIdentity(principal: Principal, trustDomain: string, serviceIdentity: string): string {
  return principal.kind === 'serviceAccount' ? kubernetesIdentity(trustDomain, principal.namespace, principal.serviceAccount) : serviceIdentity;
}
