/**
 * TLS for the injection webhook: the API server calls it over HTTPS and checks its
 * certificate against the `caBundle` of the MutatingWebhookConfiguration. `trellis install`
 * makes a small CA of its own for that (not the mesh root: the API server should trust the
 * webhook's certificate and nothing a workload holds), and a serving certificate for the
 * Service's DNS names. Tests sign one with the test cluster's CA instead.
 */
import { SIGNING_ALGORITHM, createSelfSignedCa, generateKeyPair, importSigningKey, privateKeyPem, randomSerial } from '../identity/keys.ts';
import { x509 } from '../identity/x509.ts';

/** Started an hour back so a node whose clock is a little behind accepts it. */
const CLOCK_SKEW_MS = 3600_000;
/** The webhook CA and its serving certificate last 10 years; rotate by running `trellis install --only webhook` again. */
const LIFETIME_MS = 10 * 365 * 24 * 3600_000;

export interface ServingCertificate {
  /** The CA to put in `caBundle` (PEM). */
  readonly caPem: string;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

/** The DNS names the API server may use for Service `name` in `namespace`. */
export function serviceDnsNames(name: string, namespace: string): string[] {
  return [`${name}.${namespace}.svc`, `${name}.${namespace}.svc.cluster.local`, `${name}.${namespace}`];
}

/**
 * A serving certificate for `dnsNames`/`ips`, signed by `ca` (PEM certificate and key), or by a
 * new self-signed CA made here when `ca` is absent.
 */
export async function issueServingCertificate(subject: { dnsNames: readonly string[]; ips?: readonly string[] }, ca?: { certificatePem: string; keyPem: string }, now = Date.now()): Promise<ServingCertificate> {
  let issuer: x509.X509Certificate;
  let signingKey: CryptoKey;
  if (ca) {
    issuer = new x509.X509Certificate(ca.certificatePem);
    signingKey = await importSigningKey(ca.keyPem, issuer.publicKey.algorithm);
  } else {
    const keys = await generateKeyPair();
    issuer = await createSelfSignedCa('CN=Trellis injection webhook CA', keys, now, CLOCK_SKEW_MS, LIFETIME_MS);
    signingKey = keys.privateKey;
  }
  const keys = await generateKeyPair();
  const alg = issuer.publicKey.algorithm.name;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${subject.dnsNames[0] ?? subject.ips?.[0] ?? 'trellis'}`,
    // The issuer name byte for byte as the CA has it: Go (the API server) matches names by their encoding, and a
    // re-encoded UTF8String → PrintableString name would not chain.
    issuer: issuer.subjectName,
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(Math.min(now + LIFETIME_MS, issuer.notAfter.getTime())),
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: alg === 'ECDSA' ? SIGNING_ALGORITHM : { name: alg, hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([...subject.dnsNames.map((value) => ({ type: 'dns' as const, value })), ...(subject.ips ?? []).map((value) => ({ type: 'ip' as const, value }))], false),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.publicKey),
    ],
  });
  return { caPem: issuer.toString('pem') + '\n', certificatePem: leaf.toString('pem') + '\n', privateKeyPem: await privateKeyPem(keys.privateKey) };
}
