/**
 * Hand-made certificates for the cases the mesh CA never produces on purpose: an expired
 * root, a certificate with several (or no, or non-SPIFFE) URI names, a leaf from a root the
 * test controls. Built with the same @peculiar/x509 the CA uses, over real keys.
 */
import { randomBytes } from 'node:crypto';
import { SIGNING_ALGORITHM, generateKeyPair, privateKeyPem } from '../../src/identity/keys.ts';
import { x509 } from '../../src/identity/x509.ts';

export interface HandmadeRoot {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
  readonly keys: CryptoKeyPair;
  readonly certificate: x509.X509Certificate;
}

function serial(): string {
  const bytes = randomBytes(8);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString('hex');
}

const HOUR = 3600_000;

/** A self-signed certificate, a CA (`ca: true`, the default) or not, valid over the given window. */
export async function handmadeRoot(options: { ca?: boolean; notBefore?: Date; notAfter?: Date; name?: string } = {}): Promise<HandmadeRoot> {
  const keys = await generateKeyPair();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: options.name ?? 'CN=handmade root',
    notBefore: options.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: options.notAfter ?? new Date(Date.now() + HOUR),
    signingAlgorithm: SIGNING_ALGORITHM,
    keys,
    extensions: [new x509.BasicConstraintsExtension(options.ca ?? true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature, true)],
  });
  return { certificatePem: certificate.toString('pem') + '\n', privateKeyPem: await privateKeyPem(keys.privateKey), keys, certificate };
}

/** A leaf signed by `root` naming `uris` (and `dns`) as subject-alternative names, with its key. */
export async function handmadeLeaf(root: HandmadeRoot, options: { uris?: string[]; dns?: string[]; notBefore?: Date; notAfter?: Date } = {}): Promise<{ certificatePem: string; privateKeyPem: string }> {
  const keys = await generateKeyPair();
  const names = [...(options.uris ?? []).map((value) => ({ type: 'url' as const, value })), ...(options.dns ?? []).map((value) => ({ type: 'dns' as const, value }))];
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: 'CN=handmade leaf',
    issuer: root.certificate.subject,
    notBefore: options.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: options.notAfter ?? new Date(Date.now() + HOUR),
    publicKey: keys.publicKey,
    signingKey: root.keys.privateKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true), ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names, false)] : [])],
  });
  return { certificatePem: certificate.toString('pem') + '\n', privateKeyPem: await privateKeyPem(keys.privateKey) };
}
