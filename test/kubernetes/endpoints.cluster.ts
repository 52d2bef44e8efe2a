/**
 * Endpoints from EndpointSlices, end to end against a real kube-apiserver: a real
 * `trellis reconcile --kubernetes` process, a real `trellis sidecar` for the caller `web`,
 * and real HTTP servers as the pods of `api` (an unmeshed Service whose endpoints come from
 * Kubernetes), each on its own loopback address (127.0.0.2, 127.0.0.3, …: all of 127/8
 * reaches `lo` on Linux) and the same port, as pods of one Deployment would. No kubelet
 * runs, so the test writes the EndpointSlices itself, as the EndpointSlice controller would.
 *
 * The tests run in order on one cluster and one mesh: each starts from the pods the one
 * before left. Covered: the first list; endpoints added, not ready, terminating (and as the
 * last resort) and removed, each within a second; a rolling update under load with no failed
 * request; the API server stopped and started under load; a reconciler restarted while the
 * API server is down (no empty set pushed); a discovery limited to namespaces whose watches
 * end every second and resume without loss; a meshed service's pods called on their sidecar's
 * inbound port over mTLS.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { pino } from 'pino';
import { KubernetesDiscovery } from '../../src/reconciler/kubernetes-discovery.ts';
import type { EndpointsBody, ProxyConfig } from '../../src/config/types.ts';
import type { ReconcilerStatus } from '../../src/reconciler/reconciler.ts';
import { discoverySpec, endpointSlice, UNMESHED_DISCOVERED_API, type Conditions } from '../helpers/endpoint-slices.ts';
import { createNamespace, startKubeEnv, type KubeEnv } from '../helpers/kube-env.ts';
import { sidecarReady, startTrellis, steadyLoad, stopProcesses, tempDir, type Proc, type SteadyLoad } from '../helpers/processes.ts';
import { cleanup, closedPort, send, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';

/** How quickly an endpoint change must reach the caller's sidecar (the issue's "within a second"). */
const PROPAGATION_MS = 1000;

/** A pod of `api`: an HTTP server on its own loopback address. */
interface Pod {
  readonly ip: string;
  /** Requests it answered. */
  seen: number;
  /** Stops accepting connections, lets requests in flight finish, then closes the rest. */
  stop(): Promise<void>;
}

let podPort = 0;
const pods: Pod[] = [];

async function startPod(ip: string): Promise<Pod> {
  const pod = { ip, seen: 0, stop: async () => undefined } as Pod;
  const server: Server = createServer((req, res) => {
    pod.seen++;
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(ip);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(podPort, ip, () => resolve());
  });
  podPort = (server.address() as AddressInfo).port;
  pod.stop = async () => {
    const closed = new Promise<void>((r) => server.close(() => r()));
    server.closeIdleConnections();
    const forced = setTimeout(() => server.closeAllConnections(), 2000);
    await closed;
    clearTimeout(forced);
  };
  pods.push(pod);
  return pod;
}

let env: KubeEnv;
let slices: k8s.DiscoveryV1Api;
let reconciler: Proc;
let web: Proc;
let controlPort: number;
let specDir: string;
let stateDir: string;
/** The mesh's sidecar inbound port: where callers reach meshed pods. */
let inboundPort: number;

const READY: Conditions = { ready: true, serving: true, terminating: false };
const NOT_READY: Conditions = { ready: false, serving: false, terminating: false };
const TERMINATING: Conditions = { ready: false, serving: true, terminating: true };

/** Creates or replaces EndpointSlice `name` of Service `service` (namespace default) with these pods. */
async function putSlice(name: string, endpoints: ReadonlyArray<readonly [Pod | { readonly ip: string }, Conditions]>, service = 'api'): Promise<void> {
  const body: k8s.V1EndpointSlice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    // The API server refuses loopback addresses in IPv4 slices (a pod never has one); the
    // test's pods live on loopback, so their addresses are written as FQDN slices, which the
    // API accepts for a dotted name. Trellis treats both alike: the address is dialled as is.
    ...endpointSlice(
      name,
      'default',
      service,
      'FQDN',
      [{ name: 'http', port: podPort, protocol: 'TCP' }],
      endpoints.map(([pod, conditions]) => [pod.ip, conditions]),
      { 'endpointslice.kubernetes.io/managed-by': 'trellis-test' },
    ),
  };
  try {
    await slices.replaceNamespacedEndpointSlice({ name, namespace: 'default', body });
  } catch (err) {
    if ((err as { code?: number }).code !== 404) throw err;
    await slices.createNamespacedEndpointSlice({ namespace: 'default', body });
  }
}

async function deleteSlice(name: string): Promise<void> {
  await slices.deleteNamespacedEndpointSlice({ name, namespace: 'default' });
}

/** `service`'s instances in the caller's running config: `ip` or `ip terminating`, sorted. */
async function webSees(service = 'api'): Promise<string[] | undefined> {
  const res = await fetch(`http://127.0.0.1:${web.listening.admin}/config`).catch(() => undefined);
  if (!res || res.status !== 200) return undefined;
  const config = (await res.json()) as ProxyConfig;
  const body = config.resources.find((r) => r.name === `endpoints/${service}`)?.body as EndpointsBody | undefined;
  return body?.static.map((e) => `${e.address}${service === 'api' ? '' : `:${e.port}`}${e.terminating ? ' terminating' : ''}`);
}

/** Waits until the caller's sidecar runs exactly `expected`; returns how long that took, in ms. */
async function untilWebSees(expected: string[], what: string, timeoutMs = PROPAGATION_MS, service = 'api'): Promise<number> {
  const started = performance.now();
  let last: string[] | undefined;
  await waitFor(async () => {
    last = await webSees(service);
    return JSON.stringify(last) === JSON.stringify(expected);
  }, `${what} (web sees ${JSON.stringify(last)})`, timeoutMs);
  return performance.now() - started;
}

async function status(): Promise<ReconcilerStatus | undefined> {
  const res = await fetch(`http://127.0.0.1:${controlPort}/status`).catch(() => undefined);
  return res?.status === 200 ? ((await res.json()) as ReconcilerStatus) : undefined;
}

function startReconciler(): Promise<Proc> {
  return startTrellis(['reconcile', '--dir', specDir, '--listen', String(controlPort), '--kubernetes', '--kubeconfig', env.kubeconfigPath]);
}

/** The load running now, for diagnostics when traffic stalls. */
let currentLoad: SteadyLoad | null = null;
function load(workers: number): SteadyLoad {
  currentLoad = steadyLoad(web.listening.outbound!, 'api', workers);
  return currentLoad;
}

/** Where a stall is: the load's state, whether the caller's sidecar and the pods answer directly. */
async function diagnose(): Promise<string> {
  const probe = async (url: string) => {
    const started = performance.now();
    const r = await fetch(url, { signal: AbortSignal.timeout(2000) }).then((x) => `${x.status}`, (err: Error) => err.message);
    return `${r} in ${Math.round(performance.now() - started)} ms`;
  };
  const lines = [
    `pods saw ${pods.map((p) => `${p.ip}: ${p.seen}`).join(', ')}`,
    currentLoad ? `load: ${currentLoad.inFlight()} in flight, last answer ${Math.round(performance.now() - currentLoad.lastAnswerAt())} ms ago, statuses ${JSON.stringify([...currentLoad.statuses])}` : 'no load',
    `web admin /healthz: ${await probe(`http://127.0.0.1:${web.listening.admin}/healthz`)}`,
    `web sees ${JSON.stringify(await webSees())}`,
    ...(await Promise.all(pods.map(async (p) => `pod ${p.ip}: ${await probe(`http://${p.ip}:${podPort}/`)}`))),
  ];
  return lines.join('; ');
}

/** Lets traffic run: waits until pod `busy` has answered `n` more requests (bounded: a stall fails, saying where it is). */
async function whileServing(busy: Pod, n: number, timeoutMs = 10_000): Promise<void> {
  const target = busy.seen + n;
  try {
    await waitFor(() => busy.seen >= target, `${n} more requests on ${busy.ip}`, timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}: ${await diagnose()}`);
  }
}

const timings: Record<string, number> = {};
let apiDown = false;
async function stopApi(): Promise<void> {
  apiDown = true;
  await env.stopApiServer();
}
async function startApi(): Promise<void> {
  await env.startApiServer();
  apiDown = false;
}
const silent = pino({ level: 'silent' });

before(async () => {
  env = await startKubeEnv();
  slices = env.kubeConfig.makeApiClient(k8s.DiscoveryV1Api);
  const dir = tempDir();
  inboundPort = await closedPort();
  specDir = join(dir, 'spec');
  mkdirSync(specDir);
  writeFileSync(
    join(specDir, 'mesh.yaml'),
    discoverySpec(
      'k',
      `sidecar: { inboundPort: ${inboundPort} }`,
      UNMESHED_DISCOVERED_API,
      `# Round-robin: these tests ask which instances are candidates, not which one a balancer
# prefers. Under peak-EWMA a new instance starts at the assumed 30 ms and can stay idle while
# the others keep answering in 1 ms.
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: { name: api }
spec: { targetRefs: [{ group: trellis.dev, kind: Service, name: api }], loadBalancer: { type: round-robin } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: cart }
spec: { ports: [{ port: 80 }], endpoints: { kubernetes: {} } }
`,
    ),
  );
  controlPort = await closedPort();
  stateDir = dir;
  reconciler = await startReconciler();
  web = await startTrellis(['sidecar', '--service', 'web', '--control', `http://127.0.0.1:${controlPort}`, '--outbound', '0', '--inbound', '0', '--admin', '0', '--state-dir', join(dir, 'web-state')]);
});

after(async () => {
  await stopProcesses();
  for (const pod of pods) await pod.stop().catch(() => undefined);
  await cleanup();
  await env?.stop();
  if (Object.keys(timings).length > 0) console.log(`propagation (ms): ${JSON.stringify(timings)}`);
});

describe('endpoints from EndpointSlices, through real reconciler and sidecar processes', () => {
  let a: Pod;
  let b: Pod;

  test('the first list reaches the caller; an endpoint added gets traffic within 1 s; one marked not ready gets none within 1 s', async () => {
    a = await startPod('127.0.0.2');
    b = await startPod('127.0.0.3');
    await putSlice('api-1', [[a, READY]]);
    await waitFor(() => sidecarReady(web.listening.admin!), 'web to get its config', 15_000);
    await untilWebSees(['127.0.0.2'], 'the listed endpoint', 5000);
    const s = await status();
    assert.equal(s?.discovery?.synced, true);
    assert.equal(s?.discovery?.error, null);

    const traffic = load(2);
    try {
      await whileServing(a, 20);
      const added = performance.now();
      await putSlice('api-1', [[a, READY], [b, READY]]);
      await waitFor(() => b.seen > 0, 'traffic on the added endpoint', PROPAGATION_MS);
      timings.added = Math.round(performance.now() - added);

      await putSlice('api-1', [[a, READY], [b, NOT_READY]]);
      timings.notReady = Math.round(await untilWebSees(['127.0.0.2'], 'the not-ready endpoint to leave'));
      const seen = b.seen;
      await whileServing(a, 100);
      assert.equal(b.seen, seen, 'a not-ready endpoint gets no requests');
    } finally {
      const statuses = await traffic.stop();
      assert.deepEqual([...statuses.keys()], [200], traffic.failures.join('\n'));
    }
  });

  test('a terminating endpoint that still serves gets no new requests while another is ready, and serves as the last resort when none is', async () => {
    await putSlice('api-1', [[a, READY], [b, READY]]);
    await untilWebSees(['127.0.0.2', '127.0.0.3'], 'both endpoints');
    await putSlice('api-1', [[a, READY], [b, TERMINATING]]);
    timings.terminating = Math.round(await untilWebSees(['127.0.0.2', '127.0.0.3 terminating'], 'the endpoint to be marked terminating'));
    const traffic = load(2);
    try {
      const seen = b.seen;
      await whileServing(a, 100);
      assert.equal(b.seen, seen, 'no new requests to a terminating endpoint while a ready one exists');
      // Last resort: the only other instance is gone, the terminating one still serves.
      await putSlice('api-1', [[a, NOT_READY], [b, TERMINATING]]);
      await waitFor(() => b.seen > seen + 20, 'the terminating endpoint to serve as the last resort', PROPAGATION_MS * 2);
    } finally {
      const statuses = await traffic.stop();
      assert.deepEqual([...statuses.keys()], [200], traffic.failures.join('\n'));
    }
  });

  test('an endpoint removed from its slice is gone from the caller within 1 s', async () => {
    await putSlice('api-1', [[a, READY], [b, READY]]);
    await untilWebSees(['127.0.0.2', '127.0.0.3'], 'both endpoints');
    await putSlice('api-1', [[a, READY]]);
    timings.removed = Math.round(await untilWebSees(['127.0.0.2'], 'the removed endpoint to leave'));
    const seen = b.seen;
    const traffic = load(2);
    await whileServing(a, 50);
    await traffic.stop();
    assert.equal(b.seen, seen);
    await b.stop();
  });

  let c: Pod;
  let d: Pod;

  test('a rolling update under steady load fails no request: new pods added ready, old ones terminating, then removed and stopped', async () => {
    const traffic = load(4);
    try {
      await whileServing(a, 50);
      // New ReplicaSet: two pods in a second slice, as the controller spreads a large Service.
      c = await startPod('127.0.0.4');
      d = await startPod('127.0.0.5');
      await putSlice('api-2', [[c, NOT_READY], [d, NOT_READY]]);
      await putSlice('api-2', [[c, READY], [d, NOT_READY]]);
      await waitFor(() => c.seen > 0, 'traffic on the first new pod', PROPAGATION_MS);
      await putSlice('api-2', [[c, READY], [d, READY]]);
      await waitFor(() => d.seen > 0, 'traffic on the second new pod', PROPAGATION_MS);
      // The old pod is told to stop: terminating but serving, until it is gone.
      await putSlice('api-1', [[a, TERMINATING]]);
      await untilWebSees(['127.0.0.2 terminating', '127.0.0.4', '127.0.0.5'], 'the old pod to be terminating');
      const seen = a.seen;
      await whileServing(c, 50);
      assert.equal(a.seen, seen, 'the terminating pod gets no new requests');
      await deleteSlice('api-1');
      await untilWebSees(['127.0.0.4', '127.0.0.5'], 'the old pod to be gone');
      await a.stop();
      await whileServing(c, 100);
      await whileServing(d, 100);
    } finally {
      const statuses = await traffic.stop();
      assert.deepEqual([...statuses.keys()], [200], `failed requests during the rollout: ${traffic.failures.join('\n')}`);
      timings.rolloutRequests = [...statuses.values()].reduce((x, y) => x + y, 0);
    }
  });

  test('the API server stopped and started mid-traffic: the endpoints stay, the watch comes back, and a change after the restart arrives', async () => {
    const traffic = load(2);
    try {
      await stopApi();
      await waitFor(async () => (await status())?.discovery?.error != null, 'the reconciler to notice the API server is gone', 15_000);
      // Serving on the last known endpoints, never an empty list.
      assert.deepEqual(await webSees(), ['127.0.0.4', '127.0.0.5']);
      await whileServing(c, 50, 20_000);
      await startApi();
      const e = await startPod('127.0.0.6');
      const changed = performance.now();
      await putSlice('api-2', [[c, READY], [d, READY], [e, READY]]);
      // The watch retries with a backoff of at most 5 s, then resumes from its resourceVersion.
      await waitFor(() => e.seen > 0, 'traffic on a pod added after the restart', 15_000).catch(async (err: Error) => {
        const log = reconciler.output().split('\n').filter((l) => l.includes('"discovery_'));
        throw new Error(`${err.message}: ${await diagnose()}; reconciler: ${log.slice(-10).join('\n')}`);
      });
      timings.afterApiRestart = Math.round(performance.now() - changed);
      // Whether the watch resumed from its resourceVersion or was told 410 Gone and listed again
      // depends on the API server's watch cache; either way the change arrived.
      timings.relistedAfterRestart = reconciler.output().includes('"type":"discovery_relist"') ? 1 : 0;
      await waitFor(async () => (await status())?.discovery?.error === null, 'the discovery error to clear', 5000);
      const metrics = await (await fetch(`http://127.0.0.1:${controlPort}/metrics`)).text();
      const sum = (name: string) => [...metrics.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
      assert.ok(sum('trellis_discovery_errors_total') > 0, 'the outage is counted');
      assert.equal(sum('trellis_discovery_synced'), 1);
      assert.ok(sum('trellis_reconcile_endpoint_snapshots_total') > 0, 'endpoint changes were pushed without a commit');
    } finally {
      if (apiDown) await startApi();
      const statuses = await traffic.stop();
      assert.deepEqual([...statuses.keys()], [200], traffic.failures.join('\n'));
    }
  });

  test('a reconciler restarted while the API server is down pushes nothing (no empty endpoint set); once it lists, the caller is already in sync', async () => {
    const before = await webSees();
    assert.deepEqual(before, ['127.0.0.4', '127.0.0.5', '127.0.0.6']);
    const traffic = load(2);
    const observed = new Set<string>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        observed.add(JSON.stringify(await webSees()));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      reconciler.child.kill('SIGKILL');
      await reconciler.exited;
      await stopApi();
      reconciler = await startReconciler();
      await waitFor(async () => (await status())?.applied != null, 'the new reconciler to apply the revision', 10_000);
      const unsynced = await status();
      assert.equal(unsynced?.discovery?.synced, false);
      assert.equal(unsynced?.snapshot, null, 'nothing is published before the first list');
      await whileServing(c, 50, 20_000);
      await startApi();
      await waitFor(async () => (await status())?.discovery?.synced === true, 'the first list after the API server is back', 15_000);
      await waitFor(async () => (await status())?.summary.inSync === 1, 'web to be in sync with the new reconciler', 5000);
      await whileServing(d, 50);
    } finally {
      if (apiDown) await startApi(); // so that the tests after a failure still have a cluster
      watching = false;
      await watcher;
      const statuses = await traffic.stop();
      assert.deepEqual([...statuses.keys()], [200], traffic.failures.join('\n'));
    }
    assert.deepEqual([...observed], [JSON.stringify(before)], 'the caller never saw another endpoint set');
  });

  test('a namespace without any EndpointSlice is still announced once listed, so a reconciler holding its first push back goes on', async () => {
    await createNamespace(env, 'empty');
    const discovery = new KubernetesDiscovery({ kubeConfig: env.kubeConfig, namespaces: ['empty'], log: silent });
    const changes: string[][] = [];
    await discovery.start((changed) => changes.push([...changed]));
    try {
      await waitFor(() => discovery.synced(), 'the first list of an empty namespace', 10_000);
      await waitFor(() => changes.length > 0, 'the first list to be announced', 5000);
      assert.deepEqual(changes, [[]], 'one announcement, naming no service');
    } finally {
      await discovery.stop();
    }
  });

  test('a discovery limited to some namespaces lists and watches only those, and a slice that loses its service label leaves its service', async () => {
    await createNamespace(env, 'team-b');
    const body = (name: string, namespace: string, service: string, address: string) => endpointSlice(name, namespace, service, 'FQDN', [{ name: 'http', port: 8080 }], [[address, { ready: true }]]);
    await slices.createNamespacedEndpointSlice({ namespace: 'team-b', body: body('api-x', 'team-b', 'api', '127.0.1.1') });
    // Watches that end every second: each must resume where the last one stopped, losing nothing and listing nothing again.
    const logLines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });
    const discovery = new KubernetesDiscovery({ kubeConfig: env.kubeConfig, namespaces: ['team-b'], log, watchTimeoutSeconds: 1 });
    const changes: string[][] = [];
    await discovery.start((changed) => changes.push([...changed]));
    try {
      const port = { kind: 'named', port: null } as const;
      await waitFor(() => discovery.synced(), 'the first list of team-b', 10_000);
      assert.deepEqual(discovery.instances('team-b', 'api', port)?.map((e) => `${e.address}:${e.port}`), ['127.0.1.1:8080']);
      assert.equal(discovery.instances('default', 'api', port), undefined, 'namespaces outside the list are not watched');
      assert.deepEqual(changes, [['team-b/api']]);
      await slices.createNamespacedEndpointSlice({ namespace: 'team-b', body: body('api-y', 'team-b', 'api', '127.0.1.2') });
      await waitFor(() => discovery.instances('team-b', 'api', port)?.length === 2, 'a second slice of the same service');
      await slices.replaceNamespacedEndpointSlice({ name: 'api-x', namespace: 'team-b', body: { ...body('api-x', 'team-b', 'api', '127.0.1.1'), metadata: { name: 'api-x', namespace: 'team-b', labels: { other: 'x' } } } });
      await waitFor(() => discovery.instances('team-b', 'api', port)?.length === 1, 'the unlabelled slice to leave');
      // Changes made across several watch restarts all arrive.
      for (let i = 3; i <= 5; i++) {
        await waitFor(() => logLines.filter((l) => l.includes('"discovery_watch_ended"')).length >= i - 2, `watch number ${i - 2} to end`, 5000);
        await slices.createNamespacedEndpointSlice({ namespace: 'team-b', body: body(`api-${i}`, 'team-b', 'api', `127.0.1.${i}`) });
      }
      await waitFor(() => discovery.instances('team-b', 'api', port)?.length === 4, 'the slices made across watch restarts');
      assert.equal(logLines.filter((l) => l.includes('"discovery_relist"')).length, 0, 'resumed from the resourceVersion, never listed again');
      assert.equal(discovery.state().error, null);
    } finally {
      await discovery.stop();
    }
  });

  test('a discovery that follows the spec\'s namespaces lists one it is told of before it counts as synced, and forgets one it is no longer told of', async () => {
    await createNamespace(env, 'team-c');
    await slices.createNamespacedEndpointSlice({
      namespace: 'team-c',
      body: { metadata: { name: 'db-1', namespace: 'team-c', labels: { 'kubernetes.io/service-name': 'db' } }, addressType: 'FQDN', ports: [{ port: 5432 }], endpoints: [{ addresses: ['127.0.2.1'] }] },
    });
    const discovery = new KubernetesDiscovery({ kubeConfig: env.kubeConfig, namespaces: 'spec', log: silent });
    const changes: string[][] = [];
    await discovery.start((changed) => changes.push([...changed].sort()));
    try {
      const port = { kind: 'named', port: null } as const;
      assert.equal(discovery.synced(), false, 'not synced before the spec names its namespaces');
      discovery.follow(new Set(['team-b']));
      await waitFor(() => discovery.synced(), 'team-b to be listed', 10_000);
      assert.equal(discovery.instances('team-b', 'api', port)?.length, 4);
      discovery.follow(new Set(['team-b', 'team-c']));
      assert.equal(discovery.synced(), false, 'a namespace not listed yet holds pushes back');
      assert.equal(discovery.instances('team-c', 'db', port), undefined);
      await waitFor(() => discovery.synced(), 'team-c to be listed', 10_000);
      assert.deepEqual(discovery.instances('team-c', 'db', port)?.map((e) => `${e.address}:${e.port}`), ['127.0.2.1:5432']);
      assert.match(discovery.description, /team-b, team-c/);
      discovery.follow(new Set(['team-c']));
      assert.equal(discovery.synced(), true);
      assert.equal(discovery.instances('team-b', 'api', port), undefined, 'a namespace no longer followed is forgotten');
      assert.deepEqual(changes.at(-1), ['team-b/api']);
    } finally {
      await discovery.stop();
    }
  });

  test('a meshed service\'s pods are called on their sidecar\'s inbound port, over mTLS to the ServiceAccount identity', async () => {
    const app = await startUpstream('cart');
    const pod = { ip: '127.0.0.7' };
    const cart = await startTrellis(['sidecar', '--service', 'cart', '--control', `http://127.0.0.1:${controlPort}`, '--outbound', '0', '--inbound', `${pod.ip}:${inboundPort}`, '--admin', '0', '--app', `127.0.0.1:${app.port}`, '--state-dir', join(stateDir, 'cart-state')]);
    await waitFor(() => sidecarReady(cart.listening.admin!), 'cart\'s sidecar to get its config and certificate', 10_000);
    // The slice lists the app's port; callers must use the sidecar's inbound port instead.
    await putSlice('cart-1', [[pod, READY]], 'cart');
    await untilWebSees([`${pod.ip}:${inboundPort}`], 'cart\'s pod on the inbound port', 5000, 'cart');
    const reply = await send(web.listening.outbound!, 'cart', '/');
    assert.equal(reply.status, 200, reply.body);
    assert.equal(reply.body, 'cart');
    const identity = (await (await fetch(`http://127.0.0.1:${cart.listening.admin}/identity`)).json()) as { identity: string };
    assert.equal(identity.identity, 'spiffe://k.local/ns/default/sa/default');
  });
});
