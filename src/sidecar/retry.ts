/**
 * The retry layer of the forwarding core (dispatch.ts). Its two decisions are pure: how one
 * attempt ended (`judgeAttempt`), and whether it may be tried again (`mayRetry`);
 * `retryLoop` acts on them with the retry budget (retry-budget.ts), the backoff
 * (backoff.ts) and the deadline (deadline.ts).
 */
import type { CompiledRetry } from '../config/types.ts';
import { retryBackoffMs } from './backoff.ts';
import type { Random, TimerClock } from './clock.ts';
import type { Deadline } from './deadline.ts';
import type { DispatchEvents, Dispatched } from './dispatch.ts';
import type { Tried } from './endpoint-attempt.ts';
import type { ProxyErrorCode } from './errors.ts';
import type { RetryBudget } from './retry-budget.ts';
import { outcomeOfStatus, type OutlierOutcome } from './outlier.ts';
import { grpcStatusOf } from './grpc.ts';
import type { AttemptFailure, AttemptResult } from './upstream.ts';

/** How an attempt ended, as retries, outlier detection and the error response see it. */
export interface AttemptVerdict {
  /**
   * Why no response came: undici's classification, except that an attempt ended by the
   * per-try or the whole-request timeout is `request_timeout`. Undefined with a response,
   * and when the client went away.
   */
  readonly failure: Exclude<AttemptFailure, 'aborted'> | undefined;
  /** The app closed its connection: nothing is owed to it, and nothing learnt of the backend. */
  readonly clientGone: boolean;
  /** Nothing reached the backend's app: a refused connection or a refused TLS handshake. */
  readonly notSent: boolean;
  /** For outlier detection; undefined when the client went away. */
  readonly outcome: OutlierOutcome | undefined;
}

/**
 * Judges one attempt. `requestTimedOut`: the whole-request deadline passed (it aborts the
 * attempt); `tryTimedOut`: the per-try timer aborted it. Any other abort is the client's.
 */
export function judgeAttempt(result: AttemptResult, timeouts: { readonly requestTimedOut: boolean; readonly tryTimedOut: boolean }): AttemptVerdict {
  if (result.ok) return { failure: undefined, clientGone: false, notSent: false, outcome: outcomeOfStatus(result.statusCode) };
  const timedOut = timeouts.requestTimedOut || (result.failure === 'aborted' && timeouts.tryTimedOut);
  if (result.failure === 'aborted' && !timedOut) return { failure: undefined, clientGone: true, notSent: false, outcome: undefined };
  const failure = timedOut ? 'request_timeout' : (result.failure as Exclude<AttemptFailure, 'aborted'>);
  const notSent = failure === 'connect_failure' || failure === 'tls_failure';
  return { failure, clientGone: false, notSent, outcome: notSent ? 'connect-failure' : 'gateway-error' };
}

/**
 * Whether attempt number `attempt` (1 for the first try) may be tried again, budget aside:
 * never after the whole-request deadline, for a client gone, for a body that was streamed
 * (it cannot be sent twice), or beyond `retry.attempts`. Then:
 * - nothing sent (connection or TLS handshake refused): always, since the app saw nothing;
 * - a reset before the response: for retry-safe requests;
 * - a per-try timeout: for retry-safe requests when 504 is a listed code (it counts as 504);
 * - a response with a listed code: for retry-safe requests;
 * - a gRPC status the rule lists (`grpcCodes`), in the response headers: always.
 * Retry-safe: an idempotent method, or an `Idempotency-Key` (headers.ts `isRetrySafe`).
 */
export function mayRetry(o: {
  readonly attempt: number;
  readonly retry: CompiledRetry;
  readonly result: AttemptResult;
  readonly verdict: AttemptVerdict;
  readonly requestTimedOut: boolean;
  readonly retrySafe: boolean;
  readonly replayable: boolean;
}): boolean {
  const { verdict, retry } = o;
  if (o.requestTimedOut || verdict.clientGone || !o.replayable || o.attempt > retry.attempts) return false;
  if (o.result.ok) {
    // A gRPC status in the response headers (a Trailers-Only answer: nothing was streamed
    // yet) that the route lists is retried whatever the method: gRPC calls are all POSTs,
    // and listing a status says the service is safe to call again after it.
    const grpc = retry.grpcCodes === undefined ? undefined : grpcStatusOf(o.result.headers);
    if (grpc !== undefined && retry.grpcCodes!.includes(grpc)) return true;
    return o.retrySafe && retry.codes.includes(o.result.statusCode);
  }
  if (verdict.notSent) return true;
  if (verdict.failure === 'upstream_reset') return o.retrySafe;
  if (verdict.failure === 'request_timeout') return o.retrySafe && retry.codes.includes(504);
  return false;
}

/** What a retried response is counted as: its gRPC status (`grpc-14`) when it carries a failing one, else its HTTP status. */
function retryReasonOf(result: Extract<AttemptResult, { ok: true }>): string {
  const grpc = grpcStatusOf(result.headers);
  return grpc !== undefined && grpc !== 0 ? `grpc-${grpc}` : String(result.statusCode);
}

/**
 * The endpoints a request's next attempt may be picked from: the candidates this request
 * has not tried yet, when any are left, else all of them (a lone endpoint, or every one
 * tried, is tried again rather than failing the request). A retry that goes back to the
 * endpoint that just failed mostly fails again; another one is the better bet. Pure; `T`
 * is anything compared by identity (an Endpoint).
 */
export function untriedFirst<T>(candidates: readonly T[], tried: ReadonlySet<T>): readonly T[] {
  if (tried.size === 0) return candidates;
  const fresh = candidates.filter((c) => !tried.has(c));
  return fresh.length > 0 ? fresh : candidates;
}

export interface RetryLoopOptions {
  readonly retry: CompiledRetry;
  readonly budget: RetryBudget;
  readonly deadline: Deadline;
  readonly clock: TimerClock;
  readonly random: Random;
  readonly retrySafe: boolean;
  /** The body can be sent again (none, or held in memory); asked at each retry, since a replay buffer can overflow on the way. */
  readonly replayable: boolean | (() => boolean);
  /** The service retried, as the events name it. */
  readonly service: string;
  /** Told of each retry (`reason`: the status code or the failure) and of each the budget refused. */
  readonly events: Pick<DispatchEvents, 'retried' | 'retryDenied'>;
}

/**
 * Tries (`tryOnce`) until an attempt gives a response or a failure that may not or cannot
 * be tried again: a retry needs `mayRetry`, then a grant of the budget, then a backoff that
 * ends before the deadline (else the request ends with `request_timeout`). A response that
 * is retried is drained and settled first. A refusal before sending (`stop`) is never
 * retried: a full breaker or no endpoint does not get better by asking again at once.
 */
export async function retryLoop(o: RetryLoopOptions, tryOnce: () => Promise<Tried>): Promise<Dispatched> {
  for (let attempt = 1; ; attempt++) {
    const tried = await tryOnce();
    if (tried.kind === 'stop') return { kind: 'failed', code: tried.code };
    const { result, verdict, settle } = tried;
    const replayable = typeof o.replayable === 'function' ? o.replayable() : o.replayable;
    const retryable = mayRetry({ attempt, retry: o.retry, result, verdict, requestTimedOut: o.deadline.timedOut, retrySafe: o.retrySafe, replayable });
    if (retryable && o.budget.tryRetry()) {
      if (result.ok) await result.body.dump().catch(() => undefined);
      settle();
      o.events.retried(o.service, result.ok ? retryReasonOf(result) : verdict.failure!);
      const wait = retryBackoffMs(attempt, o.retry.backoffMs, o.random);
      if (o.deadline.wouldPass(wait)) return { kind: 'failed', code: 'request_timeout' };
      if (wait > 0) await o.clock.sleep(wait, o.deadline.signal);
      const ended = o.deadline.reason;
      if (ended === 'client_gone') return { kind: 'client_gone' };
      if (ended !== undefined) return { kind: 'failed', code: ended };
      continue;
    }
    if (retryable) o.events.retryDenied(o.service);
    if (result.ok) return { kind: 'response', response: result, settle };
    settle();
    if (verdict.clientGone) return { kind: 'client_gone' };
    const f = verdict.failure;
    const code: ProxyErrorCode = f === 'connect_failure' || f === 'tls_failure' || f === 'request_timeout' ? f : 'upstream_reset';
    return { kind: 'failed', code };
  }
}
