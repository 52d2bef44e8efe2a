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
