/**
 * Load-balancing policy on a manual clock with fixed random draws, plus properties:
 * weighted round-robin is exact over a cycle, power-of-two-choices samples two distinct
 * endpoints and takes the less loaded one.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  createPicker,
  LeastRequestPicker,
  PeakEwmaPicker,
  RoundRobinPicker,
  sampleDistinctPair,
} from '../../src/sidecar/balancer.ts';
import { ManualClock, seededRandom, type Random } from '../../src/sidecar/clock.ts';
import { Endpoint } from '../../src/sidecar/endpoint.ts';

function endpoint(i: number, weight = 1, rttMs = 30, now = 0): Endpoint {
  return new Endpoint(`10.0.0.${i}`, 8080, weight, null, rttMs, now);
}

/** A Random that returns `draws` in turn, cycling. */
function draws(...values: number[]): Random {
  let i = 0;
  return () => values[i++ % values.length]!;
}

const unit = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

describe('RoundRobinPicker', () => {
  test('spreads weights smoothly, as nginx: 5,1,1 gives a a b a c a a', () => {
    const [a, b, c] = [endpoint(1, 5), endpoint(2, 1), endpoint(3, 1)];
    const picker = new RoundRobinPicker();
    const picked = Array.from({ length: 14 }, () => picker.pick([a, b, c])!.address);
    const name = { '10.0.0.1': 'a', '10.0.0.2': 'b', '10.0.0.3': 'c' } as Record<string, string>;
    assert.deepEqual(picked.map((x) => name[x]).join(''), 'aabacaa'.repeat(2));
  });

  test('equal weights go in candidate order', () => {
    const eps = [endpoint(1), endpoint(2), endpoint(3)];
    const picker = new RoundRobinPicker();
    assert.deepEqual(Array.from({ length: 6 }, () => eps.indexOf(picker.pick(eps)!)), [0, 1, 2, 0, 1, 2]);
  });

  test('picks only among the candidates, and none from an empty list', () => {
    const eps = [endpoint(1), endpoint(2), endpoint(3)];
    const picker = new RoundRobinPicker();
    const subset = [eps[0]!, eps[2]!];
    for (let i = 0; i < 10; i++) assert.notEqual(picker.pick(subset), eps[1]);
    assert.equal(picker.pick([]), undefined);
    assert.equal(picker.pick([eps[1]!]), eps[1]);
  });

  test('pick leaves endpoints alone; onStart / onFinish count attempts in flight', () => {
    const ep = endpoint(1);
    const picker = new RoundRobinPicker();
    picker.pick([ep, endpoint(2)]);
    assert.equal(ep.inFlight, 0);
    picker.onStart(ep);
    picker.onStart(ep);
    assert.equal(ep.inFlight, 2);
    picker.onFinish(ep, 12, true);
    assert.equal(ep.inFlight, 1);
    assert.equal(ep.rttEstimateMs, 30, 'round-robin keeps no latency estimate');
    picker.onFinish(ep, 12, false);
    assert.throws(() => picker.onFinish(ep, 12, true), /without a matching onStart/);
  });

  test('property: over any sum(weights) consecutive picks, each endpoint is picked exactly weight times', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 8 }), fc.nat(60), (weights, warmUp) => {
        const eps = weights.map((w, i) => endpoint(i, w));
        const picker = new RoundRobinPicker();
        for (let i = 0; i < warmUp; i++) picker.pick(eps);
        const counts = new Map<Endpoint, number>();
        const cycle = weights.reduce((s, w) => s + w, 0);
        for (let i = 0; i < cycle; i++) {
          const ep = picker.pick(eps)!;
          counts.set(ep, (counts.get(ep) ?? 0) + 1);
        }
        assert.deepEqual(eps.map((ep) => counts.get(ep) ?? 0), weights);
      }),
    );
  });
});

describe('power of two choices sampling', () => {
  test('draws by weight, the second among the rest', () => {
    const eps = [endpoint(0, 1), endpoint(1, 2), endpoint(2, 1)];
    // total 4: 0.3 × 4 = 1.2 falls in endpoint 1 ([1, 3)); then 0.3 × 2 = 0.6 falls in endpoint 0.
    assert.deepEqual(sampleDistinctPair(eps, draws(0.3, 0.3)), [1, 0]);
    // 0.99 × 4 falls in endpoint 2; then 0.99 × 3 falls in endpoint 1 ([1, 3) of the rest).
    assert.deepEqual(sampleDistinctPair(eps, draws(0.99, 0.99)), [2, 1]);
    const heavyFirst = [endpoint(0, 2), endpoint(1, 1), endpoint(2, 1)];
    // 0.3 × 4 = 1.2 falls in endpoint 0 ([0, 2)); then 0.3 × 2 = 0.6 falls in endpoint 1.
    assert.deepEqual(sampleDistinctPair(heavyFirst, draws(0.3, 0.3)), [0, 1]);
  });

  test('property: the two indices are distinct and in range, for any weights and draws', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 100 }), { minLength: 2, maxLength: 10 }), unit, unit, (weights, r1, r2) => {
        const eps = weights.map((w, i) => endpoint(i, w));
        const [i, j] = sampleDistinctPair(eps, draws(r1, r2));
        assert.notEqual(i, j);
        assert.ok(i >= 0 && i < eps.length && j >= 0 && j < eps.length);
      }),
    );
  });
});

describe('LeastRequestPicker', () => {
  test('takes the sampled endpoint with fewer in flight', () => {
    const eps = [endpoint(0), endpoint(1), endpoint(2)];
    [5, 1, 3].forEach((n, i) => (eps[i]!.inFlight = n));
    // Draws sample endpoints 0 (0.1 × 3) and 2 (0.9 × 2 among 1 and 2): 2 has fewer in flight.
    assert.equal(new LeastRequestPicker(draws(0.1, 0.9)).pick(eps), eps[2]);
    // Endpoint 1, the least loaded overall, is not sampled and so not picked.
  });

  test('a tie goes to the first drawn, not the first listed', () => {
    const eps = [endpoint(0), endpoint(1), endpoint(2)];
    // Samples endpoint 2 (0.9 × 3), then endpoint 0 (0.1 × 2).
    assert.equal(new LeastRequestPicker(draws(0.9, 0.1)).pick(eps), eps[2]);
  });

  test('property: idle endpoints are picked in exact proportion to their weights', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 2, maxLength: 6 }), unit, (weights, r2) => {
        const eps = weights.map((w, i) => endpoint(i, w));
        const total = weights.reduce((s, w) => s + w, 0);
        const perUnit = 7; // first draws spread evenly, 7 per unit of weight
        const counts = eps.map(() => 0);
        for (let k = 0; k < perUnit * total; k++) {
          const picked = new LeastRequestPicker(draws((k + 0.5) / (perUnit * total), r2)).pick(eps)!;
          counts[eps.indexOf(picked)]! += 1;
        }
        assert.deepEqual(counts, weights.map((w) => w * perUnit));
      }),
    );
  });

  test('one or no candidates need no draw', () => {
    const noDraws: Random = () => assert.fail('no random draw expected');
    const ep = endpoint(0);
    assert.equal(new LeastRequestPicker(noDraws).pick([ep]), ep);
    assert.equal(new LeastRequestPicker(noDraws).pick([]), undefined);
  });

  test('property: picks one of the two sampled, never the one with more in flight', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ weight: fc.integer({ min: 1, max: 5 }), inFlight: fc.nat(4) }), { minLength: 2, maxLength: 8 }),
        unit,
        unit,
        (specs, r1, r2) => {
          const eps = specs.map((s, i) => Object.assign(endpoint(i, s.weight), { inFlight: s.inFlight }));
          const [i, j] = sampleDistinctPair(eps, draws(r1, r2));
          const picked = new LeastRequestPicker(draws(r1, r2)).pick(eps)!;
          const [a, b] = [eps[i]!, eps[j]!];
          assert.ok(picked === a || picked === b, 'picked one of the sampled pair');
          const other = picked === a ? b : a;
          assert.ok(picked.inFlight <= other.inFlight);
          if (a.inFlight === b.inFlight) assert.equal(picked, a, 'ties go to the first drawn');
        },
      ),
    );
  });

  test('property: the single most loaded endpoint is never picked (the pair is always distinct)', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(3), { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 9, maxLength: 9 }), unit, unit, (loads, weights, r1, r2) => {
        const eps = [...loads, 10].map((n, i) => Object.assign(endpoint(i, weights[i]!), { inFlight: n }));
        assert.notEqual(new LeastRequestPicker(draws(r1, r2)).pick(eps), eps.at(-1));
      }),
    );
  });
});

describe('PeakEwmaPicker', () => {
  const settings = (clock: ManualClock, random: Random = draws(0.5)) => ({ clock, random, decayMs: 10_000, defaultRttMs: 30 });

  test('a faster sample moves the estimate by 1 − exp(−elapsed/decay)', () => {
    const clock = new ManualClock();
    const picker = new PeakEwmaPicker(settings(clock));
    const ep = endpoint(0, 1, 30, 0);
    picker.onStart(ep);
    clock.advance(10_000);
    picker.onFinish(ep, 10, true);
    const w = Math.exp(-1);
    assert.ok(Math.abs(ep.rttEstimateMs - (30 * w + 10 * (1 - w))) < 1e-9, `estimate ${ep.rttEstimateMs}`);
    assert.equal(ep.rttUpdatedAt, 10_000);
    assert.equal(ep.inFlight, 0);
  });

  test('a slower sample is taken at once (the peak)', () => {
    const clock = new ManualClock();
    const picker = new PeakEwmaPicker(settings(clock));
    const ep = endpoint(0, 1, 30, 0);
    picker.onStart(ep);
    picker.onFinish(ep, 250, true); // no time elapsed: an average would not have moved at all
    assert.equal(ep.rttEstimateMs, 250);
  });

  test('a failure counts as at least defaultRtt and is never averaged down', () => {
    const clock = new ManualClock();
    const picker = new PeakEwmaPicker(settings(clock));
    const ep = endpoint(0, 1, 100, 0);
    clock.advance(60_000); // the estimate has decayed to about 0.25 ms
    picker.onStart(ep);
    picker.onFinish(ep, 1, false);
    assert.equal(ep.rttEstimateMs, 30, 'a fast failure costs the default, not its 1 ms');
    assert.equal(ep.rttUpdatedAt, 60_000);
    picker.onStart(ep);
    picker.onFinish(ep, 20, false);
    assert.equal(ep.rttEstimateMs, 30, 'never lowered by a failure');
    picker.onStart(ep);
    picker.onFinish(ep, 400, false);
    assert.equal(ep.rttEstimateMs, 400);
    picker.onStart(ep);
    picker.onFinish(ep, Number.NaN, true);
    assert.equal(ep.rttEstimateMs, 400, 'NaN is no sample');
    assert.equal(ep.inFlight, 0);
  });

  test('cost is estimate × (in flight + 1)', () => {
    const clock = new ManualClock();
    const picker = new PeakEwmaPicker(settings(clock));
    const fastBusy = Object.assign(endpoint(0, 1, 10), { inFlight: 3 }); // 10 × 4 = 40
    const slowIdle = endpoint(1, 1, 30); // 30 × 1 = 30
    assert.equal(picker.cost(fastBusy), 40);
    assert.equal(picker.pick([fastBusy, slowIdle]), slowIdle);
    slowIdle.inFlight = 1; // 30 × 2 = 60
    assert.equal(picker.pick([fastBusy, slowIdle]), fastBusy);
  });

  test('between samples the estimate decays toward zero, so an endpoint avoided after a spike is tried again', () => {
    const clock = new ManualClock();
    const picker = new PeakEwmaPicker(settings(clock));
    const spiked = endpoint(0, 1, 1000, 0);
    assert.equal(picker.estimateMs(spiked), 1000);
    clock.advance(10_000);
    assert.ok(Math.abs(picker.estimateMs(spiked) - 1000 * Math.exp(-1)) < 1e-9);
    assert.equal(spiked.rttEstimateMs, 1000, 'estimateMs writes nothing back');
    clock.advance(40_000);
    const steady = endpoint(1, 1, 50, clock.now());
    assert.equal(picker.pick([steady, spiked]), spiked);
  });

  test('an endpoint without a sample costs 0 while idle and defaultRtt per attempt in flight', () => {
    const clock = new ManualClock();
    const picker = new PeakEwmaPicker(settings(clock));
    const fresh = new Endpoint('10.0.0.9', 8080, 1, null, null, 0);
    const known = endpoint(1, 1, 1, 0);
    assert.equal(picker.cost(fresh), 0);
    assert.equal(picker.pick([known, fresh]), fresh, 'a new instance is tried at once');
    picker.onStart(fresh);
    assert.equal(picker.cost(fresh), 60, 'not flooded before its first answer');
    assert.equal(picker.pick([fresh, known]), known);
    picker.onFinish(fresh, 2, true);
    assert.equal(fresh.rttEstimateMs, 2, 'the first sample is taken as it is');
    assert.equal(fresh.rttSampled, true);
  });

  test('a tie goes to the first drawn', () => {
    const clock = new ManualClock();
    const eps = [endpoint(0), endpoint(1), endpoint(2)];
    assert.equal(new PeakEwmaPicker(settings(clock, draws(0.9, 0.1))).pick(eps), eps[2]);
  });

  test('property: picks the cheaper of two distinct sampled endpoints; the costliest is never picked', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ rtt: fc.integer({ min: 1, max: 500 }), inFlight: fc.nat(4), age: fc.nat(50_000) }), { minLength: 1, maxLength: 8 }),
        unit,
        unit,
        (specs, r1, r2) => {
          const clock = new ManualClock(100_000);
          const picker = new PeakEwmaPicker(settings(clock, draws(r1, r2)));
          const eps = specs.map((s, i) => Object.assign(endpoint(i, 1, s.rtt, 100_000 - s.age), { inFlight: s.inFlight }));
          const worst = Object.assign(endpoint(99, 1, 10_000, 100_000), { inFlight: 10 });
          eps.push(worst);
          const [i, j] = sampleDistinctPair(eps, draws(r1, r2));
          const picked = picker.pick(eps)!;
          const other = picked === eps[i] ? eps[j]! : eps[i]!;
          assert.ok(picked === eps[i] || picked === eps[j]);
          assert.ok(picker.cost(picked) <= picker.cost(other));
          assert.notEqual(picked, worst);
        },
      ),
    );
  });
});

describe('createPicker', () => {
  test('builds the picker the cluster names', () => {
    const opts = { clock: new ManualClock(), random: draws(0.5), decayMs: 10_000, defaultRttMs: 30 };
    assert.ok(createPicker('round-robin', opts) instanceof RoundRobinPicker);
    assert.ok(createPicker('least-request', opts) instanceof LeastRequestPicker);
    const ewma = createPicker('peak-ewma', opts);
    if (!(ewma instanceof PeakEwmaPicker)) assert.fail('peak-ewma should build a PeakEwmaPicker');
    const ep = endpoint(0, 1, 500, 0);
    opts.clock.advance(10_000);
    assert.ok(Math.abs(ewma.estimateMs(ep) - 500 * Math.exp(-1)) < 1e-6, 'uses the given decay');
    const fresh = Object.assign(new Endpoint('10.0.0.9', 8080, 1, null, null, 0), { inFlight: 1 });
    assert.equal(ewma.estimateMs(fresh), 30, 'uses the given defaultRttMs');
  });
});

/**
 * Runs `picks` attempts that each take `latencyMs` through `picker` on `clock`, as the
 * outbound path does (pick, onStart, onFinish with the measured time): `concurrency`
 * attempts overlap, a new one starting every latencyMs / concurrency ms; with a
 * concurrency of 1 they run one after another, `gapMs` apart. Returns picks per endpoint.
 */
function simulateEqualLatency(picker: PeakEwmaPicker, clock: ManualClock, eps: readonly Endpoint[], o: { picks: number; latencyMs: number; concurrency: number; gapMs: number }): number[] {
  const counts = eps.map(() => 0);
  const running: Array<{ ep: Endpoint; startedAt: number; endsAt: number }> = [];
  const interval = o.concurrency === 1 ? o.latencyMs + o.gapMs : o.latencyMs / o.concurrency;
  let nextStart = clock.now();
  const finishUntil = (t: number) => {
    running.sort((x, y) => x.endsAt - y.endsAt);
    while (running.length > 0 && running[0]!.endsAt <= t) {
      const done = running.shift()!;
      clock.advance(done.endsAt - clock.now());
      picker.onFinish(done.ep, done.endsAt - done.startedAt, true);
    }
  };
  for (let i = 0; i < o.picks; i++) {
    finishUntil(nextStart);
    clock.advance(nextStart - clock.now());
    const ep = picker.pick(eps)!;
    counts[eps.indexOf(ep)]!++;
    picker.onStart(ep);
    running.push({ ep, startedAt: clock.now(), endsAt: clock.now() + o.latencyMs });
    nextStart += interval;
  }
  finishUntil(Infinity);
  return counts;
}

describe('PeakEwmaPicker spreads load over equal endpoints', () => {
  // Issue 16: with 1 ms answers at 50–100 req/s, 0 of about 2 000 requests reached the second of two endpoints.
  test('regression: two new endpoints answering in 1 ms at 100 req/s both get traffic', () => {
    const clock = new ManualClock(1_000);
    const picker = new PeakEwmaPicker({ clock, random: seededRandom(7), decayMs: 10_000, defaultRttMs: 30 });
    const eps = [0, 1].map((i) => new Endpoint(`10.0.0.${i}`, 8080, 1, null, null, clock.now()));
    const counts = simulateEqualLatency(picker, clock, eps, { picks: 2000, latencyMs: 1, concurrency: 1, gapMs: 9 });
    assert.ok(Math.min(...counts) > 800, `picks per endpoint: ${counts.join(', ')}`);
  });

  test('property: over N picks with equal latency each of 2..5 endpoints gets a fair share, sequential and concurrent', () => {
    fc.assert(
      fc.property(
        fc.record({
          n: fc.integer({ min: 2, max: 5 }),
          latencyMs: fc.integer({ min: 1, max: 200 }),
          defaultRttMs: fc.integer({ min: 0, max: 500 }),
          decayMs: fc.constantFrom(0, 1_000, 10_000, 60_000),
          concurrency: fc.integer({ min: 1, max: 16 }),
          gapMs: fc.integer({ min: 0, max: 100 }),
          seed: fc.nat(),
        }),
        (p) => {
          const clock = new ManualClock(5_000);
          const picker = new PeakEwmaPicker({ clock, random: seededRandom(p.seed), decayMs: p.decayMs, defaultRttMs: p.defaultRttMs });
          const eps = Array.from({ length: p.n }, (_, i) => new Endpoint(`10.0.0.${i}`, 8080, 1, null, null, clock.now()));
          const picks = 300 * p.n;
          const counts = simulateEqualLatency(picker, clock, eps, { picks, latencyMs: p.latencyMs, concurrency: p.concurrency, gapMs: p.gapMs });
          const fair = picks / p.n;
          for (const c of counts) assert.ok(c > fair * 0.6 && c < fair * 1.4, `picks per endpoint ${counts.join(', ')} (fair: ${fair})`);
        },
      ),
      { numRuns: 150 },
    );
  });
});
