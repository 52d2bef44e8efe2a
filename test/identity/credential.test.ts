/**
 * The sidecar's credential checks (validate → swap) with real certificates from real CAs:
 * what `buildCredential` refuses, and how `SidecarIdentity` keeps, swaps and waits for one.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MeshCertificateAuthority } from '../../src/identity/ca.ts';
import { spiffeId } from '../../src/identity/spiffe.ts';
import { buildCredential, SidecarIdentity, type Credential } from '../../src/sidecar/identity.ts';
import { credentialFor, testCa } from '../helpers/identity.ts';
import { handmadeLeaf, handmadeRoot } from './handmade.ts';

function refusal(result: ReturnType<typeof buildCredential>): string {
  assert.equal(result.ok, false, 'should be refused');
  return (result as { reason: string }).reason;
}

function accepted(result: ReturnType<typeof buildCredential>): Credential {
  assert.ok(result.ok, `should be accepted: ${JSON.stringify(result)}`);
  return result.credential;
}

describe('buildCredential', () => {
  test('accepts a certificate, its key and a bundle holding its root', async () => {
    const ca = await testCa();
    const input = await credentialFor('checkout', { trustDomain: 'shop.local' });
    const c = accepted(buildCredential(input, 'checkout'));
    assert.equal(c.identity, spiffeId('shop.local', 'checkout'));
    assert.equal(c.trustDomain, 'shop.local');
    assert.equal(c.service, 'checkout');
    assert.deepEqual(c.trustBundle, ca.trustBundle);
    assert.ok(c.notBefore < Date.now() && Date.now() < c.notAfter);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.trustBundle));
    assert.equal(c.tlsOptions.minVersion, 'TLSv1.3');
    // Without a service to check, any service identity is accepted.
    accepted(buildCredential(input, undefined));
  });

  test('refuses the key of another certificate', async () => {
    const a = await credentialFor('checkout');
    const b = await credentialFor('checkout');
    assert.match(refusal(buildCredential({ ...a, privateKeyPem: b.privateKeyPem }, 'checkout')), /private key does not belong/);
    assert.match(refusal(buildCredential({ ...a, privateKeyPem: 'garbage' }, 'checkout')), /private key does not parse/);
  });

  test('refuses an expired certificate, and one not yet valid', async () => {
    const ca = await testCa();
    // A certificate whose life ended a second ago (the CA signs what it is asked to).
    const expired = await ca.issueKeyPair(spiffeId('test.local', 'checkout'), -1000);
    assert.match(refusal(buildCredential({ ...expired, trustBundle: ca.trustBundle }, 'checkout')), /expired/);
    const valid = await credentialFor('checkout');
    const c = accepted(buildCredential(valid, 'checkout'));
    assert.match(refusal(buildCredential(valid, 'checkout', c.notAfter)), /expired/, 'refused at the instant it expires');
    assert.match(refusal(buildCredential(valid, 'checkout', c.notBefore - 1)), /not valid before/);
    accepted(buildCredential(valid, 'checkout', c.notAfter - 1));
  });

  test('refuses a certificate for another service than the sidecar\'s', async () => {
    const input = await credentialFor('admin');
    assert.match(refusal(buildCredential(input, 'checkout')), /for service "admin", this sidecar serves "checkout"/);
  });

  test('refuses a certificate not issued by any root of the bundle', async () => {
    const other = await MeshCertificateAuthority.generate('test.local');
    const foreign = await credentialFor('checkout', { ca: other });
    const ours = await testCa();
    assert.match(refusal(buildCredential({ ...foreign, trustBundle: ours.trustBundle }, 'checkout')), /does not end at a root of the trust bundle/);
    // A root with the same name but another key does not vouch for it either.
    const lookalike = await MeshCertificateAuthority.generate('test.local');
    assert.match(refusal(buildCredential({ ...foreign, trustBundle: lookalike.trustBundle }, 'checkout')), /does not end at a root of the trust bundle/);
    // Any root of the bundle will do.
    accepted(buildCredential({ ...foreign, trustBundle: [...ours.trustBundle, ...other.trustBundle] }, 'checkout'));
  });

  test('refuses an empty bundle, and a bundle or certificate that does not parse', async () => {
    const input = await credentialFor('checkout');
    assert.match(refusal(buildCredential({ ...input, trustBundle: [] }, 'checkout')), /holds no certificate/);
    assert.match(refusal(buildCredential({ ...input, trustBundle: ['not a certificate'] }, 'checkout')), /does not parse/);
    assert.match(refusal(buildCredential({ ...input, certificatePem: 'not a certificate' }, 'checkout')), /holds no PEM certificate/);
  });

  test('refuses certificates that name no single mesh SPIFFE ID', async () => {
    const root = await handmadeRoot();
    const refused = [[], ['spiffe://test.local/svc/checkout', 'spiffe://test.local/svc/admin'], ['https://test.local/svc/checkout'], ['spiffe://test.local/ns/default/svc/checkout'], ['spiffe://test.local/ns/shop/pod/checkout-1']];
    for (const uris of refused) {
      const leaf = await handmadeLeaf(root, { uris, dns: ['checkout.test.local'] });
      assert.match(refusal(buildCredential({ ...leaf, trustBundle: [root.certificatePem] }, undefined)), /names no mesh SPIFFE ID/, `names ${JSON.stringify(uris)}`);
    }
    const good = await handmadeLeaf(root, { uris: ['spiffe://test.local/svc/checkout'] });
    accepted(buildCredential({ ...good, trustBundle: [root.certificatePem] }, 'checkout'));
  });

  test('a service of another namespace has …/ns/<ns>/svc/<name>; a Kubernetes workload\'s ServiceAccount ID fits the services of its namespace only', async () => {
    const root = await handmadeRoot();
    const bundle = [root.certificatePem];
    const namespaced = await handmadeLeaf(root, { uris: ['spiffe://test.local/ns/shop/svc/checkout'] });
    assert.equal(accepted(buildCredential({ ...namespaced, trustBundle: bundle }, 'shop/checkout')).service, 'shop/checkout');
    assert.match(refusal(buildCredential({ ...namespaced, trustBundle: bundle }, 'checkout')), /for service "shop\/checkout", this sidecar serves "checkout"/);
    const sa = await handmadeLeaf(root, { uris: ['spiffe://test.local/ns/shop/sa/checkout'] });
    const c = accepted(buildCredential({ ...sa, trustBundle: bundle }, 'shop/checkout'));
    assert.deepEqual([c.identity, c.trustDomain, c.service], ['spiffe://test.local/ns/shop/sa/checkout', 'test.local', 'shop/checkout']);
    assert.match(refusal(buildCredential({ ...sa, trustBundle: bundle }, 'bank/checkout')), /ServiceAccount "shop\/checkout", outside the namespace of service "bank\/checkout"/);
    assert.match(refusal(buildCredential({ ...sa, trustBundle: bundle }, 'checkout')), /outside the namespace/);
  });
});

describe('SidecarIdentity', () => {
  test('a refused offer keeps the current credential and tells no listener', async () => {
    const identity = new SidecarIdentity('checkout');
    const changes: Credential[] = [];
    identity.onChange((c) => changes.push(c));
    const first = accepted(identity.offer(await credentialFor('checkout')));
    assert.equal(identity.current, first);
    const other = await MeshCertificateAuthority.generate('test.local');
    const refusedOffers = [
      await credentialFor('admin'),
      { ...(await credentialFor('checkout')), trustBundle: other.trustBundle },
      { ...(await credentialFor('checkout')), privateKeyPem: first.privateKeyPem },
      { ...(await credentialFor('checkout')), trustBundle: [] },
    ];
    for (const offer of refusedOffers) {
      assert.equal(identity.offer(offer).ok, false);
      assert.equal(identity.current, first, 'the current credential stays');
    }
    assert.deepEqual(changes, [first]);
    const second = accepted(identity.offer(await credentialFor('checkout')));
    assert.notEqual(second.serialNumber, first.serialNumber);
    assert.equal(identity.current, second);
    assert.deepEqual(changes, [first, second]);
  });

  test('offerTrustBundle swaps the bundle for a rollover and keeps certificate and key', async () => {
    const oldCa = await MeshCertificateAuthority.generate('test.local');
    const newCa = await MeshCertificateAuthority.generate('test.local');
    const identity = new SidecarIdentity('checkout');
    const changes: Credential[] = [];
    identity.onChange((c) => changes.push(c));
    assert.equal(identity.offerTrustBundle(oldCa.trustBundle).ok, false, 'no bundle without a certificate');
    assert.equal(identity.current, undefined);
    const start = accepted(identity.offer(await credentialFor('checkout', { ca: oldCa })));

    // Step one of a rollover: both roots trusted, the certificate still from the old one.
    const both = [oldCa.rootPem, newCa.rootPem];
    const rolled = accepted(identity.offerTrustBundle(both));
    assert.deepEqual(rolled.trustBundle, both);
    assert.equal(rolled.certificatePem, start.certificatePem);
    assert.equal(rolled.privateKeyPem, start.privateKeyPem);
    assert.equal(rolled.serialNumber, start.serialNumber);
    assert.deepEqual(rolled.tlsOptions.ca, both, 'the TLS context trusts both roots');
    assert.equal(identity.current, rolled);
    assert.equal(changes.length, 2, 'listeners hear of the new bundle');

    // The same bundle again changes nothing.
    assert.equal(accepted(identity.offerTrustBundle([...both])), rolled);
    assert.equal(changes.length, 2);

    // A bundle without the root of the certificate in use is refused: the sidecar could no longer prove itself.
    assert.match(refusal(identity.offerTrustBundle([newCa.rootPem])), /does not end at a root of the trust bundle/);
    assert.equal(identity.current, rolled);

    // Step two: a certificate from the new root, with the bundle of both, is accepted.
    const renewed = accepted(identity.offer(await credentialFor('checkout', { ca: newCa })));
    assert.deepEqual(renewed.trustBundle, [newCa.rootPem]);
    assert.deepEqual(accepted(identity.offerTrustBundle(both)).trustBundle, both);
  });

  test('whenAvailable resolves true when a credential is offered, at once when one is in use', async () => {
    const identity = new SidecarIdentity('checkout');
    const waiting = identity.whenAvailable(10_000);
    const credential = await credentialFor('checkout');
    identity.offer(credential);
    assert.equal(await waiting, true);
    assert.equal(await identity.whenAvailable(0), true);
  });

  test('whenAvailable resolves false after its bound; a refused offer does not end the wait', async () => {
    const identity = new SidecarIdentity('checkout');
    const started = Date.now();
    const waiting = identity.whenAvailable(200);
    assert.equal(identity.offer(await credentialFor('admin')).ok, false);
    assert.equal(await waiting, false);
    assert.ok(Date.now() - started >= 190, `resolved after ${Date.now() - started} ms`);
    // The timed-out waiter took itself off the listeners; others still hear of the next credential.
    const heard: string[] = [];
    identity.onChange((c) => heard.push(c.service));
    accepted(identity.offer(await credentialFor('checkout')));
    assert.deepEqual(heard, ['checkout']);
  });

  test('several waiters all resolve, and each leaves the listeners', async () => {
    const identity = new SidecarIdentity('checkout');
    const heard: string[] = [];
    const waits = [identity.whenAvailable(10_000), identity.whenAvailable(10_000), identity.whenAvailable(10_000)];
    identity.onChange((c) => heard.push(c.serialNumber));
    identity.offer(await credentialFor('checkout'));
    assert.deepEqual(await Promise.all(waits), [true, true, true]);
    identity.offer(await credentialFor('checkout'));
    assert.equal(heard.length, 2, 'the listener registered after the waiters heard both offers');
  });
});
