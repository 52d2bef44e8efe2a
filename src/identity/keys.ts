/**
 * Key pairs and certificate requests for workload identities. Keys are ECDSA P-256: small
 * certificates and handshakes several times cheaper than RSA-2048 for the same strength.
 * A sidecar makes its own pair and sends only a certificate request, so its private key
 * never leaves it.
 */
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { x509 } from './x509.ts';

/** Key generation and signing parameters for every key Trellis makes. */
export const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
export const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** A fresh extractable ECDSA P-256 key pair. */
export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** The private key as PKCS#8 PEM (what `tls.createSecureContext` takes). */
export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
}

/**
 * Imports a PEM private key (PKCS#8, SEC1 or PKCS#1) for signing, with the algorithm its
 * certificate's public key names.
 */
export async function importSigningKey(pem: string, algorithm: KeyAlgorithm): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
  const alg = algorithm.name === 'ECDSA' ? algorithm : { ...algorithm, hash: (algorithm as RsaHashedKeyAlgorithm).hash ?? 'SHA-256' };
  return (await webcrypto.subtle.importKey('pkcs8', der, alg as EcKeyImportParams | RsaHashedImportParams, false, ['sign'])) as unknown as CryptoKey;
}

/** A PKCS#10 certificate request for `keys`, as PEM. The subject is informational: the CA decides the identity. */
export async function createCertificateRequest(keys: CryptoKeyPair, service: string): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${service}`, keys, signingAlgorithm: SIGNING_ALGORITHM });
  return csr.toString('pem');
}

/** A random 128-bit certificate serial number, hex, kept positive (an ASN.1 INTEGER's top bit is its sign). */
export function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString('hex');
}

/**
 * A self-signed CA certificate over `keys` (ECDSA P-256): `CA:TRUE` with path length 0 (it
 * signs leaves only), key usages certificate and CRL signing, valid from `skewMs` before
 * `now` (so peers whose clocks are behind accept it) for `lifetimeMs`.
 */
export async function createSelfSignedCa(name: string, keys: CryptoKeyPair, now: number, skewMs: number, lifetimeMs: number): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name,
    notBefore: new Date(now - skewMs),
    notAfter: new Date(now + lifetimeMs),
    signingAlgorithm: SIGNING_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
}
