/**
 * Load-balancing policy: which endpoint of one cluster gets the next attempt.
 *
 * Policy only. Connection pools, the breaker, retries and outlier detection are other
 * layers: the caller passes in the candidates (typically `OutlierDetector.healthy(...)`)
 * and tells the picker when an attempt starts and ends. Choosing between the weighted
 * backends of a route (which *service* to call) is the router's job, not this module's.
 *
 * Units: times are clock milliseconds (see `clock.ts`); weights are the relative
 * `Endpoint.weight` values from the config.
 */
import type { ClusterBody } from '../config/types.ts';
import type { Clock, Random } from './clock.ts';
import type { Endpoint } from './endpoint.ts';

/**
 * Picks an endpoint for each attempt and keeps the per-endpoint load figures it needs.
 *
 * Protocol, per attempt (retries are attempts too):
 *   `const ep = picker.pick(candidates)`; then, once the attempt is really dispatched,
 *   `picker.onStart(ep)`; and exactly once when the attempt ends — response complete,
 *   error, timeout or cancellation alike — `picker.onFinish(ep, rttMs, ok)`.
 *
 * - `pick` returns undefined only for an empty list. It never mutates an Endpoint; a
 *   round-robin picker advances its own rotation, nothing else.
 * - `onStart` increments `ep.inFlight`.
 * - `onFinish` decrements `ep.inFlight` (throws on a finish without a start: a bug), and
 *   for peak-EWMA folds `rttMs` into `ep.rttEstimateMs` (and marks it `rttSampled`). `rttMs` is the time from
 *   dispatch until the response headers arrived, or until the attempt failed; `ok` is
 *   false for a connect failure, reset, timeout or 5xx. A negative or NaN `rttMs` counts
 *   as no sample.
 */
export interface Picker {
  pick(candidates: readonly Endpoint[]): Endpoint | undefined;
  onStart(ep: Endpoint): void;
  onFinish(ep: Endpoint, rttMs: number, ok: boolean): void;
}

export type PickerType = ClusterBody['loadBalancer']['type'];

export interface PickerOptions {
  readonly clock: Clock;
  readonly random: Random;
  /** Peak-EWMA: time constant of the latency average, in ms; 0 keeps no memory (cost then counts in-flight attempts only). */
  readonly decayMs: number;
  /** Peak-EWMA: latency charged per in-flight attempt of an endpoint not measured yet, and the least a failed attempt counts as, in ms. */
  readonly defaultRttMs: number;
}

/** The picker for a cluster's `loadBalancer.type`. */
export function createPicker(type: PickerType, opts: PickerOptions): Picker {
  switch (type) {
    case 'round-robin':
      return new RoundRobinPicker();
    case 'least-request':
      return new LeastRequestPicker(opts.random);
    case 'peak-ewma':
      return new PeakEwmaPicker(opts);
    default: {
      const unknown: never = type;
      throw new Error(`bug: unknown load balancer type ${String(unknown)}`);
    }
  }
}

/**
 * Smooth weighted round-robin, as nginx does it (ngx_http_upstream_get_peer): each pick
 * adds every candidate's weight to its running score, takes the highest score (ties: the
 * first in candidate order) and subtracts the total weight from the winner. Over any
 * `sum(weights)` consecutive picks from an unchanged candidate list, each endpoint is
 * picked exactly `weight` times, and heavy endpoints are spread out rather than
 * picked in a burst (weights 5,1,1 give a a b a c a a). Deterministic: no random draws.
 *
 * Scores live in a WeakMap keyed by Endpoint, so endpoints dropped from the config are
 * forgotten with them; an endpoint left out of the candidates for a while (ejected)
 * keeps its score and resumes from it.
 */
export class RoundRobinPicker implements Picker {
  readonly #score = new WeakMap<Endpoint, number>();

  pick(candidates: readonly Endpoint[]): Endpoint | undefined {
    if (candidates.length <= 1) return candidates[0]; // a lone candidate's score would gain and lose the same weight
    let total = 0;
    let best: Endpoint | undefined;
    let bestScore = -Infinity;
    for (const ep of candidates) {
      const weight = weightOf(ep);
      const score = (this.#score.get(ep) ?? 0) + weight;
      this.#score.set(ep, score);
      total += weight;
      if (score > bestScore) {
        best = ep;
        bestScore = score;
      }
    }
    if (best !== undefined) this.#score.set(best, bestScore - total);
    return best;
  }

  onStart(ep: Endpoint): void {
    startAttempt(ep);
  }

  onFinish(ep: Endpoint, _rttMs: number, _ok: boolean): void {
    finishAttempt(ep);
  }
}

/**
 * Least-request by power of two choices (Mitzenmacher; Envoy's LEAST_REQUEST): draw two
 * distinct candidates, each with probability proportional to its weight, and take the
 * one with fewer attempts in flight; on a tie the first drawn, so that idle endpoints
 * are chosen in exact proportion to their weights. Uses two random draws per pick when
 * there are two or more candidates, none otherwise.
 */
export class LeastRequestPicker implements Picker {
  readonly #random: Random;

  constructor(random: Random) {
    this.#random = random;
  }

  pick(candidates: readonly Endpoint[]): Endpoint | undefined {
    if (candidates.length <= 1) return candidates[0];
    const [i, j] = sampleDistinctPair(candidates, this.#random);
    const a = candidates[i]!;
    const b = candidates[j]!;
    return b.inFlight < a.inFlight ? b : a;
  }

  onStart(ep: Endpoint): void {
    startAttempt(ep);
  }

  onFinish(ep: Endpoint, _rttMs: number, _ok: boolean): void {
    finishAttempt(ep);
  }
}

/**
 * Peak-EWMA by power of two choices, after Finagle and Linkerd (linkerd2-proxy
 * `linkerd/pool/p2c`, tower's `PeakEwma`): draw two distinct candidates as
 * `LeastRequestPicker` does and take the one with the lower cost
 * `estimateMs(ep) × (ep.inFlight + 1)`; on a tie the first drawn.
 *
 * The stored estimate, updated in `onFinish`:
 * - a sample above the current estimate replaces it at once (the "peak": a slow endpoint
 *   is avoided immediately);
 * - otherwise `est = est·w + rtt·(1 − w)` with `w = exp(−elapsed / decayMs)`, `elapsed`
 *   being the time since the last update, so the estimate falls over about `decayMs`;
 * - a failed attempt counts as a sample of at least `defaultRttMs` and is never averaged
 *   down: a fast 503 must not make a broken endpoint look fast and draw more traffic, and
 *   the retry after it should go elsewhere.
 *
 * What `pick` sees (`estimateMs`):
 * - between samples the estimate decays toward zero with the same time constant, as in
 *   Linkerd and Finagle, so an endpoint that gets no traffic becomes cheaper and cheaper
 *   until it is tried again. (It used to relax toward `defaultRttMs`; an endpoint never
 *   picked then kept costing the default, 30 ms, while one answering in 1 ms cost 1 ms with
 *   nothing in flight, so at 50–100 req/s the second of two equal endpoints got 0 of about
 *   2 000 requests: it could never get the sample that would have shown it was as fast.)
 * - an endpoint with no sample yet costs 0 while idle, so a new instance is tried as soon
 *   as it is drawn, and `defaultRttMs` per attempt while its first attempts are in flight
 *   (Finagle's penalty), so a new instance is not flooded before it has answered once.
 */
export class PeakEwmaPicker implements Picker {
  readonly #clock: Clock;
  readonly #random: Random;
  readonly #decayMs: number;
  readonly #defaultRttMs: number;

  constructor(opts: PickerOptions) {
    this.#clock = opts.clock;
    this.#random = opts.random;
    this.#decayMs = opts.decayMs;
    this.#defaultRttMs = opts.defaultRttMs;
  }

  /** The latency estimate of `ep` at clock.now(), in ms, as `pick` sees it. Pure. */
  estimateMs(ep: Endpoint): number {
    if (!ep.rttSampled) return ep.inFlight === 0 ? 0 : this.#defaultRttMs;
    return ep.rttEstimateMs * decayWeight(this.#clock.now() - ep.rttUpdatedAt, this.#decayMs);
  }

  /** `estimateMs(ep) × (inFlight + 1)`: ms of queueing a new attempt would expect. Pure. */
  cost(ep: Endpoint): number {
    return this.estimateMs(ep) * (ep.inFlight + 1);
  }

  pick(candidates: readonly Endpoint[]): Endpoint | undefined {
    if (candidates.length <= 1) return candidates[0];
    const [i, j] = sampleDistinctPair(candidates, this.#random);
    const a = candidates[i]!;
    const b = candidates[j]!;
    return this.cost(b) < this.cost(a) ? b : a;
  }

  onStart(ep: Endpoint): void {
    startAttempt(ep);
  }

  onFinish(ep: Endpoint, rttMs: number, ok: boolean): void {
    finishAttempt(ep);
    if (!(rttMs >= 0)) return; // NaN or negative: no usable sample
    const now = this.#clock.now();
    if (!ep.rttSampled) {
      ep.rttEstimateMs = ok ? rttMs : Math.max(rttMs, this.#defaultRttMs);
    } else {
      const w = decayWeight(now - ep.rttUpdatedAt, this.#decayMs);
      const current = ep.rttEstimateMs * w;
      if (!ok) ep.rttEstimateMs = Math.max(rttMs, current, this.#defaultRttMs);
      else if (rttMs > current) ep.rttEstimateMs = rttMs;
      else ep.rttEstimateMs = current + rttMs * (1 - w);
    }
    ep.rttSampled = true;
    ep.rttUpdatedAt = now;
  }
}

/**
 * Two distinct indices into `candidates` (which must hold at least two), each drawn with
 * probability proportional to its weight, the second among the candidates left after
 * the first. Uses exactly two draws of `random`. Exported as the P2C sampling seam.
 */
export function sampleDistinctPair(candidates: readonly Endpoint[], random: Random): readonly [number, number] {
  if (candidates.length < 2) throw new Error(`bug: power of two choices needs two candidates, got ${candidates.length}`);
  let total = 0;
  for (const ep of candidates) total += weightOf(ep);
  const first = weightedIndex(candidates, random() * total, -1);
  const second = weightedIndex(candidates, random() * (total - weightOf(candidates[first]!)), first);
  return [first, second];
}

/** The index where `target` (in [0, total weight)) falls, walking the weights in order and skipping `skip`. */
function weightedIndex(candidates: readonly Endpoint[], target: number, skip: number): number {
  let last = -1;
  for (let i = 0; i < candidates.length; i++) {
    if (i === skip) continue;
    target -= weightOf(candidates[i]!);
    last = i;
    if (target < 0) return i;
  }
  return last; // floating-point rounding left the target at the very end: take the last one
}

/** Weights are ≥ 1 by config; a malformed one counts as 1, the neutral weight, rather than starving or poisoning sums with NaN. */
function weightOf(ep: Endpoint): number {
  return Number.isFinite(ep.weight) && ep.weight > 0 ? ep.weight : 1;
}

/** exp(−elapsed/decay): how much of the old estimate survives. A decay of 0 keeps nothing; time never runs back. */
function decayWeight(elapsedMs: number, decayMs: number): number {
  if (!(decayMs > 0)) return 0;
  return Math.exp(-Math.max(0, elapsedMs) / decayMs);
}

function startAttempt(ep: Endpoint): void {
  ep.inFlight += 1;
}

function finishAttempt(ep: Endpoint): void {
  if (ep.inFlight <= 0) throw new Error(`bug: onFinish without a matching onStart for endpoint ${ep.key}`);
  ep.inFlight -= 1;
}
