/**
 * What the incremental compiler keeps of one compile for the next: the result of each unit
 * of work (a service's plan, a route's compiled rules, a config…) with the inputs it was
 * computed from. A unit whose inputs are the very same objects as last time (documents of
 * unchanged files are the same objects from one compile to the next, see incremental.ts)
 * gives back its last result, and the diagnostics it reported, without running.
 *
 * Entries are held weakly by their key: a unit about a document or plan that is gone from
 * the compiler's state is forgotten with it.
 *
 * A unit is named by a kind (a constant string) and a key object: the document or plan it
 * is about. Inputs are compared by identity (`===`), so a unit must list every input it
 * reads beyond its key: a document, another unit's result, a setting, or a `token` standing
 * for a whole collection.
 */
import type { Diagnostic } from '../diagnostics/diagnostic.ts';

interface Entry {
  readonly deps: readonly unknown[];
  readonly value: unknown;
  readonly diagnostics: readonly Diagnostic[];
}

function sameDeps(a: readonly unknown[], b: readonly unknown[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const NO_DIAGNOSTICS: readonly Diagnostic[] = [];

export class CompileMemo {
  readonly #kinds = new Map<string, WeakMap<object, Entry>>();
  readonly #tokens = new Map<string, { parts: readonly unknown[]; token: object }>();
  /** Units that ran and units reused since the last `endCompile` (for tests and benchmarks). */
  ran = 0;
  reused = 0;

  #entries(kind: string): WeakMap<object, Entry> {
    let entries = this.#kinds.get(kind);
    if (!entries) this.#kinds.set(kind, (entries = new WeakMap()));
    return entries;
  }

  /** The last result of unit (`kind`, `key`) when its inputs are `deps` again, else undefined. */
  lookup(kind: string, key: object, deps: readonly unknown[]): { readonly value: unknown; readonly diagnostics: readonly Diagnostic[] } | undefined {
    const entry = this.#entries(kind).get(key);
    if (!entry || !sameDeps(entry.deps, deps)) return undefined;
    this.reused++;
    return entry;
  }

  store(kind: string, key: object, deps: readonly unknown[], value: unknown, diagnostics: readonly Diagnostic[] = NO_DIAGNOSTICS): void {
    this.ran++;
    this.#entries(kind).set(key, { deps, value, diagnostics });
  }

  /** `compute()`, or its last result when `deps` are the same as last time (for units that report no diagnostics). */
  unit<T>(kind: string, key: object, deps: readonly unknown[], compute: () => T): T {
    const hit = this.lookup(kind, key, deps);
    if (hit) return hit.value as T;
    const value = compute();
    this.store(kind, key, deps, value);
    return value;
  }

  /**
   * An object that stays the same from one compile to the next while `parts` are the same
   * (by identity, in order): one input standing for a whole collection, such as every
   * service's identity.
   */
  token(id: string, parts: readonly unknown[]): object {
    const held = this.#tokens.get(id);
    if (held && sameDeps(held.parts, parts)) return held.token;
    const token = {};
    this.#tokens.set(id, { parts, token });
    return token;
  }

  /** Ends a compile: the counts start again. */
  endCompile(): void {
    this.ran = 0;
    this.reused = 0;
  }
}
