/**
 * Waiting between tries of one request: exponential backoff with full jitter.
 */
import type { Random } from './clock.ts';

/**
 * Ceiling of the backoff, as a multiple of its base. Envoy's retry policy uses the same
 * default (`max_interval` = 10 × `base_interval`): past a few doublings, a longer wait
 * only eats the request's deadline, while the retry budget already limits the load.
 */
export const MAX_BACKOFF_MULTIPLIER = 10;

/**
 * Milliseconds to wait before retry number `attempt` (1 for the first retry, 2 for the
 * second, …): a uniform draw in [0, min(baseMs × 2^(attempt − 1), 10 × baseMs)) —
 * "full jitter" (AWS Architecture Blog, "Exponential Backoff and Jitter"), which spreads
 * the retries of many callers that failed together instead of making them retry in
 * lockstep. Uses one draw of `random`; fractional ms. A `baseMs` of 0 or less gives 0.
 * Throws on an attempt below 1 (a bug in the caller).
 */
export function retryBackoffMs(attempt: number, baseMs: number, random: Random): number {
  if (!(attempt >= 1)) throw new Error(`bug: retry attempts count from 1, got ${attempt}`);
  if (!(baseMs > 0)) return 0;
  // Take the min before multiplying by base: 2 ** 2000 is Infinity.
  const ceiling = baseMs * Math.min(2 ** (attempt - 1), MAX_BACKOFF_MULTIPLIER);
  return random() * ceiling;
}
