/** The admin API, config swaps under load, and sidecar-to-sidecar traffic. */
import assert from 'node:assert/strict';
import { credentialFor } from '../helpers/identity.ts';
import { after, describe, test } from 'node:test';
import { diffConfigs } from '../../src/config/delta.ts';
import type { ProxyConfig } from '../../src/config/types.ts';
import { clientApiSpec, compileTexts } from '../helpers/spec.ts';
import { backendsSpec, cleanup, configOf, metricValue, send, startSidecar, startUpstream } from '../helpers/sidecar-harness.ts';

after(cleanup);

const TOKEN = 'test-token-0123456789';

async function admin(port: number, method: string, path: string, body?: unknown, token: string | null = TOKEN) {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

function split(weightA: number, weightB: number, ports: { a: number; b: number }): ProxyConfig {
  const route = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: a, port: 80, weight: ${weightA} }, { name: b, port: 80, weight: ${weightB} }]
      retry: { attempts: 0 }`;
  return configOf(backendsSpec({ api: [ports.a], a: [ports.a], b: [ports.b] }, route), 'client');
}

describe('admin writes', () => {
  test('need the bearer token; without a configured token they are refused', async () => {
    const a = await startUpstream('a');
    const b = await startUpstream('b');
    const config = split(1, 0, { a: a.port, b: b.port });
    const open = await startSidecar(config);
    assert.equal((await admin(open.admin, 'PUT', '/config', config, null)).status, 403);
    const sc = await startSidecar(config, { adminToken: TOKEN });
    assert.equal((await admin(sc.admin, 'PUT', '/config', config, null)).status, 401);
    assert.equal((await admin(sc.admin, 'PUT', '/config', config, 'wrong')).status, 401);
    const ok = await admin(sc.admin, 'PUT', '/config', split(0, 1, { a: a.port, b: b.port }));
    assert.equal(ok.status, 200);
    assert.equal((await send(sc.outbound, 'api', '/')).body, 'b', 'the new config routes new requests');
  });

  test('an invalid config is refused with reasons, and the running one keeps serving', async () => {
    const a = await startUpstream('a');
    const b = await startUpstream('b');
    const config = split(1, 0, { a: a.port, b: b.port });
    const sc = await startSidecar(config, { adminToken: TOKEN });
    const broken = JSON.parse(JSON.stringify(split(0, 1, { a: a.port, b: b.port }))) as { resources: Array<{ name: string; body: { loadBalancer?: { type: string } } }> };
    broken.resources.find((r) => r.name === 'cluster/b')!.body.loadBalancer!.type = 'random';
    const refused = await admin(sc.admin, 'PUT', '/config', broken);
    assert.equal(refused.status, 422);
    assert.equal(refused.body.error, 'invalid_config');
    assert.ok((refused.body.reasons as string[]).length > 0);
    const bad = await admin(sc.admin, 'PUT', '/config', '{not json');
    assert.equal(bad.status, 400);
    assert.equal((await admin(sc.admin, 'GET', '/config')).body.version, config.version);
    assert.equal((await send(sc.outbound, 'api', '/')).body, 'a');
    const text = await (await fetch(`http://127.0.0.1:${sc.admin}/metrics`)).text();
    assert.equal(metricValue(text, 'trellis_config_applies_total', { result: 'rejected', source: 'admin' }), 1);
  });

  test('a delta applies only on its base version', async () => {
    const a = await startUpstream('a');
    const b = await startUpstream('b');
    const v1 = split(1, 0, { a: a.port, b: b.port });
    const v2 = split(0, 1, { a: a.port, b: b.port });
    const sc = await startSidecar(v1, { adminToken: TOKEN });
    const delta = diffConfigs(v1, v2);
    assert.deepEqual(delta.resources.map((r) => r.name), ['route/api'], 'only the changed route travels');
    const stale = await admin(sc.admin, 'POST', '/config/delta', { ...delta, base: v2.version });
    assert.equal(stale.status, 409);
    assert.equal(stale.body.error, 'base_mismatch');
    const applied = await admin(sc.admin, 'POST', '/config/delta', delta);
    assert.equal(applied.status, 200);
    assert.equal(applied.body.version, v2.version);
    assert.equal((await send(sc.outbound, 'api', '/')).body, 'b');
  });

  test('readiness follows the config, and in a strict-mTLS mesh the certificate', async () => {
    const sc = await startSidecar(undefined, { adminToken: TOKEN, identity: null });
    assert.equal((await admin(sc.admin, 'GET', '/readyz')).status, 503);
    assert.equal((await send(sc.outbound, 'api', '/')).headers['x-trellis-error'], 'not_ready');
    const a = await startUpstream('a');
    assert.equal((await admin(sc.admin, 'PUT', '/config', split(1, 0, { a: a.port, b: a.port }))).status, 200);
    assert.equal((await admin(sc.admin, 'GET', '/readyz')).status, 503, 'no certificate yet: the inbound port cannot serve mTLS');
    assert.ok(sc.sidecar.identity.offer(await credentialFor('client')).ok);
    assert.equal((await admin(sc.admin, 'GET', '/readyz')).status, 200);
  });
});

describe('config swaps', () => {
  test('swapping configs under load fails no request', async () => {
    const a = await startUpstream('a');
    const b = await startUpstream('b');
    const configs = [split(1, 0, { a: a.port, b: b.port }), split(0, 1, { a: a.port, b: b.port }), split(1, 1, { a: a.port, b: b.port })];
    const sc = await startSidecar(configs[0], { adminToken: TOKEN });
    const statuses = new Map<number, number>();
    const seen = new Set<string>();
    let running = true;
    // 8 clients, bounded by count; swaps run meanwhile.
    const workers = Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 150 && running; i++) {
        const r = await send(sc.outbound, 'api', '/');
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        seen.add(r.body);
      }
    });
    for (let i = 0; i < 30; i++) assert.equal((await admin(sc.admin, 'PUT', '/config', configs[(i + 1) % 3])).status, 200);
    await Promise.all(workers);
    running = false;
    assert.deepEqual([...statuses.keys()], [200], `statuses: ${JSON.stringify([...statuses])}`);
    assert.deepEqual([...seen].sort(), ['a', 'b']);
  });
});

describe('sidecar to sidecar', () => {
  test('a call crosses the caller sidecar and the destination sidecar to the app', async () => {
    const app = await startUpstream('app');
    const apiSidecar = await startSidecar(undefined, { app: { host: '127.0.0.1', port: app.port }, adminToken: TOKEN, identity: 'api' });
    const spec = clientApiSpec(apiSidecar.inbound);
    const mesh = compileTexts({ 'mesh.yaml': spec }).mesh!;
    assert.equal((await admin(apiSidecar.admin, 'PUT', '/config', mesh.configs.get('api'))).status, 200);
    const client = await startSidecar(mesh.configs.get('client'));
    const r = await send(client.outbound, 'api', '/hello?x=1', { headers: { 'x-request-id': 'rid-1' } });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'app');
    const seen = app.seen.at(-1)!;
    assert.equal(seen.url, '/hello?x=1');
    assert.equal(seen.headers.host, 'api', 'the app gets the authority the caller sent');
    assert.equal(seen.headers['x-request-id'], 'rid-1');
    assert.equal(seen.headers['x-trellis-caller'], undefined, 'no caller claim reaches the app');
    assert.equal(seen.headers['x-trellis-peer-identity'], 'spiffe://test.local/svc/client', 'the app learns the verified caller');
    const text = await (await fetch(`http://127.0.0.1:${apiSidecar.admin}/metrics`)).text();
    assert.equal(metricValue(text, 'trellis_requests_total', { reporter: 'inbound', source_workload: 'client', destination_service: 'api', response_code: '200' }), 1);
  });
});
