/**
 * The mesh certificate authority: a root key and certificate that sign short-lived
 * workload certificates (X.509-SVIDs) for SPIFFE IDs the caller has already authorised.
 * The CA never sees a workload's private key: it signs the public key of a certificate
 * request whose signature proves possession.
 *
 * The trust bundle it hands out is its own root plus any extra roots the operator lists,
 * so a root can be rolled over without a flag day: add the new root to every bundle, then
 * sign with it, then drop the old one.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { join } from 'node:path';
import { SIGNING_ALGORITHM, createCertificateRequest, createSelfSignedCa, generateKeyPair, importSigningKey, privateKeyPem, randomSerial } from './keys.ts';
import { x509 } from './x509.ts';

/** Leaf certificates start this long before they are issued, so clocks a little behind still accept them. */
const CLOCK_SKEW_MS = 60_000;
/** A generated root lasts ten years: local meshes should not meet its expiry. */
const ROOT_LIFETIME_MS = 10 * 365 * 24 * 3600_000;
/** Shortest and longest workload certificate lifetimes the CA issues. */
export const MIN_CERT_TTL_MS = 60_000;
export const MAX_CERT_TTL_MS = 30 * 24 * 3600_000;
export const DEFAULT_CERT_TTL_MS = 24 * 3600_000;

/** Thrown for a certificate request the CA will not sign. */
export class CertificateRequestError extends Error {
  readonly code = 'invalid_csr';
}

/** A freshly issued certificate with the key made for it (for standalone sidecars and tests). */
export interface IssuedKeyPair {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
  readonly notAfter: Date;
}


/** Splits a PEM file holding several certificates into one PEM string each. */
export { splitPemCertificates } from './pem.ts';

export class MeshCertificateAuthority {
  readonly #root: x509.X509Certificate;
  readonly #signingKey: CryptoKey;
  readonly #bundle: readonly string[];
  /** Set only for a CA made by `generate`, whose key may be written to disk. */
  readonly #exportableKey: CryptoKey | undefined;
  /** The root certificate, PEM. */
  readonly rootPem: string;

  private constructor(root: x509.X509Certificate, signingKey: CryptoKey, extraRoots: readonly string[], exportableKey?: CryptoKey) {
    this.#root = root;
    this.#signingKey = signingKey;
    this.#exportableKey = exportableKey;
    this.rootPem = root.toString('pem') + '\n';
    // Each root once, by fingerprint: a rollover bundle file often lists this CA's own root too.
    const seen = new Set<string>();
    this.#bundle = Object.freeze([this.rootPem, ...extraRoots].filter((r) => {
      const fingerprint = new X509Certificate(r).fingerprint256;
      if (seen.has(fingerprint)) return false;
      seen.add(fingerprint);
      return true;
    }));
  }

  /** Roots every sidecar should trust (PEM each): this CA's first, then the extra ones. */
  get trustBundle(): readonly string[] {
    return this.#bundle;
  }

  /** A new root for `trustDomain` (key in memory only). */
  static async generate(trustDomain: string, extraRoots: readonly string[] = []): Promise<MeshCertificateAuthority> {
    const keys = await generateKeyPair();
    const now = Date.now();
    const root = await createSelfSignedCa(`CN=Trellis mesh root CA, O=${trustDomain.replace(/[,+="<>#;\\]/g, '_')}`, keys, now, CLOCK_SKEW_MS, ROOT_LIFETIME_MS);
    return new MeshCertificateAuthority(root, keys.privateKey, extraRoots, keys.privateKey);
  }

  /**
   * A CA from an operator's root certificate and key (PEM). @throws when the certificate
   * is not a CA, the key does not match it, or it has expired.
   */
  static async load(certificatePem: string, keyPem: string, extraRoots: readonly string[] = []): Promise<MeshCertificateAuthority> {
    const check = new X509Certificate(certificatePem);
    if (!check.ca) throw new Error('the CA certificate is not a CA certificate (basicConstraints cA is false)');
    if (!check.checkPrivateKey(createPrivateKey(keyPem))) throw new Error('the CA key does not belong to the CA certificate');
    if (Date.parse(check.validTo) <= Date.now()) throw new Error(`the CA certificate expired on ${check.validTo}`);
    const root = new x509.X509Certificate(certificatePem);
    const key = await importSigningKey(keyPem, root.publicKey.algorithm);
    return new MeshCertificateAuthority(root, key, extraRoots);
  }

  /**
   * The CA kept in `dir` (`ca.crt`, `ca.key`), made there on first use for local meshes.
   * The key file is written 0600.
   */
  static async loadOrCreate(dir: string, trustDomain: string, extraRoots: readonly string[] = []): Promise<MeshCertificateAuthority> {
    const certFile = join(dir, 'ca.crt');
    const keyFile = join(dir, 'ca.key');
    if (existsSync(certFile) && existsSync(keyFile)) return MeshCertificateAuthority.load(readFileSync(certFile, 'utf8'), readFileSync(keyFile, 'utf8'), extraRoots);
    // Half a root is not replaced silently: sidecars may trust it, and a new root would cut
    // them off from every peer until each had renewed.
    if (existsSync(certFile) || existsSync(keyFile)) throw new Error(`${dir} holds only one of ca.crt and ca.key; restore the other, or remove it to make a new root`);
    const ca = await MeshCertificateAuthority.generate(trustDomain, extraRoots);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(keyFile, await ca.exportPrivateKeyPem(), { mode: 0o600 });
    chmodSync(keyFile, 0o600);
    writeFileSync(certFile, ca.rootPem);
    return ca;
  }

  /** The root's private key as PEM; only for a CA made by `generate` (to keep it on disk). */
  async exportPrivateKeyPem(): Promise<string> {
    if (!this.#exportableKey) throw new Error('only a generated CA can export its key');
    return privateKeyPem(this.#exportableKey);
  }

  /**
   * Signs a workload certificate for `identity` (a SPIFFE ID the caller has authorised)
   * over the public key of `csrPem`, valid for `ttlMs` from now. Returns the certificate,
   * PEM. @throws CertificateRequestError for a request that does not parse, whose
   * signature does not verify, or whose key is too weak.
   */
  async issue(csrPem: string, identity: string, ttlMs: number): Promise<{ certificatePem: string; notAfter: Date }> {
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem);
    } catch (err) {
      throw new CertificateRequestError(`the certificate request does not parse: ${(err as Error).message}`);
    }
    if (!(await csr.verify().catch(() => false))) throw new CertificateRequestError('the certificate request signature does not verify');
    const alg = csr.publicKey.algorithm as EcKeyAlgorithm & RsaHashedKeyAlgorithm;
    const strong = (alg.name === 'ECDSA' && ['P-256', 'P-384'].includes(alg.namedCurve)) || (alg.name.startsWith('RSA') && alg.modulusLength >= 2048);
    if (!strong) throw new CertificateRequestError(`the certificate request's key (${alg.name} ${alg.namedCurve ?? alg.modulusLength ?? ''}) is not accepted: use ECDSA P-256/P-384 or RSA of 2048 bits or more`);
    return this.#sign(csr.publicKey, identity, ttlMs);
  }

  /** Makes a key pair and a certificate for `identity` (standalone sidecars, tests). */
  async issueKeyPair(identity: string, ttlMs: number): Promise<IssuedKeyPair> {
    const keys = await generateKeyPair();
    const csr = await createCertificateRequest(keys, identity);
    const issued = await this.issue(csr, identity, ttlMs);
    return { certificatePem: issued.certificatePem, privateKeyPem: await privateKeyPem(keys.privateKey), notAfter: issued.notAfter };
  }

  async #sign(publicKey: x509.PublicKey, identity: string, ttlMs: number, now = Date.now()): Promise<{ certificatePem: string; notAfter: Date }> {
    const notAfter = new Date(now + ttlMs);
    const service = identity.slice(identity.lastIndexOf('/') + 1);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=${service}`,
      // The root's subject byte for byte: re-encoding it (say UTF8String as PrintableString) breaks chain building in clients that match names by their encoding (Go).
      issuer: this.#root.subjectName,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter,
      publicKey,
      signingKey: this.#signingKey,
      signingAlgorithm: this.#root.publicKey.algorithm.name === 'ECDSA' ? SIGNING_ALGORITHM : { name: this.#root.publicKey.algorithm.name, hash: 'SHA-256' },
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity }], false),
        await x509.AuthorityKeyIdentifierExtension.create(this.#root.publicKey),
      ],
    });
    return { certificatePem: cert.toString('pem') + '\n', notAfter };
  }
}
