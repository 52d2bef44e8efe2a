/**
 * Retry budget: caps the extra load retries put on one cluster, as Linkerd and Finagle
 * do, so that retries cannot multiply traffic during an outage.
 *
 * Bound: a retry allowed at time t brings the retries allowed in (t − ttl, t] to at most
 *   ratio × (requests recorded in (t − ttl, t]) + minRetriesPerSecond × ttl / 1000.
 * No budget that counts requests over a trailing window can promise this for windows
 * ending at other times: requests that leave the window do not take back the retries
 * they paid for.
 *
 * Counting is in time buckets, BUCKETS_PER_TTL per ttl, so memory is fixed and each call
 * costs O(1) (a jump of the clock clears at most one ring of buckets). To keep the bound
 * exact despite the coarse clock, requests are counted over the last BUCKETS_PER_TTL
 * buckets (between 0.9 and 1 ttl, never more than the window) and retries over the
 * last BUCKETS_PER_TTL + 1 (between 1 and 1.1 ttl, never less): the budget errs
 * toward fewer retries, by at most one bucket's worth.
 *
 * Times are clock milliseconds. Mutates only its own counters.
 */
import type { ClusterBody } from '../config/types.ts';
import type { Clock } from './clock.ts';

export type RetryBudgetSettings = ClusterBody['retryBudget'];

/** Buckets per ttl: the window slides in tenths, so the budget it errs by is at most 10%. */
export const BUCKETS_PER_TTL = 10;

/**
 * Slack when comparing against the fractional budget, so that binary rounding does not
 * deny a retry that the decimal settings allow (0.57 × 100 is 56.99999999999999 in
 * floating point, yet means 57 retries).
 */
const ROUNDING_SLACK = 1e-9;

/**
 * Counts original requests and grants retries within the bound above.
 * `recordRequest()` once per original request (never for a retry); `tryRetry()` before
 * each retry, which is made only if it returns true. A `ttlMs` of 0 or less means an
 * empty window: no retry is ever allowed.
 */
export class RetryBudget {
  readonly #clock: Clock;
  readonly #ratio: number;
  /** minRetriesPerSecond × ttl, in retries. */
  readonly #reserve: number;
  readonly #ttlMs: number;
  /** Ring of BUCKETS_PER_TTL + 1 buckets; bucket number b lives in slot b mod length. */
  readonly #requests = new Array<number>(BUCKETS_PER_TTL + 1).fill(0);
  readonly #retries = new Array<number>(BUCKETS_PER_TTL + 1).fill(0);
  /** Number of the current bucket: floor(now × BUCKETS_PER_TTL / ttl). */
  #bucket: number;
  /** Requests in the buckets #bucket − BUCKETS_PER_TTL + 1 … #bucket. */
  #requestSum = 0;
  /** Retries in the buckets #bucket − BUCKETS_PER_TTL … #bucket. */
  #retrySum = 0;
  #denied = 0;

  constructor(settings: RetryBudgetSettings, clock: Clock) {
    this.#clock = clock;
    this.#ratio = Math.max(0, settings.ratio);
    this.#reserve = Math.max(0, settings.minRetriesPerSecond) * (Math.max(0, settings.ttlMs) / 1000);
    this.#ttlMs = settings.ttlMs;
    this.#bucket = this.#bucketOf(clock.now());
  }

  /** Retries refused since construction (a metric counter). */
  get retriesDenied(): number {
    return this.#denied;
  }

  /** Counts one original request at clock.now(). */
  recordRequest(): void {
    if (!(this.#ttlMs > 0)) return;
    this.#advance();
    const slot = this.#slot(this.#bucket);
    this.#requests[slot] = (this.#requests[slot] ?? 0) + 1;
    this.#requestSum += 1;
  }

  /** Withdraws one retry at clock.now() if the budget allows it; false (and counted as denied) otherwise. */
  tryRetry(): boolean {
    if (this.#ttlMs > 0) {
      this.#advance();
      if (this.#retrySum + 1 <= this.#allowance() + ROUNDING_SLACK) {
        const slot = this.#slot(this.#bucket);
        this.#retries[slot] = (this.#retries[slot] ?? 0) + 1;
        this.#retrySum += 1;
        return true;
      }
    }
    this.#denied += 1;
    return false;
  }

  /** Retries `tryRetry` would grant right now, for metrics and the admin page. */
  available(): number {
    if (!(this.#ttlMs > 0)) return 0;
    this.#advance();
    return Math.max(0, Math.floor(this.#allowance() + ROUNDING_SLACK - this.#retrySum));
  }

  #allowance(): number {
    return this.#ratio * this.#requestSum + this.#reserve;
  }

  /** Multiplies before dividing, so that integer times fall in their bucket exactly (ttl / 10 is rarely exact in binary). */
  #bucketOf(now: number): number {
    return this.#ttlMs > 0 ? Math.floor((now * BUCKETS_PER_TTL) / this.#ttlMs) : 0;
  }

  #slot(bucket: number): number {
    const n = BUCKETS_PER_TTL + 1;
    return ((bucket % n) + n) % n;
  }

  /** Moves to the bucket of clock.now(), dropping what leaves each window. */
  #advance(): void {
    const bucket = this.#bucketOf(this.#clock.now());
    if (bucket <= this.#bucket) return; // same bucket (the clock is monotonic)
    if (bucket - this.#bucket > BUCKETS_PER_TTL) {
      this.#requests.fill(0);
      this.#retries.fill(0);
      this.#requestSum = 0;
      this.#retrySum = 0;
    } else {
      for (let b = this.#bucket + 1; b <= bucket; b++) {
        // Bucket b − BUCKETS_PER_TTL leaves the request window (its retries still count).
        this.#requestSum -= this.#requests[this.#slot(b - BUCKETS_PER_TTL)] ?? 0;
        // Slot of b holds bucket b − BUCKETS_PER_TTL − 1, which leaves the retry window.
        const slot = this.#slot(b);
        this.#retrySum -= this.#retries[slot] ?? 0;
        this.#requests[slot] = 0;
        this.#retries[slot] = 0;
      }
    }
    this.#bucket = bucket;
  }
}
