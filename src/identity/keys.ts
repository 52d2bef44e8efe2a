/**
 * Key pairs and certificate requests for workload identities. Keys are ECDSA P-256: small
 * certificates and handshakes several times cheaper than RSA-2048 for the same strength.
 * A sidecar makes its own pair and sends only a certificate request, so its private key
 * never leaves it.
 */
import { createPrivateKey, webcrypto } from 'node:crypto';
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
