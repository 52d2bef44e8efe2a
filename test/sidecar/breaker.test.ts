/**
 * The concurrency breaker: exact at the limit, and for any sequence of acquires and
 * releases never lets more than maxRequests through at once.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CircuitBreaker } from '../../src/sidecar/breaker.ts';

const LIMITS = { maxConnections: 7, maxPendingRequests: 5, maxRequests: 2 };

describe('CircuitBreaker', () => {
  test('refuses at maxRequests and counts refusals; a release lets the next one in', () => {
    const breaker = new CircuitBreaker(LIMITS);
    assert.equal(breaker.open, false);
    assert.deepEqual([breaker.tryAcquire(), breaker.tryAcquire()], [true, true]);
    assert.equal(breaker.active, 2);
    assert.equal(breaker.open, true);
    assert.equal(breaker.tryAcquire(), false);
    assert.equal(breaker.rejected, 1);
    assert.equal(breaker.active, 2, 'a refusal takes no slot');
    breaker.release();
    assert.equal(breaker.open, false);
    assert.equal(breaker.tryAcquire(), true);
    assert.equal(breaker.rejected, 1);
  });

  test('keeps the pool limits for the pool owner', () => {
    const breaker = new CircuitBreaker(LIMITS);
    assert.deepEqual([breaker.maxConnections, breaker.maxPendingRequests, breaker.maxRequests], [7, 5, 2]);
  });

  test('a release without an acquire is a bug', () => {
    const breaker = new CircuitBreaker(LIMITS);
    assert.throws(() => breaker.release(), /without a matching tryAcquire/);
    breaker.tryAcquire();
    breaker.release();
    assert.throws(() => breaker.release());
    assert.equal(breaker.active, 0);
  });

  test('property: active = granted − released ≤ maxRequests, and refusals happen only at the limit', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.array(fc.boolean(), { maxLength: 200 }), (maxRequests, ops) => {
        const breaker = new CircuitBreaker({ ...LIMITS, maxRequests });
        let granted = 0;
        let released = 0;
        let refused = 0;
        for (const acquire of ops) {
          if (acquire) {
            const atLimit = breaker.active === maxRequests;
            const ok = breaker.tryAcquire();
            assert.equal(ok, !atLimit);
            if (ok) granted += 1;
            else refused += 1;
          } else if (breaker.active > 0) {
            breaker.release();
            released += 1;
          }
          assert.equal(breaker.active, granted - released);
          assert.ok(breaker.active <= maxRequests);
          assert.equal(breaker.rejected, refused);
        }
      }),
    );
  });
});
