/**
 * Identities for tests: one mesh CA per test process (made once: key generation and
 * signing take milliseconds, but hundreds of sidecars add up), certificates for any
 * service, and certificate files on disk for sidecar processes.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MeshCertificateAuthority } from '../../src/identity/ca.ts';
import { spiffeId } from '../../src/identity/spiffe.ts';

let shared: Promise<MeshCertificateAuthority> | undefined;

/** The test process's mesh CA. */
export function testCa(): Promise<MeshCertificateAuthority> {
  shared ??= MeshCertificateAuthority.generate('trellis tests');
  return shared;
}

export interface TestCredential {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
  readonly trustBundle: readonly string[];
}

/** A certificate for `service` in `trustDomain` (default test.local) from `ca` (default the shared one). */
export async function credentialFor(service: string, options: { trustDomain?: string; ca?: MeshCertificateAuthority; ttlMs?: number } = {}): Promise<TestCredential> {
  const ca = options.ca ?? (await testCa());
  const issued = await ca.issueKeyPair(spiffeId(options.trustDomain ?? 'test.local', service), options.ttlMs ?? 3600_000);
  return { certificatePem: issued.certificatePem, privateKeyPem: issued.privateKeyPem, trustBundle: ca.trustBundle };
}

/** Writes a credential as files (`cert.pem`, `key.pem`, `ca.pem`) for `trellis sidecar --tls-*`. */
export function writeCredentialFiles(credential: TestCredential, dir = mkdtempSync(join(tmpdir(), 'trellis-tls-'))): { cert: string; key: string; ca: string; dir: string } {
  const files = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), ca: join(dir, 'ca.pem'), dir };
  writeFileSync(files.cert, credential.certificatePem);
  writeFileSync(files.key, credential.privateKeyPem, { mode: 0o600 });
  writeFileSync(files.ca, credential.trustBundle.join(''));
  return files;
}
