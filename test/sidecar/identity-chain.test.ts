/** A certificate file that carries intermediates (the cert-manager and Vault layout) makes a valid identity. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateKeyPair, privateKeyPem, SIGNING_ALGORITHM } from '../../src/identity/keys.ts';
import { x509 } from '../../src/identity/x509.ts';
import { buildCredential } from '../../src/sidecar/identity.ts';

async function certificate(subject: string, issuer: string, publicKey: CryptoKey, signingKey: CryptoKey, ca: boolean, san?: string): Promise<string> {
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    subject,
    issuer,
    publicKey,
    signingKey,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3600_000),
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [new x509.BasicConstraintsExtension(ca, undefined, true), ...(san ? [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: san }])] : [])],
  });
  return cert.toString('pem') + '\n';
}

test('leaf → intermediate → root verifies; a leaf without its intermediate does not', async () => {
  const [root, intermediate, leaf] = [await generateKeyPair(), await generateKeyPair(), await generateKeyPair()];
  const rootPem = await certificate('CN=root', 'CN=root', root.publicKey, root.privateKey, true);
  const intermediatePem = await certificate('CN=intermediate', 'CN=root', intermediate.publicKey, root.privateKey, true);
  const leafPem = await certificate('CN=api', 'CN=intermediate', leaf.publicKey, intermediate.privateKey, false, 'spiffe://test.local/svc/api');
  const key = await privateKeyPem(leaf.privateKey);
  const withChain = buildCredential({ certificatePem: leafPem + intermediatePem, privateKeyPem: key, trustBundle: [rootPem] }, 'api');
  assert.ok(withChain.ok, JSON.stringify(withChain));
  assert.equal(withChain.credential.identity, 'spiffe://test.local/svc/api');
  const bare = buildCredential({ certificatePem: leafPem, privateKeyPem: key, trustBundle: [rootPem] }, 'api');
  assert.equal(bare.ok, false);
  const swapped = buildCredential({ certificatePem: intermediatePem + leafPem, privateKeyPem: key, trustBundle: [rootPem] }, 'api');
  assert.equal(swapped.ok, false, 'the leaf comes first');
});
