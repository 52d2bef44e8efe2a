/**
 * How golden metrics read in a terminal (`trellis stat`, `trellis up`'s tally): success as a
 * percentage, rates with one decimal, latencies in ms (or s past a second), `-` for none.
 */
import type { GoldenMetrics } from './mesh-stats.ts';

/** `99.50%`, or `-` without requests. */
export function percent(rate: number | null): string {
  return rate === null ? '-' : `${(rate * 100).toFixed(2)}%`;
}

/** `4.2`, `0.1`, or `-` for nothing. */
export function perSecond(rps: number): string {
  return rps === 0 ? '-' : rps < 0.05 ? '<0.1' : rps.toFixed(1);
}

/** A latency in seconds as `37ms`, `1.20s`, `0.4ms`, or `-` for none. */
export function latency(seconds: number | null): string {
  if (seconds === null) return '-';
  if (seconds >= 1) return `${seconds.toFixed(2)}s`;
  const ms = seconds * 1000;
  return ms < 1 ? `${ms.toFixed(1)}ms` : `${Math.round(ms)}ms`;
}

/** The cells every stat table ends with: success, rps, p50, p95, p99, requests (and denials when any). */
export function goldenCells(g: GoldenMetrics): string[] {
  return [percent(g.successRate), perSecond(g.rps), latency(g.p50), latency(g.p95), latency(g.p99), String(g.requests), g.denied > 0 ? String(g.denied) : '-'];
}

export const GOLDEN_HEADERS = ['SUCCESS', 'RPS', 'LATENCY_P50', 'LATENCY_P95', 'LATENCY_P99', 'REQUESTS', 'DENIED'];

/** Rows as aligned columns (two spaces apart), the header first; every cell already safe to print. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd());
}
