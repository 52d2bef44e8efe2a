/**
 * `trellis install` / `uninstall` without a cluster: the objects and their least-privilege
 * rules, the generated certificates, and `deploy/` kept equal to the install output (its
 * files are rendered by this test: `UPDATE_GOLDEN=1` rewrites them, like the other goldens).
 * The cluster test (install.cluster.ts) applies the same output to a real API server.
 */
import { after, describe, test } from 'node:test';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { main, buildProgram } from '../../src/cli/main.ts';
import { CA_SECRET, PLACEHOLDER_REPO, WEBHOOK_CONFIGURATION, WEBHOOK_SECRET, installObjects, reconcilerArgs, renderObjects } from '../../src/kubernetes/install.ts';
import { assertGolden } from '../helpers/golden.ts';
import { startTrellis, stopProcesses, tempDir } from '../helpers/processes.ts';
import { closedPort, waitFor } from '../helpers/sidecar-harness.ts';
import { issueServingCertificate } from '../../src/kubernetes/serving-certificate.ts';

const DEPLOY = new URL('../../deploy/', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
const DEPLOY_OPTIONS = { namespace: 'trellis-system', repo: PLACEHOLDER_REPO, branch: 'main', image: `localhost/trellis:${pkg.version}` };
const DEPLOY_FILES = ['namespace.yaml', 'rbac.yaml', 'reconciler.yaml'] as const;

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; [k: string]: unknown };

async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io = { stdout: { write: (s: string) => ((out += s), true) }, stderr: { write: (s: string) => ((err += s), true) }, env } as never;
  const code = await main(args, io);
  return { code, out, err };
}

function docs(text: string): Obj[] {
  return (parseAllDocuments(text) as { toJS(): unknown }[]).map((d) => d.toJS() as Obj).filter((o) => o !== null);
}

const holdsKeys = (o: Obj) => (o.kind === 'Secret' && o.metadata.name === WEBHOOK_SECRET) || o.kind === 'MutatingWebhookConfiguration';

test('deploy/ is the install output with a placeholder repository and without the webhook objects holding its generated key', async () => {
  const header = '# Rendered from src/kubernetes/install.ts (what `trellis install` prints) by\n# test/kubernetes/install.test.ts; do not edit: change the code and run UPDATE_GOLDEN=1.\n';
  for (const file of DEPLOY_FILES) {
    assertGolden(join(DEPLOY, file), renderObjects(installObjects(DEPLOY_OPTIONS).filter((o) => o.file === file), header));
  }
  const kustomization = parse(readFileSync(join(DEPLOY, 'kustomization.yaml'), 'utf8')) as { resources: string[] };
  assert.deepEqual(kustomization.resources, [...DEPLOY_FILES]);
  const committed = kustomization.resources.flatMap((f) => docs(readFileSync(join(DEPLOY, f), 'utf8')));
  const { code, out } = await cli(['install', '--repo', PLACEHOLDER_REPO]);
  assert.equal(code, 0);
  const printed = docs(out);
  assert.deepEqual(committed, printed.filter((o) => !holdsKeys(o)));
  assert.deepEqual(printed.filter(holdsKeys).map((o) => `${o.kind}/${o.metadata.name}`), [`Secret/${WEBHOOK_SECRET}`, `MutatingWebhookConfiguration/${WEBHOOK_CONFIGURATION}`]);
});

test('RBAC: read EndpointSlices, Services, Pods and create TokenReviews cluster-wide; the bootstrap Lease and only the trellis-ca Secret in its namespace', async () => {
  const objects = docs((await cli(['install', '--repo', 'https://example.com/mesh.git', '--namespace', 'mesh'])).out);
  const clusterRole = objects.find((o) => o.kind === 'ClusterRole') as Obj & { rules: { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[] };
  assert.deepEqual(clusterRole.rules, [
    { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: [''], resources: ['services', 'pods'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
  ]);
  const role = objects.find((o) => o.kind === 'Role') as typeof clusterRole;
  assert.equal(role.metadata.namespace, 'mesh');
  assert.deepEqual(role.rules, [
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['trellis-ca-bootstrap'], verbs: ['get', 'update'] },
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
    { apiGroups: [''], resources: ['secrets'], resourceNames: [CA_SECRET], verbs: ['get'] },
    { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
  ]);
  assert.ok(!JSON.stringify(objects.filter((o) => o.kind.endsWith('Role'))).includes('"*"'), 'no wildcards');
  for (const binding of objects.filter((o) => o.kind.endsWith('Binding')) as (Obj & { subjects: unknown[] })[]) {
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'trellis-reconciler', namespace: 'mesh' }]);
  }
});

test('the Deployment: 2 replicas, probes, resources, non-root and read-only, spread; the PDB keeps one; the Service maps 443 to the webhook', async () => {
  const objects = docs((await cli(['install', '--repo', 'https://example.com/mesh.git', '--branch', 'prod', '--path', 'mesh', '--image', 'registry.example.com/trellis:1'])).out);
  const d = objects.find((o) => o.kind === 'Deployment') as any;
  assert.equal(d.spec.replicas, 2);
  const pod = d.spec.template.spec;
  const c = pod.containers[0];
  assert.equal(c.image, 'registry.example.com/trellis:1');
  assert.deepEqual(c.args.slice(0, 8), ['reconcile', '--kubernetes', '--repo', 'https://example.com/mesh.git', '--branch', 'prod', '--path', 'mesh']);
  assert.equal(c.args[c.args.indexOf('--listen') + 1], '0.0.0.0:15010');
  assert.equal(c.args[c.args.indexOf('--inject-image') + 1], 'registry.example.com/trellis:1');
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory);
  assert.deepEqual(c.securityContext, { runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } });
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.ok(pod.topologySpreadConstraints.length >= 1);
  assert.equal(d.spec.template.metadata.labels['trellis.dev/inject'], 'disabled', 'the reconciler is never injected');
  const pdb = objects.find((o) => o.kind === 'PodDisruptionBudget') as any;
  assert.equal(pdb.spec.minAvailable, 1);
  assert.deepEqual(pdb.spec.selector.matchLabels, d.spec.selector.matchLabels);
  const svc = objects.find((o) => o.kind === 'Service') as any;
  assert.deepEqual(svc.spec.ports.map((p: any) => [p.port, p.targetPort]), [[15010, 'control'], [443, 'webhook']]);
  assert.deepEqual(c.ports.map((p: any) => [p.name, p.containerPort]), [['control', 15010], ['webhook', 15443]]);
});

test('the webhook configuration: Ignore, side-effect free, v1, 5 s, never the system namespaces or its own; its caBundle verifies the serving Secret', async () => {
  const objects = docs((await cli(['install', '--repo', 'https://example.com/mesh.git', '--namespace', 'mesh'])).out);
  const mwc = objects.find((o) => o.kind === 'MutatingWebhookConfiguration') as any;
  assert.equal(mwc.metadata.name, 'trellis-sidecar-injector');
  assert.equal(mwc.webhooks.length, 2);
  for (const w of mwc.webhooks) {
    assert.equal(w.failurePolicy, 'Ignore');
    assert.equal(w.sideEffects, 'None');
    assert.deepEqual(w.admissionReviewVersions, ['v1']);
    assert.equal(w.reinvocationPolicy, 'Never');
    assert.equal(w.timeoutSeconds, 5);
    assert.deepEqual(w.clientConfig.service, { name: 'trellis', namespace: 'mesh', path: '/inject', port: 443 });
    assert.deepEqual(w.namespaceSelector.matchExpressions[1], { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', 'kube-public', 'kube-node-lease', 'mesh'] });
  }
  const secret = objects.find((o) => o.metadata.name === WEBHOOK_SECRET) as any;
  const cert = new X509Certificate(Buffer.from(secret.data['tls.crt'], 'base64'));
  const ca = new X509Certificate(Buffer.from(mwc.webhooks[0].clientConfig.caBundle, 'base64'));
  assert.ok(cert.verify(ca.publicKey), 'signed by the caBundle CA');
  assert.equal(cert.checkHost('trellis.mesh.svc'), 'trellis.mesh.svc');
});

test('no mesh root key in the output: the only private key is the webhook\'s serving key; the reconciler keeps the root in Secret trellis-ca (--ca-secret)', async () => {
  const { out } = await cli(['install', '--repo', 'https://example.com/mesh.git', '--namespace', 'mesh']);
  const objects = docs(out);
  const keys = objects.flatMap((o) => Object.entries((o.data ?? {}) as Record<string, string>).filter(([, v]) => Buffer.from(v, 'base64').toString().includes('PRIVATE KEY')).map(([k]) => `${o.kind}/${o.metadata.name}:${k}`));
  assert.deepEqual(keys, [`Secret/${WEBHOOK_SECRET}:tls.key`]);
  assert.doesNotMatch(out, /PRIVATE KEY/);
  assert.ok(!objects.some((o) => o.metadata.name === CA_SECRET), 'the mesh root Secret is made in the cluster');
  const webhookCert = new X509Certificate(Buffer.from((objects.find((o) => o.metadata.name === WEBHOOK_SECRET) as any).data['tls.crt'], 'base64'));
  assert.equal(webhookCert.ca, false, 'the key printed is a serving key, not a CA');
  const d = objects.find((o) => o.kind === 'Deployment') as any;
  const args: string[] = d.spec.template.spec.containers[0].args;
  assert.equal(args[args.indexOf('--ca-secret') + 1], 'mesh/trellis-ca');
  assert.ok(!args.includes('--ca-cert') && !args.includes('--ca-key') && !args.includes('--ca-dir'));
  assert.ok(!JSON.stringify(d.spec.template.spec.volumes).includes(CA_SECRET), 'no volume of the root Secret');
});

test('--only webhook prints just the webhook\'s key-holding objects; --only ca is gone and says how to bring a root; --repo is required otherwise; bad values are usage errors', async () => {
  const webhook = docs((await cli(['install', '--only', 'webhook'])).out);
  assert.deepEqual(webhook.map((o) => `${o.kind}/${o.metadata.name}`), [`Secret/${WEBHOOK_SECRET}`, `MutatingWebhookConfiguration/${WEBHOOK_CONFIGURATION}`]);
  const ca = await cli(['install', '--only', 'ca']);
  assert.equal(ca.code, 2);
  assert.equal(ca.out, '');
  assert.match(ca.err, /kubectl -n NAMESPACE create secret tls trellis-ca --cert=ca\.crt --key=ca\.key/);
  assert.equal((await cli(['install'])).code, 2);
  assert.equal((await cli(['install', '--only', 'everything'])).code, 2);
  assert.equal((await cli(['install', '--repo', 'x', '--namespace', 'Bad_NS'])).code, 2);
});

test('uninstall names every installed object and what the reconciler created (root Secret, bootstrap Lease), the webhook first and the namespace last', async () => {
  const installed = docs((await cli(['install', '--repo', 'https://example.com/mesh.git', '--namespace', 'mesh'])).out);
  const { code, out } = await cli(['uninstall', '--namespace', 'mesh']);
  assert.equal(code, 0);
  const removed = docs(out);
  const ref = (o: Obj) => ({ apiVersion: o.apiVersion, kind: o.kind, metadata: { name: o.metadata.name, ...(o.metadata.namespace ? { namespace: o.metadata.namespace } : {}) } });
  const created = [
    { apiVersion: 'v1', kind: 'Secret', metadata: { name: CA_SECRET, namespace: 'mesh' } },
    { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'trellis-ca-bootstrap', namespace: 'mesh' } },
  ];
  assert.deepEqual(removed, [ref(installed[0]!), ...created, ...installed.slice(1).map(ref)].reverse());
  assert.equal(removed[0]!.kind, 'MutatingWebhookConfiguration');
  assert.equal(removed.at(-1)!.kind, 'Namespace');
});

test('every flag the Deployment passes is one trellis reconcile accepts', () => {
  const program = buildProgram({ stdout: process.stdout, stderr: process.stderr, env: {} } as never, () => {});
  const known = new Set(program.commands.find((c) => c.name() === 'reconcile')!.options.map((o) => o.long));
  assert.deepEqual(reconcilerArgs(DEPLOY_OPTIONS).filter((a) => a.startsWith('--') && !known.has(a)), []);
});

describe('trellis reconcile --webhook-listen (a real process)', () => {
  after(() => stopProcesses());

  /** POSTs an AdmissionReview for a pod in shop over TLS trusting only `caPem`; returns the response and the server's certificate. */
  function review(port: number, caPem: string): Promise<{ response: { allowed: boolean; patch?: string }; serial: string }> {
    const body = JSON.stringify({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: { uid: 'u1', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'shop', object: { metadata: { name: 'api-0', labels: { app: 'api' } }, spec: { containers: [{ name: 'app', image: 'a', ports: [{ containerPort: 8080 }] }] } } },
    });
    return new Promise((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port, path: '/inject', method: 'POST', ca: caPem, servername: 'localhost', agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ response: (JSON.parse(text) as { response: { allowed: boolean; patch?: string } }).response, serial: (res.socket as TLSSocket).getPeerCertificate().serialNumber }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  test('serves the injection webhook with the given certificate, logs webhook_listening apart from the control port, and serves a rewritten certificate without a restart', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'spec'));
    writeFileSync(join(dir, 'spec', 'mesh.yaml'), 'apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: { name: t }\nspec: { trustDomain: t.local }\n');
    const first = await issueServingCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
    writeFileSync(join(dir, 'tls.crt'), first.certificatePem);
    writeFileSync(join(dir, 'tls.key'), first.privateKeyPem);
    const reconciler = await startTrellis(['reconcile', '--dir', join(dir, 'spec'), '--listen', '0', '--webhook-listen', '127.0.0.1:0', '--webhook-cert', join(dir, 'tls.crt'), '--webhook-key', join(dir, 'tls.key'), '--inject-image', 'registry.example/trellis:1', '--inject-control-url', 'http://trellis.trellis-system.svc:15010']);
    const line = (type: string) => reconciler.output().split('\n').find((l) => l.includes(`"type":"${type}"`));
    await waitFor(() => line('webhook_listening') !== undefined, 'webhook_listening in the log');
    const webhookPort = (JSON.parse(line('webhook_listening')!) as { port: number }).port;
    assert.notEqual(webhookPort, reconciler.listening.port, 'the "listening" line still names the control port');
    assert.equal((await fetch(`http://127.0.0.1:${reconciler.listening.port}/healthz`)).status, 200);

    const { response, serial } = await review(webhookPort, first.caPem);
    assert.equal(response.allowed, true);
    const patch = JSON.parse(Buffer.from(response.patch!, 'base64').toString()) as { path: string; value: { args?: string[]; image?: string }[] }[];
    const proxy = patch.find((p) => p.path === '/spec/initContainers')!.value[0]!;
    assert.equal(proxy.image, 'registry.example/trellis:1');
    assert.equal(proxy.args![proxy.args!.indexOf('--control') + 1], 'http://trellis.trellis-system.svc:15010');
    assert.equal(proxy.args![proxy.args!.indexOf('--service') + 1], 'shop/api');
    await waitFor(() => line('injection')?.includes('"outcome":"injected"') === true, 'the injection logged');

    // A renewed certificate from another CA, written as a Secret volume update would land.
    const second = await issueServingCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
    writeFileSync(join(dir, 'tls.key'), second.privateKeyPem);
    writeFileSync(join(dir, 'tls.crt'), second.certificatePem);
    await waitFor(async () => (await review(webhookPort, second.caPem).catch(() => undefined))?.serial === new X509Certificate(second.certificatePem).serialNumber, 'the renewed certificate to be served');
    assert.notEqual(serial, new X509Certificate(second.certificatePem).serialNumber);
    reconciler.child.kill('SIGTERM');
    assert.equal(await reconciler.exited, 0);
  });

  test('with --kubernetes and an API server that never answers /version, the reconciler stops (exit 1, kubernetes_version_unknown) rather than guess the sidecar form', { timeout: 30_000 }, async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'spec'));
    writeFileSync(join(dir, 'spec', 'mesh.yaml'), 'apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: { name: t }\nspec: { trustDomain: t.local }\n');
    const tls = await issueServingCertificate({ dnsNames: ['localhost'] });
    writeFileSync(join(dir, 'tls.crt'), tls.certificatePem);
    writeFileSync(join(dir, 'tls.key'), tls.privateKeyPem);
    const port = await closedPort();
    writeFileSync(
      join(dir, 'kubeconfig'),
      `apiVersion: v1\nkind: Config\nclusters: [{ name: c, cluster: { server: "https://127.0.0.1:${port}", insecure-skip-tls-verify: true } }]\nusers: [{ name: u, user: { token: t } }]\ncontexts: [{ name: c, context: { cluster: c, user: u } }]\ncurrent-context: c\n`,
    );
    const started = startTrellis(['reconcile', '--dir', join(dir, 'spec'), '--listen', '0', '--kubernetes', '--kubeconfig', join(dir, 'kubeconfig'), '--webhook-listen', '127.0.0.1:0', '--webhook-cert', join(dir, 'tls.crt'), '--webhook-key', join(dir, 'tls.key'), '--inject-image', 'x', '--inject-control-url', 'http://trellis.trellis-system.svc:15010']);
    await assert.rejects(started, /exited with 1: [\s\S]*kubernetes_version_error[\s\S]*kubernetes_version_unknown: could not read the API server's version to choose native or classic sidecars/);
  });

  test('--ca-secret takes [NAMESPACE/]NAME, needs --kubernetes, and is the only source of the root (exit 2 otherwise)', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'kubeconfig'), 'apiVersion: v1\nkind: Config\nclusters: [{ name: c, cluster: { server: "https://127.0.0.1:1" } }]\nusers: [{ name: u, user: { token: t } }]\ncontexts: [{ name: c, context: { cluster: c, user: u, namespace: mesh } }]\ncurrent-context: c\n');
    const env = { TRELLIS_CONTROL_TOKEN: 'test' };
    const base = ['reconcile', '--dir', dir, '--listen', '0'];
    const k8sArgs = ['--kubernetes', '--kubeconfig', join(dir, 'kubeconfig')];
    const alone = await cli([...base, '--ca-secret', 'trellis-ca'], env);
    assert.equal(alone.code, 2);
    assert.match(alone.err, /--ca-secret need --kubernetes/);
    const both = await cli([...base, ...k8sArgs, '--ca-secret', 'trellis-ca', '--ca-dir', dir], env);
    assert.equal(both.code, 2);
    assert.match(both.err, /give the mesh root one way/);
    for (const bad of ['a/b/c', 'Trellis-CA', '/x', 'ns/']) {
      const r = await cli([...base, ...k8sArgs, '--ca-secret', bad], env);
      assert.equal(r.code, 2, bad);
      assert.match(r.err, /--ca-secret takes \[NAMESPACE\/\]NAME of a Secret/, bad);
    }
  });

  test('--webhook-listen needs the other four flags, and they need it (exit 2)', async () => {
    const base = ['reconcile', '--dir', tempDir(), '--listen', '0'];
    const env = { TRELLIS_CONTROL_TOKEN: 'test' };
    const needs = await cli([...base, '--webhook-listen', '0', '--webhook-cert', 'c.pem'], env);
    assert.equal(needs.code, 2);
    assert.match(needs.err, /--webhook-listen needs --webhook-key, --inject-image, --inject-control-url/);
    const alone = await cli([...base, '--inject-image', 'x'], env);
    assert.equal(alone.code, 2);
    assert.match(alone.err, /--inject-image configure the injection webhook: add --webhook-listen/);
  });
});
