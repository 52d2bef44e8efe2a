/**
 * Circuit breaker on concurrency, as Envoy's cluster circuit breakers: a limit on what
 * one sidecar has outstanding to one cluster, over all its endpoints together. It trips
 * on load, not on failures (failing endpoints are outlier detection's job), so it has
 * two states, named by `open`: closed (below the limit, attempts go through) and open
 * (at the limit, attempts are refused); it closes again as soon as one is released, so
 * there is no half-open probing.
 *
 * The three limits of `ClusterBody.circuitBreaker`:
 * - `maxRequests` is enforced here: attempts in flight, retries included. Call
 *   `tryAcquire()` before each attempt (a retry too) and, when it returns true,
 *   `release()` exactly once when that attempt ends, however it ends. On false, answer
 *   503 at once without dispatching (and without retrying: an overflow is not an
 *   endpoint failure).
 * - `maxConnections` and `maxPendingRequests` are the connection pool's to enforce: the
 *   pool opens at most `maxConnections` connections to the cluster; when all are busy an
 *   attempt waits in a queue for one, and an attempt that would make that queue longer
 *   than `maxPendingRequests` is refused with 503 the same way. They are kept here only
 *   so the pool reads all three limits from one place.
 *
 * Mutates only its own counters.
 */
import type { ClusterBody } from '../config/types.ts';

export type CircuitBreakerSettings = ClusterBody['circuitBreaker'];

export class CircuitBreaker {
  /** Limits for the pool owner; see the module comment. */
  readonly maxConnections: number;
  readonly maxPendingRequests: number;
  readonly maxRequests: number;
  #active = 0;
  #rejected = 0;

  constructor(settings: CircuitBreakerSettings) {
    this.maxConnections = settings.maxConnections;
    this.maxPendingRequests = settings.maxPendingRequests;
    this.maxRequests = settings.maxRequests;
  }

  /** Attempts acquired and not yet released. */
  get active(): number {
    return this.#active;
  }

  /** Attempts refused since construction (Envoy's `upstream_rq_pending_overflow` kind of counter). */
  get rejected(): number {
    return this.#rejected;
  }

  /** Whether the next `tryAcquire` would be refused. */
  get open(): boolean {
    return this.#active >= this.maxRequests;
  }

  /** Takes one slot for an attempt; false, counted in `rejected`, when `maxRequests` are already active. */
  tryAcquire(): boolean {
    if (this.#active >= this.maxRequests) {
      this.#rejected += 1;
      return false;
    }
    this.#active += 1;
    return true;
  }

  /** Gives back a slot taken by a successful `tryAcquire`. Throws on a release without one: a bug. */
  release(): void {
    if (this.#active <= 0) throw new Error('bug: CircuitBreaker.release() without a matching tryAcquire()');
    this.#active -= 1;
  }
}
