/**
 * Canonical JSON and content hashes: the basis of config versions. Same value → same
 * bytes → same hash, on every machine, whatever order keys were inserted in.
 */
import { createHash } from 'node:crypto';

/**
 * JSON with object keys sorted (by UTF-16 code units) and no whitespace. Arrays keep
 * their order (it is meaningful: rule order, say). `undefined` properties are dropped,
 * as JSON.stringify does; non-finite numbers are a bug and throw.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`cannot encode ${value} in canonical JSON`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  if (typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj)
      .filter((k) => obj[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
  }
  throw new TypeError(`cannot encode a ${typeof value} in canonical JSON`);
}

/** Lower-case hex sha256 of a string's UTF-8 bytes. */
export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Version of a resource body: the sha256 of its canonical JSON. */
export function contentHash(value: unknown): string {
  return sha256(canonicalJson(value));
}

/** A deep copy with object keys sorted, for readable yet deterministic output (`JSON.stringify(sortKeys(v), null, 2)`). */
export function sortKeys<T>(value: T): T {
  if (Array.isArray(value)) return value.map(sortKeys) as T;
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out as T;
  }
  return value;
}

/** Pretty, key-sorted JSON with a final newline: the on-disk form of compiled configs. */
export function prettyJson(value: unknown): string {
  return JSON.stringify(sortKeys(value), null, 2) + '\n';
}
