/**
 * The forwarding core's layers without sockets: deadline, retry with budget, breaker,
 * endpoint pick and attempt (src/sidecar/dispatch.ts and the files it composes), on an
 * injected clock, with a `Send` that answers from a script.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { createPicker } from '../../src/sidecar/balancer.ts';
import { CircuitBreaker } from '../../src/sidecar/breaker.ts';
import { ManualClock, seededRandom } from '../../src/sidecar/clock.ts';
import { Deadline } from '../../src/sidecar/deadline.ts';
import { dispatch, type AttemptTarget, type Dispatched, type Exchange, type Send } from '../../src/sidecar/dispatch.ts';
import type { ClusterPolicy } from '../../src/sidecar/endpoint-attempt.ts';
import { Endpoint } from '../../src/sidecar/endpoint.ts';
import { servingCandidates } from '../../src/sidecar/clusters.ts';
import { OutlierDetector } from '../../src/sidecar/outlier.ts';
import { RetryBudget } from '../../src/sidecar/retry-budget.ts';
import type { AttemptResult } from '../../src/sidecar/upstream.ts';

const GET: Exchange = { method: 'GET', path: '/', headers: {}, body: undefined, retrySafe: true };

function cluster(clock: ManualClock, ports: number[], o: { maxRequests?: number; budgetRatio?: number; minRetriesPerSecond?: number } = {}): ClusterPolicy & { breaker: CircuitBreaker } {
  const endpoints = ports.map((p) => new Endpoint('10.0.0.1', p, 1, null, null, clock.now()));
  const outlier = new OutlierDetector({ consecutive5xx: 0, consecutiveGatewayErrors: 0, intervalMs: 10_000, baseEjectionMs: 30_000, maxEjectionPercent: 50 }, clock);
  return {
    service: 'api',
    breaker: new CircuitBreaker({ maxConnections: 100, maxPendingRequests: 100, maxRequests: o.maxRequests ?? 100 }),
    picker: createPicker('round-robin', { clock, random: seededRandom(1), decayMs: 10_000, defaultRttMs: 30 }),
    outlier,
    budget: new RetryBudget({ ratio: o.budgetRatio ?? 0.2, minRetriesPerSecond: o.minRetriesPerSecond ?? 10, ttlMs: 10_000 }, clock),
    endpoints,
    queued: 0,
    settings: { circuitBreaker: { maxConnections: 100, maxPendingRequests: 100 } },
    candidates: () => servingCandidates(endpoints, outlier),
  };
}

const response = (status: number): AttemptResult => ({ ok: true, statusCode: status, headers: {}, trailers: () => undefined, body: Object.assign(Readable.from([]), { dump: async () => undefined }) as never });
const failure = (f: 'connect_failure' | 'upstream_reset'): AttemptResult => ({ ok: false, failure: f, error: new Error(f) });

/** A Send answering from `script` in order, recording where each attempt went. */
function scripted(script: Array<AttemptResult | ((signal: AbortSignal) => Promise<AttemptResult>)>): Send & { targets: AttemptTarget[] } {
  const targets: AttemptTarget[] = [];
  const send = (async (target, _x, window) => {
    targets.push(target);
    const next = script.shift();
    if (!next) throw new Error('no more scripted attempts');
    return typeof next === 'function' ? next(window.signal) : next;
  }) as Send & { targets: AttemptTarget[] };
  send.targets = targets;
  return send;
}

/** Resolves as an aborted attempt once `signal` aborts (what undici does). */
const hangs = (signal: AbortSignal) => new Promise<AttemptResult>((resolve) => signal.addEventListener('abort', () => resolve({ ok: false, failure: 'aborted', error: new Error('aborted') }), { once: true }));

function events() {
  const seen: string[] = [];
  return { seen, retried: (_s: string, r: string) => seen.push(`retry ${r}`), retryDenied: () => seen.push('denied'), overloaded: () => seen.push('overloaded'), ejected: (_s: string, e: string) => seen.push(`ejected ${e}`) };
}

function run(c: ClusterPolicy, clock: ManualClock, send: Send, o: { attempts?: number; codes?: number[]; backoffMs?: number; requestMs?: number; backendRequestMs?: number; exchange?: Exchange; ev?: ReturnType<typeof events> } = {}) {
  const deadline = new Deadline(clock, clock.now(), o.requestMs ?? 0);
  const ev = o.ev ?? events();
  const done = dispatch(c, o.exchange ?? GET, {
    policy: { timeouts: { requestMs: o.requestMs ?? 0, backendRequestMs: o.backendRequestMs ?? 0 }, retry: { attempts: o.attempts ?? 2, codes: o.codes ?? [503], backoffMs: o.backoffMs ?? 0 } },
    deadline,
    portOf: (ep) => ep.port,
    clock,
    random: () => 0.5,
    send,
    events: ev,
  });
  return { deadline, ev, done };
}

const kind = (d: Dispatched) => (d.kind === 'response' ? `response ${d.response.statusCode}` : d.kind === 'failed' ? `failed ${d.code}` : d.kind);

describe('the deadline layer', () => {
  test('the whole-request timeout aborts at its time on the clock, once; dispose clears the timer', async () => {
    const clock = new ManualClock(1000);
    const d = new Deadline(clock, 1000, 250);
    assert.equal(d.remainingMs(), 250);
    assert.equal(clock.sleeping, 1);
    clock.advance(249);
    await Promise.resolve();
    assert.equal(d.signal.aborted, false);
    clock.advance(1);
    await new Promise((r) => setImmediate(r));
    assert.equal(d.reason, 'request_timeout');
    assert.equal(d.timedOut, true);
    d.cancel('client_gone');
    assert.equal(d.reason, 'request_timeout', 'the first reason wins');
    const e = new Deadline(clock, clock.now(), 1000);
    e.dispose();
    await new Promise((r) => setImmediate(r));
    assert.equal(clock.sleeping, 0);
    assert.equal(new Deadline(clock, clock.now(), 0).remainingMs(), Infinity);
  });

  test('a per-try window aborts at the per-try timeout and says so; one not shorter than the request uses the request signal', async () => {
    const clock = new ManualClock(0);
    const d = new Deadline(clock, 0, 1000);
    const w = d.forTry(100);
    assert.equal(w.timeoutMs, 100);
    clock.advance(100);
    await new Promise((r) => setImmediate(r));
    assert.equal(w.signal.aborted, true);
    assert.equal(w.tryTimedOut(), true);
    assert.equal(d.signal.aborted, false, 'the request goes on');
    w.dispose();
    const whole = d.forTry(5000);
    assert.equal(whole.signal, d.signal);
    assert.equal(whole.timeoutMs, 900);
    const cancelled = d.forTry(100);
    d.cancel('client_gone');
    assert.equal(cancelled.signal.aborted, true);
    assert.equal(cancelled.tryTimedOut(), false);
    cancelled.dispose();
    d.dispose();
  });
});

describe('dispatch: retry → breaker → pick → attempt', () => {
  test('a 503 is retried on an endpoint not tried yet, and the retry is reported', async () => {
    const clock = new ManualClock(0);
    const c = cluster(clock, [1, 2]);
    const send = scripted([response(503), response(200)]);
    const { done, ev } = run(c, clock, send);
    const d = await done;
    assert.equal(kind(d), 'response 200');
    assert.deepEqual(send.targets.map((t) => t.port).sort(), [1, 2]);
    assert.deepEqual(ev.seen, ['retry 503']);
    assert.equal(c.breaker.active, 1, 'the answered attempt holds its slot until settled');
    if (d.kind === 'response') d.settle();
    assert.equal(c.breaker.active, 0);
  });

  test('a retry the budget refuses returns the last response and is reported as denied', async () => {
    const clock = new ManualClock(0);
    const c = cluster(clock, [1], { budgetRatio: 0, minRetriesPerSecond: 0 });
    const { done, ev } = run(c, clock, scripted([response(503)]));
    assert.equal(kind(await done), 'response 503');
    assert.deepEqual(ev.seen, ['denied']);
  });

  test('a full breaker answers overloaded without sending; no endpoint answers no_endpoints', async () => {
    const clock = new ManualClock(0);
    const full = cluster(clock, [1], { maxRequests: 1 });
    assert.equal(full.breaker.tryAcquire(), true);
    const send = scripted([]);
    const { done, ev } = run(full, clock, send);
    assert.equal(kind(await done), 'failed overloaded');
    assert.deepEqual(ev.seen, ['overloaded']);
    assert.equal(send.targets.length, 0);
    assert.equal(kind(await run(cluster(clock, []), clock, send).done), 'failed no_endpoints');
  });

  test('connection failures are retried even for unsafe methods; resets only for safe ones', async () => {
    const clock = new ManualClock(0);
    const post: Exchange = { ...GET, method: 'POST', retrySafe: false, body: Buffer.from('x') };
    assert.equal(kind(await run(cluster(clock, [1, 2]), clock, scripted([failure('connect_failure'), response(201)]), { exchange: post }).done), 'response 201');
    assert.equal(kind(await run(cluster(clock, [1, 2]), clock, scripted([failure('upstream_reset')]), { exchange: post }).done), 'failed upstream_reset');
  });

  test('a streamed body is sent once: nothing is retried', async () => {
    const clock = new ManualClock(0);
    const streamed: Exchange = { ...GET, method: 'PUT', body: Readable.from(['x']) };
    const send = scripted([failure('connect_failure')]);
    assert.equal(kind(await run(cluster(clock, [1, 2]), clock, send, { exchange: streamed }).done), 'failed connect_failure');
    assert.equal(send.targets.length, 1);
  });

  test('backoff sleeps on the clock, and a backoff that would outlast the deadline ends the request with request_timeout', async () => {
    const clock = new ManualClock(0);
    const c = cluster(clock, [1, 2]);
    const { done } = run(c, clock, scripted([response(503), response(200)]), { backoffMs: 100, requestMs: 10_000 });
    while (clock.sleeping < 2) await new Promise((r) => setImmediate(r)); // the deadline's timer and the backoff
    clock.advance(50); // random 0.5 × 100 ms
    assert.equal(kind(await done), 'response 200');

    const late = run(cluster(clock, [1, 2]), clock, scripted([response(503)]), { backoffMs: 100, requestMs: 40 });
    assert.equal(kind(await late.done), 'failed request_timeout');
  });

  test('a per-try timeout ends the attempt and, with 504 listed, is retried; the request deadline is never retried', async () => {
    const clock = new ManualClock(0);
    const c = cluster(clock, [1, 2]);
    const { done, ev } = run(c, clock, scripted([hangs, response(200)]), { backendRequestMs: 100, requestMs: 10_000, codes: [504] });
    while (clock.sleeping < 2) await new Promise((r) => setImmediate(r));
    clock.advance(100);
    assert.equal(kind(await done), 'response 200');
    assert.deepEqual(ev.seen, ['retry request_timeout']);

    const whole = run(cluster(clock, [1, 2]), clock, scripted([hangs]), { requestMs: 300, codes: [504] });
    while (clock.sleeping < 1) await new Promise((r) => setImmediate(r));
    clock.advance(300);
    assert.equal(kind(await whole.done), 'failed request_timeout');
  });

  test('a caller that goes away ends the request as client_gone, and its slot is given back', async () => {
    const clock = new ManualClock(0);
    const c = cluster(clock, [1]);
    const { done, deadline } = run(c, clock, scripted([hangs]));
    while (c.breaker.active === 0) await new Promise((r) => setImmediate(r));
    deadline.cancel('client_gone');
    assert.equal(kind(await done), 'client_gone');
    assert.equal(c.breaker.active, 0);
  });

  test('an endpoint pinned by the caller gets every attempt', async () => {
    const clock = new ManualClock(0);
    const c = cluster(clock, [1, 2]);
    const pinned = { endpoint: c.endpoints[1]!, port: 9 };
    const send = scripted([response(503), response(503), response(200)]);
    const deadline = new Deadline(clock, 0, 0);
    const d = await dispatch(c, GET, { policy: { timeouts: { requestMs: 0, backendRequestMs: 0 }, retry: { attempts: 2, codes: [503], backoffMs: 0 } }, deadline, portOf: (ep) => ep.port, pinned, clock, random: () => 0.5, send, events: events() });
    assert.equal(kind(d), 'response 200');
    assert.deepEqual(send.targets.map((t) => `${t.endpoint.port}:${t.port}`), ['2:9', '2:9', '2:9']);
  });
});

describe('the deadline with a real undici attempt', () => {
  test('a per-try timeout and a caller gone end the attempt as aborted (never as an upstream reset)', async () => {
    const { createServer } = await import('node:http');
    const { Pool } = await import('undici');
    const { sendAttempt } = await import('../../src/sidecar/upstream.ts');
    const silent = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const pool = new Pool(`http://127.0.0.1:${(silent.address() as { port: number }).port}`);
    try {
      const clock = new ManualClock(0);
      const d = new Deadline(clock, 0, 10_000);
      const w = d.forTry(100);
      const attempt = sendAttempt(pool, { method: 'GET', path: '/', headers: {}, body: undefined, timeoutMs: 0, signal: w.signal });
      clock.advance(100);
      const r = await attempt;
      assert.equal(r.ok ? 'response' : r.failure, 'aborted');
      assert.equal(w.tryTimedOut(), true);
      const gone = sendAttempt(pool, { method: 'GET', path: '/', headers: {}, body: undefined, timeoutMs: 0, signal: d.signal });
      d.cancel('client_gone');
      const g = await gone;
      assert.equal(g.ok ? 'response' : g.failure, 'aborted');
      d.dispose();
    } finally {
      await pool.destroy();
      silent.closeAllConnections();
      silent.close();
    }
  });
});
