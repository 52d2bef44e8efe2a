/**
 * The sidecar's workload identity: its certificate (an X.509-SVID naming
 * `spiffe://<trust domain>/svc/<service>`), the private key made for it, and the trust
 * bundle that peers' certificates must chain to. Credentials are validated whole before
 * they replace the current one (validate → swap), so a bad certificate file or a torn
 * write never takes the running identity away. Listeners (the inbound TLS listener) hear
 * of every swap; outbound connections read `current` when they connect, so rotation never
 * touches connections already open.
 */
import { systemWallClock, type WallClock } from './clock.ts';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import { splitPemCertificates } from '../identity/pem.ts';
import { parseMeshIdentity, spiffeIdOfAltNames } from '../identity/spiffe.ts';
import { parseServiceKey } from '../spec/names.ts';

/** TLS options every mesh connection uses: TLS 1.3 only (forward secrecy, one round trip). */
export const MESH_TLS_VERSION = 'TLSv1.3' as const;

/** A validated, ready-to-use identity. Immutable. */
export interface Credential {
  /** The SPIFFE ID the certificate names. */
  readonly identity: string;
  readonly trustDomain: string;
  /** The service key the certificate serves: the one it names, or for a ServiceAccount ID the sidecar's own service (empty when none was given). */
  readonly service: string;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
  /** Roots peers must chain to (PEM each). */
  readonly trustBundle: readonly string[];
  /** Validity, epoch ms. */
  readonly notBefore: number;
  readonly notAfter: number;
  readonly serialNumber: string;
  /** Options for `tls.createServer`/`setSecureContext`, and the context built from them. */
  readonly tlsOptions: SecureContextOptions;
  readonly context: SecureContext;
}

export type CredentialResult = { readonly ok: true; readonly credential: Credential } | { readonly ok: false; readonly reason: string };

/**
 * Checks a certificate, its key and a trust bundle belong together and can serve now:
 * the key matches, the certificate names one mesh SPIFFE ID (of `service` when given; a
 * Kubernetes ServiceAccount ID names no service, so it fits the services of its namespace:
 * the reconciler checked the ServiceAccount), it is within its validity, and it chains to a
 * root of the bundle.
 */
export function buildCredential(input: { certificatePem: string; privateKeyPem: string; trustBundle: readonly string[] }, service: string | undefined, now = Date.now()): CredentialResult {
  let chain: X509Certificate[];
  let roots: X509Certificate[];
  try {
    chain = splitPemCertificates(input.certificatePem).map((c) => new X509Certificate(c));
    roots = input.trustBundle.map((r) => new X509Certificate(r));
  } catch (err) {
    return { ok: false, reason: `certificate or trust bundle does not parse: ${(err as Error).message}` };
  }
  if (chain.length === 0) return { ok: false, reason: 'the certificate file holds no PEM certificate' };
  if (roots.length === 0) return { ok: false, reason: 'the trust bundle holds no certificate' };
  const leaf = chain[0]!;
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(input.privateKeyPem))) return { ok: false, reason: 'the private key does not belong to the certificate' };
  } catch (err) {
    return { ok: false, reason: `the private key does not parse: ${(err as Error).message}` };
  }
  const identity = spiffeIdOfAltNames(leaf.subjectAltName);
  const parsed = identity ? parseMeshIdentity(identity) : null;
  if (!identity || !parsed) return { ok: false, reason: `the certificate names no mesh SPIFFE ID (spiffe://<trust domain>/svc/<name>, …/ns/<namespace>/svc/<name> or …/ns/<namespace>/sa/<serviceAccount>); its names: ${leaf.subjectAltName ?? 'none'}` };
  const certService = parsed.service ?? (service !== undefined && parseServiceKey(service).namespace === parsed.namespace ? service : undefined);
  if (service !== undefined && certService !== service) {
    return { ok: false, reason: parsed.service !== undefined ? `the certificate is for service "${parsed.service}", this sidecar serves "${service}"` : `the certificate is for ServiceAccount "${parsed.namespace}/${parsed.serviceAccount}", outside the namespace of service "${service}"` };
  }
  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  if (now >= notAfter) return { ok: false, reason: `the certificate expired at ${leaf.validTo}` };
  if (now < notBefore) return { ok: false, reason: `the certificate is not valid before ${leaf.validFrom}` };
  // The file may hold intermediates after the leaf (cert-manager, Vault): each must sign
  // the one before it, and the last must be signed by a root of the bundle.
  let issued = leaf;
  for (const intermediate of chain.slice(1)) {
    if (!(issued.checkIssued(intermediate) && issued.verify(intermediate.publicKey))) return { ok: false, reason: `the certificate chain is broken: ${issued.subject} is not signed by ${intermediate.subject}` };
    issued = intermediate;
  }
  if (!roots.some((root) => issued.checkIssued(root) && issued.verify(root.publicKey))) return { ok: false, reason: 'the certificate chain does not end at a root of the trust bundle' };
  const tlsOptions: SecureContextOptions = { key: input.privateKeyPem, cert: input.certificatePem, ca: [...input.trustBundle], minVersion: MESH_TLS_VERSION };
  return {
    ok: true,
    credential: Object.freeze({
      identity,
      trustDomain: parsed.trustDomain,
      service: certService ?? '',
      certificatePem: input.certificatePem,
      privateKeyPem: input.privateKeyPem,
      trustBundle: Object.freeze([...input.trustBundle]),
      notBefore,
      notAfter,
      serialNumber: leaf.serialNumber,
      tlsOptions,
      context: createSecureContext(tlsOptions),
    }),
  };
}

/** Holds the sidecar's current credential and tells listeners when it changes. */
export class SidecarIdentity {
  #current: Credential | undefined;
  readonly #listeners: Array<(c: Credential) => void> = [];
  readonly #service: string | undefined;
  readonly #clock: WallClock;

  /** `service`: the service whose identity certificates must name (any, when undefined); `clock`: the wall time validity is judged by. */
  constructor(service: string | undefined, clock: WallClock = systemWallClock) {
    this.#service = service;
    this.#clock = clock;
  }

  /** The credential in use; undefined before the first and once it has expired (an expired certificate proves nothing). */
  get current(): Credential | undefined {
    const c = this.#current;
    return c && this.#clock.now() < c.notAfter ? c : undefined;
  }

  /** Validates and swaps in a credential; the current one stays when it is refused. */
  offer(input: { certificatePem: string; privateKeyPem: string; trustBundle: readonly string[] }): CredentialResult {
    const result = buildCredential(input, this.#service, this.#clock.now());
    if (!result.ok) return result;
    this.#current = result.credential;
    for (const l of [...this.#listeners]) l(result.credential);
    return result;
  }

  /** Replaces the trust bundle of the current credential (a root rollover), keeping certificate and key. */
  offerTrustBundle(roots: readonly string[]): CredentialResult {
    const c = this.current;
    if (!c) return { ok: false, reason: 'no valid certificate' };
    if (c.trustBundle.join() === roots.join()) return { ok: true, credential: c };
    return this.offer({ certificatePem: c.certificatePem, privateKeyPem: c.privateKeyPem, trustBundle: roots });
  }

  onChange(listener: (c: Credential) => void): void {
    this.#listeners.push(listener);
  }

  /** Resolves true once a credential is in use (at once if one is), false after `timeoutMs` without. */
  whenAvailable(timeoutMs: number): Promise<boolean> {
    return this.current ? Promise.resolve(true) : this.nextChange(timeoutMs);
  }

  /** Resolves true when the next credential is swapped in, false after `timeoutMs` without one. */
  nextChange(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#listeners.splice(this.#listeners.indexOf(listener), 1);
        resolve(false);
      }, timeoutMs);
      const listener = () => {
        clearTimeout(timer);
        this.#listeners.splice(this.#listeners.indexOf(listener), 1);
        resolve(true);
      };
      this.#listeners.push(listener);
    });
  }
}
