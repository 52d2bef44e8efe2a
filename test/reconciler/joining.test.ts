/**
 * Make-before-break for joining services, without sockets: a revision from an in-memory
 * source, sidecars as recorded streams, certificates announced as the server announces them,
 * timers and clock driven by hand. A config that newly routes to a meshed service waits
 * (bounded) until a sidecar of that service holds a config; callers and callees that route to
 * each other do not wait for each other forever.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { ControlMessage } from '../../src/config/control-protocol.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';
import { ReconcilerMetrics } from '../../src/reconciler/metrics.ts';
import { Reconciler } from '../../src/reconciler/reconciler.ts';
import type { Source, SourceEvent } from '../../src/reconciler/source.ts';

const service = (name: string, port: number) => `---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${port} }] } }
`;
/** web and api, meshed; default allow, so each config routes to the other too. */
const SPEC = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: t }
spec: { trustDomain: t.local, access: { default: allow } }
${service('web', 9001)}${service('api', 9002)}`;

class MemorySource implements Source {
  readonly description = 'memory';
  #onEvent: ((event: SourceEvent) => void) | undefined;
  async start(onEvent: (event: SourceEvent) => void): Promise<void> {
    this.#onEvent = onEvent;
    this.commit('r1', SPEC);
  }
  commit(id: string, text: string): void {
    this.#onEvent?.({ type: 'revision', revision: { id, files: [new SourceFile('mesh.yaml', text)], description: id, seenAt: 0 } });
  }
  poke(): void {}
  async stop(): Promise<void> {}
}

/** `earlyMs`: timers fire this much before the clock reads their due time, as Node's timers can against `Date.now()`. */
async function setUp(earlyMs = 0) {
  let now = 1_000;
  const timers: Array<{ at: number; fn: () => void }> = [];
  const source = new MemorySource();
  const reconciler = new Reconciler({
    source,
    log: pino({ level: 'silent' }),
    metrics: new ReconcilerMetrics(),
    now: () => now,
    schedule: (fn, ms) => {
      const timer = { at: now + ms - earlyMs, fn };
      timers.push(timer);
      return () => timers.splice(timers.indexOf(timer), 1);
    },
  });
  await reconciler.start();
  await reconciler.idle();
  /** A sidecar of `svc` as node `node`: its stream's messages, and an ack of the last config. */
  const join = (svc: string, node: string) => {
    const sent: ControlMessage[] = [];
    const record = reconciler.subscribe({ service: svc, node, version: null, resources: {} }, { send: (m) => (sent.push(m), 1), close: () => undefined });
    const configs = () => sent.filter((m) => m.type === 'config' || m.type === 'delta');
    const ack = () => assert.ok(reconciler.ack({ service: svc, node, version: record.pending!.version, revision: record.pending!.revision, ok: true }));
    return { record, configs, ack };
  };
  const advance = (ms: number) => {
    now += ms;
    for (const t of timers.filter((x) => x.at <= now)) {
      timers.splice(timers.indexOf(t), 1);
      t.fn();
    }
  };
  return { reconciler, source, join, advance };
}

describe('joining services (make-before-break)', () => {
  test('a caller that joins first waits for its callee; the callee, still without a certificate, goes first', async () => {
    const { reconciler, join } = await setUp();
    reconciler.certificateIssued('web-1', 'web');
    const web = join('web', 'web-1');
    assert.equal(web.configs().length, 0, 'held: api is expected and has no sidecar yet');
    const api = join('api', 'api-1');
    assert.equal(api.configs().length, 1, 'api goes first: it has no certificate, web has one');
    assert.equal(web.configs().length, 0, 'web still waits for api');
    api.ack(); // a sidecar acknowledges once it holds a certificate that fits
    assert.equal(web.configs().length, 1, 'web gets its routes once api serves');
  });

  test('a callee that joined first, waiting for its expected caller, is released first when a caller with a certificate joins', async () => {
    const { reconciler, join } = await setUp();
    const api = join('api', 'api-1');
    assert.equal(api.configs().length, 0, 'api routes to web too, and web is expected');
    reconciler.certificateIssued('web-1', 'web');
    const web = join('web', 'web-1');
    assert.equal(api.configs().length, 1, 'api, without a certificate, is released first');
    assert.equal(web.configs().length, 0, 'web, ready to call, waits for api');
    api.ack();
    assert.equal(web.configs().length, 1);
  });

  test('a caller and a callee that both lack certificates wait for the first certificate, which decides who goes first', async () => {
    const { reconciler, join } = await setUp();
    const web = join('web', 'web-1');
    const api = join('api', 'api-1');
    assert.deepEqual([web.configs().length, api.configs().length], [0, 0], 'neither can serve yet');
    reconciler.certificateIssued('web-1', 'web');
    assert.deepEqual([web.configs().length, api.configs().length], [0, 1], 'web can call now, so api goes first');
    api.ack();
    assert.equal(web.configs().length, 1);
  });

  test('waits are bounded: a meshed service whose sidecars never come holds a caller once, for the timeout', async () => {
    const { join, advance } = await setUp();
    const web = join('web', 'web-1');
    assert.equal(web.configs().length, 0);
    advance(4_999);
    assert.equal(web.configs().length, 0);
    advance(1);
    assert.equal(web.configs().length, 1, 'sent when the wait ran out');
    const again = join('web', 'web-2');
    assert.equal(again.configs().length, 1, 'a later caller does not wait again for a service that never came');
  });

  test('a wait whose timer fires a little before the clock reads the timeout still ends (it is looked at again)', async () => {
    const { join, advance } = await setUp(1);
    const web = join('web', 'web-1');
    advance(4_999);
    assert.equal(web.configs().length, 0, 'the timer fired, but the clock says the wait has not run out');
    advance(1);
    advance(1);
    assert.equal(web.configs().length, 1, 'sent once the clock reads the timeout');
  });

  test('a connected callee that never acknowledges holds a caller for the timeout at most', async () => {
    const { reconciler, join, advance } = await setUp();
    const api = join('api', 'api-1');
    reconciler.certificateIssued('web-1', 'web');
    const web = join('web', 'web-1');
    assert.equal(api.configs().length, 1);
    advance(5_000);
    assert.equal(web.configs().length, 1);
  });

  test('a revision\'s make-before-break wait for a new service is bounded on the injected clock, and callers are not held twice', async () => {
    const { reconciler, source, join, advance } = await setUp();
    reconciler.certificateIssued('web-1', 'web');
    reconciler.certificateIssued('api-1', 'api');
    const api = join('api', 'api-1');
    const web = join('web', 'web-1');
    api.ack();
    web.ack();
    const extra = join('extra', 'extra-1'); // connected before its service is in the mesh
    source.commit('r2', SPEC + service('extra', 9003));
    await new Promise((r) => setImmediate(r));
    assert.equal(extra.configs().length, 1, 'the new service goes first');
    assert.equal(web.configs().length, 1, 'callers wait for it');
    advance(4_999);
    await new Promise((r) => setImmediate(r));
    assert.equal(web.configs().length, 1);
    advance(1);
    await new Promise((r) => setImmediate(r));
    assert.equal(web.configs().length, 2, 'after 5 s on the clock, callers get the revision without waiting again');
  });

  test('a sidecar whose certificate request was refused is never held: its config is what makes it ask again', async () => {
    const { reconciler, join } = await setUp();
    reconciler.certificateRefused('web-1');
    const web = join('web', 'web-1');
    assert.equal(web.configs().length, 1);
  });

  test('once a sidecar of the callee holds a config, a joining caller does not wait', async () => {
    const { reconciler, join } = await setUp();
    const api = join('api', 'api-1');
    const web = join('web', 'web-1');
    reconciler.certificateIssued('api-1', 'api');
    web.ack();
    api.ack();
    const again = join('web', 'web-2');
    assert.equal(again.configs().length, 1);
  });
});
