/**
 * Time and chance, injected: every breaker, balancer and budget takes a Clock and a
 * Random so tests run them on a fake clock with fixed random draws.
 */

/** Monotonic milliseconds (not wall time: never jumps back). */
export interface Clock {
  now(): number;
}

/** A uniform draw in [0, 1). */
export type Random = () => number;

/**
 * A monotonic clock with timers: the forwarding core's deadlines, per-try timeouts and
 * retry backoff sleep on it, so tests drive them with a ManualWallClock (which has this
 * shape) in milliseconds.
 */
export interface TimerClock extends Clock {
  /** Resolves once `ms` have passed, or at once when `signal` aborts. Never rejects. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls `fn` once `ms` have passed; the returned function cancels it. The cheap timer of the per-request path. */
  after(ms: number, fn: () => void): () => void;
}

export const systemClock: TimerClock = {
  now: () => performance.now(),
  sleep: (ms, signal) => systemWallClock.sleep(ms, signal),
  after: (ms, fn) => {
    const timer = setTimeout(fn, ms);
    return () => clearTimeout(timer);
  },
};
export const systemRandom: Random = Math.random;

/** A seeded generator (mulberry32: small, fast, well mixed), so weighted and random choices repeat exactly in tests and benchmarks. */
export function seededRandom(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}


/**
 * Wall time, in epoch ms, and waiting on it. Certificate lifetimes are wall time (X.509
 * notBefore/notAfter), so certificate renewal, retry backoff and expiry run on this clock
 * rather than on the monotonic `Clock`; injected, so tests move it instead of waiting a
 * certificate's life out.
 */
export interface WallClock {
  now(): number;
  /** Resolves once `ms` of this clock's time have passed, or at once when `signal` aborts. Never rejects. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemWallClock: WallClock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      signal?.addEventListener('abort', done, { once: true });
    }),
};

/** A wall clock that moves only when told (`advance`), waking the sleeps that come due; for tests. */
export class ManualWallClock implements WallClock {
  #now: number;
  readonly #sleepers = new Set<{ readonly until: number; readonly wake: () => void }>();

  constructor(start: number) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      if (signal?.aborted || ms <= 0) return resolve();
      const sleeper = {
        until: this.#now + ms,
        wake: () => {
          this.#sleepers.delete(sleeper);
          signal?.removeEventListener('abort', sleeper.wake);
          resolve();
        },
      };
      this.#sleepers.add(sleeper);
      signal?.addEventListener('abort', sleeper.wake, { once: true });
    });
  }

  /** Calls `fn` once the clock has moved on by `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void): () => void {
    const timer = { until: this.#now + Math.max(0, ms), wake: () => (this.#sleepers.delete(timer), fn()) };
    this.#sleepers.add(timer);
    return () => void this.#sleepers.delete(timer);
  }

  /** Moves the clock on by `ms` and wakes every sleep due by then. */
  advance(ms: number): void {
    this.#now += ms;
    for (const s of [...this.#sleepers]) if (s.until <= this.#now) s.wake();
  }

  /** Sleeps not yet due: lets a test wait until the code under test is waiting. */
  get sleeping(): number {
    return this.#sleepers.size;
  }
}

/** A monotonic clock that moves only when told (`advance`), waking the sleeps and timers that come due; for tests. */
export class ManualClock extends ManualWallClock implements TimerClock {
  constructor(start = 0) {
    super(start);
  }
}
