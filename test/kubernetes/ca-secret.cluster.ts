/**
 * The mesh root shared by reconciler replicas, against a real kube-apiserver: `trellis
 * reconcile --ca-secret` creates the Secret under the Lease `trellis-ca-bootstrap` on first
 * start, and every replica ends with that root.
 *
 * The replicas run with the installed ServiceAccount's own token (the RBAC of `trellis
 * install`, applied here), so the test also proves those rules are enough — and that the
 * Lease and Secret names the code uses are the ones the Role names. The root each replica
 * serves is read where sidecars get it: the trust bundle first sent on /v1/stream.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { MeshCertificateAuthority } from '../../src/identity/ca.ts';
import { clusterSpec, createNamespace, createObjects, installObjects, kubeConfigWithToken, serviceAccountToken, startKubeEnv, type KubeEnv } from '../helpers/kube-env.ts';
import { TOKEN, startTrellis, stopProcesses, tempDir, type Proc } from '../helpers/processes.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

const NS = 'trellis-system';
const SPEC = clusterSpec('t', null, 'ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] }');

let env: KubeEnv;
let core: k8s.CoreV1Api;
let coordination: k8s.CoordinationV1Api;
let specDir: string;
/** A kubeconfig acting as the installed ServiceAccount trellis-system/trellis-reconciler. */
let reconcilerKubeconfig: string;
let adminKubeconfig: string;

/** A reconciler replica keeping its root in `secret`. */
function replica(secret: string, kubeconfig = reconcilerKubeconfig): Promise<Proc> {
  return startTrellis(['reconcile', '--dir', specDir, '--listen', '127.0.0.1:0', '--kubernetes', '--kubeconfig', kubeconfig, '--ca-secret', secret]);
}

/** The trust bundle a replica sends first on every sidecar stream. */
async function trustBundle(port: number): Promise<string[]> {
  const controller = new AbortController();
  const res = await fetch(`http://127.0.0.1:${port}/v1/stream`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ service: 'api', node: 'probe', version: null, resources: {} }),
    signal: controller.signal,
  });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  let text = '';
  while (!text.includes('\n')) text += new TextDecoder().decode((await reader.read()).value);
  controller.abort();
  const first = JSON.parse(text.slice(0, text.indexOf('\n'))) as { type: string; roots: string[] };
  assert.equal(first.type, 'trust-bundle');
  return first.roots;
}

const events = (p: Proc, type: string) => p.output().split('\n').filter((l) => l.includes(`"type":"${type}"`));
const pemOf = (s: k8s.V1Secret, key: string) => Buffer.from(s.data![key]!, 'base64').toString('utf8');

before(async () => {
  env = await startKubeEnv();
  core = env.kubeConfig.makeApiClient(k8s.CoreV1Api);
  coordination = env.kubeConfig.makeApiClient(k8s.CoordinationV1Api);
  // The namespace and RBAC of trellis install, nothing else: no Secret exists yet.
  const installed = await installObjects(NS);
  await createObjects(env, installed.filter((o) => ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'].includes(o.kind!)));
  const issuer = readFileSync(join(env.dir, 'env'), 'utf8').match(/^KUBE_SA_ISSUER=(.*)$/m)![1]!;
  const dir = tempDir();
  reconcilerKubeconfig = join(dir, 'reconciler.kubeconfig');
  writeFileSync(reconcilerKubeconfig, kubeConfigWithToken(env, await serviceAccountToken(env, NS, 'trellis-reconciler', issuer)).exportConfig());
  adminKubeconfig = env.kubeconfigPath;
  specDir = tempDir();
  writeFileSync(join(specDir, 'mesh.yaml'), SPEC);
});

after(async () => {
  await stopProcesses();
  await env?.stop();
});

describe('trellis reconcile --ca-secret on a real API server', () => {
  test('two replicas started at once on an empty cluster, with the installed RBAC, end with one root: exactly one Secret, created once, the Lease released', async () => {
    const started = performance.now();
    const [a, b] = await Promise.all([replica(`${NS}/trellis-ca`), replica(`${NS}/trellis-ca`)]);
    const tookMs = Math.round(performance.now() - started);
    const [rootA, rootB] = [(await trustBundle(a.listening.port!))[0], (await trustBundle(b.listening.port!))[0]];
    assert.ok(rootA);
    assert.equal(rootA, rootB, 'both replicas hand sidecars the same root');

    const secrets = await core.listNamespacedSecret({ namespace: NS });
    assert.deepEqual(secrets.items.map((s) => s.metadata!.name), ['trellis-ca']);
    const secret = secrets.items[0]!;
    assert.equal(secret.type, 'kubernetes.io/tls');
    assert.equal(pemOf(secret, 'tls.crt'), rootA);
    await MeshCertificateAuthority.load(pemOf(secret, 'tls.crt'), pemOf(secret, 'tls.key'));
    const created = [...events(a, 'ca_secret_created'), ...events(b, 'ca_secret_created')];
    assert.equal(created.length, 1, `exactly one replica made the root (a: ${a.output().slice(-800)} b: ${b.output().slice(-800)})`);
    const creator = JSON.parse(created[0]!) as { holder: string };
    assert.equal(secret.metadata!.annotations!['trellis.dev/created-by'], creator.holder);
    const lease = await coordination.readNamespacedLease({ name: 'trellis-ca-bootstrap', namespace: NS });
    assert.equal(lease.spec!.holderIdentity, undefined, 'released, not left to expire');
    console.log(`# two replicas agreed on one root in ${tookMs} ms (process start included)`);
    a.child.kill('SIGKILL');
    b.child.kill('SIGKILL');
    await Promise.all([a.exited, b.exited]);
  });

  test('a restarted replica reuses the Secret without a write: same root, no Lease taken', async () => {
    const before = await core.readNamespacedSecret({ name: 'trellis-ca', namespace: NS });
    const leaseBefore = await coordination.readNamespacedLease({ name: 'trellis-ca-bootstrap', namespace: NS });
    const r = await replica(`${NS}/trellis-ca`);
    assert.deepEqual(await trustBundle(r.listening.port!), [pemOf(before, 'tls.crt')]);
    assert.equal(events(r, 'ca_secret_created').length, 0);
    assert.equal(events(r, 'ca_secret_loaded').length, 1);
    const after = await core.readNamespacedSecret({ name: 'trellis-ca', namespace: NS });
    assert.equal(after.metadata!.resourceVersion, before.metadata!.resourceVersion);
    assert.equal((await coordination.readNamespacedLease({ name: 'trellis-ca-bootstrap', namespace: NS })).metadata!.resourceVersion, leaseBefore.metadata!.resourceVersion);
    r.child.kill('SIGKILL');
    await r.exited;
  });

  test('while another holds the Lease a replica waits, creates nothing, and uses the root the holder stores', async () => {
    await createNamespace(env, 'held');
    const now = new k8s.V1MicroTime();
    await coordination.createNamespacedLease({ namespace: 'held', body: { metadata: { name: 'trellis-ca-bootstrap' }, spec: { holderIdentity: 'other-replica', leaseDurationSeconds: 60, acquireTime: now, renewTime: now } } });
    let output = () => '';
    const starting = startTrellis(['reconcile', '--dir', specDir, '--listen', '127.0.0.1:0', '--kubernetes', '--kubeconfig', adminKubeconfig, '--ca-secret', 'held/trellis-ca'], {}, (o) => (output = o));
    await waitFor(() => output().includes('"type":"ca_secret_waiting"'), 'the replica to wait for the holder', 10_000);
    assert.match(output(), /"holder":"other-replica"/);
    assert.deepEqual((await core.listNamespacedSecret({ namespace: 'held' })).items, [], 'it creates nothing while the Lease is held');
    // The holder's part: store a root, then release the Lease.
    const theirs = await MeshCertificateAuthority.generate('cluster.test');
    await core.createNamespacedSecret({ namespace: 'held', body: { metadata: { name: 'trellis-ca' }, type: 'kubernetes.io/tls', data: { 'tls.crt': Buffer.from(theirs.rootPem).toString('base64'), 'tls.key': Buffer.from(await theirs.exportPrivateKeyPem()).toString('base64') } } });
    const p = await starting;
    assert.equal(events(p, 'ca_secret_waiting').length, 1);
    assert.equal(events(p, 'ca_secret_created').length, 0);
    assert.deepEqual(await trustBundle(p.listening.port!), [theirs.rootPem]);
    p.child.kill('SIGKILL');
    await p.exited;
  });

  test('a holder that died mid-bootstrap is waited out for one lease duration, then the root is made', async () => {
    await createNamespace(env, 'crashed');
    const now = new k8s.V1MicroTime();
    await coordination.createNamespacedLease({ namespace: 'crashed', body: { metadata: { name: 'trellis-ca-bootstrap' }, spec: { holderIdentity: 'dead-replica', leaseDurationSeconds: 2, acquireTime: now, renewTime: now } } });
    const started = performance.now();
    const p = await replica('crashed/trellis-ca', adminKubeconfig);
    const tookMs = performance.now() - started;
    assert.ok(tookMs >= 2000, `waited out the lease (${Math.round(tookMs)} ms)`);
    assert.equal(events(p, 'ca_secret_created').length, 1);
    const lease = await coordination.readNamespacedLease({ name: 'trellis-ca-bootstrap', namespace: 'crashed' });
    assert.equal(lease.spec!.leaseTransitions, 1, 'taken over from the dead holder');
    p.child.kill('SIGKILL');
    await p.exited;
  });

  test('a Secret that holds no usable root is never overwritten: the reconciler stops with ca_secret_invalid', async () => {
    await createNamespace(env, 'broken');
    await core.createNamespacedSecret({ namespace: 'broken', body: { metadata: { name: 'trellis-ca' }, type: 'Opaque', data: { 'tls.crt': Buffer.from('not a certificate').toString('base64'), 'tls.key': Buffer.from('no').toString('base64') } } });
    await assert.rejects(replica('broken/trellis-ca', adminKubeconfig), /does not hold a usable mesh root/);
    const kept = await core.readNamespacedSecret({ name: 'trellis-ca', namespace: 'broken' });
    assert.equal(pemOf(kept, 'tls.crt'), 'not a certificate');
  });
});
