/**
 * Calls to hosts the mesh does not know. With `inbound.egress: passthrough` the sidecar
 * is a plain HTTP proxy to the host and port the app named (the "external" server here is
 * 127.0.0.1:<port>, listed in no service); without it they are refused with 404
 * `unknown_service`, whose message says egress is refused and how to allow it.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { InboundBody } from '../../src/config/types.ts';
import { backendsSpec, cleanup, closedPort, configOf, metricValue, rawSend, renameServices, send, startSidecar, startUpstream } from '../helpers/sidecar-harness.ts';

after(cleanup);

function config(apiPort: number, egress: boolean) {
  const compiled = configOf(backendsSpec({ api: [apiPort] }), 'client');
  return egress ? renameServices(compiled, {}, (name, body) => (name === 'inbound' ? { ...(body as InboundBody), egress: 'passthrough' } : body)) : compiled;
}

describe('egress passthrough', () => {
  test('a host outside the mesh is called as named, body and headers relayed, mesh headers dropped; mesh services still route', async () => {
    const [api, external] = await Promise.all([startUpstream('api'), startUpstream('external')]);
    const sc = await startSidecar(config(api.port, true));
    const r = await send(sc.outbound, `127.0.0.1:${external.port}`, '/v1/things?x=1', { method: 'POST', body: 'payload', headers: { 'x-app': 'yes', 'x-trellis-peer-identity': 'spiffe://test.local/svc/forged' } });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'external');
    const seen = external.seen.at(-1)!;
    assert.deepEqual([seen.method, seen.url, seen.body, seen.headers.host, seen.headers['x-app']], ['POST', '/v1/things?x=1', 'payload', `127.0.0.1:${external.port}`, 'yes']);
    assert.equal(seen.headers['x-trellis-peer-identity'], undefined, 'no mesh header leaves the mesh');
    const viaProxy = await rawSend(sc.outbound, `http://127.0.0.1:${external.port}/proxied`, { host: 'ignored' });
    assert.equal(viaProxy.status, 200);
    assert.equal(external.seen.at(-1)!.url, '/proxied');
    assert.equal((await send(sc.outbound, 'api', '/')).body, 'api', 'services of the mesh are still routed');
    assert.equal(api.seen.length, 1);
    const metrics = await (await fetch(`http://127.0.0.1:${sc.admin}/metrics`)).text();
    assert.equal(metricValue(metrics, 'trellis_requests_total', { destination_service: 'egress', response_code: '200' }), 2);
  });

  test("the sidecar's own outbound listener is refused with 508 proxy_loop rather than called again and again", async () => {
    const sc = await startSidecar(config(9, true));
    for (const host of [`127.0.0.1:${sc.outbound}`, `localhost:${sc.outbound}`]) {
      const r = await send(sc.outbound, host, '/');
      assert.equal(r.status, 508, host);
      assert.equal(r.headers['x-trellis-error'], 'proxy_loop');
    }
  });

  test('a host that does not answer gets 503 connect_failure, not a hang', async () => {
    const sc = await startSidecar(config(9, true));
    const r = await send(sc.outbound, `127.0.0.1:${await closedPort()}`, '/');
    assert.equal(r.status, 503);
    assert.equal(r.headers['x-trellis-error'], 'connect_failure');
  });
});

describe('egress refused (the default)', () => {
  test('404 unknown_service, saying egress is refused and how to allow it; nothing reaches the host', async () => {
    const external = await startUpstream('external');
    const sc = await startSidecar(config(9, false));
    for (const host of [`127.0.0.1:${external.port}`, 'example.org', 'nosuch']) {
      const r = await send(sc.outbound, host, '/');
      assert.equal(r.status, 404, host);
      assert.equal(r.headers['x-trellis-error'], 'unknown_service');
      const message = JSON.parse(r.body).message as string;
      assert.match(message, /egress .*refused/);
      assert.match(message, /egress\.mode: passthrough/);
    }
    assert.equal(external.seen.length, 0);
  });
});
