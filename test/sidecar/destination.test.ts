/**
 * Finding the destination in a mesh of namespaces: what a host name means to a caller
 * in a given namespace (bare name: its own namespace; `name.ns`, `name.ns.svc`,
 * `name.ns.svc.cluster.local`: namespace `ns`), end to end through a real sidecar, and the
 * Host a sidecar sends a meshed backend in another namespace.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { after, describe, test } from 'node:test';
import { canonicalIp, hostOfServiceKey, parseTarget, splitAuthority } from '../../src/sidecar/destination.ts';
import { checkProxyConfig } from '../../src/config/validate-config.ts';
import { callerLabel } from '../../src/sidecar/inbound.ts';
import type { EndpointsBody, InboundBody } from '../../src/config/types.ts';
import { backendsSpec, cleanup, configOf, rawSend, renameServices, send, startSidecar, startUpstream } from '../helpers/sidecar-harness.ts';
import { clientApiSpec } from '../helpers/spec.ts';

after(cleanup);

const request = (host: string | undefined, url = '/') => ({ headers: host === undefined ? {} : { host }, url }) as unknown as IncomingMessage;

describe('reading the target of a request', () => {
  test('host, port, path and query from Host or an absolute URI; the trust-domain suffix is dropped', () => {
    const t = parseTarget(request('API.Shop.test.local:8080', '/a/b?x=1'), '.test.local')!;
    assert.deepEqual({ host: t.host, originalHost: t.originalHost, port: t.port, path: t.path, query: t.query }, { host: 'api.shop', originalHost: 'api.shop.test.local', port: 8080, path: '/a/b', query: 'x=1' });
    const viaProxy = parseTarget(request('ignored', 'http://api.b:80/p?q'), '.test.local')!;
    assert.deepEqual([viaProxy.host, viaProxy.port, viaProxy.path, viaProxy.query], ['api.b', 80, '/p', 'q'], 'an explicit :80 is kept');
    assert.equal(parseTarget(request('api.'), '.test.local')!.host, 'api', 'a trailing dot is the same name');
  });

  test('IPv6 addresses in brackets; malformed authorities are refused', () => {
    assert.deepEqual(splitAuthority('[::1]:8080'), { host: '[::1]', port: 8080 });
    assert.deepEqual(splitAuthority('[fe80::1]'), { host: '[fe80::1]', port: undefined });
    assert.equal(parseTarget(request('[::1]:9'), '.test.local')!.host, '::1');
    for (const bad of ['', ':80', 'api:0', 'api:65536', 'api:x', '[::1', '[::1]x', 'api:+80']) assert.equal(splitAuthority(bad), undefined, bad);
    assert.equal(parseTarget(request(undefined), '.test.local'), undefined);
  });

  test('canonical IPs compare equal across spellings; names are not IPs', () => {
    assert.equal(canonicalIp('::0001'), '::1');
    assert.equal(canonicalIp('FE80:0:0::1'), 'fe80::1');
    assert.equal(canonicalIp('10.1.2.3'), '10.1.2.3');
    assert.equal(canonicalIp('api.b'), null);
  });

  test('the Host for a meshed backend is a valid DNS name: name, or name.namespace', () => {
    assert.equal(hostOfServiceKey('checkout'), 'checkout');
    assert.equal(hostOfServiceKey('shop/checkout'), 'checkout.shop');
  });
});

describe('configs with namespaced service keys', () => {
  test('are valid: resource names and service fields take `namespace/name`; malformed keys are refused', () => {
    const config = renameServices(configOf(backendsSpec({ api: [9] }), 'client'), { client: 'a/client', api: 'b/api' });
    const checked = checkProxyConfig(config);
    assert.ok(checked.ok, JSON.stringify(checked));
    assert.ok(config.resources.some((r) => r.name === 'route/b/api'));
    for (const bad of ['B/api', 'a/b/api', '/api', 'a/']) {
      const broken = renameServices(config, { 'b/api': bad });
      assert.equal(checkProxyConfig(broken).ok, false, bad);
    }
  });

  test('terminating endpoints, Kubernetes endpoint sources and egress passthrough are valid fields', () => {
    const config = renameServices(configOf(backendsSpec({ api: [9, 10] }), 'client'), {}, (name, body) => {
      if (name === 'inbound') return { ...(body as InboundBody), egress: 'passthrough' };
      if (name === 'endpoints/api') {
        const b = body as EndpointsBody;
        return { ...b, static: [b.static[0]!, { ...b.static[1]!, terminating: true }], kubernetes: { namespace: 'default', service: 'api', port: null } };
      }
      return body;
    });
    const checked = checkProxyConfig(config);
    assert.ok(checked.ok, JSON.stringify(checked));
    const wrong = renameServices(config, {}, (name, body) => (name === 'inbound' ? ({ ...body, egress: 'open' } as unknown as InboundBody) : body));
    assert.equal(checkProxyConfig(wrong).ok, false);
  });
});

describe('resolving host names through a sidecar', () => {
  test('a caller in namespace a: a bare name is a/api; name.b, name.b.svc, name.b.svc.cluster.local are b/api; others are unknown', async () => {
    const [inA, inB] = await Promise.all([startUpstream('a/api'), startUpstream('b/api')]);
    const compiled = configOf(backendsSpec({ api: [inA.port], other: [inB.port] }), 'client');
    const config = renameServices(compiled, { client: 'a/client', api: 'a/api', other: 'b/api' });
    const sc = await startSidecar(config, { identity: null });
    for (const host of ['api', 'api:80', 'api.a', 'api.a.svc', 'api.a.svc.cluster.local', 'api.test.local', 'api.a.test.local']) {
      const r = await send(sc.outbound, host, '/');
      assert.equal(r.status, 200, host);
      assert.equal(r.body, 'a/api', host);
    }
    for (const host of ['api.b', 'api.b:80', 'api.b.svc', 'api.b.svc.cluster.local', 'API.B.SVC.cluster.local.', 'api.b.test.local']) {
      const r = await send(sc.outbound, host, '/');
      assert.equal(r.status, 200, host);
      assert.equal(r.body, 'b/api', host);
    }
    const viaProxy = await rawSend(sc.outbound, 'http://api.b.svc/x', { host: 'ignored' });
    assert.equal(viaProxy.body, 'b/api');
    for (const host of ['other', 'api.c', 'api.b.svc.example.org', 'api.b.cluster', 'b/api', '10.9.8.7']) {
      const r = await send(sc.outbound, host, '/');
      assert.equal(r.status, 404, host);
      assert.equal(r.headers['x-trellis-error'], 'unknown_service', host);
    }
  });

  test('a caller in the default namespace keeps bare names; name.default is the same service', async () => {
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'));
    for (const host of ['api', 'api.default', 'api.default.svc.cluster.local']) assert.equal((await send(sc.outbound, host, '/')).body, 'api', host);
  });

  test('a meshed backend in another namespace gets the Host the app sent; its sidecar learns the service port from x-trellis-destination, which the app never sees', async () => {
    const app = await startUpstream('b/api app');
    const mesh = '  mtls: { mode: "off" }\n  access: { default: allow }';
    const keys = { client: 'a/client', api: 'b/api' };
    const apiSidecar = await startSidecar(renameServices(configOf({ 'spec.yaml': clientApiSpec(9, mesh) }, 'api'), keys), { identity: null, app: { host: '127.0.0.1', port: app.port } });
    const client = await startSidecar(renameServices(configOf({ 'spec.yaml': clientApiSpec(apiSidecar.inbound, mesh) }, 'client'), keys), { identity: null });
    const r = await send(client.outbound, 'api.b', '/hello');
    assert.equal(r.status, 200);
    assert.equal(r.body, 'b/api app');
    assert.equal(app.seen.at(-1)!.headers.host, 'api.b', 'the authority the calling app sent, kept across the hop');
    assert.equal(app.seen.at(-1)!.headers['x-forwarded-host'], 'api.b');
    assert.equal(app.seen.at(-1)!.headers['x-trellis-destination'], undefined, 'the mesh header stops at the inbound');
    // An app cannot steer the destination sidecar: what it sends under the mesh header is replaced.
    await send(client.outbound, 'api.b', '/hello', { headers: { 'x-trellis-destination': 'api.b:9999' } });
    assert.equal(app.seen.at(-1)!.headers['x-trellis-destination'], undefined);
  });
});

describe('who called, as metrics label it', () => {
  test('service keys for service identities, sa:<ns>/<name> for ServiceAccount identities', () => {
    assert.equal(callerLabel('spiffe://test.local/svc/checkout'), 'checkout');
    assert.equal(callerLabel('spiffe://test.local/ns/shop/svc/checkout'), 'shop/checkout');
    assert.equal(callerLabel('spiffe://test.local/ns/shop/sa/frontend'), 'sa:shop/frontend');
  });
});
