/**
 * `trellis install` and sidecar injection against a real kube-apiserver (no kubelet: the test
 * plays its part).
 *
 * 1. Every object `trellis install` prints is created through the API and read back with every
 *    field it sent (a misspelt field would be dropped by the server and fail here).
 * 2. The installed RBAC is enough: a real `trellis reconcile --kubernetes` process runs with the
 *    installed ServiceAccount's own token (TokenRequest, in a kubeconfig file) and lists and
 *    watches EndpointSlices; a real sidecar, started with the command line the webhook injected,
 *    authenticates with its pod's projected-token stand-in, which the reconciler checks with a
 *    TokenReview under that same RBAC, and gets its config. A ServiceAccount without the rules
 *    gets `kubernetes_forbidden`.
 * 3. The install's own MutatingWebhookConfiguration (only its address changed to loopback, with
 *    a certificate signed by the cluster CA) sends Pods created through the API to that same
 *    reconciler process's webhook (`--webhook-listen`, native sidecars as the API server's
 *    version says), and to a classic webhook server for clusters before 1.29: native and classic, once when matched twice, never when opted out or in
 *    a namespace that is not labelled or is a system namespace; with the webhook down, pods are
 *    still created (failurePolicy Ignore).
 * 4. `trellis uninstall` deletes everything.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { injectPod, PROXY_CONTAINER, type PodLike } from '../../src/kubernetes/inject.ts';
import { issueServingCertificate } from '../../src/kubernetes/serving-certificate.ts';
import { startWebhookServer, type WebhookEvent, type WebhookServer } from '../../src/kubernetes/webhook.ts';
import { clusterSpec, createNamespace, createObjects, installObjects, kubeConfigWithToken, serviceAccountToken, startKubeEnv, trellisOutput as cli, yamlObjects as docs, type KubeEnv, type KubeObject } from '../helpers/kube-env.ts';
import { sidecarReady, startTrellis, stopProcesses, tempDir, type Proc } from '../helpers/processes.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

const NS = 'trellis-system';
const DEPLOY = new URL('../../deploy/', import.meta.url).pathname;
const run = promisify(execFile);
/** kubectl, when this machine has it (it brings kustomize). */
const kubectl = () => ['/usr/bin/kubectl', '/usr/local/bin/kubectl'].find((p) => existsSync(p));
const SPEC = clusterSpec('shop', 'shop', 'serviceAccount: api, ports: [{ port: 80, targetPort: 8080 }], endpoints: { kubernetes: {} }');

type Obj = KubeObject;

let env: KubeEnv;
let objects: k8s.KubernetesObjectApi;
let core: k8s.CoreV1Api;
let installed: Obj[];
let envFile: Record<string, string>;
let reconciler: Proc;
let specDir: string;

/** Every field of `sent` is in `got` with the same value (the server adds defaults; it must drop nothing). */
function assertKept(sent: unknown, got: unknown, path: string): void {
  if (Array.isArray(sent)) {
    assert.ok(Array.isArray(got) && got.length === sent.length, `${path}: a list of ${sent.length}, got ${JSON.stringify(got)}`);
    sent.forEach((s, i) => assertKept(s, (got as unknown[])[i], `${path}[${i}]`));
  } else if (typeof sent === 'object' && sent !== null) {
    assert.ok(typeof got === 'object' && got !== null, `${path}: missing`);
    for (const [k, v] of Object.entries(sent)) assertKept(v, (got as Record<string, unknown>)[k], `${path}.${k}`);
  } else assert.equal(got, sent, path);
}

/** A kubeconfig file that acts with `token`. */
function kubeconfigFile(dir: string, name: string, token: string): string {
  const file = join(dir, name);
  writeFileSync(file, kubeConfigWithToken(env, token).exportConfig());
  return file;
}

async function status(port: number): Promise<{ discovery?: { synced: boolean; error: string | null } } | undefined> {
  const r = await fetch(`http://127.0.0.1:${port}/status`).catch(() => undefined);
  return r?.ok ? ((await r.json()) as never) : undefined;
}

function pod(name: string, extra: { labels?: Record<string, string>; annotations?: Record<string, string> } = {}): k8s.V1Pod {
  return {
    metadata: { name, labels: { app: 'api', ...extra.labels }, ...(extra.annotations ? { annotations: extra.annotations } : {}) },
    spec: { serviceAccountName: 'api', containers: [{ name: 'app', image: 'registry.example/api:1', ports: [{ containerPort: 8080 }] }] },
  };
}

const proxies = (p: k8s.V1Pod) => [...(p.spec!.initContainers ?? []), ...p.spec!.containers].filter((c) => c.name === PROXY_CONTAINER);

before(async () => {
  env = await startKubeEnv();
  objects = k8s.KubernetesObjectApi.makeApiClient(env.kubeConfig);
  core = env.kubeConfig.makeApiClient(k8s.CoreV1Api);
  envFile = Object.fromEntries(
    readFileSync(join(env.dir, 'env'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  specDir = tempDir();
  writeFileSync(join(specDir, 'mesh.yaml'), SPEC);
  await createNamespace(env, 'shop', ['api']);
  await createNamespace(env, 'plain', ['api']);
});

after(async () => {
  await stopProcesses();
  await env?.stop();
});

describe('trellis install on a real API server', () => {
  test('every object of trellis install is accepted, and kept field for field', async () => {
    installed = await installObjects(NS);
    assert.equal(installed.length, 11);
    assert.ok(!installed.some((o) => o.metadata!.name === 'trellis-ca'), 'no mesh root in the install: the reconciler makes it');
    await createObjects(env, installed);
    for (const o of installed) {
      const got = await objects.read({ apiVersion: o.apiVersion!, kind: o.kind!, metadata: { name: o.metadata!.name!, ...(o.metadata!.namespace ? { namespace: o.metadata!.namespace } : {}) } });
      const { metadata, ...rest } = o;
      assertKept(rest, got, `${o.kind}/${o.metadata!.name}`);
      assertKept(metadata, got.metadata, `${o.kind}/${o.metadata!.name}.metadata`);
    }
  });

  test('deploy/ builds with kustomize and the API server accepts it (kubectl apply -k --dry-run=server)', { skip: kubectl() ? false : 'no kubectl on PATH' }, async () => {
    const { stdout } = await run(kubectl()!, ['--kubeconfig', env.kubeconfigPath, 'apply', '-k', DEPLOY, '--dry-run=server'], { timeout: 60_000 });
    for (const name of ['namespace/trellis-system', 'serviceaccount/trellis-reconciler', 'clusterrole.rbac.authorization.k8s.io/trellis-reconciler', 'deployment.apps/trellis', 'poddisruptionbudget.policy/trellis']) {
      assert.match(stdout, new RegExp(`${name.replace(/\./g, '\\.')} .*\\(server dry run\\)`));
    }
  });

  test('the installed RBAC is enough: a reconciler with the installed ServiceAccount\'s token and the Deployment\'s flags creates the mesh root Secret, serves the webhook, lists and watches EndpointSlices and reviews sidecar tokens', async () => {
    const dir = tempDir();
    const token = await serviceAccountToken(env, NS, 'trellis-reconciler', envFile.KUBE_SA_ISSUER!);
    // The webhook serving certificate, from the cluster CA so the API server can call this replica on loopback (below).
    const clusterCa = { certificatePem: readFileSync(envFile.KUBE_CA_FILE!, 'utf8'), keyPem: readFileSync(envFile.KUBE_CA_KEY_FILE!, 'utf8') };
    const tls = await issueServingCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] }, clusterCa);
    writeFileSync(join(dir, 'tls.crt'), tls.certificatePem);
    writeFileSync(join(dir, 'tls.key'), tls.privateKeyPem);
    const deployment = installed.find((o) => o.kind === 'Deployment') as Obj & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
    const installedArgs = deployment.spec.template.spec.containers[0]!.args;
    const arg = (flag: string) => installedArgs[installedArgs.indexOf(flag) + 1]!;
    reconciler = await startTrellis(
      [
        'reconcile', '--dir', specDir, '--listen', '0', '--kubernetes', '--kubeconfig', kubeconfigFile(dir, 'reconciler.kubeconfig', token),
        '--ca-secret', arg('--ca-secret'),
        '--webhook-listen', '127.0.0.1:0', '--webhook-cert', join(dir, 'tls.crt'), '--webhook-key', join(dir, 'tls.key'), '--inject-image', arg('--inject-image'), '--inject-control-url', arg('--inject-control-url'),
      ],
      { TRELLIS_CONTROL_TOKEN: '' },
    );
    const port = reconciler.listening.port!;
    await waitFor(async () => (await status(port))?.discovery?.synced === true, 'the discovery to list EndpointSlices with the installed RBAC', 15_000);
    assert.equal((await status(port))?.discovery?.error, null);
    assert.match(reconciler.output(), /"type":"ca_secret_created"/);
    const root = await core.readNamespacedSecret({ name: 'trellis-ca', namespace: NS });
    assert.equal(root.type, 'kubernetes.io/tls');
    await waitFor(() => reconciler.output().includes('"type":"webhook_listening"'), 'the webhook to listen');
    assert.match(reconciler.output(), /"type":"webhook_listening","port":\d+,"nativeSidecars":true/, 'the API server (1.36) runs native sidecars');

    // The same without the installed rules: a ServiceAccount with no bindings is refused.
    await core.createNamespacedServiceAccount({ namespace: NS, body: { metadata: { name: 'no-rights' } } });
    const bare = await serviceAccountToken(env, NS, 'no-rights', envFile.KUBE_SA_ISSUER!);
    const refused = await startTrellis(['reconcile', '--dir', specDir, '--listen', '0', '--kubernetes', '--kubeconfig', kubeconfigFile(dir, 'bare.kubeconfig', bare)], { TRELLIS_CONTROL_TOKEN: '' });
    await waitFor(async () => ((await status(refused.listening.port!))?.discovery?.error ?? '').includes('kubernetes_forbidden') || refused.output().includes('kubernetes_forbidden'), 'a reconciler without the rules to be refused', 15_000);
    assert.notEqual((await status(refused.listening.port!))?.discovery?.synced, true);
    refused.child.kill('SIGTERM');
    await refused.exited;
  });
});

describe('the injection webhook on a real API server', () => {
  let ca: { certificatePem: string; keyPem: string };
  /** The reconciler replica's own webhook (native sidecars: the API server is 1.36); the classic one is served alone. */
  let nativePort: number;
  let classic: WebhookServer;
  const classicEvents: WebhookEvent[] = [];
  /** Every review answered so far: the replica's `injection` log lines and the classic server's events. */
  const events = (): WebhookEvent[] => [
    ...reconciler.output().split('\n').filter((l) => l.includes('"type":"injection"')).map((l) => JSON.parse(l) as WebhookEvent),
    ...classicEvents,
  ];
  const webhookObject = () => structuredClone(installed.find((o) => o.kind === 'MutatingWebhookConfiguration')!) as Obj & { webhooks: { clientConfig: unknown }[] };

  /** The install's webhook configuration, named `name`, sending to `port` on loopback. */
  async function register(name: string, port: number): Promise<void> {
    const mwc = webhookObject();
    mwc.metadata = { name };
    for (const w of mwc.webhooks) w.clientConfig = { url: `https://127.0.0.1:${port}/inject`, caBundle: Buffer.from(env.caPem).toString('base64') };
    await objects.create(mwc);
  }

  let probes = 0;
  /** Creates probe pods in shop until one comes back the way `ready` wants (the API server's webhook cache follows configuration changes within a moment). */
  async function untilWebhooks(ready: (p: k8s.V1Pod) => boolean, what: string): Promise<void> {
    await waitFor(async () => {
      const created = await core.createNamespacedPod({ namespace: 'shop', body: pod(`probe-${++probes}`) });
      await core.deleteNamespacedPod({ namespace: 'shop', name: created.metadata!.name!, gracePeriodSeconds: 0 });
      return ready(created);
    }, `${what} (webhook calls so far: ${JSON.stringify(events().slice(-3))})`, 15_000);
  }

  before(async () => {
    ca = { certificatePem: readFileSync(envFile.KUBE_CA_FILE!, 'utf8'), keyPem: readFileSync(envFile.KUBE_CA_KEY_FILE!, 'utf8') };
    const tls = await issueServingCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] }, ca);
    const options = { image: 'registry.example/trellis:test', controlUrl: `http://trellis.${NS}.svc:15010` };
    nativePort = (JSON.parse(reconciler.output().split('\n').find((l) => l.includes('"type":"webhook_listening"'))!) as { port: number }).port;
    classic = await startWebhookServer({ cert: tls.certificatePem, key: tls.privateKeyPem, port: 0, host: '127.0.0.1', options: { ...options, nativeSidecars: false }, onEvent: (e) => classicEvents.push(e) });
    // The installed configuration points at a Service no pod serves here; this one is its copy on loopback.
    await objects.delete({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: { name: 'trellis-sidecar-injector' } });
    await core.patchNamespace({ name: 'shop', body: [{ op: 'add', path: '/metadata/labels/trellis.dev~1inject', value: 'enabled' }] }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch));
    await register('trellis-sidecar-injector', nativePort);
    await untilWebhooks((p) => proxies(p).length === 1, 'the webhook configuration to take effect');
  });

  after(async () => {
    await classic?.close();
  });

  test('a pod in a labelled namespace gets a native sidecar, the token volume and HTTP_PROXY; its injected command line runs a sidecar that the reconciler admits', async () => {
    const created = await core.createNamespacedPod({ namespace: 'shop', body: pod('api-0') });
    const [proxy] = proxies(created);
    assert.ok(proxy);
    assert.equal(created.spec!.initContainers![0]!.name, PROXY_CONTAINER);
    assert.equal(proxy.restartPolicy, 'Always');
    assert.equal(proxy.startupProbe?.httpGet?.path, '/readyz');
    assert.equal(created.metadata!.annotations!['trellis.dev/injected'], 'native');
    const token = created.spec!.volumes!.find((v) => v.name === 'trellis-token')!;
    assert.deepEqual({ ...token.projected!.sources![0]!.serviceAccountToken }, { audience: 'trellis', expirationSeconds: 3600, path: 'token' });
    assert.ok(created.spec!.containers[0]!.env!.some((e) => e.name === 'HTTP_PROXY' && e.value === 'http://127.0.0.1:15001'));

    // The controllers' part: the pod's address in its Service's EndpointSlice (an FQDN slice:
    // the API server refuses loopback IPs, and Trellis dials the address as written). Created
    // after the reconciler's first list, it reaches it through the watch the RBAC allows.
    await k8s.KubernetesObjectApi.makeApiClient(env.kubeConfig).create({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'api-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'api' } },
      addressType: 'FQDN',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [{ addresses: ['127.0.0.9'], conditions: { ready: true } }],
    } as Obj);
    // The kubelet's part: run the proxy's command line with the projected token it would mount.
    const dir = tempDir();
    writeFileSync(join(dir, 'token'), await serviceAccountToken(env, 'shop', 'api', 'trellis'));
    const args = [...proxy.args!];
    const set = (flag: string, value: string) => (args[args.indexOf(flag) + 1] = value);
    assert.equal(args[args.indexOf('--service') + 1], 'shop/api');
    assert.equal(args[args.indexOf('--app') + 1], '127.0.0.1:8080');
    set('--control', `http://127.0.0.1:${reconciler.listening.port}`);
    set('--control-token-file', join(dir, 'token'));
    set('--state-dir', join(dir, 'state'));
    for (const f of ['--inbound', '--outbound', '--admin']) set(f, '127.0.0.1:0');
    const sidecar = await startTrellis(args, { TRELLIS_CONTROL_TOKEN: '' });
    await waitFor(() => sidecarReady(sidecar.listening.admin!), 'the injected sidecar to be admitted (TokenReview under the installed RBAC) and configured', 15_000).catch((err: Error) => {
      throw new Error(`${err.message}\nsidecar: ${sidecar.output().slice(-1500)}\nreconciler: ${reconciler.output().slice(-1500)}`);
    });
  });

  test('opted out (annotation or label), an unlabelled namespace and kube-system stay untouched; a labelled pod elsewhere is injected', async () => {
    const annotated = await core.createNamespacedPod({ namespace: 'shop', body: pod('opt-out-annotation', { annotations: { 'trellis.dev/inject': 'disabled' } }) });
    assert.equal(proxies(annotated).length, 0);
    assert.equal(annotated.spec!.containers[0]!.env, undefined);
    const before = events().length;
    const labelled = await core.createNamespacedPod({ namespace: 'shop', body: pod('opt-out-label', { labels: { 'trellis.dev/inject': 'disabled' } }) });
    assert.equal(proxies(labelled).length, 0);
    assert.equal(events().slice(before).filter((e) => e.name === 'opt-out-label').length, 0, 'the objectSelector keeps it from the webhook altogether');

    const plain = await core.createNamespacedPod({ namespace: 'plain', body: pod('api-plain') });
    assert.equal(proxies(plain).length, 0);
    const optIn = await core.createNamespacedPod({ namespace: 'plain', body: pod('api-opt-in', { labels: { 'trellis.dev/inject': 'enabled' } }) });
    assert.equal(proxies(optIn).length, 1);
    assert.equal(proxies(optIn)[0]!.args![proxies(optIn)[0]!.args!.indexOf('--service') + 1], 'plain/api');

    await core.patchNamespace({ name: 'kube-system', body: [{ op: 'add', path: '/metadata/labels/trellis.dev~1inject', value: 'enabled' }] }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch));
    const system = await core.createNamespacedPod({ namespace: 'kube-system', body: pod('system-pod', { labels: { 'trellis.dev/inject': 'enabled' } }) });
    assert.equal(proxies(system).length, 0, 'kube-system is excluded by name, whatever its labels');
  });

  test('a pod injected offline, and a pod matched by two webhook configurations, get one sidecar', async () => {
    const offline = injectPod(pod('pre-injected') as PodLike, { image: 'registry.example/trellis:test', controlUrl: `http://trellis.${NS}.svc:15010`, nativeSidecars: true, namespace: 'shop' });
    assert.ok(offline.injected);
    const created = await core.createNamespacedPod({ namespace: 'shop', body: offline.pod as k8s.V1Pod });
    assert.equal(proxies(created).length, 1);
    // The replica's log line may trail the API server's answer by a moment.
    await waitFor(() => events().some((e) => e.name === 'pre-injected' && e.outcome === 'already_injected'), 'the webhook to see the pre-injected pod');

    await register('trellis-sidecar-injector-copy', nativePort);
    // Wait until a probe pod is seen by both configurations.
    await untilWebhooks((p) => events().filter((e) => e.name === p.metadata!.name).length === 2, 'the second configuration to take effect');
    const twice = await core.createNamespacedPod({ namespace: 'shop', body: pod('matched-twice') });
    await waitFor(() => events().filter((e) => e.name === 'matched-twice').length >= 2, 'both webhook calls logged');
    assert.deepEqual(events().filter((e) => e.name === 'matched-twice').map((e) => e.outcome).sort(), ['already_injected', 'injected']);
    assert.equal(proxies(twice).length, 1);
    assert.equal(twice.spec!.volumes!.filter((v) => v.name === 'trellis-token').length, 1);
    assert.equal(twice.spec!.containers[0]!.env!.filter((e) => e.name === 'HTTP_PROXY').length, 1);
    await objects.delete({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: { name: 'trellis-sidecar-injector-copy' } });
  });

  test('classic sidecars when the webhook is configured for clusters before 1.29', async () => {
    const mwc = await objects.read({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: { name: 'trellis-sidecar-injector' } }) as Obj & { webhooks: { clientConfig: { url: string } }[] };
    for (const w of mwc.webhooks) w.clientConfig.url = `https://127.0.0.1:${classic.port}/inject`;
    await objects.replace(mwc);
    await untilWebhooks((p) => p.spec!.containers[0]!.name === PROXY_CONTAINER, 'the classic webhook to take effect');
    const created = await core.createNamespacedPod({ namespace: 'shop', body: pod('api-classic') });
    assert.deepEqual(created.spec!.containers.map((c) => c.name), [PROXY_CONTAINER, 'app']);
    assert.equal(created.spec!.initContainers, undefined);
    assert.deepEqual(created.spec!.containers[0]!.lifecycle!.postStart!.exec!.command!.slice(0, 2), ['trellis', 'wait-ready']);
    assert.equal(created.metadata!.annotations!['trellis.dev/injected'], 'classic');
  });

  test('with the webhook down, pods are still created (failurePolicy Ignore), without a sidecar', async () => {
    reconciler.child.kill('SIGTERM');
    assert.equal(await reconciler.exited, 0);
    await classic.close();
    const started = Date.now();
    const created = await core.createNamespacedPod({ namespace: 'shop', body: pod('while-down') });
    assert.equal(proxies(created).length, 0);
    assert.ok(Date.now() - started < 5000, 'refused connections fail fast, well inside timeoutSeconds');
  });
});

describe('trellis uninstall on a real API server', () => {
  test('deleting what it prints removes every installed object and what the reconciler created', async () => {
    const listed = docs(await cli(['uninstall', '--namespace', NS]));
    assert.deepEqual(new Set(listed.map((o) => `${o.kind}/${o.metadata!.name}`)), new Set([...installed.map((o) => `${o.kind}/${o.metadata!.name}`), 'Secret/trellis-ca', 'Lease/trellis-ca-bootstrap']));
    for (const o of listed) {
      await objects.delete(o).catch((err: k8s.ApiException<unknown>) => {
        if (err.code !== 404) throw err; // deleted already above (the webhook configuration)
      });
    }
    for (const o of listed) {
      const gone = await objects.read(o as never).then(
        (got) => (got as { status?: { phase?: string } }).status?.phase === 'Terminating', // no namespace controller runs here
        (err: k8s.ApiException<unknown>) => err.code === 404,
      );
      assert.ok(gone, `${o.kind}/${o.metadata!.name} is gone`);
    }
  });
});
