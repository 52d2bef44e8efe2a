/**
 * Retry backoff: exponential with full jitter, capped at 10 × base.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { MAX_BACKOFF_MULTIPLIER, retryBackoffMs } from '../../src/sidecar/backoff.ts';

const half = () => 0.5;

describe('retryBackoffMs', () => {
  test('doubles from base with each attempt, up to 10 × base', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 100, 5000].map((a) => retryBackoffMs(a, 100, half)), [50, 100, 200, 400, 500, 500, 500, 500]);
    assert.equal(MAX_BACKOFF_MULTIPLIER, 10);
  });

  test('full jitter: the draw scales the whole interval', () => {
    assert.equal(retryBackoffMs(3, 100, () => 0), 0);
    assert.equal(retryBackoffMs(3, 100, () => 0.25), 100);
    assert.equal(retryBackoffMs(3, 100, () => 0.999), 399.6);
  });

  test('a base of 0 gives no wait; an attempt below 1 is a bug', () => {
    assert.equal(retryBackoffMs(3, 0, half), 0);
    assert.throws(() => retryBackoffMs(0, 100, half), /count from 1/);
    assert.throws(() => retryBackoffMs(Number.NaN, 100, half), /count from 1/);
  });

  test('property: within [0, min(base × 2^(attempt−1), 10 × base)] and never shrinking with the attempt', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5_000 }),
        fc.double({ min: 0, max: 1e6, noNaN: true }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (attempt, base, r) => {
          const wait = retryBackoffMs(attempt, base, () => r);
          assert.ok(wait >= 0 && wait <= MAX_BACKOFF_MULTIPLIER * base, `${wait} outside [0, ${10 * base}]`);
          const exponential = base === 0 ? 0 : base * 2 ** (attempt - 1); // 0 × 2^1024 would be NaN
          assert.ok(wait <= exponential);
          assert.ok(retryBackoffMs(attempt + 1, base, () => r) >= wait);
        },
      ),
    );
  });
});
