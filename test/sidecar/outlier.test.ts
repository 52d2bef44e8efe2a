/**
 * Outlier detection on a manual clock, plus a property: whatever the outcomes, it never
 * ejects more than maxEjectionPercent allows nor the last healthy endpoint.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../../src/sidecar/clock.ts';
import { Endpoint } from '../../src/sidecar/endpoint.ts';
import { MAX_EJECTION_MULTIPLIER, OutlierDetector, outcomeOfStatus, type OutlierOutcome, type OutlierSettings } from '../../src/sidecar/outlier.ts';

const DEFAULTS: OutlierSettings = { consecutive5xx: 5, consecutiveGatewayErrors: 5, baseEjectionMs: 30_000, maxEjectionPercent: 50 };

function endpoints(n: number): Endpoint[] {
  return Array.from({ length: n }, (_, i) => new Endpoint(`10.0.0.${i}`, 8080, 1, null, 30, 0));
}

function setup(n: number, settings: Partial<OutlierSettings> = {}) {
  const clock = new ManualClock();
  const detector = new OutlierDetector({ ...DEFAULTS, ...settings }, clock);
  return { clock, detector, eps: endpoints(n) };
}

/** Records `outcome` `times` times; returns what each call returned. */
function repeat(detector: OutlierDetector, ep: Endpoint, outcome: OutlierOutcome, times: number, eps: readonly Endpoint[]): boolean[] {
  return Array.from({ length: times }, () => detector.record(ep, outcome, eps));
}

describe('OutlierDetector', () => {
  test('ejects on the 5th consecutive 5xx, for baseEjectionMs', () => {
    const { clock, detector, eps } = setup(4);
    const ep = eps[0]!;
    assert.deepEqual(repeat(detector, ep, '5xx', 5, eps), [false, false, false, false, true]);
    assert.ok(detector.isEjected(ep));
    assert.deepEqual(detector.healthy(eps), eps.slice(1));
    assert.equal(detector.ejectionsTotal, 1);
    assert.equal(ep.consecutive5xx, 0, 'an ejection ends the run');
    clock.advance(29_999);
    assert.ok(detector.isEjected(ep));
    clock.advance(1);
    assert.ok(!detector.isEjected(ep), 'the ejection ends by itself');
    assert.deepEqual(detector.healthy(eps), eps);
  });

  test('a success ends the runs', () => {
    const { detector, eps } = setup(4);
    const ep = eps[0]!;
    repeat(detector, ep, 'gateway-error', 4, eps);
    detector.record(ep, 'success', eps);
    assert.equal(ep.consecutive5xx, 0);
    assert.equal(ep.consecutiveGatewayErrors, 0);
    assert.deepEqual(repeat(detector, ep, 'gateway-error', 4, eps), [false, false, false, false]);
    assert.ok(!detector.isEjected(ep));
  });

  test('gateway errors and connect failures count toward both runs; another 5xx only toward the 5xx run', () => {
    {
      const { detector, eps } = setup(4, { consecutive5xx: 3, consecutiveGatewayErrors: 0 });
      assert.deepEqual(repeat(detector, eps[0]!, 'gateway-error', 3, eps), [false, false, true], 'gateway errors are 5xx');
      assert.deepEqual(repeat(detector, eps[1]!, 'connect-failure', 3, eps), [false, false, true], 'connect failures count as 5xx');
    }
    {
      const { detector, eps } = setup(4, { consecutive5xx: 0, consecutiveGatewayErrors: 3 });
      assert.deepEqual(repeat(detector, eps[0]!, 'connect-failure', 3, eps), [false, false, true]);
      const ep = eps[1]!;
      repeat(detector, ep, 'gateway-error', 2, eps);
      assert.equal(detector.record(ep, '5xx', eps), false);
      assert.equal(ep.consecutiveGatewayErrors, 0, 'a 500 ends the gateway-error run');
      assert.deepEqual(repeat(detector, ep, 'gateway-error', 3, eps), [false, false, true]);
    }
  });

  test('a threshold of 0 turns its trigger off', () => {
    const { detector, eps } = setup(4, { consecutive5xx: 0, consecutiveGatewayErrors: 0 });
    assert.ok(repeat(detector, eps[0]!, 'connect-failure', 100, eps).every((x) => !x));
    assert.equal(detector.ejectionsTotal, 0);
  });

  test('each ejection lasts base × times ejected, up to × 10', () => {
    const { clock, detector, eps } = setup(4, { consecutive5xx: 1 });
    const ep = eps[0]!;
    for (let n = 1; n <= MAX_EJECTION_MULTIPLIER + 2; n++) {
      assert.equal(detector.record(ep, '5xx', eps), true);
      const expected = 30_000 * Math.min(n, 10);
      assert.equal(ep.ejectedUntil - clock.now(), expected, `ejection ${n}`);
      clock.advance(expected);
    }
    assert.equal(ep.ejections, 10);
    assert.equal(MAX_EJECTION_MULTIPLIER, 10);
  });

  test('outcomes of an ejected endpoint are ignored: no longer ejection, no run', () => {
    const { detector, eps } = setup(4, { consecutive5xx: 1 });
    const ep = eps[0]!;
    detector.record(ep, '5xx', eps);
    const until = ep.ejectedUntil;
    assert.deepEqual(repeat(detector, ep, 'connect-failure', 5, eps), [false, false, false, false, false]);
    assert.equal(ep.ejectedUntil, until);
    assert.equal(ep.ejections, 1);
    assert.equal(ep.consecutive5xx, 0);
  });

  test('never more than maxEjectionPercent at once; refusals are counted and retried on the next failure', () => {
    const { clock, detector, eps } = setup(4, { consecutive5xx: 1 });
    assert.equal(detector.record(eps[0]!, '5xx', eps), true);
    clock.advance(10_000);
    assert.equal(detector.record(eps[1]!, '5xx', eps), true);
    assert.equal(detector.record(eps[2]!, '5xx', eps), false, '3 of 4 would be 75% > 50%');
    assert.equal(detector.ejectionsOverflowed, 1);
    assert.ok(!detector.isEjected(eps[2]!));
    clock.advance(20_000); // eps[0] is back
    assert.equal(detector.record(eps[2]!, '5xx', eps), true, 'the run went on and ejects once there is room');
  });

  test('one endpoint may be ejected out of two even when the share would exceed the limit, as in Envoy', () => {
    const { detector, eps } = setup(2, { consecutive5xx: 1, maxEjectionPercent: 10 });
    assert.equal(detector.record(eps[0]!, '5xx', eps), true);
    assert.equal(detector.record(eps[1]!, '5xx', eps), false);
    assert.deepEqual(detector.healthy(eps), [eps[1]], 'not a panic: the one allowed ejection');
    assert.equal(detector.panicking(eps), false);
  });

  test('never the last healthy endpoint, even at 100%; never the only one; never with 0% or a 0 ms base', () => {
    {
      const { detector, eps } = setup(3, { consecutive5xx: 1, maxEjectionPercent: 100 });
      assert.deepEqual(eps.map((ep) => detector.record(ep, '5xx', eps)), [true, true, false]);
    }
    {
      const { detector, eps } = setup(1, { consecutive5xx: 1, maxEjectionPercent: 100 });
      assert.equal(detector.record(eps[0]!, '5xx', eps), false);
    }
    {
      const { detector, eps } = setup(10, { consecutive5xx: 1, maxEjectionPercent: 0 });
      assert.equal(detector.record(eps[0]!, '5xx', eps), false);
    }
    {
      const { detector, eps } = setup(10, { consecutive5xx: 1, baseEjectionMs: 0 });
      assert.equal(detector.record(eps[0]!, '5xx', eps), false, 'a 0 ms ejection is none');
      assert.equal(detector.ejectionsTotal, 0);
    }
  });

  test('an endpoint no longer in the list is not ejected', () => {
    const { detector, eps } = setup(4, { consecutive5xx: 1 });
    assert.equal(detector.record(eps[0]!, '5xx', eps.slice(1)), false);
  });

  test('panic: when the list shrinks under ejected endpoints, healthy returns them all', () => {
    const { detector, eps } = setup(4, { consecutive5xx: 1 });
    detector.record(eps[0]!, '5xx', eps);
    detector.record(eps[1]!, '5xx', eps);
    assert.deepEqual(detector.healthy(eps), [eps[2], eps[3]]);
    assert.equal(detector.panicSelections, 0);
    const shrunk = [eps[0]!, eps[1]!, eps[2]!]; // 2 of 3 ejected: healthy share 33% < 50%
    assert.equal(detector.panicking(shrunk), true);
    assert.deepEqual(detector.healthy(shrunk), shrunk);
    const allEjected = [eps[0]!, eps[1]!];
    assert.deepEqual(detector.healthy(allEjected), allEjected);
    assert.equal(detector.panicSelections, 2);
    assert.deepEqual(detector.healthy([]), []);
    assert.equal(detector.panicking([]), false);
  });

  test('reset forgets runs, ejection and count', () => {
    const { detector, eps } = setup(4, { consecutive5xx: 1 });
    const ep = eps[0]!;
    detector.record(ep, '5xx', eps);
    detector.reset(ep);
    assert.ok(!detector.isEjected(ep));
    assert.deepEqual([ep.consecutive5xx, ep.consecutiveGatewayErrors, ep.ejectedUntil, ep.ejections], [0, 0, 0, 0]);
  });

  test('with intervalMs, each whole healthy interval forgives one past ejection', () => {
    for (const intervalMs of [10_000, 0]) {
      const { clock, detector, eps } = setup(4, { consecutive5xx: 1, intervalMs });
      const ep = eps[0]!;
      detector.record(ep, '5xx', eps); // ejected until 30s
      clock.advance(30_000 + 19_999); // 1 whole interval healthy
      detector.record(ep, '5xx', eps);
      assert.equal(ep.ejectedUntil - clock.now(), intervalMs ? 30_000 : 60_000, `interval ${intervalMs}, one interval`);
      clock.advance(ep.ejectedUntil - clock.now() + 20_000); // 2 whole intervals healthy
      detector.record(ep, '5xx', eps);
      assert.equal(ep.ejectedUntil - clock.now(), intervalMs ? 30_000 : 90_000, `interval ${intervalMs}, two intervals`);
    }
  });

  test('outcomeOfStatus: 502/503/504 are gateway errors, other 5xx are 5xx, the rest success', () => {
    assert.deepEqual([200, 404, 499, 500, 501, 502, 503, 504, 505, 599].map(outcomeOfStatus), [
      'success', 'success', 'success', '5xx', '5xx', 'gateway-error', 'gateway-error', 'gateway-error', '5xx', '5xx',
    ]);
  });

  test('property: for any outcomes, never more ejected than allowed nor the last healthy one, and no panic', () => {
    const outcome = fc.constantFrom<OutlierOutcome>('success', '5xx', 'gateway-error', 'connect-failure');
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.record({
          consecutive5xx: fc.nat(3),
          consecutiveGatewayErrors: fc.nat(3),
          baseEjectionMs: fc.nat(1000),
          maxEjectionPercent: fc.oneof(fc.constantFrom(0, 50, 100), fc.integer({ min: 0, max: 100 })),
          intervalMs: fc.nat(500),
        }),
        fc.array(fc.record({ at: fc.nat(7), outcome, advance: fc.nat(300) }), { maxLength: 200, size: 'max' }),
        (n, settings, steps) => {
          const clock = new ManualClock();
          const detector = new OutlierDetector(settings, clock);
          const eps = endpoints(n);
          for (const step of steps) {
            clock.advance(step.advance);
            const ep = eps[step.at % n]!;
            const ejectedNow = detector.record(ep, step.outcome, eps);
            if (ejectedNow) assert.ok(detector.isEjected(ep));
            const ejected = eps.filter((e) => detector.isEjected(e)).length;
            const pct = settings.maxEjectionPercent;
            assert.ok(ejected * 100 <= pct * n || (ejected === 1 && n >= 2 && pct > 0), `${ejected} of ${n} ejected, limit ${pct}%`);
            assert.ok(ejected < n, 'the last healthy endpoint stays');
            assert.equal(detector.panicking(eps), false);
            assert.equal(detector.healthy(eps).length, n - ejected);
          }
        },
      ),
    );
  });
});
