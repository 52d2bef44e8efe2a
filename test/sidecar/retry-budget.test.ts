/**
 * Retry budget on a manual clock, plus a property: for any sequence of requests, retries
 * and clock advances, the retries granted in the ttl window ending at each granted retry
 * stay within ratio × requests + minRetriesPerSecond × ttl.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../../src/sidecar/clock.ts';
import { BUCKETS_PER_TTL, RetryBudget, type RetryBudgetSettings } from '../../src/sidecar/retry-budget.ts';

function setup(settings: RetryBudgetSettings, start = 0) {
  const clock = new ManualClock(start);
  return { clock, budget: new RetryBudget(settings, clock) };
}

function times(n: number, f: () => void): void {
  for (let i = 0; i < n; i++) f();
}

describe('RetryBudget', () => {
  test('ratio: 10 requests at 0.2 allow 2 retries', () => {
    const { budget } = setup({ ratio: 0.2, minRetriesPerSecond: 0, ttlMs: 10_000 });
    assert.equal(budget.tryRetry(), false, 'nothing to retry against yet');
    times(10, () => budget.recordRequest());
    assert.equal(budget.available(), 2);
    assert.deepEqual([budget.tryRetry(), budget.tryRetry(), budget.tryRetry()], [true, true, false]);
    assert.equal(budget.retriesDenied, 2);
    assert.equal(budget.available(), 0);
  });

  test('reserve: 10 retries per second over 10s allow 100 retries without requests', () => {
    const { budget } = setup({ ratio: 0.2, minRetriesPerSecond: 10, ttlMs: 10_000 });
    const granted = Array.from({ length: 101 }, () => budget.tryRetry()).filter(Boolean).length;
    assert.equal(granted, 100);
  });

  test('requests pay for retries for a whole ttl from the start of their bucket, then expire', () => {
    const { clock, budget } = setup({ ratio: 1, minRetriesPerSecond: 0, ttlMs: 10_000 });
    times(2, () => budget.recordRequest());
    clock.advance(9_999);
    assert.equal(budget.tryRetry(), true, 'the requests are still in the window');
    clock.advance(1);
    assert.equal(budget.tryRetry(), false, 'at ttl they have left it');
    assert.equal(budget.available(), 0);
  });

  test('retries count for one bucket longer than ttl, so the bound holds for every window', () => {
    const { clock, budget } = setup({ ratio: 0, minRetriesPerSecond: 1, ttlMs: 1_000 }, 5_000);
    assert.deepEqual([budget.tryRetry(), budget.tryRetry()], [true, false]);
    clock.advance(999);
    assert.equal(budget.tryRetry(), false);
    clock.advance(1);
    assert.equal(budget.tryRetry(), false, 'a window of 1s ending now would start exactly at the first retry');
    clock.advance(99);
    assert.equal(budget.tryRetry(), false);
    clock.advance(1);
    assert.equal(budget.tryRetry(), true, 'one bucket later the first retry is out');
  });

  test('a long idle gap clears everything', () => {
    const { clock, budget } = setup({ ratio: 0.5, minRetriesPerSecond: 1, ttlMs: 1_000 });
    times(10, () => budget.recordRequest());
    assert.equal(budget.available(), 6);
    times(6, () => budget.tryRetry());
    clock.advance(1_000_000);
    assert.equal(budget.available(), 1, 'only the reserve is left');
  });

  test('decimal ratios are not cheated by binary rounding: 0.57 × 100 allows 57', () => {
    const { budget } = setup({ ratio: 0.57, minRetriesPerSecond: 0, ttlMs: 10_000 });
    times(100, () => budget.recordRequest());
    assert.equal(Array.from({ length: 60 }, () => budget.tryRetry()).filter(Boolean).length, 57);
  });

  test('a ttl of 0 is an empty window: no retry', () => {
    const { budget } = setup({ ratio: 1, minRetriesPerSecond: 100, ttlMs: 0 });
    times(10, () => budget.recordRequest());
    assert.equal(budget.tryRetry(), false);
    assert.equal(budget.available(), 0);
  });

  test('property: retries in the ttl window ending at any granted retry stay within the bound', () => {
    // Each step moves the clock by a whole number of buckets give or take one (so windows
    // often end just past or just short of a bucket edge, where an off-by-one-bucket error
    // shows), records some requests, then asks for retries greedily to exhaust the budget.
    // The reserve is kept to a few retries per window so that it runs out.
    const step = fc.record({ buckets: fc.nat(11), phase: fc.double({ min: -1, max: 1, noNaN: true }), requests: fc.nat(4), retries: fc.nat(6) });
    const settings = fc
      .record({ ratio: fc.constantFrom(0, 0.1, 0.2, 0.25, 0.57, 1), reserve: fc.nat(4), ttlMs: fc.integer({ min: 1, max: 3_000 }) })
      .map(({ ratio, reserve, ttlMs }) => ({ ratio, ttlMs, minRetriesPerSecond: (reserve * 1000) / ttlMs }));
    fc.assert(
      fc.property(settings, fc.nat(100_000), fc.array(step, { maxLength: 60, size: 'max' }), (settings, start, steps) => {
        const { clock, budget } = setup(settings, start);
        const requests: number[] = [];
        const retries: number[] = [];
        for (const s of steps) {
          clock.advance(Math.max(0, Math.round(((s.buckets + s.phase) * settings.ttlMs) / BUCKETS_PER_TTL)));
          times(s.requests, () => {
            budget.recordRequest();
            requests.push(clock.now());
          });
          times(s.retries, () => {
            if (!budget.tryRetry()) return;
            const t = clock.now();
            retries.push(t);
            const inWindow = (x: number) => x > t - settings.ttlMs && x <= t;
            const bound = settings.ratio * requests.filter(inWindow).length + (settings.minRetriesPerSecond * settings.ttlMs) / 1000;
            const made = retries.filter(inWindow).length;
            assert.ok(made <= bound + 1e-9, `${made} retries > bound ${bound} in the window ending at ${t}`);
          });
        }
      }),
      { numRuns: 500 },
    );
  });
});
