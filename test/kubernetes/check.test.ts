/**
 * The judging parts of `trellis check`, on made certificates and objects (no cluster): the
 * webhook and mesh-root certificate checks, the permissions taken from the install, the
 * Deployment, the sidecars against the reconcilers' status, and the CLI's text and exit codes.
 * test/kubernetes/check.cluster.ts runs the whole command against a real API server.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type * as k8s from '@kubernetes/client-node';
import { MeshCertificateAuthority } from '../../src/identity/ca.ts';
import {
  checkDeployment,
  checkMeshCa,
  checkPermissions,
  checkReconcilerStatus,
  checkSidecars,
  checkVersion,
  checkWebhookCertificate,
  checkWebhookConfiguration,
  permissionText,
  requiredPermissions,
  type ReplicaStatus,
  type StatusView,
} from '../../src/kubernetes/check.ts';
import { injectPod, type PodLike } from '../../src/kubernetes/inject.ts';
import { installObjects } from '../../src/kubernetes/install.ts';
import { issueServingCertificate, serviceDnsNames, type ServingCertificate } from '../../src/kubernetes/serving-certificate.ts';
import { renderCheck } from '../../src/cli/check.ts';
import { main } from '../../src/cli/main.ts';

const NS = 'trellis-system';
const DAY = 24 * 3600_000;

let webhook: ServingCertificate;
let otherCa: ServingCertificate;
let meshCa: { certificatePem: string; keyPem: string };

before(async () => {
  webhook = await issueServingCertificate({ dnsNames: serviceDnsNames('trellis', NS) });
  otherCa = await issueServingCertificate({ dnsNames: serviceDnsNames('trellis', NS) });
  const ca = await MeshCertificateAuthority.generate('cluster.test');
  meshCa = { certificatePem: ca.rootPem, keyPem: await ca.exportPrivateKeyPem() };
});

const notAfter = (pem: string) => Date.parse(new X509Certificate(pem).validTo);

describe('webhook certificate', () => {
  const input = (over: Partial<Parameters<typeof checkWebhookCertificate>[0]> = {}) => ({ namespace: NS, caBundlePem: webhook.caPem, certificatePem: webhook.certificatePem, keyPem: webhook.privateKeyPem, now: Date.now(), ...over });

  test('signed by the caBundle, naming trellis.<ns>.svc, with its key and years left: ok', () => {
    const r = checkWebhookCertificate(input());
    assert.equal(r.status, 'ok', r.message);
    assert.match(r.message, /names trellis\.trellis-system\.svc/);
  });

  test('a certificate from another CA fails, naming both and what it breaks', () => {
    const r = checkWebhookCertificate(input({ certificatePem: otherCa.certificatePem, keyPem: otherCa.privateKeyPem }));
    assert.equal(r.status, 'fail');
    assert.match(r.message, /is not signed by the caBundle of MutatingWebhookConfiguration trellis-sidecar-injector/);
    assert.match(r.message, /pods are created without a sidecar/);
    assert.match(r.hint!, /trellis install --only webhook \| kubectl apply -f -/);
  });

  test('expired fails; expiring within 7 days warns; 8 days is fine', () => {
    const end = notAfter(webhook.certificatePem);
    assert.equal(checkWebhookCertificate(input({ now: end + 1000 })).status, 'fail');
    assert.match(checkWebhookCertificate(input({ now: end + 1000 })).message, /expired on/);
    const soon = checkWebhookCertificate(input({ now: end - 3 * DAY }));
    assert.equal(soon.status, 'warn');
    assert.match(soon.message, /in 3 days/);
    assert.equal(checkWebhookCertificate(input({ now: end - 8 * DAY })).status, 'ok');
  });

  test('a certificate for another namespace, a key that is not its own, a missing Secret or caBundle fail', async () => {
    const elsewhere = await issueServingCertificate({ dnsNames: serviceDnsNames('trellis', 'other') });
    const wrongName = checkWebhookCertificate(input({ caBundlePem: elsewhere.caPem, certificatePem: elsewhere.certificatePem, keyPem: elsewhere.privateKeyPem }));
    assert.equal(wrongName.status, 'fail');
    assert.match(wrongName.message, /does not name trellis\.trellis-system\.svc/);
    assert.match(checkWebhookCertificate(input({ keyPem: otherCa.privateKeyPem })).message, /is not the private key/);
    assert.match(checkWebhookCertificate(input({ certificatePem: undefined })).message, /is missing/);
    assert.match(checkWebhookCertificate(input({ caBundlePem: undefined })).message, /holds no certificate/);
    assert.match(checkWebhookCertificate(input({ certificatePem: 'not pem' })).message, /not a PEM certificate/);
  });
});

describe('mesh CA', () => {
  test('a CA with its key, valid for years: ok; within 30 days: warning; expired: failure', () => {
    assert.equal(checkMeshCa({ namespace: NS, ...meshCa, now: Date.now() }).status, 'ok');
    const end = notAfter(meshCa.certificatePem);
    const soon = checkMeshCa({ namespace: NS, ...meshCa, now: end - 10 * DAY });
    assert.equal(soon.status, 'warn');
    assert.match(soon.message, /in 10 days/);
    assert.equal(checkMeshCa({ namespace: NS, ...meshCa, now: end - 31 * DAY }).status, 'ok');
    assert.equal(checkMeshCa({ namespace: NS, ...meshCa, now: end + 1 }).status, 'fail');
  });

  test('a leaf certificate, a foreign key or no Secret fail', () => {
    const leaf = checkMeshCa({ namespace: NS, certificatePem: webhook.certificatePem, keyPem: webhook.privateKeyPem, now: Date.now() });
    assert.equal(leaf.status, 'fail');
    assert.match(leaf.message, /not a CA certificate/);
    assert.match(checkMeshCa({ namespace: NS, certificatePem: meshCa.certificatePem, keyPem: webhook.privateKeyPem, now: Date.now() }).message, /not the private key/);
    const missing = checkMeshCa({ namespace: NS, certificatePem: undefined, keyPem: undefined, now: Date.now() });
    assert.equal(missing.status, 'fail');
    assert.match(missing.hint!, /--ca-secret creates it: kubectl -n trellis-system rollout restart deployment\/trellis/);
  });
});

describe('RBAC', () => {
  test('the permissions checked are exactly the rules trellis install grants, one per verb', () => {
    const perms = requiredPermissions(NS);
    const roles = installObjects({ namespace: NS, repo: 'r', branch: 'main', image: 'i' }).map((o) => o.object).filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role');
    const expected = roles.flatMap((r) => (r.rules as { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[]).flatMap((rule) => rule.apiGroups.flatMap(() => rule.resources.flatMap(() => rule.verbs.flatMap(() => rule.resourceNames ?? [undefined])))));
    assert.equal(perms.length, expected.length);
    assert.deepEqual(
      perms.map(permissionText).filter((t) => /tokenreviews|endpointslices|secrets/.test(t)),
      [
        'get endpointslices.discovery.k8s.io (cluster-wide)',
        'list endpointslices.discovery.k8s.io (cluster-wide)',
        'watch endpointslices.discovery.k8s.io (cluster-wide)',
        'create tokenreviews.authentication.k8s.io (cluster-wide)',
        'get secrets named trellis-ca in trellis-system',
        'create secrets in trellis-system',
      ],
    );
  });

  test('a refused permission fails naming it and the rule that grants it', () => {
    const perms = requiredPermissions(NS);
    const r = checkPermissions(NS, perms, perms.map((p) => p.resource !== 'tokenreviews'));
    assert.equal(r.status, 'fail');
    assert.match(r.message, /may not create tokenreviews\.authentication\.k8s\.io \(cluster-wide\)/);
    assert.match(r.hint!, /ClusterRole trellis-reconciler needs \{apiGroups: \[authentication\.k8s\.io\], resources: \[tokenreviews\], verbs: \[create\]\}/);
    assert.equal(checkPermissions(NS, perms, perms.map(() => true)).status, 'ok');
  });
});

describe('version', () => {
  test('1.29 and later run native sidecars; older ones warn about classic injection', () => {
    assert.equal(checkVersion({ major: '1', minor: '29' }).status, 'ok');
    assert.equal(checkVersion({ major: '1', minor: '30+', gitVersion: 'v1.30.2-eks' }).status, 'ok');
    const old = checkVersion({ major: '1', minor: '28', gitVersion: 'v1.28.9' });
    assert.equal(old.status, 'warn');
    assert.match(old.message, /v1\.28\.9 is older than 1\.29: no native sidecars, so pods get a classic sidecar/);
  });
});

describe('reconciler Deployment', () => {
  const deployment = (status: k8s.V1DeploymentStatus, replicas = 2): k8s.V1Deployment => ({
    metadata: { name: 'trellis', namespace: NS, generation: 3 },
    spec: { replicas, selector: {}, template: { spec: { containers: [{ name: 'reconciler', image: 'registry.example/trellis:1' }] } } },
    status: { observedGeneration: 3, ...status },
  });
  const pod = (name: string, hash: string, image = 'registry.example/trellis:1'): k8s.V1Pod => ({
    metadata: { name, labels: { 'pod-template-hash': hash } },
    spec: { containers: [{ name: 'reconciler', image }] },
    status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
  });

  test('every replica ready on the current template: ok', () => {
    const r = checkDeployment(NS, deployment({ replicas: 2, readyReplicas: 2, updatedReplicas: 2 }), [pod('a', 'h1'), pod('b', 'h1')]);
    assert.equal(r.status, 'ok', r.message);
  });

  test('missing, not ready, mid-rollout or pods on two revisions: failure', () => {
    assert.match(checkDeployment(NS, undefined, []).message, /does not exist/);
    assert.match(checkDeployment(NS, deployment({ replicas: 2, readyReplicas: 1, updatedReplicas: 2 }), []).message, /1 of 2 replicas ready/);
    assert.match(checkDeployment(NS, deployment({ replicas: 3, readyReplicas: 2, updatedReplicas: 1 }), []).message, /a rollout is under way: 1 of 3 replicas run the current pod template/);
    const split = checkDeployment(NS, deployment({ replicas: 2, readyReplicas: 2, updatedReplicas: 2 }), [pod('a', 'h1'), pod('b', 'h2', 'registry.example/trellis:0')]);
    assert.equal(split.status, 'fail');
    assert.match(split.message, /its pods run 2 revisions: a \(template h1, image registry\.example\/trellis:1\); b \(template h2, image registry\.example\/trellis:0\)/);
    assert.match(checkDeployment(NS, { ...deployment({ replicas: 2, readyReplicas: 2, updatedReplicas: 2 }), status: { observedGeneration: 2, replicas: 2, readyReplicas: 2, updatedReplicas: 2 } }, []).message, /not acted on its latest spec/);
  });
});

describe('webhook configuration', () => {
  const installed = () => structuredClone(installObjects({ namespace: NS, repo: 'r', branch: 'main', image: 'i' }, { webhook: { caPem: webhook.caPem, certificatePem: '', privateKeyPem: '' } }).find((o) => o.object.kind === 'MutatingWebhookConfiguration')!.object);

  test('as installed: ok, and its caBundle is handed on', () => {
    const r = checkWebhookConfiguration(NS, installed());
    assert.equal(r.result.status, 'ok', r.result.message);
    assert.equal(r.caBundlePem, webhook.caPem);
  });

  test('missing, without caBundle, or at another Service: failure; at a URL: warning', () => {
    assert.equal(checkWebhookConfiguration(NS, undefined).result.status, 'fail');
    const bare = installed() as { webhooks: { clientConfig: Record<string, unknown> }[] };
    delete bare.webhooks[0]!.clientConfig.caBundle;
    assert.match(checkWebhookConfiguration(NS, bare as never).result.message, /namespace\.inject\.trellis\.dev has no caBundle/);
    const moved = installed() as { webhooks: { clientConfig: { service: { namespace: string } } }[] };
    moved.webhooks[1]!.clientConfig.service.namespace = 'elsewhere';
    assert.match(checkWebhookConfiguration(NS, moved as never).result.message, /pod\.inject\.trellis\.dev sends to Service elsewhere\/trellis:443\/inject/);
    const url = installed() as { webhooks: { clientConfig: Record<string, unknown> }[] };
    for (const w of url.webhooks) w.clientConfig = { url: 'https://127.0.0.1:9443/inject', caBundle: w.clientConfig.caBundle };
    assert.equal(checkWebhookConfiguration(NS, url as never).result.status, 'warn');
  });
});

describe('sidecars against the reconcilers\' status', () => {
  const options = { image: 'registry.example/trellis:1', controlUrl: 'http://trellis.trellis-system.svc:15010', nativeSidecars: true, namespace: 'shop' };
  const pod = (name: string, phase = 'Running'): k8s.V1Pod => {
    const r = injectPod({ metadata: { name, namespace: 'shop', labels: { app: 'api' } }, spec: { containers: [{ name: 'app', image: 'x', ports: [{ containerPort: 8080 }] }] } } as PodLike, options);
    assert.ok(r.injected);
    return { ...(r.pod as k8s.V1Pod), status: { phase } };
  };
  const sidecar = (node: string, over: Partial<StatusView['sidecars'][number]> = {}) => ({ service: 'shop/api', node, connected: true, inSync: true, version: 'v1', lastRejection: null, ...over });
  const replica = (sidecars: StatusView['sidecars'], over: Partial<StatusView> = {}): ReplicaStatus => ({ source: 'r', status: { applied: { revision: 'abc', description: 'main@abc' }, attempted: { revision: 'abc', ok: true }, discovery: { synced: true, error: null }, sidecars, ...over } });

  test('each running injected pod found connected and in sync on some replica: ok; pending pods wait', () => {
    const r = checkSidecars([pod('api-0'), pod('api-1'), pod('api-2', 'Pending'), { metadata: { name: 'plain' }, spec: { containers: [{ name: 'app' }] }, status: { phase: 'Running' } }], [replica([sidecar('api-0:15006')]), replica([sidecar('api-1:15006'), sidecar('api-0:15006', { connected: false })])]);
    assert.equal(r.status, 'ok', r.message);
    assert.equal(r.message, '2 of 2 running injected pods have a connected sidecar in sync (1 more not running yet)');
  });

  test('a pod whose sidecar is not connected, or rejected its config, fails by name', () => {
    const r = checkSidecars([pod('api-0'), pod('api-1'), pod('api-2')], [replica([sidecar('api-0:15006'), sidecar('api-1:15006', { inSync: false, lastRejection: { reasons: ['TRL9001 bad route'] } })])]);
    assert.equal(r.status, 'fail');
    assert.match(r.message, /^1 of 3 running injected pods/);
    assert.match(r.message, /shop\/api-1 \(shop\/api\) is not in sync: it rejected the config \(TRL9001 bad route\)/);
    assert.match(r.message, /shop\/api-2 \(shop\/api\) is not connected to any reconciler replica/);
  });

  test('replica status: each must answer and have applied; different revisions warn', () => {
    assert.equal(checkReconcilerStatus(NS, [replica([])]).status, 'ok');
    assert.equal(checkReconcilerStatus(NS, [replica([]), { source: 'pod trellis-b', error: 'cannot be reached: ECONNREFUSED' }]).status, 'fail');
    assert.match(checkReconcilerStatus(NS, [replica([], { applied: null })]).message, /has applied no revision yet/);
    assert.equal(checkReconcilerStatus(NS, [replica([]), replica([], { applied: { revision: 'def', description: 'main@def' } })]).status, 'warn');
    assert.equal(checkReconcilerStatus(NS, []).status, 'fail');
  });
});

describe('trellis check, the command', () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'trellis-check-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const io = { stdout: { write: (s: string) => ((out += s), true) }, stderr: { write: (s: string) => ((err += s), true) }, env: {} } as never;
    const code = await main(args, io);
    return { code, out, err };
  }

  test('an API server that is not there fails the first check at once, with exit 1 (text and json)', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const file = join(dir, 'kubeconfig');
    writeFileSync(file, `apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:${port}"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n`);
    const started = Date.now();
    const text = await run(['check', '--kubeconfig', file]);
    assert.equal(text.code, 1);
    assert.match(text.out, /^✖ kubernetes-api {2}cannot reach the Kubernetes API server at https:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/m);
    assert.match(text.out, /Trellis is not working: 0 ok, 0 warnings, 1 failed/);
    assert.ok(Date.now() - started < 5000);
    const json = await run(['check', '--kubeconfig', file, '--format', 'json']);
    assert.equal(json.code, 1);
    const parsed = JSON.parse(json.out) as { ok: boolean; checks: { name: string; status: string; message: string; hint: string | null }[] };
    assert.equal(parsed.ok, false);
    assert.deepEqual(Object.keys(parsed.checks[0]!), ['name', 'status', 'message', 'hint']);
    assert.equal(parsed.checks[0]!.status, 'fail');
  });

  test('usage errors exit 2', async () => {
    assert.equal((await run(['check', '--namespace', 'Not_A_Name'])).code, 2);
    assert.equal((await run(['check', '--reconciler-url', 'ftp://x'])).code, 2);
    assert.equal((await run(['check', '--webhook-url', 'http://x'])).code, 2);
    assert.equal((await run(['check', '--format', 'yaml'])).code, 2);
  });

  test('cluster data in a message cannot drive the terminal', () => {
    const line = renderCheck({ name: 'sidecars', status: 'fail', message: 'shop/\x1b]0;owned\x07api-0\nforged ✔ line', hint: 'see \u202epod' }, false);
    assert.equal(line, '✖ sidecars  shop/\\x1b]0;owned\\x07api-0\\nforged ✔ line\n    hint: see \\u202epod\n');
  });
});
