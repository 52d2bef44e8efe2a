/**
 * Namespaces end to end, as real processes: a reconciler watching a spec folder and one
 * `trellis sidecar` per instance, over mTLS with certificates from the reconciler's CA.
 * The service name `api` exists in namespaces `a` and `b`: a caller in `a` that says `api`
 * reaches a's, `api.b` (or `api.b.svc.cluster.local`) reaches b's. A consumer HTTPRoute in
 * namespace `c` for `b/api` (sending to `b/api-v2`, allowed by a ReferenceGrant in `b`)
 * applies to callers in `c` only.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sidecarReady, startTrellis, stopProcesses, tempDir, type Proc } from '../helpers/processes.ts';
import { cleanup, closedPort, send, startUpstream, waitFor, type Upstream } from '../helpers/sidecar-harness.ts';

after(async () => {
  await stopProcesses();
  await cleanup();
});

function service(namespace: string, name: string, port: number): string {
  return `---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name}, namespace: ${namespace} }
spec: { ports: [{ port: 80, targetPort: 8080 }], endpoints: { static: [{ address: 127.0.0.1, port: ${port} }] } }
`;
}

function spec(inbound: Record<string, number>): string {
  return `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: t }
spec: { trustDomain: t.local, mtls: { mode: strict }, access: { default: allow } }
${service('a', 'client', 9)}${service('c', 'client', 9)}${service('a', 'api', inbound['a/api']!)}${service('b', 'api', inbound['b/api']!)}${service('b', 'api-v2', inbound['b/api-v2']!)}---
# A consumer route: written by namespace c, for its own calls to b/api.
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: b-api-for-c, namespace: c }
spec:
  parentRefs: [{ kind: Service, name: api, namespace: b, port: 80 }]
  rules:
    - backendRefs: [{ name: api-v2, namespace: b, port: 80 }]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: c-routes-to-api-v2, namespace: b }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: c }]
  to: [{ group: "", kind: Service, name: api-v2 }]
`;
}

/** An app that answers with its name and the caller's verified identity. */
function app(name: string): Promise<Upstream> {
  return startUpstream(name, (req, res) => {
    res.writeHead(200, { 'x-peer': String(req.headers['x-trellis-peer-identity'] ?? '') });
    res.end(name);
  });
}

describe('one mesh, several namespaces (reconciler and sidecars as processes)', () => {
  const callers: Record<string, Proc> = {};

  before(async () => {
    const dir = tempDir();
    const specDir = join(dir, 'spec');
    mkdirSync(specDir);
    const keys = ['a/api', 'b/api', 'b/api-v2'];
    const inbound: Record<string, number> = {};
    for (const key of keys) inbound[key] = await closedPort();
    writeFileSync(join(specDir, 'mesh.yaml'), spec(inbound));
    const controlPort = await closedPort();
    const control = `http://127.0.0.1:${controlPort}`;
    await startTrellis(['reconcile', '--dir', specDir, '--listen', String(controlPort)]);
    const sidecar = (key: string, extra: string[]) => startTrellis(['sidecar', '--service', key, '--control', control, '--outbound', '0', '--admin', '0', ...extra]);
    const started: Proc[] = [];
    for (const key of keys) {
      const upstream = await app(key);
      started.push(await sidecar(key, ['--inbound', String(inbound[key]), '--app', `127.0.0.1:${upstream.port}`]));
    }
    for (const key of ['a/client', 'c/client']) {
      callers[key] = await sidecar(key, ['--inbound', '0']);
      started.push(callers[key]);
    }
    for (const p of started) await waitFor(() => sidecarReady(p.listening.admin!), `sidecar ${p.child.spawnargs.join(' ')} ready`, 20_000);
  });

  const call = async (caller: string, host: string) => {
    const r = await send(callers[caller]!.listening.outbound!, host, '/');
    return { status: r.status, body: r.body, peer: r.headers['x-peer'], error: r.headers['x-trellis-error'] };
  };

  test("a caller in a: `api` is a's api, `api.b` and its longer forms are b's; the callee sees the caller's namespaced identity", async () => {
    for (const host of ['api', 'api:80', 'api.a', 'api.a.svc.cluster.local']) assert.deepEqual(await call('a/client', host), { status: 200, body: 'a/api', peer: 'spiffe://t.local/ns/a/svc/client', error: undefined }, host);
    for (const host of ['api.b', 'api.b.svc', 'api.b.svc.cluster.local', 'api.b.t.local']) assert.deepEqual(await call('a/client', host), { status: 200, body: 'b/api', peer: 'spiffe://t.local/ns/a/svc/client', error: undefined }, host);
  });

  test("c's consumer route for b/api applies to callers in c only; producer behaviour for everyone else", async () => {
    for (let i = 0; i < 5; i++) {
      assert.equal((await call('c/client', 'api.b')).body, 'b/api-v2', 'c calls b/api through its own route');
      assert.equal((await call('a/client', 'api.b')).body, 'b/api', 'a is not subject to c’s route');
    }
    assert.equal((await call('c/client', 'api.a')).body, 'a/api');
    const bare = await call('c/client', 'api');
    assert.equal(bare.status, 404, 'there is no api in namespace c');
    assert.equal(bare.error, 'unknown_service');
  });
});
