/**
 * The functions that the generated validators (validators.generated.js) call. Ajv's own
 * standalone output would `require()` its runtime helpers from `ajv/dist/runtime/`; the
 * build rewrites those calls to this module instead, so the generated code is plain ES
 * modules, loads without ajv, and bundles (the GitHub Action) without CommonJS interop.
 */
import { parseDuration } from '../spec/duration.ts';

/**
 * The `maxDuration` keyword: whether a duration string, summed over its parts, is at most
 * `limitMs`. A string that is not a duration passes: the `pattern` beside the keyword
 * reports it, and one diagnostic per value is enough.
 */
export function withinMaxDuration(data: string, limitMs: number): boolean {
  return (parseDuration(data) ?? 0) <= limitMs;
}

/**
 * Length of a string in code points, as JSON Schema's `minLength`/`maxLength` count it: a
 * surrogate pair (an emoji, say) is one character, a lone surrogate is one too.
 */
export function ucs2length(text: string): number {
  // Spec strings are almost always free of surrogates, and then the length is the answer.
  let i = 0;
  while (i < text.length && (text.charCodeAt(i) & 0xf800) !== 0xd800) i++;
  if (i === text.length) return i;
  let count = i;
  for (; i < text.length; i++) {
    count++;
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) i++;
  }
  return count;
}

/**
 * Deep equality of parsed spec data (mappings, lists, strings, numbers, booleans, null), as
 * `uniqueItems` compares list items: same keys with equal values, same items in order. NaN
 * equals NaN here, so a list with `.nan` twice is reported as repeating it.
 */
export function equal(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return a !== a && b !== b;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!equal(a[i], b[i])) return false;
    return true;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const keys = Object.keys(x);
  if (keys.length !== Object.keys(y).length) return false;
  for (const k of keys) if (!Object.hasOwn(y, k) || !equal(x[k], y[k])) return false;
  return true;
}
