/**
 * PEM text helpers that need no X.509 library, so the sidecar can read certificate files
 * without loading one (src/identity/x509.ts costs about 20 MB of a process's memory).
 */

/** The certificates in a PEM text, each as its own PEM block ending in a newline. */
export function splitPemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((p) => `${p}\n`) ?? [];
}
