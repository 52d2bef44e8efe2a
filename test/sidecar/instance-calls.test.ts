/**
 * Calls addressed to an instance itself (a pod IP and port, as clients of headless
 * Services and StatefulSets make them): they reach exactly that instance, over mTLS to its
 * service's identity, with the timeouts and retries of the service's matching route rule,
 * retried on the same instance only; the destination's access policy applies as usual.
 * Two meshed `api` instances listen on their own loopback addresses (127.0.0.2 and
 * 127.0.0.3, like two pod IPs); the app behind each listens on the targetPort's stand-in.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ManualClock, seededRandom } from '../../src/sidecar/clock.ts';
import { ClusterManager } from '../../src/sidecar/clusters.ts';
import { buildSnapshot } from '../../src/sidecar/config-store.ts';
import { MeshConnector } from '../../src/sidecar/mesh-connector.ts';
import { cleanup, closedPort, configOf, send, startSidecar, startUpstream, type RunningSidecar, type Upstream } from '../helpers/sidecar-harness.ts';
import { clientSpec } from '../helpers/spec.ts';

after(cleanup);

function spec(api: [RunningSidecar, RunningSidecar], dbPort: number): Record<string, string> {
  return {
    'spec.yaml': clientSpec(
      undefined,
      `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api }
spec:
  ports: [{ port: 80, targetPort: 8080 }]
  endpoints:
    static:
      - { address: 127.0.0.2, port: ${api[0].inbound} }
      - { address: 127.0.0.3, port: ${api[1].inbound} }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: db }
spec:
  sidecar: false
  ports: [{ port: 5432 }]
  endpoints: { static: [{ address: 127.0.0.1, port: ${dbPort} }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /slow } }]
      backendRefs: [{ name: api, port: 80 }]
      timeouts: { request: 300ms }
    - backendRefs: [{ name: api, port: 80 }]
      retry: { attempts: 2, codes: [503], backoff: 1ms }
---
apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api }
spec:
  targetRefs: [{ kind: Service, name: api }]
  rules:
    - from: [{ service: client }]
      to: [{ paths: [{ type: PathPrefix, value: /hello }, { type: PathPrefix, value: /flaky }, { type: PathPrefix, value: /slow }] }]
    - from: [{ identity: "spiffe://test.local/svc/admin" }]
      to: [{ paths: [{ type: PathPrefix, value: /private }] }]
`,
    ),
  };
}

/** The app behind one api instance: /flaky answers 503, /slow never answers, /private is for admin only. */
function apiApp(name: string): Promise<Upstream> {
  return startUpstream(name, (req, res) => {
    if (req.url === '/flaky') {
      res.writeHead(503);
      res.end('flaky');
    } else if (req.url?.startsWith('/slow')) {
      // never answers; the caller's timeout ends it
    } else {
      res.writeHead(200, { 'x-peer': String(req.headers['x-trellis-peer-identity'] ?? '') });
      res.end(name);
    }
  });
}

describe('calls addressed to an instance', () => {
  let apps: [Upstream, Upstream];
  let db: Upstream;
  let client: RunningSidecar;
  let apis: [RunningSidecar, RunningSidecar];

  before(async () => {
    apps = [await apiApp('one'), await apiApp('two')];
    db = await startUpstream('db');
    apis = [
      await startSidecar(undefined, { service: 'api', inbound: { host: '127.0.0.2', port: 0 }, app: { host: '127.0.0.1', port: apps[0].port } }),
      await startSidecar(undefined, { service: 'api', inbound: { host: '127.0.0.3', port: 0 }, app: { host: '127.0.0.1', port: apps[1].port } }),
    ];
    const files = spec(apis, db.port);
    for (const a of apis) assert.ok(a.sidecar.store.apply(configOf(files, 'api'), 'test').ok);
    client = await startSidecar(configOf(files, 'client'));
  });

  test('the pod IP and targetPort, the service port or the mesh inbound port reach exactly that instance, over mTLS', async () => {
    for (const [host, expected] of [
      ['127.0.0.2:8080', 'one'],
      ['127.0.0.3:8080', 'two'],
      ['127.0.0.3:80', 'two'],
      [`127.0.0.2:${apis[0].inbound}`, 'one'],
      [`127.0.0.3:${apis[1].inbound}`, 'two'],
    ] as const) {
      for (let i = 0; i < 4; i++) {
        const r = await send(client.outbound, host, '/hello');
        assert.equal(r.status, 200, host);
        assert.equal(r.body, expected, host);
        assert.equal(r.headers['x-peer'], 'spiffe://test.local/svc/client', 'the instance saw the caller verified by mTLS');
      }
    }
    assert.equal(apps[1].seen.at(-1)!.headers.host, `127.0.0.3:${apis[1].inbound}`, 'the instance gets the authority the app dialled');
    await send(client.outbound, '127.0.0.3:8080', '/hello');
    assert.equal(apps[1].seen.at(-1)!.headers.host, '127.0.0.3:8080');
  });

  test('retries stay on the addressed instance', async () => {
    const before = [apps[0].seen.length, apps[1].seen.length];
    const r = await send(client.outbound, '127.0.0.2:8080', '/flaky');
    assert.equal(r.status, 503);
    assert.equal(apps[0].seen.length - before[0]!, 3, 'first try and two retries, all on instance one');
    assert.equal(apps[1].seen.length - before[1]!, 0);
  });

  test("the matching route rule's timeout applies", async () => {
    const t0 = Date.now();
    const r = await send(client.outbound, '127.0.0.3:8080', '/slow');
    assert.equal(r.status, 504);
    assert.equal(r.headers['x-trellis-error'], 'request_timeout');
    assert.ok(Date.now() - t0 < 3000, 'ended by the 300ms route timeout');
  });

  test("the destination's access policy decides, as for any call", async () => {
    const r = await send(client.outbound, '127.0.0.2:8080', '/private/x');
    assert.equal(r.status, 403);
    assert.equal(r.headers['x-trellis-error'], 'access_denied');
  });

  test('an unmeshed instance is reached on its address; addresses no instance has are unknown (egress refused)', async () => {
    const r = await send(client.outbound, `127.0.0.1:${db.port}`, '/q');
    assert.equal(r.status, 200);
    assert.equal(r.body, 'db');
    for (const host of ['127.0.0.4:8080', '127.0.0.2:9999', `127.0.0.1:${await closedPort()}`, '[::1]:8080']) {
      const miss = await send(client.outbound, host, '/');
      assert.equal(miss.status, 404, host);
      assert.equal(miss.headers['x-trellis-error'], 'unknown_service', host);
    }
  });
});

describe('ClusterManager.findInstance (no sockets)', () => {
  const files = {
    'spec.yaml': clientSpec(
      undefined,
      `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api }
spec:
  ports: [{ name: http, port: 80, targetPort: 8080 }, { name: admin, port: 81, targetPort: 9090 }]
  endpoints: { static: [{ address: 10.0.0.1, port: 15006 }, { address: 10.0.0.2, port: 15006 }, { address: "fd00::2", port: 15006 }] }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: db }
spec:
  sidecar: false
  ports: [{ port: 80, targetPort: 5432 }]
  endpoints: { static: [{ address: 10.0.0.9 }, { address: 10.0.0.1, port: 7000 }] }
`,
    ),
  };

  function manager(): ClusterManager {
    const snap = buildSnapshot(configOf(files, 'client'));
    const clusters = new ClusterManager(new ManualClock(), seededRandom(1), new MeshConnector({ credential: () => undefined, mode: () => 'off', onRefused: () => undefined }));
    clusters.sync(snap.clusters, snap.endpoints);
    after(() => clusters.close());
    return clusters;
  }
  const found = (m: ClusterManager, ip: string, port: number) => {
    const f = m.findInstance(ip, port);
    return f && { service: f.cluster.service, endpoint: f.endpoint.key, servicePort: f.servicePort, connectPort: f.connectPort };
  };

  test('a meshed instance by targetPort, service port or inbound port: connected on its inbound port, told the service port', () => {
    const m = manager();
    assert.deepEqual(found(m, '10.0.0.2', 8080), { service: 'api', endpoint: '10.0.0.2:15006', servicePort: 80, connectPort: 15006 });
    assert.deepEqual(found(m, '10.0.0.2', 9090), { service: 'api', endpoint: '10.0.0.2:15006', servicePort: 81, connectPort: 15006 });
    assert.deepEqual(found(m, '10.0.0.2', 81), { service: 'api', endpoint: '10.0.0.2:15006', servicePort: 81, connectPort: 15006 });
    assert.deepEqual(found(m, '10.0.0.2', 15006), { service: 'api', endpoint: '10.0.0.2:15006', servicePort: 80, connectPort: 15006 });
    assert.deepEqual(found(m, 'FD00:0::2', 8080), { service: 'api', endpoint: '[fd00::2]:15006', servicePort: 80, connectPort: 15006 }, 'IPv6 in any spelling');
  });

  test('an unmeshed instance: on its own port, or without one on the targetPort', () => {
    const m = manager();
    assert.deepEqual(found(m, '10.0.0.9', 80), { service: 'db', endpoint: '10.0.0.9:0', servicePort: 80, connectPort: 5432 });
    assert.deepEqual(found(m, '10.0.0.9', 5432), { service: 'db', endpoint: '10.0.0.9:0', servicePort: 80, connectPort: 5432 });
    assert.deepEqual(found(m, '10.0.0.1', 7000), { service: 'db', endpoint: '10.0.0.1:7000', servicePort: 80, connectPort: 7000 });
  });

  test('an address two services list goes to the closest port match; unknown addresses and ports find nothing', () => {
    const m = manager();
    assert.equal(found(m, '10.0.0.1', 8080)?.service, 'api', 'the targetPort of api');
    assert.equal(found(m, '10.0.0.1', 7000)?.service, 'db', 'the listed port of db');
    assert.equal(found(m, '10.0.0.1', 5432)?.service, 'db', 'the targetPort of db');
    assert.equal(found(m, '10.0.0.1', 80)?.service, 'api', 'a service port of both: the first key in order');
    assert.equal(found(m, '10.0.0.2', 1234), undefined);
    assert.equal(found(m, '10.0.0.3', 8080), undefined);
    assert.equal(found(m, 'api', 8080), undefined, 'names are not addresses');
  });
});
