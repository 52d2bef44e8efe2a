/**
 * The three forms of mesh identity (src/identity/spiffe.ts): service IDs off Kubernetes, with
 * and without a namespace, and Kubernetes ServiceAccount IDs.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kubernetesIdentity, parseKubernetesIdentity, parseMeshIdentity, spiffeId } from '../../src/identity/spiffe.ts';

test('kubernetesIdentity and parseKubernetesIdentity round-trip; ServiceAccount names may hold dots', () => {
  assert.equal(kubernetesIdentity('shop.test', 'shop', 'checkout'), 'spiffe://shop.test/ns/shop/sa/checkout');
  assert.deepEqual(parseKubernetesIdentity('spiffe://shop.test/ns/shop/sa/checkout'), { trustDomain: 'shop.test', namespace: 'shop', serviceAccount: 'checkout' });
  assert.deepEqual(parseKubernetesIdentity(kubernetesIdentity('td', 'shop', 'build.bot')), { trustDomain: 'td', namespace: 'shop', serviceAccount: 'build.bot' });
  for (const bad of ['spiffe://td/ns/shop/svc/checkout', 'spiffe://td/svc/checkout', 'spiffe://td/ns/Shop/sa/a', 'spiffe://td/ns/shop/sa/', 'spiffe://td/ns/shop/sa/a/b', 'https://td/ns/shop/sa/a']) {
    assert.equal(parseKubernetesIdentity(bad), null, bad);
  }
});

test('parseMeshIdentity takes every form a mesh certificate may name, and nothing else', () => {
  assert.deepEqual(parseMeshIdentity(spiffeId('td', 'checkout')), { trustDomain: 'td', namespace: 'default', service: 'checkout' });
  assert.deepEqual(parseMeshIdentity('spiffe://td/ns/shop/svc/checkout'), { trustDomain: 'td', namespace: 'shop', service: 'shop/checkout' });
  assert.deepEqual(parseMeshIdentity('spiffe://td/ns/shop/sa/checkout'), { trustDomain: 'td', namespace: 'shop', serviceAccount: 'checkout' });
  // `default` is written without /ns/: one service, one ID.
  assert.equal(parseMeshIdentity('spiffe://td/ns/default/svc/checkout'), null);
  for (const bad of ['spiffe://td/ns/shop/svc/a/b', 'spiffe://td/ns/shop', 'spiffe://td/ns/shop/pod/a', 'spiffe://TD/svc/a', 'spiffe://td/svc/', '']) {
    assert.equal(parseMeshIdentity(bad), null, bad);
  }
});
