/**
 * POST /hooks/git on a real reconciler server over a real git remote: each delivery id is
 * accepted once within the window (on the server's injected clock), a replay gets 409
 * `webhook_replayed` and triggers nothing, and the memory of ids stays bounded.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { GitSource } from '../../src/reconciler/git-source.ts';
import { ReconcilerMetrics } from '../../src/reconciler/metrics.ts';
import { Reconciler } from '../../src/reconciler/reconciler.ts';
import { RecentDeliveries, ReconcilerServer, WEBHOOK_DELIVERY_MEMORY } from '../../src/reconciler/server.ts';
import { createRepo } from '../helpers/git.ts';

const SECRET = 'webhook-secret';
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const clean of cleanups.reverse()) await clean();
});

/** A GitSource that counts the pokes it gets: each would be a fetch request. */
class CountingGitSource extends GitSource {
  pokes = 0;
  override poke(): void {
    this.pokes++;
    super.poke();
  }
}

async function startServer() {
  const repo = createRepo();
  cleanups.push(() => repo.remove());
  repo.commit({ 'mesh.yaml': 'apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: { name: test }\nspec: { trustDomain: test.local }\n' }, 'One');
  const cacheDir = mkdtempSync(join(tmpdir(), 'trellis-cache-'));
  cleanups.push(() => rmSync(cacheDir, { recursive: true, force: true }));
  const clock = { now: 1_000_000 };
  const source = new CountingGitSource({ url: repo.url, branch: 'main', cacheDir, intervalMs: 3_600_000 });
  const metrics = new ReconcilerMetrics();
  const reconciler = new Reconciler({ source, log: pino({ level: 'silent' }), metrics });
  const server = new ReconcilerServer({ reconciler, metrics, token: 't', webhookSecret: SECRET, now: () => clock.now });
  const address = await server.listen('127.0.0.1', 0);
  await reconciler.start();
  cleanups.push(async () => {
    await reconciler.stop();
    await server.close();
  });
  const hook = async (delivery: string | undefined, body = JSON.stringify({ ref: 'refs/heads/main' })) => {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-hub-signature-256': `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}` };
    if (delivery !== undefined) headers['x-github-delivery'] = delivery;
    const res = await fetch(`http://127.0.0.1:${address.port}/hooks/git`, { method: 'POST', body, headers });
    return { status: res.status, body: (await res.json()) as { error?: string } };
  };
  const metricsText = async () => (await fetch(`http://127.0.0.1:${address.port}/metrics`)).text();
  return { source, clock, hook, metricsText };
}

describe('webhook deliveries', () => {
  test('a delivery is accepted once; its replay gets 409 webhook_replayed and pokes nothing, until the window has passed', async () => {
    const { source, clock, hook, metricsText } = await startServer();
    const id = '72d3162e-cc78-11e3-81ab-4c9367dc0958';
    assert.equal((await hook(id)).status, 202);
    assert.equal(source.pokes, 1);
    for (let i = 0; i < 5; i++) {
      const replay = await hook(id);
      assert.deepEqual([replay.status, replay.body.error], [409, 'webhook_replayed']);
    }
    // The same id with another (validly signed) body is still the same delivery.
    assert.equal((await hook(id, JSON.stringify({ ref: 'refs/heads/main', zen: 'x' }))).status, 409);
    assert.equal(source.pokes, 1, 'replays triggered no fetch');
    assert.equal((await hook('72d3162e-0000-0000-0000-000000000002')).status, 202, 'another delivery is accepted');
    assert.equal(source.pokes, 2);
    clock.now += WEBHOOK_DELIVERY_MEMORY.ttlMs;
    assert.equal((await hook(id)).status, 202, 'past the window the id is forgotten');
    assert.match(await metricsText(), /trellis_reconcile_webhooks_total\{result="replayed"\} 6/);
  });

  test('a delivery without an id is refused with 400 webhook_delivery_missing', async () => {
    const { source, hook } = await startServer();
    const missing = await hook(undefined);
    assert.deepEqual([missing.status, missing.body.error], [400, 'webhook_delivery_missing']);
    assert.equal((await hook('bad id with spaces')).status, 400);
    assert.equal(source.pokes, 0);
  });

  test('the memory of delivery ids is bounded in count and time', () => {
    let now = 0;
    const seen = new RecentDeliveries({ maxIds: 3, ttlMs: 1000, now: () => now });
    assert.ok(seen.admit('a') && seen.admit('b') && seen.admit('c'));
    assert.equal(seen.admit('a'), false);
    assert.ok(seen.admit('d'), 'a fourth id');
    assert.equal(seen.size, 3);
    assert.equal(seen.admit('a'), true, 'the oldest was forgotten to make room');
    now = 999;
    assert.equal(seen.admit('d'), false);
    now = 2000;
    assert.equal(seen.admit('d'), true, 'expired');
    assert.equal(seen.size, 1, 'expired ids are dropped');
    const big = new RecentDeliveries({ ...WEBHOOK_DELIVERY_MEMORY, now: () => now });
    for (let i = 0; i < 25_000; i++) big.admit(`id-${i}`);
    assert.equal(big.size, WEBHOOK_DELIVERY_MEMORY.maxIds);
  });
});
