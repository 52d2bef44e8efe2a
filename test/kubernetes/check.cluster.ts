/**
 * `trellis check` against a real kube-apiserver with `trellis install` applied.
 *
 * No kubelet or controllers run here, so the test plays their part where a check reads what
 * they write: the Deployment's status (through the status subresource, as the deployment
 * controller would), an injected pod's phase (as its kubelet would), and the processes a pod
 * would run — a real reconciler, asked directly with --reconciler-url (this machine cannot
 * reach a pod through the API server's proxy), which creates the mesh root Secret on start
 * (`--ca-secret`), and a real sidecar connected to it under the pod's host name. The webhook is called on loopback with the installed serving certificate.
 *
 * Then each kind of breakage is made for real and must turn its check (and the exit code) to
 * a failure: a webhook Secret from another CA, an expired chain, a rule removed from the
 * installed ClusterRole, a replica not ready, an injected pod without a connected sidecar.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { injectPod, type PodLike } from '../../src/kubernetes/inject.ts';
import { issueServingCertificate, serviceDnsNames } from '../../src/kubernetes/serving-certificate.ts';
import { startWebhookServer, type WebhookServer } from '../../src/kubernetes/webhook.ts';
import { clusterSpec, createNamespace, createObjects, installObjects, startKubeEnv, trellisCli as cli, type KubeEnv, type KubeObject } from '../helpers/kube-env.ts';
import { sidecarReady, startTrellis, stopProcesses, tempDir, type Proc } from '../helpers/processes.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

const NS = 'trellis-system';
const SPEC = clusterSpec('shop', 'shop', 'ports: [{ port: 80, targetPort: 8080 }], endpoints: { static: [{ address: 127.0.0.1, port: 16006 }] }');
const EXPECTED = ['kubernetes-api', 'kubernetes-version', 'namespace', 'reconciler-rbac', 'reconciler-deployment', 'webhook-configuration', 'webhook-certificate', 'webhook-reachable', 'mesh-ca', 'reconciler-status', 'sidecars'];

type Obj = KubeObject;
interface Report {
  ok: boolean;
  checks: { name: string; status: 'ok' | 'warn' | 'fail'; message: string; hint: string | null }[];
}

let env: KubeEnv;
let objects: k8s.KubernetesObjectApi;
let core: k8s.CoreV1Api;
let installed: Obj[];
let reconciler: Proc;
let webhook: WebhookServer;

/** `trellis check` against this cluster, the reconciler and the webhook on loopback, as JSON. */
async function check(): Promise<{ code: number; report: Report; byName: (n: string) => Report['checks'][number] }> {
  const { code, out, err } = await cli(['check', '--kubeconfig', env.kubeconfigPath, '--reconciler-url', `http://127.0.0.1:${reconciler.listening.port}`, '--webhook-url', `https://127.0.0.1:${webhook.port}`, '--format', 'json']);
  assert.equal(err, '');
  const report = JSON.parse(out) as Report;
  return { code, report, byName: (n) => report.checks.find((c) => c.name === n)! };
}

/** Polls until `trellis check` reports `name` as `status` (RBAC and webhook caches follow a change within a moment). */
async function untilCheck(name: string, status: 'ok' | 'warn' | 'fail'): Promise<Awaited<ReturnType<typeof check>>> {
  let last: Awaited<ReturnType<typeof check>> | undefined;
  await waitFor(async () => (last = await check()).byName(name)?.status === status, `check ${name} to be ${status} (last: ${JSON.stringify(last?.byName(name))})`, 15_000);
  return last!;
}

const apps = () => env.kubeConfig.makeApiClient(k8s.AppsV1Api);
const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

/** The deployment controller's part: the Deployment's status says `ready` of its replicas are ready, all on the current template. */
async function setDeploymentStatus(ready: number, updated = 2, total = 2): Promise<void> {
  const d = await apps().readNamespacedDeployment({ name: 'trellis', namespace: NS });
  await apps().patchNamespacedDeploymentStatus(
    { name: 'trellis', namespace: NS, body: { status: { observedGeneration: d.metadata!.generation, replicas: total, updatedReplicas: updated, readyReplicas: ready, availableReplicas: ready } } },
    mergePatch,
  );
}

/** An injected pod in shop, Running as a kubelet would report it. */
async function runningInjectedPod(name: string): Promise<void> {
  const plain: PodLike = { metadata: { name, namespace: 'shop', labels: { app: 'api' } }, spec: { serviceAccountName: 'default', containers: [{ name: 'app', image: 'registry.example/api:1', ports: [{ containerPort: 8080 }] }] } };
  const injected = injectPod(plain, { image: 'registry.example/trellis:test', controlUrl: `http://trellis.${NS}.svc:15010`, nativeSidecars: true, namespace: 'shop' });
  assert.ok(injected.injected);
  await core.createNamespacedPod({ namespace: 'shop', body: injected.pod as k8s.V1Pod });
  await core.patchNamespacedPodStatus({ name, namespace: 'shop', body: { status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] } } }, mergePatch);
}

function secretOf(name: string): Obj {
  return structuredClone(installed.find((o) => o.kind === 'Secret' && o.metadata!.name === name)!);
}

before(async () => {
  env = await startKubeEnv();
  objects = k8s.KubernetesObjectApi.makeApiClient(env.kubeConfig);
  core = env.kubeConfig.makeApiClient(k8s.CoreV1Api);
  installed = await installObjects(NS);
  await createObjects(env, installed);
  await createNamespace(env, 'shop', ['default']);
  await setDeploymentStatus(2);

  // The webhook as a replica serves it: the installed serving certificate, on loopback.
  const tls = secretOf('trellis-webhook-tls') as Obj & { data: Record<string, string> };
  const pem = (k: string) => Buffer.from(tls.data[k]!, 'base64').toString('utf8');
  webhook = await startWebhookServer({ cert: pem('tls.crt'), key: pem('tls.key'), port: 0, host: '127.0.0.1', options: { image: 'registry.example/trellis:test', controlUrl: `http://trellis.${NS}.svc:15010`, nativeSidecars: true } });

  // A replica and the sidecar of pod shop/api-0, which reports itself by the pod's host name.
  const spec = tempDir();
  writeFileSync(join(spec, 'mesh.yaml'), SPEC);
  // It creates the mesh root Secret trellis-ca on start, as the installed Deployment's replicas do (install prints none).
  reconciler = await startTrellis(['reconcile', '--dir', spec, '--listen', '0', '--kubernetes', '--kubeconfig', env.kubeconfigPath, '--ca-secret', `${NS}/trellis-ca`]);
  await runningInjectedPod('api-0');
  const sidecar = await startTrellis(['sidecar', '--control', `http://127.0.0.1:${reconciler.listening.port}`, '--service', 'shop/api', '--node', 'api-0:15006', '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0']);
  await waitFor(() => sidecarReady(sidecar.listening.admin!), 'the sidecar of api-0 to be configured', 15_000);
});

after(async () => {
  await webhook?.close();
  await stopProcesses();
  await env?.stop();
});

describe('trellis check on a cluster with trellis install applied', () => {
  test('everything a cluster without a kubelet can show passes: exit 0, one ✔ line per check', async () => {
    const { code, out } = await cli(['check', '--kubeconfig', env.kubeconfigPath, '--reconciler-url', `http://127.0.0.1:${reconciler.listening.port}`, '--webhook-url', `https://127.0.0.1:${webhook.port}`]);
    assert.equal(code, 0, out);
    const lines = out.trimEnd().split('\n');
    assert.deepEqual(lines.slice(0, -1).map((l) => l.split(' ').slice(0, 2).join(' ')), EXPECTED.map((n) => `✔ ${n}`), out);
    assert.match(out, /✔ kubernetes-version {2}Kubernetes v1\.3\d\.\d+\S* runs native sidecars/);
    assert.match(out, /✔ reconciler-rbac {2}ServiceAccount trellis-system\/trellis-reconciler has every permission trellis install grants \(15\)/);
    assert.match(out, /✔ reconciler-deployment {2}Deployment trellis-system\/trellis: 2 of 2 replicas ready/);
    assert.match(out, /✔ webhook-certificate {2}the webhook certificate names trellis\.trellis-system\.svc, is signed by its caBundle and is valid until \d{4}-/);
    assert.match(out, /✔ sidecars {2}1 of 1 running injected pods have a connected sidecar in sync/);
    assert.equal(lines.at(-1), `Trellis is working: ${EXPECTED.length} ok, 0 warnings, 0 failed`);
  });

  test('--format json: { ok, checks: [{ name, status, message, hint }] }', async () => {
    const { code, report } = await check();
    assert.equal(code, 0);
    assert.equal(report.ok, true);
    assert.deepEqual(report.checks.map((c) => c.name), EXPECTED);
    for (const c of report.checks) {
      assert.deepEqual(Object.keys(c), ['name', 'status', 'message', 'hint']);
      assert.equal(c.status, 'ok');
      assert.equal(c.hint, null);
    }
  });

  test('a webhook Secret with a certificate from another CA fails webhook-certificate (and the served one fails webhook-reachable): exit 1', async () => {
    const other = await issueServingCertificate({ dnsNames: serviceDnsNames('trellis', NS) });
    const secret = secretOf('trellis-webhook-tls') as Obj & { data: Record<string, string> };
    secret.data = { 'tls.crt': Buffer.from(other.certificatePem).toString('base64'), 'tls.key': Buffer.from(other.privateKeyPem).toString('base64') };
    await objects.replace(secret);
    webhook.setCertificate({ cert: other.certificatePem, key: other.privateKeyPem });
    try {
      const { code, report, byName } = await check();
      assert.equal(code, 1);
      assert.equal(report.ok, false);
      assert.equal(byName('webhook-certificate').status, 'fail');
      assert.match(byName('webhook-certificate').message, /is not signed by the caBundle of MutatingWebhookConfiguration trellis-sidecar-injector \(CN=Trellis injection webhook CA\): the API server refuses the webhook's TLS/);
      assert.match(byName('webhook-certificate').hint!, /trellis install --only webhook \| kubectl apply -f -, then kubectl -n trellis-system rollout restart deployment\/trellis/);
      assert.equal(byName('webhook-reachable').status, 'fail');
      assert.deepEqual(report.checks.filter((c) => c.status !== 'ok').map((c) => c.name), ['webhook-certificate', 'webhook-reachable']);
    } finally {
      await objects.replace(secretOf('trellis-webhook-tls'));
      const tls = secretOf('trellis-webhook-tls') as Obj & { data: Record<string, string> };
      webhook.setCertificate({ cert: Buffer.from(tls.data['tls.crt']!, 'base64').toString(), key: Buffer.from(tls.data['tls.key']!, 'base64').toString() });
    }
    assert.equal((await check()).code, 0);
  });

  test('an expired webhook chain (caBundle and Secret both replaced) fails webhook-certificate: exit 1', async () => {
    const elevenYearsAgo = Date.now() - 11 * 365 * 24 * 3600_000;
    const expired = await issueServingCertificate({ dnsNames: serviceDnsNames('trellis', NS) }, undefined, elevenYearsAgo);
    const mwcRef = { apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: { name: 'trellis-sidecar-injector' } };
    const original = (await objects.read(mwcRef)) as Obj & { webhooks: { clientConfig: { caBundle: string } }[] };
    const mwc = structuredClone(original);
    for (const w of mwc.webhooks) w.clientConfig.caBundle = Buffer.from(expired.caPem).toString('base64');
    await objects.replace(mwc);
    const secret = secretOf('trellis-webhook-tls') as Obj & { data: Record<string, string> };
    secret.data = { 'tls.crt': Buffer.from(expired.certificatePem).toString('base64'), 'tls.key': Buffer.from(expired.privateKeyPem).toString('base64') };
    await objects.replace(secret);
    try {
      const { code, byName } = await check();
      assert.equal(code, 1);
      assert.equal(byName('webhook-certificate').status, 'fail');
      assert.match(byName('webhook-certificate').message, /^the webhook certificate chain: CN=\S+ expired on \d{4}-/);
    } finally {
      const now = (await objects.read(mwcRef)) as Obj & { webhooks: { clientConfig: { caBundle: string } }[] };
      for (const [i, w] of now.webhooks.entries()) w.clientConfig.caBundle = original.webhooks[i]!.clientConfig.caBundle;
      await objects.replace(now);
      await objects.replace(secretOf('trellis-webhook-tls'));
    }
    await untilCheck('webhook-certificate', 'ok');
  });

  test('a rule removed from the installed ClusterRole fails reconciler-rbac, naming the permission and the rule: exit 1', async () => {
    const ref = { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: 'trellis-reconciler' } };
    const role = (await objects.read(ref)) as Obj & { rules: { resources: string[] }[] };
    const original = structuredClone(role.rules);
    role.rules = role.rules.filter((r) => !r.resources.includes('tokenreviews'));
    await objects.replace(role);
    try {
      const { code, byName } = await untilCheck('reconciler-rbac', 'fail');
      assert.equal(code, 1);
      const rbac = byName('reconciler-rbac');
      assert.equal(rbac.message, 'ServiceAccount trellis-system/trellis-reconciler may not create tokenreviews.authentication.k8s.io (cluster-wide)');
      assert.match(rbac.hint!, /^missing rule: ClusterRole trellis-reconciler needs \{apiGroups: \[authentication\.k8s\.io\], resources: \[tokenreviews\], verbs: \[create\]\}\. Apply the install again/);
    } finally {
      const now = (await objects.read(ref)) as Obj & { rules: unknown[] };
      now.rules = original;
      await objects.replace(now);
    }
    await untilCheck('reconciler-rbac', 'ok');
  });

  test('a replica not ready, and a rollout half done, fail reconciler-deployment: exit 1', async () => {
    await setDeploymentStatus(1);
    let r = await check();
    assert.equal(r.code, 1);
    assert.equal(r.byName('reconciler-deployment').message, 'Deployment trellis-system/trellis: 1 of 2 replicas ready');
    await setDeploymentStatus(2, 1, 3);
    r = await check();
    assert.match(r.byName('reconciler-deployment').message, /a rollout is under way: 1 of 3 replicas run the current pod template/);
    await setDeploymentStatus(2);
    assert.equal((await check()).byName('reconciler-deployment').status, 'ok');
  });

  test('an injected pod running without a connected sidecar fails sidecars, naming the pod: exit 1', async () => {
    await runningInjectedPod('api-1');
    try {
      const { code, byName } = await check();
      assert.equal(code, 1);
      assert.equal(byName('sidecars').message, '1 of 2 running injected pods have a connected sidecar in sync; shop/api-1 (shop/api) is not connected to any reconciler replica');
    } finally {
      await core.deleteNamespacedPod({ name: 'api-1', namespace: 'shop', gracePeriodSeconds: 0 });
    }
    assert.equal((await check()).byName('sidecars').status, 'ok');
  });

  test('a missing mesh root fails mesh-ca; a missing namespace stops the checks there', async () => {
    await core.deleteNamespacedSecret({ name: 'trellis-ca', namespace: NS });
    const { code, byName } = await check();
    assert.equal(code, 1);
    assert.match(byName('mesh-ca').message, /^Secret trellis-system\/trellis-ca is missing/);
    const other = await cli(['check', '--kubeconfig', env.kubeconfigPath, '--namespace', 'nowhere', '--format', 'json']);
    const report = JSON.parse(other.out) as Report;
    assert.equal(other.code, 1);
    assert.deepEqual(report.checks.map((c) => `${c.name} ${c.status}`), ['kubernetes-api ok', 'kubernetes-version ok', 'namespace fail']);
    assert.match(report.checks[2]!.hint!, /trellis install --namespace nowhere --repo URL \| kubectl apply -f -/);
  });
});
