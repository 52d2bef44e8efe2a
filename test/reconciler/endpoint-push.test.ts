/**
 * The reconciler's second input, without sockets: a revision from an in-memory source,
 * endpoints from an in-memory discovery, sidecars as recorded streams. Covers: nothing
 * pushed before the first full list, endpoint changes pushed as deltas of only the changed
 * resource after the debounce, unrelated changes ignored, and a sidecar with an
 * unacknowledged message catching up after its ack.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { ControlMessage } from '../../src/config/control-protocol.ts';
import type { CompiledEndpoint, EndpointsBody } from '../../src/config/types.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';
import type { Discovery, PortChoice } from '../../src/reconciler/discovery.ts';
import { ReconcilerMetrics } from '../../src/reconciler/metrics.ts';
import { Reconciler, type SidecarRecord } from '../../src/reconciler/reconciler.ts';
import type { Source, SourceEvent } from '../../src/reconciler/source.ts';
import { discoverySpec, UNMESHED_DISCOVERED_API } from '../helpers/endpoint-slices.ts';
import { renderStatus } from '../../src/cli/status.ts';

const SPEC = discoverySpec('t', null, UNMESHED_DISCOVERED_API);

/** Revision r1 (SPEC) at start; `commit` emits more. */
class MemorySource implements Source {
  readonly description = 'memory';
  #onEvent: ((event: SourceEvent) => void) | null = null;
  async start(onEvent: (event: SourceEvent) => void): Promise<void> {
    this.#onEvent = onEvent;
    this.commit('r1', SPEC);
  }
  commit(id: string, text: string): void {
    this.#onEvent?.({ type: 'revision', revision: { id, files: [new SourceFile('mesh.yaml', text)], description: id, seenAt: Date.now() } });
  }
  poke(): void {}
  async stop(): Promise<void> {}
}

/** Instances set by the test; `list()` plays the first full list, `set()` a watch event. */
class MemoryDiscovery implements Discovery {
  readonly description = 'memory';
  #listed = false;
  #lists = new Map<string, string[]>();
  #onChange: ((changed: ReadonlySet<string>) => void) | null = null;
  /** Namespace sets the reconciler asked it to follow. */
  readonly followed: string[][] = [];
  /** Followed namespaces not listed yet (only those `holdBack` names; the rest list at once). */
  readonly #unlisted = new Set<string>();
  readonly #holdBack = new Set<string>();
  follow(namespaces: ReadonlySet<string>): void {
    this.followed.push([...namespaces].sort());
    for (const n of namespaces) if (this.#holdBack.has(n)) this.#unlisted.add(n);
  }
  /** Namespaces whose first list will wait for `listNamespace`. */
  holdBack(namespace: string): void {
    this.#holdBack.add(namespace);
  }
  listNamespace(namespace: string, lists: Record<string, string[]>): void {
    this.#holdBack.delete(namespace);
    this.#unlisted.delete(namespace);
    for (const [k, v] of Object.entries(lists)) this.#lists.set(k, v);
    this.#onChange?.(new Set(Object.keys(lists)));
  }
  async start(onChange: (changed: ReadonlySet<string>) => void): Promise<void> {
    this.#onChange = onChange;
  }
  async stop(): Promise<void> {}
  list(lists: Record<string, string[]>): void {
    this.#lists = new Map(Object.entries(lists));
    this.#listed = true;
    this.#onChange?.(new Set(this.#lists.keys()));
  }
  set(service: string, addresses: string[]): void {
    this.#lists.set(service, addresses);
    this.#onChange?.(new Set([service]));
  }
  instances(namespace: string, service: string, port: PortChoice): readonly CompiledEndpoint[] | undefined {
    if (!this.#listed || this.#unlisted.has(namespace)) return undefined;
    const p = port.kind === 'inbound' ? port.port : 8080;
    return (this.#lists.get(`${namespace}/${service}`) ?? []).map((address) => ({ address, port: p, weight: 1, zone: null }));
  }
  synced(): boolean {
    return this.#listed && this.#unlisted.size === 0;
  }
  state() {
    return { description: this.description, synced: this.#listed, error: null, lastChangeAt: null };
  }
}

async function setUp() {
  const discovery = new MemoryDiscovery();
  const source = new MemorySource();
  const timers: Array<() => void> = [];
  const reconciler = new Reconciler({
    source,
    discovery,
    log: pino({ level: 'silent' }),
    metrics: new ReconcilerMetrics(),
    schedule: (fn) => {
      timers.push(fn);
      return () => timers.splice(timers.indexOf(fn), 1);
    },
  });
  await reconciler.start();
  await reconciler.idle();
  const sent: ControlMessage[] = [];
  const record = reconciler.subscribe({ service: 'web', node: 'web-1', version: null, resources: {} }, { send: (m) => (sent.push(m), 1), close: () => undefined });
  /** Fires the debounce timer, as the clock would after 50 ms, and lets the push go out (sends are synchronous; a first push then waits for acks). */
  const tick = async () => {
    for (const fn of timers.splice(0)) fn();
    await new Promise((r) => setImmediate(r));
  };
  const ack = (r: SidecarRecord) => reconciler.ack({ service: r.service, node: r.node, version: r.pending!.version, revision: r.pending!.revision, ok: true });
  return { reconciler, discovery, source, sent, record, tick, ack, timers };
}

const apiEndpoints = (m: ControlMessage) => {
  const resources = m.type === 'config' ? m.config.resources : m.type === 'delta' ? m.delta.resources : [];
  return (resources.find((r) => r.name === 'endpoints/api')?.body as EndpointsBody | undefined)?.static.map((e) => e.address);
};

describe('endpoints from a discovery', () => {
  test('nothing is pushed before the first full list; then the whole config with the listed instances', async () => {
    const { reconciler, discovery, sent, record, tick, ack } = await setUp();
    assert.equal(sent.length, 0, 'an unlisted discovery holds the first push back (no empty endpoint set)');
    assert.equal(reconciler.ready, false);
    assert.equal(reconciler.status().snapshot, null);
    assert.deepEqual(discovery.followed, [['default']], 'the discovery is told which namespaces the spec takes endpoints from');
    discovery.list({ 'default/api': ['10.0.0.1', '10.0.0.2'] });
    await tick();
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.type, 'config');
    assert.deepEqual(apiEndpoints(sent[0]!), ['10.0.0.1', '10.0.0.2']);
    assert.equal(reconciler.ready, true);
    ack(record);
    await reconciler.stop();
  });

  test('an endpoint change reaches the sidecar as a delta of that one resource, coalesced; a change to a service nobody uses sends nothing', async () => {
    const { reconciler, discovery, sent, record, tick, ack, timers } = await setUp();
    discovery.list({ 'default/api': ['10.0.0.1'] });
    await tick();
    ack(record);
    // The ack ends the first push's make-before-break wait, whose bound is a timer too.
    await new Promise((r) => setImmediate(r));
    discovery.set('default/api', ['10.0.0.1', '10.0.0.2']);
    discovery.set('default/api', ['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    assert.equal(timers.length, 1, 'a burst of changes waits on one timer');
    assert.equal(sent.length, 1, 'nothing before the debounce fires');
    await tick();
    assert.equal(sent.length, 2);
    const delta = sent[1]!;
    assert.equal(delta.type, 'delta');
    if (delta.type === 'delta') {
      assert.deepEqual(delta.delta.resources.map((r) => r.name), ['endpoints/api']);
      assert.deepEqual(delta.delta.removed, []);
    }
    assert.deepEqual(apiEndpoints(delta), ['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    ack(record);
    discovery.set('other/thing', ['10.9.9.9']);
    assert.equal(timers.length, 0, 'a service the mesh does not use schedules nothing');
    assert.equal(reconciler.status().sidecars[0]!.inSync, true);
    await reconciler.stop();
  });

  test('a change while a push is unacknowledged is sent after the ack, against what the sidecar then holds', async () => {
    const { reconciler, discovery, sent, record, tick, ack } = await setUp();
    discovery.list({ 'default/api': ['10.0.0.1'] });
    await tick();
    ack(record);
    await reconciler.idle();
    discovery.set('default/api', ['10.0.0.2']);
    await tick();
    assert.equal(sent.length, 2);
    discovery.set('default/api', ['10.0.0.3']);
    await tick();
    assert.equal(sent.length, 2, 'no delta on top of an unconfirmed base');
    ack(record);
    assert.equal(sent.length, 3, 'sent as soon as the ack arrives');
    const last = sent[2]!;
    assert.equal(last.type, 'delta');
    if (last.type === 'delta') assert.equal(last.delta.base, record.heldVersion);
    assert.deepEqual(apiEndpoints(last), ['10.0.0.3']);
    ack(record);
    assert.equal(reconciler.status().sidecars[0]!.inSync, true);
    await reconciler.stop();
  });

  test('a revision that starts using a namespace waits for its list, while endpoint changes of the running revision still go out', async () => {
    const { reconciler, discovery, source, sent, record, tick, ack } = await setUp();
    discovery.list({ 'default/api': ['10.0.0.1'] });
    await tick();
    ack(record);
    await reconciler.idle();
    discovery.holdBack('data');
    source.commit('r2', `${SPEC}---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: db, namespace: data }
spec: { ports: [{ port: 5432 }], sidecar: false, endpoints: { kubernetes: {} } }
`);
    await reconciler.idle();
    assert.deepEqual(discovery.followed.at(-1), ['data', 'default'], 'the new namespace is followed beside the running ones');
    assert.equal(sent.length, 1, 'r2 waits for data to be listed');
    discovery.set('default/api', ['10.0.0.2']);
    await tick();
    assert.equal(sent.length, 2, 'an endpoint change does not wait for the new revision');
    const delta = sent[1]!;
    assert.equal(delta.type === 'delta' && delta.revision, 'r1');
    assert.deepEqual(apiEndpoints(delta), ['10.0.0.2']);
    ack(record);
    discovery.listNamespace('data', { 'data/db': ['10.1.0.1'] });
    await tick();
    assert.equal(sent.length, 3);
    const r2 = sent[2]!;
    assert.equal(r2.type === 'delta' && r2.revision, 'r2');
    if (r2.type === 'delta') assert.ok(r2.delta.resources.some((r) => r.name === 'endpoints/data/db' && (r.body as EndpointsBody).static[0]?.address === '10.1.0.1'));
    ack(record);
    await reconciler.stop();
  });

  test('status names backends without instances: consistent, but empty', async () => {
    const { reconciler, discovery, record, tick, ack } = await setUp();
    discovery.list({});
    await tick();
    ack(record);
    const status = reconciler.status();
    assert.deepEqual(status.snapshot?.withoutEndpoints, ['api']);
    assert.deepEqual(status.discovery, { description: 'memory', synced: true, error: null, lastChangeAt: null });
    const text = renderStatus(status, false);
    assert.match(text, /^discovery  memory  synced$/m);
    assert.match(text, /^endpoints  consistent, but api has no endpoints: calls to it fail with 503$/m);
    const down = renderStatus({ ...status, discovery: { description: 'memory', synced: true, error: 'the API server cannot be reached (ECONNREFUSED)', lastChangeAt: null } }, false);
    assert.match(down, /error: the API server cannot be reached \(ECONNREFUSED\); serving the last known endpoints/);
    await reconciler.stop();
  });
});
