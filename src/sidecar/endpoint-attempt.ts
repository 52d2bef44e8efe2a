/**
 * The innermost layers of the forwarding core: circuit breaker → endpoint pick (outlier
 * state, terminating instances last, the balancer, untried endpoints first) → one attempt.
 *
 * Contract of `attemptOnce`: either it refuses before sending (`stop`, with the code to
 * answer: `overloaded` when the breaker or the connection queue is full, `no_endpoints`
 * when nothing can be picked), holding nothing; or it sent an attempt and returns its
 * result and verdict with `settle`, which the caller calls exactly once when it is done
 * with the attempt (after relaying the body, or before retrying): it feeds the balancer its
 * latency sample, outlier detection its verdict, and gives the breaker slot back. An
 * attempt that the caller's slow body ended says nothing of the endpoint: it is settled
 * here, without a sample or a verdict, and ends the request (`stop`).
 */
import type { Picker } from './balancer.ts';
import type { CircuitBreaker } from './breaker.ts';
import type { TimerClock } from './clock.ts';
import type { Deadline } from './deadline.ts';
import type { AttemptTarget, DispatchEvents, Exchange, Send } from './dispatch.ts';
import type { Endpoint } from './endpoint.ts';
import type { ProxyErrorCode } from './errors.ts';
import type { OutlierDetector } from './outlier.ts';
import type { RetryBudget } from './retry-budget.ts';
import { judgeAttempt, untriedFirst, type AttemptVerdict } from './retry.ts';
import type { AttemptResult } from './upstream.ts';

/** What the layers need of a cluster (clusters.ts `Cluster` has it all). */
export interface ClusterPolicy {
  readonly service: string;
  readonly breaker: CircuitBreaker;
  readonly picker: Picker;
  readonly outlier: OutlierDetector;
  readonly budget: RetryBudget;
  readonly endpoints: readonly Endpoint[];
  /** Requests waiting for a connection across the cluster's pools. */
  readonly queued: number;
  readonly settings: { readonly circuitBreaker: { readonly maxConnections: number; readonly maxPendingRequests: number } };
  candidates(): Endpoint[];
}

export type Tried =
  | { readonly kind: 'stop'; readonly code: ProxyErrorCode }
  | { readonly kind: 'attempted'; readonly result: AttemptResult; readonly verdict: AttemptVerdict; readonly settle: () => void };

export interface AttemptOptions {
  readonly tried: Set<Endpoint>;
  readonly pinned: AttemptTarget | undefined;
  readonly portOf: (endpoint: Endpoint) => number;
  readonly deadline: Deadline;
  /** Per-try timeout, ms; 0 for none. */
  readonly backendRequestMs: number;
  readonly clock: TimerClock;
  readonly send: Send;
  readonly events: DispatchEvents;
}

export async function attemptOnce(cluster: ClusterPolicy, exchange: Exchange, o: AttemptOptions): Promise<Tried> {
  const { breaker } = cluster;
  if (!breaker.tryAcquire()) {
    o.events.overloaded(cluster.service);
    return { kind: 'stop', code: 'overloaded' };
  }
  // Requests can only be waiting for a connection once more are in flight than one
  // endpoint's connections; only then is the pools' queue worth counting.
  const limits = cluster.settings.circuitBreaker;
  if (breaker.active > limits.maxConnections && cluster.queued >= limits.maxPendingRequests) {
    breaker.release();
    o.events.overloaded(cluster.service);
    return { kind: 'stop', code: 'overloaded' };
  }
  const endpoint = o.pinned ? o.pinned.endpoint : cluster.picker.pick(untriedFirst(cluster.candidates(), o.tried));
  if (!endpoint) {
    breaker.release();
    return { kind: 'stop', code: 'no_endpoints' };
  }
  const port = o.pinned ? o.pinned.port : o.portOf(endpoint);
  const window = o.deadline.forTry(o.backendRequestMs);
  o.tried.add(endpoint);
  cluster.picker.onStart(endpoint);
  const t0 = o.clock.now();
  const result = await o.send({ endpoint, port }, exchange, window);
  const rtt = o.clock.now() - t0;
  window.dispose();
  if (o.deadline.reason === 'request_body_timeout') {
    if (result.ok) result.body.destroy();
    cluster.picker.onFinish(endpoint, Number.NaN, true);
    breaker.release();
    return { kind: 'stop', code: 'request_body_timeout' };
  }
  const verdict = judgeAttempt(result, { requestTimedOut: o.deadline.timedOut, tryTimedOut: window.tryTimedOut() });
  let settled = false;
  const settle = () => {
    if (settled) return;
    settled = true;
    cluster.picker.onFinish(endpoint, rtt, verdict.outcome === 'success');
    if (verdict.outcome && cluster.outlier.record(endpoint, verdict.outcome, cluster.endpoints)) o.events.ejected(cluster.service, endpoint.key);
    breaker.release();
  };
  return { kind: 'attempted', result, verdict, settle };
}
