/**
 * The deadline layer: a request's whole-request timeout, its per-try timeouts, and the
 * ways a request ends early (the caller went away, or its body came too slowly), as one
 * abort signal every attempt listens to.
 *
 * Contract: `signal` aborts once, for the first of: the whole-request deadline passing
 * (`reason` 'request_timeout'), `cancel('client_gone')`, `cancel('request_body_timeout')`.
 * `forTry` gives an attempt its own signal, which also aborts when the per-try timeout
 * passes; `tryTimedOut()` then tells the two apart. Timers run on the injected clock, and
 * `dispose()` clears them all.
 */
import type { TimerClock } from './clock.ts';

/** Why a request stopped before its response: its deadline, or something of the caller's. */
export type CancelReason = 'request_timeout' | 'client_gone' | 'request_body_timeout';

/** An attempt's view of the deadline. */
export interface TryWindow {
  /** Time the attempt may wait for response headers (and each body gap), in ms; 0 waits forever. */
  readonly timeoutMs: number;
  /** Aborts when the request ends early or the per-try timeout passes. */
  readonly signal: AbortSignal;
  /** True once the per-try timeout (not the request's end) aborted the attempt. */
  tryTimedOut(): boolean;
  dispose(): void;
}

const never = (): boolean => false;
const nothing = (): void => undefined;

/** What an aborted attempt rejects with: an AbortError (upstream.ts classifies it), naming why. */
function abortError(why: string): Error {
  return Object.assign(new Error(`request ended: ${why}`), { name: 'AbortError', code: 'ABORT_ERR' });
}

/**
 * Contract above. Per request it holds one AbortController and, with a timeout, one timer;
 * nothing is aborted (so no error object is built) unless the request does end early.
 */
export class Deadline {
  readonly #clock: TimerClock;
  readonly #controller = new AbortController();
  /** Cancels the whole-request timer. */
  readonly #cancelTimer: (() => void) | undefined;
  /** The clock reading at which the request times out; Infinity for none. */
  readonly at: number;
  #reason: CancelReason | undefined;

  /** `started`: when the request arrived (clock time); `requestMs`: its whole-request timeout, 0 for none. */
  constructor(clock: TimerClock, started: number, requestMs: number) {
    this.#clock = clock;
    this.at = requestMs > 0 ? started + requestMs : Infinity;
    if (this.at !== Infinity) this.#cancelTimer = clock.after(Math.max(1, this.at - clock.now()), () => this.cancel('request_timeout'));
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Why the request ended early, if it did. */
  get reason(): CancelReason | undefined {
    return this.#reason;
  }

  get timedOut(): boolean {
    return this.#reason === 'request_timeout';
  }

  /** Ends the request early; the first reason given wins. */
  cancel(reason: CancelReason): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    this.#controller.abort(abortError(reason));
  }

  /** Milliseconds left (at least 1 while any is left); Infinity without a deadline. */
  remainingMs(): number {
    return this.at === Infinity ? Infinity : Math.max(1, this.at - this.#clock.now());
  }

  /** Whether a wait of `ms` from now would outlast the deadline. */
  wouldPass(ms: number): boolean {
    return this.#clock.now() + ms >= this.at;
  }

  /**
   * An attempt's window: the per-try timeout `backendRequestMs` (0 for none), capped by
   * what is left of the request. A per-try timer of its own runs only when it ends before
   * the request does; otherwise the request's signal is the attempt's.
   */
  forTry(backendRequestMs: number): TryWindow {
    const remaining = this.remainingMs();
    const perTry = backendRequestMs > 0 ? Math.min(backendRequestMs, remaining) : remaining;
    const timeoutMs = perTry === Infinity ? 0 : perTry;
    if (!(backendRequestMs > 0 && backendRequestMs < remaining) || this.signal.aborted) {
      return { timeoutMs, signal: this.signal, tryTimedOut: never, dispose: nothing };
    }
    const own = new AbortController();
    let fired = false;
    const onRequestEnd = () => own.abort(this.signal.reason);
    this.signal.addEventListener('abort', onRequestEnd, { once: true });
    const cancelTimer = this.#clock.after(backendRequestMs, () => {
      if (own.signal.aborted) return;
      fired = true;
      own.abort(abortError('try_timeout'));
    });
    return {
      timeoutMs,
      signal: own.signal,
      tryTimedOut: () => fired,
      dispose: () => {
        cancelTimer();
        this.signal.removeEventListener('abort', onRequestEnd);
      },
    };
  }

  /** Clears the timers (the request is answered). */
  dispose(): void {
    this.#cancelTimer?.();
  }
}
