/**
 * The mesh CA with real keys and certificates: what it signs, what it refuses, how it is
 * loaded and kept on disk, and the trust bundle it hands out. Certificates are checked with
 * node:crypto, not with the library that made them.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { KeyObject, X509Certificate, webcrypto } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CertificateRequestError, MeshCertificateAuthority, splitPemCertificates } from '../../src/identity/ca.ts';
import { createCertificateRequest, generateKeyPair } from '../../src/identity/keys.ts';
import { parseSpiffeId, spiffeId, spiffeIdOfAltNames } from '../../src/identity/spiffe.ts';
import { x509 } from '../../src/identity/x509.ts';
import { handmadeLeaf, handmadeRoot } from './handmade.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-ca-'));
  dirs.push(dir);
  return dir;
}

const ID = 'spiffe://shop.local/svc/checkout';
const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

async function csrFor(subject = 'checkout'): Promise<string> {
  return createCertificateRequest(await generateKeyPair(), subject);
}

/** A PEM block with one byte of its DER flipped `fromEnd` bytes before the end. */
function flipByte(pem: string, fromEnd: number): string {
  const label = /-----BEGIN ([A-Z ]+)-----/.exec(pem)![1]!;
  const der = Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
  der[der.length - fromEnd] = der[der.length - fromEnd]! ^ 0x01;
  return `-----BEGIN ${label}-----\n${der.toString('base64')}\n-----END ${label}-----\n`;
}

/** A request signed by a key of `algorithm` (WebCrypto parameters). */
async function csrWithKey(algorithm: RsaHashedKeyGenParams | EcKeyGenParams | Algorithm): Promise<string> {
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
  const signingAlgorithm = algorithm.name === 'ECDSA' ? { name: 'ECDSA', hash: 'SHA-256' } : algorithm;
  return (await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=weak', keys, signingAlgorithm })).toString('pem');
}

const RSA = (bits: number): RsaHashedKeyGenParams => ({ name: 'RSASSA-PKCS1-v1_5', modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' });

describe('MeshCertificateAuthority.issue', () => {
  test('the certificate names exactly the SPIFFE ID, is no CA, is for server and client auth, and chains to the root', async () => {
    const ca = await MeshCertificateAuthority.generate('shop.local');
    const { certificatePem } = await ca.issue(await csrFor(), ID, 3600_000);
    const leaf = new X509Certificate(certificatePem);
    const root = new X509Certificate(ca.rootPem);
    assert.equal(leaf.subjectAltName, `URI:${ID}`, 'one URI SAN and nothing else');
    assert.equal(leaf.ca, false);
    assert.deepEqual([...(leaf.keyUsage ?? [])].sort(), [EKU_SERVER_AUTH, EKU_CLIENT_AUTH].sort());
    assert.ok(leaf.checkIssued(root), 'issuer name matches the root');
    assert.ok(leaf.verify(root.publicKey), 'signed by the root key');
    assert.equal(root.ca, true);
    assert.ok(root.verify(root.publicKey), 'the root is self-signed');
    // Basic constraints are critical, so a verifier that does not understand them refuses the certificate.
    const parsed = new x509.X509Certificate(certificatePem);
    const basic = parsed.getExtension(x509.BasicConstraintsExtension);
    assert.ok(basic && basic.critical && !basic.ca);
    // Another CA's root does not verify it.
    const other = await MeshCertificateAuthority.generate('shop.local');
    assert.equal(leaf.verify(new X509Certificate(other.rootPem).publicKey), false);
  });

  test('validity is the TTL from now, started 60 s early for clocks a little behind', async () => {
    const ca = await MeshCertificateAuthority.generate('shop.local');
    const ttl = 7200_000;
    const before = Date.now();
    const issued = await ca.issue(await csrFor(), ID, ttl);
    const afterIssue = Date.now();
    const leaf = new X509Certificate(issued.certificatePem);
    const notBefore = leaf.validFromDate.getTime();
    const notAfter = leaf.validToDate.getTime();
    // X.509 times have whole seconds; both ends come from the same instant.
    assert.equal(notAfter - notBefore, ttl + 60_000);
    assert.ok(notAfter >= Math.floor((before + ttl) / 1000) * 1000 && notAfter <= afterIssue + ttl, `notAfter ${leaf.validTo}`);
    assert.equal(Math.floor(issued.notAfter.getTime() / 1000) * 1000, notAfter, 'the returned notAfter is the certificate\'s');
  });

  test('the identity is the one given, whatever the request names; every certificate has its own serial', async () => {
    const ca = await MeshCertificateAuthority.generate('shop.local');
    const a = new X509Certificate((await ca.issue(await csrFor('admin'), ID, 60_000)).certificatePem);
    const b = new X509Certificate((await ca.issue(await csrFor('admin'), ID, 60_000)).certificatePem);
    assert.equal(a.subjectAltName, `URI:${ID}`);
    assert.equal(a.subject, 'CN=checkout');
    assert.notEqual(a.serialNumber, b.serialNumber);
  });

  test('refuses a request whose signature does not verify', async () => {
    const ca = await MeshCertificateAuthority.generate('shop.local');
    const csr = await csrFor();
    // The last byte of the DER is the last byte of the signature's s: the request still parses.
    const tampered = flipByte(csr, 1);
    assert.doesNotThrow(() => new x509.Pkcs10CertificateRequest(tampered), 'the tampered request still parses');
    await assert.rejects(ca.issue(tampered, ID, 60_000), (err: Error) => err instanceof CertificateRequestError && err.code === 'invalid_csr' && /signature does not verify/.test(err.message));
  });

  test('refuses a request over another key than the one that signed it', async () => {
    const ca = await MeshCertificateAuthority.generate('shop.local');
    // Same request, the public key swapped for another: proof of possession fails.
    const keysA = await generateKeyPair();
    const keysB = await generateKeyPair();
    const signed = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=checkout', keys: keysA, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
    const spkiA = Buffer.from(await webcrypto.subtle.exportKey('spki', keysA.publicKey));
    const spkiB = Buffer.from(await webcrypto.subtle.exportKey('spki', keysB.publicKey));
    const der = Buffer.from(signed.rawData);
    const at = der.indexOf(spkiA);
    assert.ok(at > 0 && spkiA.length === spkiB.length);
    spkiB.copy(der, at);
    const swapped = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await assert.rejects(ca.issue(swapped, ID, 60_000), CertificateRequestError);
  });

  for (const [label, algorithm] of [
    ['RSA-1024', RSA(1024)],
    ['ECDSA P-521', { name: 'ECDSA', namedCurve: 'P-521' }],
    ['Ed25519', { name: 'Ed25519' }],
  ] as const) {
    test(`refuses a ${label} key`, async () => {
      const ca = await MeshCertificateAuthority.generate('shop.local');
      await assert.rejects(ca.issue(await csrWithKey(algorithm), ID, 60_000), (err: Error) => err instanceof CertificateRequestError && /is not accepted/.test(err.message));
    });
  }

  test('accepts RSA-2048 and ECDSA P-384 keys', async () => {
    const ca = await MeshCertificateAuthority.generate('shop.local');
    for (const algorithm of [RSA(2048), { name: 'ECDSA', namedCurve: 'P-384' }]) {
      const leaf = new X509Certificate((await ca.issue(await csrWithKey(algorithm), ID, 60_000)).certificatePem);
      assert.ok(leaf.verify(new X509Certificate(ca.rootPem).publicKey));
    }
  });

  test('refuses garbage, a truncated request and a certificate passed as a request', async () => {
    const ca = await MeshCertificateAuthority.generate('shop.local');
    const csr = await csrFor();
    const truncated = csr.slice(0, csr.length / 2) + '\n-----END CERTIFICATE REQUEST-----\n';
    for (const bad of ['', 'not a pem', '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', truncated, ca.rootPem]) {
      await assert.rejects(ca.issue(bad, ID, 60_000), (err: Error) => err instanceof CertificateRequestError && err.code === 'invalid_csr', `should refuse ${JSON.stringify(bad.slice(0, 40))}`);
    }
  });
});

describe('MeshCertificateAuthority.load', () => {
  test("a workload certificate names its issuer with the root subject's own bytes (an OpenSSL root's UTF8String stays UTF8String)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-openssl-root-'));
    try {
      const key = join(dir, 'ca.key');
      const crt = join(dir, 'ca.crt');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/O=Acme/CN=acme mesh root', '-keyout', key, '-out', crt], { stdio: 'ignore' });
      const ca = await MeshCertificateAuthority.load(readFileSync(crt, 'utf8'), readFileSync(key, 'utf8'));
      const leaf = new x509.X509Certificate((await ca.issue(await csrFor(), ID, 60_000)).certificatePem);
      const root = new x509.X509Certificate(readFileSync(crt, 'utf8'));
      assert.deepEqual(Buffer.from(leaf.issuerName.toArrayBuffer()), Buffer.from(root.subjectName.toArrayBuffer()));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a root and its key load, and the loaded CA signs under that root', async () => {
    const made = await MeshCertificateAuthority.generate('shop.local');
    const ca = await MeshCertificateAuthority.load(made.rootPem, await made.exportPrivateKeyPem());
    assert.equal(ca.rootPem, made.rootPem);
    const leaf = new X509Certificate((await ca.issue(await csrFor(), ID, 60_000)).certificatePem);
    assert.ok(leaf.verify(new X509Certificate(made.rootPem).publicKey));
    await assert.rejects(ca.exportPrivateKeyPem(), /only a generated CA/, 'an operator\'s key is never exported');
  });

  test("an operator's RSA or P-384 root, its key in PKCS#1 or SEC1 PEM, signs certificates that chain to it", async () => {
    for (const algorithm of [RSA(2048), { name: 'ECDSA', namedCurve: 'P-384' }] as const) {
      const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
      const signingAlgorithm = algorithm.name === 'ECDSA' ? { name: 'ECDSA', hash: 'SHA-384' } : algorithm;
      const root = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: '01',
        name: 'CN=operator root',
        notBefore: new Date(Date.now() - 3600_000),
        notAfter: new Date(Date.now() + 3600_000),
        signingAlgorithm,
        keys,
        extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
      });
      // The formats `openssl genrsa` / `openssl ecparam -genkey` write.
      const pkcs8 = KeyObject.from(keys.privateKey);
      const traditional = pkcs8.export({ format: 'pem', type: algorithm.name === 'ECDSA' ? 'sec1' : 'pkcs1' }) as string;
      assert.match(traditional, algorithm.name === 'ECDSA' ? /BEGIN EC PRIVATE KEY/ : /BEGIN RSA PRIVATE KEY/);
      const ca = await MeshCertificateAuthority.load(root.toString('pem'), traditional);
      const leaf = new X509Certificate((await ca.issue(await csrFor(), ID, 60_000)).certificatePem);
      assert.ok(leaf.verify(new X509Certificate(root.toString('pem')).publicKey), `${algorithm.name} root`);
      assert.equal(leaf.subjectAltName, `URI:${ID}`);
    }
  });

  test('refuses a certificate that is not a CA', async () => {
    const ca = await MeshCertificateAuthority.generate('shop.local');
    const leaf = await ca.issueKeyPair(ID, 3600_000);
    await assert.rejects(MeshCertificateAuthority.load(leaf.certificatePem, leaf.privateKeyPem), /not a CA certificate/);
    const selfSignedLeaf = await handmadeRoot({ ca: false });
    await assert.rejects(MeshCertificateAuthority.load(selfSignedLeaf.certificatePem, selfSignedLeaf.privateKeyPem), /not a CA certificate/);
  });

  test('refuses a key that does not belong to the root', async () => {
    const a = await MeshCertificateAuthority.generate('shop.local');
    const b = await MeshCertificateAuthority.generate('shop.local');
    await assert.rejects(MeshCertificateAuthority.load(a.rootPem, await b.exportPrivateKeyPem()), /does not belong/);
  });

  test('refuses an expired root', async () => {
    const expired = await handmadeRoot({ notBefore: new Date(Date.now() - 48 * 3600_000), notAfter: new Date(Date.now() - 3600_000) });
    await assert.rejects(MeshCertificateAuthority.load(expired.certificatePem, expired.privateKeyPem), /expired/);
    // The same kind of root, still valid, loads: it is the date that is refused.
    const valid = await handmadeRoot();
    await MeshCertificateAuthority.load(valid.certificatePem, valid.privateKeyPem);
  });
});

describe('MeshCertificateAuthority.loadOrCreate', () => {
  test('makes ca.key 0600 on first use, and loads the same root the second time', async () => {
    const dir = join(tempDir(), 'nested', 'ca');
    const first = await MeshCertificateAuthority.loadOrCreate(dir, 'shop.local');
    assert.equal(statSync(join(dir, 'ca.key')).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o077, 0, 'the folder is not open to others');
    assert.equal(readFileSync(join(dir, 'ca.crt'), 'utf8'), first.rootPem);
    const keyBefore = readFileSync(join(dir, 'ca.key'), 'utf8');
    const second = await MeshCertificateAuthority.loadOrCreate(dir, 'shop.local');
    assert.equal(second.rootPem, first.rootPem);
    assert.equal(readFileSync(join(dir, 'ca.key'), 'utf8'), keyBefore, 'the key is not rewritten');
    const leaf = new X509Certificate((await second.issue(await csrFor(), ID, 60_000)).certificatePem);
    assert.ok(leaf.verify(new X509Certificate(first.rootPem).publicKey), 'the reloaded CA signs with the first key');
  });
});

describe('MeshCertificateAuthority.loadOrCreate with half a root', () => {
  test('refuses a folder holding ca.crt without ca.key, or ca.key without ca.crt, and replaces neither', async () => {
    for (const missing of ['ca.key', 'ca.crt']) {
      const dir = tempDir();
      const made = await MeshCertificateAuthority.loadOrCreate(dir, 'shop.local');
      const kept = missing === 'ca.key' ? 'ca.crt' : 'ca.key';
      const keptText = readFileSync(join(dir, kept), 'utf8');
      rmSync(join(dir, missing));
      await assert.rejects(MeshCertificateAuthority.loadOrCreate(dir, 'shop.local'), /holds only one of ca.crt and ca.key/, `without ${missing}`);
      assert.equal(readFileSync(join(dir, kept), 'utf8'), keptText, `${kept} is left alone`);
      assert.equal(existsSync(join(dir, missing)), false);
      assert.ok(made);
    }
  });
});

describe('trust bundle', () => {
  test('own root first, then the extra roots, without duplicates', async () => {
    const b = await MeshCertificateAuthority.generate('shop.local');
    const c = await MeshCertificateAuthority.generate('shop.local');
    const alone = await MeshCertificateAuthority.generate('shop.local');
    assert.deepEqual(alone.trustBundle, [alone.rootPem]);
    const made = await MeshCertificateAuthority.generate('shop.local');
    const key = await made.exportPrivateKeyPem();
    // A bundle file listing the CA's own root too (the usual rollover file holds old and new).
    const ca = await MeshCertificateAuthority.load(made.rootPem, key, splitPemCertificates(b.rootPem + made.rootPem + c.rootPem));
    assert.deepEqual(ca.trustBundle, [made.rootPem, b.rootPem, c.rootPem]);
    assert.ok(Object.isFrozen(ca.trustBundle));
  });

  test('an extra root listed twice is handed out once', async () => {
    const made = await MeshCertificateAuthority.generate('shop.local');
    const b = await MeshCertificateAuthority.generate('shop.local');
    const ca = await MeshCertificateAuthority.load(made.rootPem, await made.exportPrivateKeyPem(), [b.rootPem, b.rootPem]);
    assert.deepEqual(ca.trustBundle, [made.rootPem, b.rootPem]);
  });

  test('splitPemCertificates takes every certificate block and nothing else', async () => {
    const b = await MeshCertificateAuthority.generate('shop.local');
    const c = await MeshCertificateAuthority.generate('shop.local');
    assert.deepEqual(splitPemCertificates(`# roots\n${b.rootPem}\n\n${c.rootPem.trim()}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n`), [b.rootPem, c.rootPem]);
    assert.deepEqual(splitPemCertificates('nothing here'), []);
  });
});

describe('SPIFFE IDs', () => {
  test('spiffeIdOfAltNames: exactly one URI name, and it must be a spiffe:// one', () => {
    assert.equal(spiffeIdOfAltNames(undefined), null);
    assert.equal(spiffeIdOfAltNames(''), null);
    assert.equal(spiffeIdOfAltNames('DNS:checkout.shop.local'), null);
    assert.equal(spiffeIdOfAltNames(`URI:${ID}`), ID);
    assert.equal(spiffeIdOfAltNames(`DNS:checkout, URI:${ID}, IP Address:127.0.0.1`), ID);
    assert.equal(spiffeIdOfAltNames(`URI:${ID}, URI:spiffe://shop.local/svc/admin`), null);
    assert.equal(spiffeIdOfAltNames('URI:https://shop.local/svc/checkout'), null);
    assert.equal(spiffeIdOfAltNames(`URI:"${ID}, DNS:x"`), null, 'a quoted name (Node quotes names holding separators) is no identity');
  });

  test('spiffeIdOfAltNames on real certificates with zero, one, two and non-spiffe URI names', async () => {
    const root = await handmadeRoot();
    const altNames = async (uris: string[], dns: string[] = []) => new X509Certificate((await handmadeLeaf(root, { uris, dns })).certificatePem).subjectAltName;
    assert.equal(spiffeIdOfAltNames(await altNames([], ['checkout.shop.local'])), null);
    assert.equal(spiffeIdOfAltNames(await altNames([ID])), ID);
    assert.equal(spiffeIdOfAltNames(await altNames([ID], ['checkout.shop.local'])), ID);
    assert.equal(spiffeIdOfAltNames(await altNames([ID, 'spiffe://shop.local/svc/admin'])), null);
    assert.equal(spiffeIdOfAltNames(await altNames(['https://shop.local/svc/checkout'])), null);
    assert.equal(spiffeIdOfAltNames(await altNames(['spiffe://shop.local/svc/a,URI:spiffe://shop.local/svc/admin'])), null, 'a name smuggling a separator');
  });

  test('parseSpiffeId takes service IDs only', () => {
    assert.deepEqual(parseSpiffeId(ID), { trustDomain: 'shop.local', service: 'checkout' });
    assert.deepEqual(parseSpiffeId(spiffeId('my_domain-1.example', 'a')), { trustDomain: 'my_domain-1.example', service: 'a' });
    const longest = 'a'.repeat(63);
    assert.deepEqual(parseSpiffeId(`spiffe://shop.local/svc/${longest}`), { trustDomain: 'shop.local', service: longest });
    for (const bad of [
      '',
      'spiffe://shop.local',
      'spiffe://shop.local/',
      'spiffe://shop.local/svc',
      'spiffe://shop.local/svc/',
      'spiffe:///svc/checkout',
      'spiffe://Shop.local/svc/checkout',
      'spiffe://shop.local/svc/Checkout',
      'spiffe://shop.local/svc/checkout/',
      'spiffe://shop.local/svc/checkout/extra',
      'spiffe://shop.local/svc/checkout?x=1',
      'spiffe://shop.local/svc/checkout#x',
      'spiffe://shop.local/svc/checkout\n',
      'spiffe://shop.local:443/svc/checkout',
      'spiffe://user@shop.local/svc/checkout',
      'spiffe://shop.local/ns/default/sa/checkout',
      'spiffe://shop.local/svc/-checkout',
      'spiffe://shop.local/svc/checkout-',
      'spiffe://shop.local/svc/check_out',
      `spiffe://shop.local/svc/${'a'.repeat(64)}`,
      'SPIFFE://shop.local/svc/checkout',
      'https://shop.local/svc/checkout',
      ' spiffe://shop.local/svc/checkout',
    ]) {
      assert.equal(parseSpiffeId(bad), null, `should refuse ${JSON.stringify(bad)}`);
    }
  });
});
