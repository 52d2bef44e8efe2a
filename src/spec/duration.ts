/**
 * Gateway API durations (`500ms`, `10s`, `1m30s`): one to four parts, each a whole number
 * of at most five digits followed by `h`, `m`, `s` or `ms`. Compiled configs carry
 * milliseconds, so sidecars never parse durations.
 */

const PART = /([0-9]{1,5})(h|ms|m|s)/y;
const UNIT_MS: Readonly<Record<string, number>> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/**
 * Durations already read, by spelling: a spec spells the same few dozen durations over and
 * over (every rule's timeouts, every service's traffic settings), and the compiler reads
 * each one several times. Bounded.
 */
const READ = new Map<string, number>();

/** Milliseconds of a duration string, or undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
  const known = READ.get(text);
  if (known !== undefined) return known;
  const ms = readDuration(text);
  if (ms !== undefined && READ.size < 4096) READ.set(text, ms);
  return ms;
}

function readDuration(text: string): number | undefined {
  let ms = 0;
  let parts = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < text.length) {
    const m = PART.exec(text);
    if (!m) return undefined;
    ms += Number(m[1]) * UNIT_MS[m[2]!]!;
    parts++;
  }
  return parts >= 1 && parts <= 4 ? ms : undefined;
}

/** A millisecond count written the way people write durations: `1m30s`, `250ms`, `0s`. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000], ['ms', 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * size;
    }
  }
  return out;
}

/**
 * Longest delay a Node timer holds: setTimeout treats 2^31 ms or more as 1 ms (with a
 * TimeoutOverflowWarning), so a longer timeout would fire at once and fail every request.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Longest duration a spec may write, for every duration field: 24h. No mesh setting is
 * useful beyond a day (a call that may wait longer should disable its timeout with `0s`),
 * and a day is far below MAX_TIMER_MS (about 24.8 days), so the sidecar may add or
 * multiply durations (backoff growth, repeated ejections) without reaching it.
 */
export const MAX_DURATION_MS = 24 * 3_600_000;
