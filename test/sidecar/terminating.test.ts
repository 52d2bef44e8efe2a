/**
 * Terminating instances are a last resort: while any other instance is up (not ejected),
 * none of them gets a new attempt, whatever the balancer; when none is, they serve rather
 * than the caller getting 503. Properties on the manual clock with seeded random draws,
 * then end to end through a sidecar with real upstreams.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { createPicker, type PickerType } from '../../src/sidecar/balancer.ts';
import { ManualClock, seededRandom } from '../../src/sidecar/clock.ts';
import { servingCandidates } from '../../src/sidecar/clusters.ts';
import { Endpoint } from '../../src/sidecar/endpoint.ts';
import { OutlierDetector } from '../../src/sidecar/outlier.ts';
import type { EndpointsBody } from '../../src/config/types.ts';
import { backendsSpec, cleanup, configOf, renameServices, send, startSidecar, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';
import { steadyLoad } from '../helpers/processes.ts';

after(cleanup);

const OUTLIER = { consecutive5xx: 5, consecutiveGatewayErrors: 5, baseEjectionMs: 30_000, maxEjectionPercent: 50, intervalMs: 10_000 };
const instance = fc.record({ terminating: fc.boolean(), ejected: fc.boolean(), weight: fc.integer({ min: 1, max: 5 }), inFlight: fc.integer({ min: 0, max: 3 }) });
const pickerType = fc.constantFrom<PickerType>('round-robin', 'least-request', 'peak-ewma');

describe('servingCandidates', () => {
  test('property: a terminating instance is picked only when no other instance is up, and then one is', () => {
    fc.assert(
      fc.property(fc.array(instance, { minLength: 1, maxLength: 8 }), pickerType, fc.integer(), fc.integer({ min: 0, max: 60_000 }), (specs, type, seed, at) => {
        const clock = new ManualClock();
        clock.advance(at);
        const random = seededRandom(seed);
        const outlier = new OutlierDetector(OUTLIER, clock);
        const picker = createPicker(type, { clock, random, decayMs: 10_000, defaultRttMs: 10 });
        const endpoints = specs.map((s, i) => {
          const ep = new Endpoint(`10.0.0.${i + 1}`, 15006, s.weight, null, 10, clock.now());
          ep.terminating = s.terminating;
          ep.inFlight = s.inFlight;
          if (s.ejected) ep.ejectedUntil = clock.now() + 1000;
          return ep;
        });
        const othersUp = specs.some((s) => !s.terminating && !s.ejected);
        const leavingUp = specs.some((s) => s.terminating && !s.ejected);
        for (let i = 0; i < 30; i++) {
          const ep = picker.pick(servingCandidates(endpoints, outlier));
          assert.ok(ep, 'a non-empty list always yields a candidate');
          if (othersUp) assert.equal(ep.terminating, false, 'another instance is up: no terminating one');
          else if (leavingUp) assert.equal(ep.terminating, true, 'no other instance is up: the terminating ones serve');
        }
      }),
      { numRuns: 300 },
    );
  });

  test('without terminating instances the candidates are exactly what outlier detection allows', () => {
    const clock = new ManualClock();
    const outlier = new OutlierDetector(OUTLIER, clock);
    const eps = [1, 2, 3].map((i) => new Endpoint(`10.0.0.${i}`, 80, 1, null, 10, 0));
    eps[1]!.ejectedUntil = 5000;
    assert.deepEqual(servingCandidates(eps, outlier), outlier.healthy(eps));
    assert.deepEqual(servingCandidates([], outlier), []);
  });

  test('an ejected instance comes back after its ejection, and then terminating ones stop getting attempts again', () => {
    const clock = new ManualClock();
    const outlier = new OutlierDetector(OUTLIER, clock);
    const [up, leaving] = [new Endpoint('10.0.0.1', 80, 1, null, 10, 0), new Endpoint('10.0.0.2', 80, 1, null, 10, 0)];
    leaving.terminating = true;
    up.ejectedUntil = 1000;
    assert.deepEqual(servingCandidates([up, leaving], outlier), [leaving]);
    clock.advance(1000);
    assert.deepEqual(servingCandidates([up, leaving], outlier), [up]);
  });
});

describe('terminating instances through a sidecar', () => {
  test('get no requests while another instance serves, take them all when none does, and keep serving their in-flight ones', async () => {
    const [one, two] = await Promise.all([startUpstream('one'), startUpstream('two')]);
    const mark = (terminating: number[]) =>
      // Round-robin, so "both serve" is certain (peak-EWMA rightly prefers the one recently fast).
      renameServices(configOf(backendsSpec({ api: [one.port, two.port] }, '', '  defaults: { trafficPolicy: { loadBalancer: { type: round-robin } } }'), 'client'), {}, (name, body) => {
        if (name !== 'endpoints/api') return body;
        const b = body as EndpointsBody;
        return { ...b, static: b.static.map((e) => (terminating.includes(e.port!) ? { ...e, terminating: true as const } : e)) };
      });
    const sc = await startSidecar(mark([two.port]));
    const bodies = async (n: number) => {
      const seen = new Set<string>();
      for (let i = 0; i < n; i++) {
        const r = await send(sc.outbound, 'api', '/');
        assert.equal(r.status, 200);
        seen.add(r.body);
      }
      return [...seen].sort();
    };
    assert.deepEqual(await bodies(20), ['one']);
    assert.ok(sc.sidecar.store.apply(mark([one.port]), 'test').ok);
    assert.deepEqual(await bodies(20), ['two'], 'the marks move with a new config');
    assert.ok(sc.sidecar.store.apply(mark([one.port, two.port]), 'test').ok);
    assert.deepEqual(await bodies(20), ['one', 'two'], 'all terminating: they serve as a last resort, balanced as usual');
    assert.ok(sc.sidecar.store.apply(mark([]), 'test').ok);
    assert.deepEqual(await bodies(20), ['one', 'two']);
  });

  test('a rolling update under steady load fails no request: new instance in, old one terminating, then gone', async () => {
    const [a, b, c] = await Promise.all([startUpstream('a'), startUpstream('b'), startUpstream('c')]);
    const configWith = (ports: number[], terminating: number[] = []) =>
      renameServices(configOf(backendsSpec({ api: ports }), 'client'), {}, (name, body) => {
        if (name !== 'endpoints/api') return body;
        const e = body as EndpointsBody;
        return { ...e, static: e.static.map((x) => (terminating.includes(x.port!) ? { ...x, terminating: true as const } : x)) };
      });
    const sc = await startSidecar(configWith([a.port, b.port]));
    const load = steadyLoad(sc.outbound, 'api', 4, 1);
    const answered = () => [...load.statuses.values()].reduce((x, y) => x + y, 0);
    const after = async (n: number, what: string) => {
      const until = answered() + n;
      await waitFor(() => answered() >= until, what, 10_000);
    };
    await after(40, 'traffic on a and b');
    assert.ok(sc.sidecar.store.apply(configWith([a.port, b.port, c.port]), 'test').ok);
    await after(40, 'traffic with c added');
    assert.ok(sc.sidecar.store.apply(configWith([a.port, b.port, c.port], [a.port]), 'test').ok);
    await after(20, 'requests that started before the mark to finish');
    const seenByA = a.seen.length;
    await after(60, 'traffic with a terminating');
    assert.equal(a.seen.length, seenByA, 'a terminating instance gets no new requests');
    assert.ok(sc.sidecar.store.apply(configWith([b.port, c.port]), 'test').ok);
    await a.close();
    await after(40, 'traffic after a is gone');
    const statuses = await load.stop();
    assert.deepEqual([...statuses.keys()], [200], JSON.stringify({ statuses: [...statuses], failures: load.failures }));
    assert.ok(c.seen.length > 0);
  });
});
