/**
 * Reconciler replicas and sidecar failover, as real processes (no cluster): two reconcilers
 * follow the same spec folder and sign with one root (a shared --ca-dir, as replicas in a
 * cluster share the Secret of `--ca-secret`); two sidecars, caller → callee over strict mTLS,
 * are given both (`--control A --control B`).
 *
 * Under steady load, the replica both sidecars stream from is SIGKILLed: no request fails
 * (the data plane never waits on the control plane), both sidecars reconnect to the other
 * replica, whose /status then shows them connected and in sync, and a spec change made after
 * the kill reaches them there (the route's shares move from one backend filter to the other).
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { sidecarReady, startTrellis, steadyLoad, stopProcesses, tempDir, type Proc } from '../helpers/processes.ts';
import { cleanup, closedPort, send, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';

after(async () => {
  await stopProcesses();
  await cleanup();
});

interface Status {
  sidecars: { service: string; node: string; connected: boolean; inSync: boolean }[];
}

async function status(port: number): Promise<Status | undefined> {
  const r = await fetch(`http://127.0.0.1:${port}/status`).catch(() => undefined);
  return r?.ok ? ((await r.json()) as Status) : undefined;
}

/** Services connected to the replica on `port` and in sync with it, sorted. */
async function connectedTo(port: number): Promise<string[]> {
  return ((await status(port))?.sidecars ?? []).filter((s) => s.connected && s.inSync).map((s) => s.service).sort();
}

/** The spec: caller and callee under strict mTLS; callee's route splits between two filters by `weights` (a, b). */
function writeSpec(dir: string, calleeInbound: number, weights: [number, number]): void {
  const share = (name: string, weight: number) => `        - { name: callee, port: 80, weight: ${weight}, filters: [{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-share, value: ${name} }] } }] }\n`;
  writeFileSync(
    join(dir, 'mesh.yaml'),
    `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: t }
spec: { trustDomain: t.local, mtls: { mode: strict }, access: { default: allow } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: caller }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: callee }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${calleeInbound} }] } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: callee }
spec:
  parentRefs: [{ kind: Service, name: callee }]
  rules:
    - backendRefs:
${share('a', weights[0])}${share('b', weights[1])}`,
  );
}

test('killing the replica both sidecars stream from fails no request; they move to the other replica, which then pushes them a spec change', { timeout: 90_000 }, async () => {
  const dir = tempDir();
  const specDir = join(dir, 'spec');
  mkdirSync(specDir);
  const app = await startUpstream('callee');
  const calleeInbound = await closedPort();
  writeSpec(specDir, calleeInbound, [100, 0]);

  // Two replicas of one control plane: same spec, same root.
  const caDir = join(dir, 'ca');
  const replicas = await Promise.all([0, 1].map(() => startTrellis(['reconcile', '--dir', specDir, '--listen', '127.0.0.1:0', '--ca-dir', caDir])));
  const urls = replicas.map((r) => `http://127.0.0.1:${r.listening.port}`);
  const sidecar = (service: string, inbound: string, extra: string[] = []) =>
    startTrellis(['sidecar', '--service', service, '--control', urls[0]!, '--control', urls[1]!, '--inbound', inbound, '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', ...extra]);
  const callee = await sidecar('callee', `127.0.0.1:${calleeInbound}`, ['--app', `127.0.0.1:${app.port}`]);
  const caller = await sidecar('caller', '127.0.0.1:0');
  await waitFor(async () => (await sidecarReady(caller.listening.admin!)) && (await sidecarReady(callee.listening.admin!)), 'both sidecars configured', 15_000);
  assert.equal((await send(caller.listening.outbound!, 'callee', '/')).status, 200);

  // The order given is a preference: both stream from the first replica.
  const [first, second] = replicas as [Proc, Proc];
  await waitFor(async () => (await connectedTo(first.listening.port!)).join() === 'callee,caller', 'both sidecars on the first replica', 10_000);
  assert.deepEqual(await connectedTo(second.listening.port!), []);

  const load = steadyLoad(caller.listening.outbound!, 'callee', 4);
  try {
    await waitFor(() => (load.statuses.get(200) ?? 0) > 100, 'traffic through the mesh', 10_000);
    const killedAt = performance.now();
    first.child.kill('SIGKILL');
    await first.exited;
    await waitFor(async () => (await connectedTo(second.listening.port!)).join() === 'callee,caller', 'both sidecars connected and in sync with the second replica', 15_000);
    const movedMs = Math.round(performance.now() - killedAt);

    // A change made after the kill: the route's shares move from a to b.
    const before = app.seen.length;
    writeSpec(specDir, calleeInbound, [0, 100]);
    const changedAt = performance.now();
    await waitFor(() => app.seen.slice(before).some((r) => r.headers['x-share'] === 'b'), 'the spec change to reach the caller through the second replica', 15_000);
    const appliedMs = Math.round(performance.now() - changedAt);
    const answered = load.statuses.get(200) ?? 0;
    await waitFor(() => (load.statuses.get(200) ?? 0) > answered + 100, 'more traffic after the change', 10_000);
    const after = app.seen.slice(-50).map((r) => r.headers['x-share']);
    assert.deepEqual([...new Set(after)], ['b'], 'all traffic on the new share');
    console.log(`# sidecars on the other replica ${movedMs} ms after the kill; the change applied ${appliedMs} ms after the edit`);
  } finally {
    await load.stop();
  }
  assert.deepEqual([...load.statuses.keys()], [200], `no failed request: ${JSON.stringify([...load.statuses])} ${load.failures.join(' | ')}`);
  assert.match(caller.output(), /"type":"control_failover"/);
  assert.match(caller.output(), new RegExp(`"type":"control_connected","url":"${urls[1]}"`));
});

test('--control takes comma-separated URLs as well, and refuses what is not one', async () => {
  const bad = startTrellis(['sidecar', '--service', 'caller', '--control', 'http://127.0.0.1:1,not-a-url', '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0']);
  await assert.rejects(bad, /exited with 2: .*--control takes reconciler URLs such as http:\/\/127\.0\.0\.1:15010, not "not-a-url"/s);
  // Nothing answers at either address: the sidecar tries both in turn, and serves meanwhile.
  const [a, b] = [await closedPort(), await closedPort()];
  const sidecar = await startTrellis(['sidecar', '--service', 'caller', '--control', `http://127.0.0.1:${a},http://127.0.0.1:${b}`, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0']);
  await waitFor(() => sidecar.output().includes(`"url":"http://127.0.0.1:${b}"`), 'the second URL to be tried');
  assert.match(sidecar.output(), new RegExp(`"type":"control_disconnected","url":"http://127.0.0.1:${a}"`));
});
