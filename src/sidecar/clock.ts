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

export const systemClock: Clock = { now: () => performance.now() };
export const systemRandom: Random = Math.random;

/** A clock that moves only when told; for tests. */
export class ManualClock implements Clock {
  #now: number;
  constructor(start = 0) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  advance(ms: number): void {
    this.#now += ms;
  }
}
