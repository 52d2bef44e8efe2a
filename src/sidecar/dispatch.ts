/**
 * The forwarding core, as layers over a protocol-neutral dispatch:
 *
 *   route plan (route-plan.ts, pure)
 *     → deadline (deadline.ts: whole-request and per-try timeouts, early ends)
 *       → retry with budget (retry.ts `retryLoop`: what may be tried again, backoff)
 *         → breaker → endpoint pick with outlier state → the attempt (endpoint-attempt.ts)
 *
 * `dispatch` composes the last three for one request. It knows nothing of the protocol
 * the app spoke: it takes an `Exchange` (method, path, headers, body) and a `Send` that
 * carries one attempt to one endpoint, and answers with a `Dispatched` — an upstream
 * response to stream back (bodies stay streams; only a body small enough to retry or
 * mirror was read into memory, by the caller), or a stable error code. The listener
 * (outbound.ts) turns that into bytes on its own protocol.
 *
 * Every layer runs on the injected clock and random, so it is unit-tested without sockets
 * (test/sidecar/dispatch.test.ts).
 */
import type { Readable } from 'node:stream';
import type { CompiledRule } from '../config/types.ts';
import type { TimerClock, Random } from './clock.ts';
import type { Deadline, TryWindow } from './deadline.ts';
import type { Endpoint } from './endpoint.ts';
import { attemptOnce, type ClusterPolicy } from './endpoint-attempt.ts';
import type { ProxyErrorCode } from './errors.ts';
import { retryLoop } from './retry.ts';
import { ReplayBody } from './replay-body.ts';
import type { AttemptResult } from './upstream.ts';

/** One request as every layer sees it. */
export interface Exchange {
  readonly method: string;
  /** Path and query, as the upstream gets them. */
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  /** A Buffer can be sent again (retries); a ReplayBody while it kept the whole body; a stream only once; undefined for none. */
  readonly body: Buffer | Readable | ReplayBody | undefined;
  /** Idempotent method or an Idempotency-Key (headers.ts `isRetrySafe`). */
  readonly retrySafe: boolean;
}

/** Where an attempt goes: an endpoint, on a port. */
export interface AttemptTarget {
  readonly endpoint: Endpoint;
  readonly port: number;
}

/** Carries one attempt to one endpoint (an undici pool in the sidecar; a function in tests). */
export type Send = (target: AttemptTarget, exchange: Exchange, window: TryWindow) => Promise<AttemptResult>;

export type UpstreamResponse = Extract<AttemptResult, { ok: true }>;

/** How a dispatch ends. */
export type Dispatched =
  /** Stream `response` back, then call `settle()` (latency sample, outlier verdict, breaker slot). */
  | { readonly kind: 'response'; readonly response: UpstreamResponse; readonly settle: () => void }
  | { readonly kind: 'failed'; readonly code: ProxyErrorCode }
  /** The caller went away: nothing is owed to it. */
  | { readonly kind: 'client_gone' };

/** What the layers report, for metrics and logs. */
export interface DispatchEvents {
  retried(service: string, reason: string): void;
  retryDenied(service: string): void;
  overloaded(service: string): void;
  ejected(service: string, endpoint: string): void;
}

export interface DispatchOptions {
  /** Timeouts and retries: the matched rule's. */
  readonly policy: Pick<CompiledRule, 'timeouts' | 'retry'>;
  readonly deadline: Deadline;
  /** The port an endpoint without one of its own is reached on. */
  readonly portOf: (endpoint: Endpoint) => number;
  /** Every attempt to this target instead of balancing (a call addressed to one instance). */
  readonly pinned?: AttemptTarget;
  readonly clock: TimerClock;
  readonly random: Random;
  readonly send: Send;
  readonly events: DispatchEvents;
}

/** Retry with budget → breaker → pick → attempt, for one request to one cluster. */
export function dispatch(cluster: ClusterPolicy, exchange: Exchange, o: DispatchOptions): Promise<Dispatched> {
  cluster.budget.recordRequest();
  /** Endpoints this request's attempts went to: a retry goes elsewhere when it can. */
  const tried = new Set<Endpoint>();
  return retryLoop(
    {
      retry: o.policy.retry,
      budget: cluster.budget,
      deadline: o.deadline,
      clock: o.clock,
      random: o.random,
      retrySafe: exchange.retrySafe,
      replayable: () => {
        const body = exchange.body;
        return body === undefined || Buffer.isBuffer(body) || (body instanceof ReplayBody && body.replayable);
      },
      service: cluster.service,
      events: o.events,
    },
    () => attemptOnce(cluster, exchange, { tried, pinned: o.pinned, portOf: o.portOf, deadline: o.deadline, backendRequestMs: o.policy.timeouts.backendRequestMs, clock: o.clock, send: o.send, events: o.events }),
  );
}
