/**
 * Sidecar injection without a cluster: `injectPod` decisions, the JSON Patch the webhook
 * sends, `trellis inject` golden files (test/golden/inject/<case>/input.yaml → output.yaml and
 * report.txt), the webhook's answers to good and bad AdmissionReviews over real HTTPS, and
 * `trellis wait-ready` against a real HTTP server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { parseAllDocuments } from 'yaml';
import { injectPod, jsonPatch, podServiceKey, supportsNativeSidecars, PROXY_CONTAINER, type InjectOptions, type PatchOperation, type PodLike } from '../../src/kubernetes/inject.ts';
import { reviewResponse, startWebhookServer } from '../../src/kubernetes/webhook.ts';
import { issueServingCertificate } from '../../src/kubernetes/serving-certificate.ts';
import { injectYaml } from '../../src/cli/inject.ts';
import { main } from '../../src/cli/main.ts';
import { assertGolden } from '../helpers/golden.ts';

const GOLDEN = new URL('../golden/inject/', import.meta.url).pathname;
const options: InjectOptions = { image: 'trellis:test', controlUrl: 'http://trellis.trellis-system.svc:15010', nativeSidecars: true, namespace: 'shop' };

function pod(extra: Partial<PodLike> = {}): PodLike {
  return {
    metadata: { name: 'checkout-7d9f', labels: { app: 'checkout' }, ...(extra.metadata ?? {}) },
    spec: { containers: [{ name: 'app', image: 'checkout:1', ports: [{ containerPort: 8080 }] }], ...(extra.spec ?? {}) },
  };
}

/** RFC 6902 add/replace/remove, as the API server applies them. */
function applyPatch(doc: unknown, ops: readonly PatchOperation[]): unknown {
  const out = structuredClone(doc) as Record<string, unknown>;
  for (const op of ops) {
    const parts = op.path.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = parts.pop()!;
    let node = out as Record<string, unknown>;
    for (const p of parts) node = node[p] as Record<string, unknown>;
    if (op.op === 'remove') {
      assert.ok(last in node, `remove of missing ${op.path}`);
      delete node[last];
    } else {
      if (op.op === 'replace') assert.ok(last in node, `replace of missing ${op.path}`);
      else assert.ok(!(last in node), `add over existing ${op.path}`);
      node[last] = structuredClone(op.value);
    }
  }
  return out;
}

function proxyOf(p: PodLike) {
  return [...(p.spec!.initContainers ?? []), ...p.spec!.containers].filter((c) => c.name === PROXY_CONTAINER);
}

test('a native sidecar: first init container, restartPolicy Always, startupProbe on the admin /readyz, token volume, app env', () => {
  const ok = injectPod({ ...pod(), spec: { ...pod().spec!, initContainers: [{ name: 'migrate', image: 'm:1' }] } }, options);
  assert.ok(ok.injected);
  const spec = ok.pod.spec!;
  assert.deepEqual(spec.initContainers!.map((c) => c.name), [PROXY_CONTAINER, 'migrate'], 'the proxy runs before the app\'s own init containers');
  const proxy = spec.initContainers![0]!;
  assert.equal(proxy.restartPolicy, 'Always');
  assert.deepEqual((proxy.startupProbe as { httpGet: unknown }).httpGet, { path: '/readyz', port: 15000 });
  const args = proxy.args as string[];
  const flag = (f: string) => args[args.indexOf(f) + 1];
  assert.equal(flag('--service'), 'shop/checkout');
  assert.equal(flag('--control'), options.controlUrl);
  assert.equal(flag('--control-token-file'), '/var/run/secrets/trellis/token');
  assert.equal(flag('--app'), '127.0.0.1:8080');
  assert.equal(flag('--admin'), '0.0.0.0:15000');
  assert.ok(args.includes('--admin-allow-remote'), 'the kubelet probes the pod IP');
  const token = spec.volumes!.find((v) => v.name === 'trellis-token') as unknown as { projected: { sources: { serviceAccountToken: object }[] } };
  assert.deepEqual(token.projected.sources[0]!.serviceAccountToken, { audience: 'trellis', expirationSeconds: 3600, path: 'token' });
  const sc = proxy.securityContext as Record<string, unknown>;
  assert.equal(sc.runAsNonRoot, true);
  assert.equal(sc.readOnlyRootFilesystem, true);
  const env = Object.fromEntries(spec.containers[0]!.env!.map((e) => [e.name, e.value]));
  assert.equal(env.HTTP_PROXY, 'http://127.0.0.1:15001');
  assert.match(env.NO_PROXY!, /127\.0\.0\.1/);
  assert.equal(ok.pod.metadata!.annotations!['trellis.dev/injected'], 'native');
});

test('classic: the proxy is the first container with a postStart hook that waits for readiness', () => {
  const r = injectPod(pod(), { ...options, nativeSidecars: false });
  assert.ok(r.injected);
  assert.equal(r.pod.spec!.containers[0]!.name, PROXY_CONTAINER);
  assert.equal(r.pod.spec!.initContainers, undefined);
  const hook = (r.pod.spec!.containers[0]!.lifecycle as { postStart: { exec: { command: string[] } } }).postStart.exec.command;
  assert.deepEqual(hook.slice(0, 2), ['trellis', 'wait-ready']);
  assert.equal(r.pod.spec!.containers[0]!.restartPolicy, undefined);
});

test('idempotent: an injected pod comes back unchanged, in either mode', () => {
  for (const nativeSidecars of [true, false]) {
    const once = injectPod(pod(), { ...options, nativeSidecars });
    assert.ok(once.injected);
    for (const again of [true, false]) {
      const twice = injectPod(once.pod, { ...options, nativeSidecars: again });
      assert.equal(twice.injected, false);
      assert.equal(!twice.injected && twice.reason, 'already_injected');
    }
    assert.equal(proxyOf(once.pod).length, 1);
  }
});

test('opt out by annotation or label; host-network pods and pods without a service name are skipped with a reason', () => {
  const outcome = (p: PodLike) => {
    const r = injectPod(p, options);
    return r.injected ? 'injected' : r.reason;
  };
  assert.equal(outcome(pod({ metadata: { labels: { app: 'a' }, annotations: { 'trellis.dev/inject': 'disabled' } } })), 'opted_out');
  assert.equal(outcome(pod({ metadata: { labels: { app: 'a', 'trellis.dev/inject': 'disabled' } } })), 'opted_out');
  assert.equal(outcome(pod({ metadata: { labels: { app: 'a', 'trellis.dev/inject': 'disabled' }, annotations: { 'trellis.dev/inject': 'enabled' } } })), 'injected', 'the annotation wins');
  assert.equal(outcome(pod({ spec: { hostNetwork: true, containers: pod().spec!.containers } })), 'host_network');
  assert.equal(outcome(pod({ metadata: { labels: {} } })), 'no_service');
  assert.equal(outcome(pod({ metadata: { labels: { app: 'Checkout_1' } } })), 'invalid_service');
  assert.equal(outcome(pod({ metadata: { labels: { app: 'a' }, annotations: { 'trellis.dev/app-port': 'http' } } })), 'invalid_app_port');
});

test('service key: annotation (NAME in the pod namespace, or NS/NAME), else app.kubernetes.io/name, else app; default namespace is the bare name', () => {
  const key = (meta: PodLike['metadata'], ns = 'shop') => {
    const r = podServiceKey({ metadata: meta }, ns);
    return 'key' in r ? r.key : r.reason;
  };
  assert.equal(key({ labels: { app: 'x' }, annotations: { 'trellis.dev/service': 'ledger' } }), 'shop/ledger');
  assert.equal(key({ annotations: { 'trellis.dev/service': 'payments/ledger' } }), 'payments/ledger');
  assert.equal(key({ labels: { app: 'x', 'app.kubernetes.io/name': 'y' } }), 'shop/y');
  assert.equal(key({ labels: { app: 'x' } }), 'shop/x');
  assert.equal(key({ labels: { app: 'x' } }, 'default'), 'x');
});

test('app port: the annotation, else the first TCP container port, else each service port\'s targetPort', () => {
  const appFlag = (p: PodLike) => {
    const r = injectPod(p, options);
    assert.ok(r.injected);
    const args = proxyOf(r.pod)[0]!.args as string[];
    return args[args.indexOf('--app') + 1];
  };
  assert.equal(appFlag(pod({ metadata: { labels: { app: 'a' }, annotations: { 'trellis.dev/app-port': '9000' } } })), '127.0.0.1:9000');
  assert.equal(appFlag(pod({ spec: { containers: [{ name: 'a', ports: [{ containerPort: 53, protocol: 'UDP' }] }, { name: 'b', ports: [{ containerPort: 7000 }] }] } })), '127.0.0.1:7000');
  assert.equal(appFlag(pod({ spec: { containers: [{ name: 'a' }] } })), '127.0.0.1');
});

test('the pod given is not modified, and the JSON patch turns it into the injected pod', () => {
  const original = pod({ metadata: { labels: { app: 'checkout' }, annotations: { 'example.com/owner': 'team-a' } }, spec: { containers: pod().spec!.containers, volumes: [{ name: 'cfg', configMap: { name: 'c' } }] } });
  const before = structuredClone(original);
  for (const nativeSidecars of [true, false]) {
    const r = injectPod(original, { ...options, nativeSidecars });
    assert.ok(r.injected);
    assert.deepEqual(original, before);
    const ops = jsonPatch(original, r.pod);
    assert.deepEqual(applyPatch(original, ops), r.pod);
    assert.ok(ops.some((o) => o.path === '/metadata/annotations/trellis.dev~1injected'), 'keys with / are escaped as ~1');
  }
  assert.deepEqual(jsonPatch({ a: 1 }, { a: 1 }), []);
});

test('native sidecars from Kubernetes 1.29', () => {
  assert.equal(supportsNativeSidecars({ major: '1', minor: '28' }), false);
  assert.equal(supportsNativeSidecars({ major: '1', minor: '29+' }), true);
  assert.equal(supportsNativeSidecars({ major: '1', minor: '36' }), true);
});

for (const name of readdirSync(GOLDEN)) {
  test(`trellis inject golden: ${name}`, () => {
    const input = readFileSync(join(GOLDEN, name, 'input.yaml'), 'utf8');
    const flags = { namespace: 'default', image: 'registry.example.com/trellis:0.1.0', controlNamespace: 'trellis-system', nativeSidecars: name !== 'pod-classic' };
    const { output, lines, errors } = injectYaml(input, flags);
    assert.deepEqual(errors, []);
    assertGolden(join(GOLDEN, name, 'output.yaml'), output);
    assertGolden(join(GOLDEN, name, 'report.txt'), lines.join('\n') + '\n');
    // The output parses, and injecting it again changes nothing.
    assert.equal(injectYaml(output, flags).output, output);
    if (name === 'non-workload' || name === 'opted-out' || name === 'already-injected') assert.equal(output, input, 'passed through byte for byte');
  });
}

test('trellis inject reads a file, prints YAML and says what it did on stderr; bad YAML is exit 1', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-inject-'));
  try {
    let out = '';
    let err = '';
    const io = { stdout: { write: (s: string) => ((out += s), true) }, stderr: { write: (s: string) => ((err += s), true) }, env: {} } as never;
    assert.equal(await main(['inject', join(GOLDEN, 'pod-classic', 'input.yaml'), '--no-native-sidecars', '--image', 'registry.example.com/trellis:0.1.0'], io), 0);
    assert.equal(out, readFileSync(join(GOLDEN, 'pod-classic', 'output.yaml'), 'utf8'));
    assert.match(err, /pod\/debug injected: classic sidecar for service toolbox/);
    writeFileSync(join(dir, 'bad.yaml'), 'a: 1\na: 2\n');
    out = '';
    err = '';
    assert.equal(await main(['inject', join(dir, 'bad.yaml')], io), 1);
    assert.equal(out, '');
    assert.match(err, /not valid YAML/);
    const docs = parseAllDocuments(readFileSync(join(GOLDEN, 'list', 'output.yaml'), 'utf8'));
    assert.equal(Array.isArray(docs) && docs.length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const review = (object: unknown, over: Record<string, unknown> = {}) => ({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: { uid: 'u-1', kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, operation: 'CREATE', namespace: 'shop', object, ...over },
});

test('webhook answers: a patch for a pod; allowed without a patch (and a warning where something is wrong) for everything else', () => {
  const wh = { image: 'trellis:test', controlUrl: options.controlUrl, nativeSidecars: true };
  const ok = reviewResponse(review(pod()), wh).body as { response: { uid: string; allowed: boolean; patchType: string; patch: string } };
  assert.equal(ok.response.uid, 'u-1');
  assert.equal(ok.response.allowed, true);
  assert.equal(ok.response.patchType, 'JSONPatch');
  const patched = applyPatch(pod(), JSON.parse(Buffer.from(ok.response.patch, 'base64').toString())) as PodLike;
  assert.equal(proxyOf(patched).length, 1);
  assert.match((proxyOf(patched)[0]!.args as string[]).join(' '), /--service shop\/checkout/, 'the namespace comes from the request: a pod being created often names none');

  for (const [bad, outcome] of [
    [undefined, 'invalid_review'],
    [{ kind: 'AdmissionReview' }, 'invalid_review'],
    [{ ...review(pod()), apiVersion: 'admission.k8s.io/v1beta1' }, 'invalid_review'],
    [review(pod(), { uid: undefined }), 'invalid_review'],
    [review(pod(), { operation: 'UPDATE' }), 'not_a_pod_create'],
    [review({ metadata: {} }, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } }), 'not_a_pod_create'],
    [review(pod({ metadata: { labels: {} } })), 'no_service'],
    [review(pod({ metadata: { labels: { app: 'a' }, annotations: { 'trellis.dev/inject': 'disabled' } } })), 'opted_out'],
    [review({ metadata: { name: 'x' }, spec: 'nonsense' }), 'not_a_pod'],
  ] as const) {
    const { body, event } = reviewResponse(bad, wh);
    const response = (body as { response: Record<string, unknown> }).response;
    assert.equal(event.outcome, outcome);
    assert.equal(response.allowed, true, `${outcome}: never refused`);
    assert.equal(response.patch, undefined);
    assert.equal(Array.isArray(response.warnings), !['not_a_pod_create', 'opted_out'].includes(outcome), `${outcome}: warnings only where the user has something to fix`);
  }
});

test('the webhook server over HTTPS: POST /inject answers reviews, malformed JSON gets allowed:true, other paths 404', async () => {
  const tls = await issueServingCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
  const events: string[] = [];
  const server = await startWebhookServer({ cert: tls.certificatePem, key: tls.privateKeyPem, port: 0, host: '127.0.0.1', options: { image: 'trellis:test', controlUrl: options.controlUrl, nativeSidecars: true }, onEvent: (e) => events.push(e.outcome) });
  const agent = new Agent({ connect: { ca: tls.caPem } });
  try {
    const post = async (body: string, path = '/inject') => {
      const res = await request(`https://127.0.0.1:${server.port}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json' }, dispatcher: agent });
      return { status: res.statusCode, json: (await res.body.json()) as { response?: { allowed: boolean; patch?: string; warnings?: string[] } } };
    };
    const good = await post(JSON.stringify(review(pod())));
    assert.equal(good.status, 200);
    assert.ok(good.json.response!.patch);
    const bad = await post('{not json');
    assert.equal(bad.status, 200);
    assert.equal(bad.json.response!.allowed, true);
    assert.equal(bad.json.response!.patch, undefined);
    assert.ok(bad.json.response!.warnings!.length > 0);
    assert.equal((await post('{}', '/other')).status, 404);
    assert.deepEqual(events, ['injected', 'invalid_review']);

    // A renewed certificate (another CA here) is served to new connections without a restart.
    const renewed = await issueServingCertificate({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
    server.setCertificate({ cert: renewed.certificatePem, key: renewed.privateKeyPem });
    const renewedAgent = new Agent({ connect: { ca: renewed.caPem } });
    try {
      const res = await request(`https://127.0.0.1:${server.port}/healthz`, { dispatcher: renewedAgent });
      assert.equal(res.statusCode, 200);
      await res.body.text();
    } finally {
      await renewedAgent.close();
    }
  } finally {
    await agent.close();
    await server.close();
  }
});

test('trellis wait-ready returns once /readyz answers 200, and fails after its timeout', async () => {
  let ready = false;
  let asked = 0;
  const server = createServer((req, res) => {
    asked++;
    res.writeHead(req.url === '/readyz' && ready ? 200 : 503).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const io = { stdout: { write: () => true }, stderr: { write: () => true }, env: {} } as never;
  try {
    const waiting = main(['wait-ready', '--admin', `127.0.0.1:${port}`, '--timeout', '20s'], io);
    const until = Date.now() + 10_000;
    while (asked < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert.ok(asked >= 2, 'wait-ready asks again while the sidecar is not ready');
    ready = true;
    assert.equal(await waiting, 0);
    ready = false;
    const started = Date.now();
    assert.equal(await main(['wait-ready', '--admin', `127.0.0.1:${port}`, '--timeout', '300ms'], io), 1);
    assert.ok(Date.now() - started >= 300);
  } finally {
    server.close();
  }
});

test('trellis.dev/tcp-upstreams: each entry becomes a --tcp-upstream of the proxy, on loopback only; a bad one skips the pod with a reason', () => {
  const annotated = (value: string) => pod({ metadata: { labels: { app: 'checkout' }, annotations: { 'trellis.dev/tcp-upstreams': value } } });
  const r = injectPod(annotated('15140=audit-log:5140, 127.0.0.1:15432=payments/db:5432'), options);
  assert.ok(r.injected);
  const proxy = r.pod.spec!.initContainers!.find((c) => c.name === PROXY_CONTAINER)!;
  const args = proxy.args as string[];
  const flags = args.flatMap((a, i) => (a === '--tcp-upstream' ? [args[i + 1]] : []));
  assert.deepEqual(flags, ['127.0.0.1:15140=audit-log:5140', '127.0.0.1:15432=payments/db:5432']);
  for (const bad of ['15140', '0.0.0.0:15140=audit-log:5140', '15140=Audit:5140']) {
    const skipped = injectPod(annotated(bad), options);
    assert.ok(!skipped.injected, bad);
    assert.equal(skipped.reason, 'invalid_tcp_upstream', bad);
    assert.match(skipped.message, /trellis\.dev\/tcp-upstreams/);
  }
});
