/**
 * Gateway API durations (`500ms`, `10s`, `1m30s`): one to four parts, each a whole number
 * of at most five digits followed by `h`, `m`, `s` or `ms`. Compiled configs carry
 * milliseconds, so sidecars never parse durations.
 */

const PART = /([0-9]{1,5})(h|ms|m|s)/y;
const UNIT_MS: Readonly<Record<string, number>> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/** Milliseconds of a duration string, or undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
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
