/**
 * Outlier detection: passive health checking from the outcomes one sidecar sees, after
 * Envoy's consecutive-5xx and consecutive-gateway-failure detectors.
 *
 * State lives on the Endpoint objects (`consecutive5xx`, `consecutiveGatewayErrors`,
 * `ejectedUntil`, `ejections`), so it survives a config swap that keeps an endpoint; the
 * detector holds only its settings and metric counters. Times are clock milliseconds.
 *
 * An endpoint is ejected while `ejectedUntil > clock.now()`: an ejection ends by itself,
 * with no sweep. After it ends, `ejectedUntil` keeps the past time it ended (needed to
 * forgive old ejections, see `intervalMs`), so read ejection through `isEjected`, never
 * as `ejectedUntil !== 0`.
 */
import type { ClusterBody } from '../config/types.ts';
import type { Clock } from './clock.ts';
import type { Endpoint } from './endpoint.ts';

/**
 * The result of one attempt as outlier detection sees it. Map a response with
 * `outcomeOfStatus`; a failed or timed-out connect is `connect-failure`; an attempt
 * timeout (Envoy counts it as a 504) or a reset before the response is `gateway-error`.
 */
export type OutlierOutcome = 'success' | '5xx' | 'gateway-error' | 'connect-failure';

/**
 * `ClusterBody.outlierDetection`, which can be passed as is. `intervalMs` is optional:
 * when > 0, each whole interval an endpoint spends un-ejected forgives one past ejection
 * (Envoy lowers its ejection multiplier on each interval tick), so a blip long after
 * earlier trouble is not punished with a long ejection. 0 or absent: never forgiven.
 */
export type OutlierSettings = Pick<ClusterBody['outlierDetection'], 'consecutive5xx' | 'consecutiveGatewayErrors' | 'baseEjectionMs' | 'maxEjectionPercent'> & {
  readonly intervalMs?: number;
};

/**
 * Longest ejection, as a multiple of `baseEjectionMs`: an endpoint that keeps failing
 * stays out for base × 1, × 2, … but never more than × 10, so an instance that has
 * recovered comes back within minutes (300s at the 30s default base, which is Envoy's
 * default `max_ejection_time`). The ejection count itself stops at 10 too, so forgiveness
 * starts working down from the cap at once.
 */
export const MAX_EJECTION_MULTIPLIER = 10;

/** The outcome of an HTTP response: 502, 503, 504 are gateway errors, other 5xx are 5xx, the rest success. */
export function outcomeOfStatus(status: number): OutlierOutcome {
  if (status === 502 || status === 503 || status === 504) return 'gateway-error';
  if (status >= 500 && status <= 599) return '5xx';
  return 'success';
}

/**
 * Ejects endpoints after runs of failures and says which endpoints may be picked.
 *
 * - A `5xx` extends the 5xx run and ends the gateway-error run; a `gateway-error` or
 *   `connect-failure` extends both runs; a `success` (any non-5xx response) ends both.
 *   A run reaching its threshold (0: that trigger is off) ejects the endpoint for
 *   `baseEjectionMs × ejections` (capped, see MAX_EJECTION_MULTIPLIER) and ends both runs.
 *   A `baseEjectionMs` of 0 means no ejection at all.
 * - Ejection is refused, and counted in `ejectionsOverflowed`, when afterwards more than
 *   `maxEjectionPercent` of the endpoints would be ejected — except that one endpoint
 *   may always be ejected when there are two or more and `maxEjectionPercent` > 0, as
 *   Envoy does — or when it would eject the last un-ejected endpoint. A refused run keeps
 *   growing, so the next failure tries again once another ejection has ended.
 * - Outcomes recorded for an endpoint while it is ejected (late answers to attempts sent
 *   before) are ignored.
 *
 * "The endpoints" are the list passed in: the cluster's current endpoints, ejected ones
 * included. Only the Endpoint objects and the counters below are mutated.
 */
export class OutlierDetector {
  readonly #settings: OutlierSettings;
  readonly #clock: Clock;
  #ejectionsTotal = 0;
  #ejectionsOverflowed = 0;
  #panicSelections = 0;

  constructor(settings: OutlierSettings, clock: Clock) {
    this.#settings = settings;
    this.#clock = clock;
  }

  /** Ejections made since construction (a metric counter). */
  get ejectionsTotal(): number {
    return this.#ejectionsTotal;
  }

  /** Ejections due but refused by maxEjectionPercent or the last-healthy rule (Envoy's `ejections_overflow`). */
  get ejectionsOverflowed(): number {
    return this.#ejectionsOverflowed;
  }

  /** Calls of `healthy` that returned every endpoint because of panic (Envoy's `lb_healthy_panic`). */
  get panicSelections(): number {
    return this.#panicSelections;
  }

  /** Records the outcome of one attempt on `ep`, one of `endpoints`; true if this call ejected it. */
  record(ep: Endpoint, outcome: OutlierOutcome, endpoints: readonly Endpoint[]): boolean {
    const now = this.#clock.now();
    if (ep.ejectedUntil > now) return false;
    if (outcome === 'success') {
      ep.consecutive5xx = 0;
      ep.consecutiveGatewayErrors = 0;
      return false;
    }
    ep.consecutive5xx += 1;
    ep.consecutiveGatewayErrors = outcome === '5xx' ? 0 : ep.consecutiveGatewayErrors + 1;
    const { consecutive5xx, consecutiveGatewayErrors } = this.#settings;
    const tripped =
      (consecutive5xx > 0 && ep.consecutive5xx >= consecutive5xx) ||
      (consecutiveGatewayErrors > 0 && ep.consecutiveGatewayErrors >= consecutiveGatewayErrors);
    if (!tripped || !(this.#settings.baseEjectionMs > 0)) return false; // a 0 ms ejection is none
    if (!this.#mayEject(ep, endpoints, now)) {
      this.#ejectionsOverflowed += 1;
      return false;
    }
    this.#forgive(ep, now);
    ep.ejections = Math.min(ep.ejections + 1, MAX_EJECTION_MULTIPLIER);
    ep.ejectedUntil = now + this.#settings.baseEjectionMs * ep.ejections;
    ep.consecutive5xx = 0;
    ep.consecutiveGatewayErrors = 0;
    this.#ejectionsTotal += 1;
    return true;
  }

  /** Whether `ep` is ejected at clock.now(). */
  isEjected(ep: Endpoint): boolean {
    return ep.ejectedUntil > this.#clock.now();
  }

  /**
   * The endpoints to balance over at clock.now(): those not ejected, in their order.
   * In panic — see `panicking` — all of `endpoints` instead, counted in
   * `panicSelections`. Returns a new array; mutates only that counter.
   */
  healthy(endpoints: readonly Endpoint[]): Endpoint[] {
    const now = this.#clock.now();
    const up = endpoints.filter((ep) => !(ep.ejectedUntil > now));
    if (this.#panics(endpoints.length, up.length)) {
      this.#panicSelections += 1;
      return [...endpoints];
    }
    return up;
  }

  /**
   * Whether `healthy(endpoints)` would return them all: no endpoint is un-ejected, or
   * more are ejected than `record` may eject (the healthy share is below
   * 100 − maxEjectionPercent, beyond the one-endpoint allowance). `record` never gets
   * there by itself; the endpoint list shrinking under ejected endpoints does, and then
   * spreading load over every endpoint beats crushing the few left (Envoy's panic
   * threshold). Setting maxEjectionPercent to 0 thus returns ejected endpoints at once. Pure.
   */
  panicking(endpoints: readonly Endpoint[]): boolean {
    const now = this.#clock.now();
    let up = 0;
    for (const ep of endpoints) if (!(ep.ejectedUntil > now)) up += 1;
    return this.#panics(endpoints.length, up);
  }

  /** Forgets everything about `ep`: runs, ejection and ejection count. Call when an endpoint is (re-)added. */
  reset(ep: Endpoint): void {
    ep.consecutive5xx = 0;
    ep.consecutiveGatewayErrors = 0;
    ep.ejectedUntil = 0;
    ep.ejections = 0;
  }

  /** How many of `total` endpoints may be ejected at once: the share, at least one of two or more, never all. */
  #maxEjected(total: number): number {
    const percent = this.#settings.maxEjectionPercent;
    if (total < 2 || !(percent > 0)) return 0;
    const byShare = Math.floor((percent * total) / 100);
    return Math.min(total - 1, Math.max(1, byShare));
  }

  #panics(total: number, up: number): boolean {
    if (total === 0) return false;
    return up === 0 || total - up > this.#maxEjected(total);
  }

  #mayEject(ep: Endpoint, endpoints: readonly Endpoint[], now: number): boolean {
    if (!endpoints.includes(ep)) return false; // removed by a config swap while its attempt ran
    let ejected = 0;
    for (const other of endpoints) if (other.ejectedUntil > now) ejected += 1;
    return ejected + 1 <= this.#maxEjected(endpoints.length);
  }

  /** Lowers `ep.ejections` by one per whole interval since its last ejection ended. */
  #forgive(ep: Endpoint, now: number): void {
    const interval = this.#settings.intervalMs ?? 0;
    if (!(interval > 0) || ep.ejections === 0 || ep.ejectedUntil <= 0) return;
    const intervals = Math.floor((now - ep.ejectedUntil) / interval);
    if (intervals > 0) ep.ejections = Math.max(0, ep.ejections - intervals);
  }
}
