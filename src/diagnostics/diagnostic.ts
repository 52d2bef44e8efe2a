import { CODES, type Code, type Severity } from './codes.ts';
import type { SourceFile } from './source-file.ts';

/** A half-open range of UTF-16 offsets `[start, end)` in one source file. */
export interface Span {
  readonly file: SourceFile;
  readonly start: number;
  readonly end: number;
}

/** Another place that explains a diagnostic (the first definition of a duplicate, say). */
export interface RelatedInfo {
  readonly span: Span;
  readonly message: string;
}

/**
 * One problem found in a spec. Diagnostics are data: stages collect them and carry on,
 * so one run reports every problem. `span` is absent only for problems that belong to
 * no file (an empty spec root, say).
 */
export interface Diagnostic {
  readonly code: Code;
  readonly severity: Severity;
  readonly message: string;
  /** Where in a file; absent for problems of a whole file (see `path`) or of no file. */
  readonly span?: Span;
  /** Spec-relative path of the file a span-less diagnostic is about (a file too large to read, say). */
  readonly path?: string;
  readonly hint?: string;
  readonly related?: readonly RelatedInfo[];
}

/** Builds a diagnostic with the catalog's severity for its code. */
export function diagnostic(
  code: Code,
  message: string,
  span?: Span,
  extra: { hint?: string; related?: RelatedInfo[]; path?: string } = {},
): Diagnostic {
  const d: { -readonly [K in keyof Diagnostic]: Diagnostic[K] } = { code, severity: CODES[code].severity, message };
  if (span) d.span = span;
  else if (extra.path !== undefined) d.path = extra.path;
  if (extra.hint) d.hint = extra.hint;
  if (extra.related && extra.related.length > 0) d.related = extra.related;
  return d;
}

export function hasErrors(diagnostics: readonly Diagnostic[]): boolean {
  return diagnostics.some((d) => d.severity === 'error');
}

/**
 * `sortDiagnostics(diagnostics)` for a list that is mostly the same objects as `previous`
 * (sorted): those keep their last order and the new ones go after them, so the (adaptive)
 * sort has little left to do. The same result as `sortDiagnostics`, in a fraction of the
 * time when few changed (tens of thousands of warnings in a large mesh).
 */
export function sortDiagnosticsLike(previous: readonly Diagnostic[], diagnostics: readonly Diagnostic[]): Diagnostic[] {
  const current = new Set(diagnostics);
  // A diagnostic listed twice (the same object) would be kept once below.
  if (current.size < diagnostics.length) return sortDiagnostics(diagnostics);
  const ordered: Diagnostic[] = [];
  const kept = new Set<Diagnostic>();
  for (const d of previous) {
    if (!current.has(d)) continue;
    ordered.push(d);
    kept.add(d);
  }
  const fresh = diagnostics.filter((d) => !kept.has(d));
  // Many new ones: sort them all. A few: each goes after the last one not after it, which is
  // where a stable sort of the kept ones followed by the new ones puts it.
  if (fresh.length * 16 > ordered.length) return sortInPlace([...ordered, ...fresh]);
  for (const d of sortInPlace(fresh)) {
    let lo = 0;
    let hi = ordered.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareDiagnostics(ordered[mid]!, d) <= 0) lo = mid + 1;
      else hi = mid;
    }
    ordered.splice(lo, 0, d);
  }
  return ordered;
}

/** Stable order: by file path, then offset, then code, then message (then hint and related places, for ties); file-less ones first. */
export function sortDiagnostics(diagnostics: readonly Diagnostic[]): Diagnostic[] {
  return sortInPlace([...diagnostics]);
}

function sortInPlace(diagnostics: Diagnostic[]): Diagnostic[] {
  return diagnostics.sort(compareDiagnostics);
}

function compareDiagnostics(a: Diagnostic, b: Diagnostic): number {
  const fa = a.span?.file.path ?? a.path ?? '';
  const fb = b.span?.file.path ?? b.path ?? '';
  if (fa !== fb) return fa < fb ? -1 : 1;
  const oa = a.span?.start ?? -1;
  const ob = b.span?.start ?? -1;
  if (oa !== ob) return oa - ob;
  if (a.code !== b.code) return a.code < b.code ? -1 : 1;
  if (a.message !== b.message) return a.message < b.message ? -1 : 1;
  // Ties (one message at one place, twice) are ordered by what else they say, so that the
  // order never depends on the order they were found in.
  const ha = a.hint ?? '';
  const hb = b.hint ?? '';
  if (ha !== hb) return ha < hb ? -1 : 1;
  const ra = relatedKey(a);
  const rb = relatedKey(b);
  return ra < rb ? -1 : ra > rb ? 1 : 0;
}

function relatedKey(d: Diagnostic): string {
  return (d.related ?? []).map((r) => `${r.span.file.path}:${r.span.start}:${r.span.end}:${r.message}`).join('\u0000');
}
