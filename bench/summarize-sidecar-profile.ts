/**
 * Where a sidecar's CPU goes per request, from a V8 `.cpuprofile` taken under load
 * (`node --cpu-prof bin/trellis.js sidecar …`): busy time per request, self time by
 * library or part, inclusive time of the sidecar's own functions (what each step of the
 * request path costs, callees included), and the hottest functions by self time.
 *
 * The profile covers the main thread only (not GC helper threads or the libuv pool), and
 * the profiler's sampling slows the process down, so per-request figures are upper bounds
 * that are best compared with each other.
 *
 * Usage: node bench/summarize-sidecar-profile.ts FILE.cpuprofile [--requests N] [--top N]
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { CpuProfile } from './summarize-cpu-profile.ts';

export interface SidecarProfileSummary {
  readonly totalMs: number;
  /** Sampled time not idle, in ms. */
  readonly busyMs: number;
  /** Requests served while profiling, when known. */
  readonly requests: number | undefined;
  /** Self time by library / part, largest first (idle left out). */
  readonly groups: ReadonlyArray<{ readonly group: string; readonly ms: number }>;
  /** Inclusive time of functions defined under src/, largest first. */
  readonly inclusive: ReadonlyArray<{ readonly name: string; readonly where: string; readonly ms: number }>;
  /** Self time per function, largest first (idle left out). */
  readonly functions: ReadonlyArray<{ readonly name: string; readonly where: string; readonly group: string; readonly ms: number }>;
}

/** Library, Node subsystem or Trellis file a frame belongs to. */
function groupOf(name: string, url: string): string {
  if (/^\(.*\)$/.test(name)) return name;
  const lib = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (lib) return lib[1]!;
  const src = /\/((?:src|bench)\/.*)$/.exec(url);
  if (src) return src[1]!;
  if (url.startsWith('node:')) {
    const m = /^node:(?:internal\/)?([^/]+)/.exec(url);
    const mod = m ? m[1]!.replace(/^_/, '') : url;
    // Group Node by subsystem: http server/client, streams, net, timers, events, the rest.
    if (/^http|^_http|^http_/.test(mod)) return 'node: http';
    if (/^stream|^streams/.test(mod)) return 'node: streams';
    if (/^net|^stream_base_commons/.test(mod)) return 'node: net';
    if (/^timers/.test(mod)) return 'node: timers';
    if (/^events|^event_target|^abort_controller/.test(mod)) return 'node: events / AbortController';
    if (/^crypto/.test(mod)) return 'node: crypto';
    if (/^url/.test(mod)) return 'node: url';
    return `node: ${mod}`;
  }
  return url === '' ? 'native / builtins' : url;
}

function shortUrl(url: string): string {
  const m = /\/((?:src|bench|node_modules)\/.*)$/.exec(url);
  return m ? m[1]! : url;
}

/** A V8 CPU profile with the start time this summary needs to cut a window out of it. */
export type TimedCpuProfile = CpuProfile & { readonly startTime: number; readonly endTime: number };

/**
 * Summarizes `profile`, or only its samples taken within `window` (CLOCK_MONOTONIC
 * microseconds, the clock of V8 profile timestamps and of `process.hrtime` on Linux), so
 * that startup and warm-up stay out of per-request figures. `requests` are those served
 * in the window.
 */
export function summarizeSidecarProfile(profile: TimedCpuProfile, requests?: number, window?: { readonly fromUs: number; readonly toUs: number }): SidecarProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const selfUs = new Map<number, number>();
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    if (window && (at < window.fromUs || at > window.toUs)) continue;
    const us = profile.timeDeltas[i + 1] ?? 0;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + us);
  }

  let totalUs = 0;
  let idleUs = 0;
  const groups = new Map<string, number>();
  const inclusive = new Map<string, { name: string; where: string; us: number }>();
  const self = new Map<string, { name: string; where: string; group: string; us: number }>();
  for (const [id, us] of selfUs) {
    totalUs += us;
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const g = groupOf(frame.functionName, frame.url);
    groups.set(g, (groups.get(g) ?? 0) + us);
    const selfName = frame.functionName || '(anonymous)';
    const selfWhere = frame.url ? `${shortUrl(frame.url)}:${frame.lineNumber + 1}` : '';
    const fn = self.get(`${selfName}|${selfWhere}`) ?? { name: selfName, where: selfWhere, group: g, us: 0 };
    fn.us += us;
    self.set(`${selfName}|${selfWhere}`, fn);
    // Inclusive: every distinct src/ function on the stack gets this sample once.
    const seen = new Set<string>();
    for (let up: number | undefined = id; up !== undefined; up = parent.get(up)) {
      const f = byId.get(up)!.callFrame;
      if (!/\/src\//.test(f.url)) continue;
      const name = f.functionName || '(anonymous)';
      const where = `${shortUrl(f.url)}:${f.lineNumber + 1}`;
      const key = `${name}|${where}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const e = inclusive.get(key) ?? { name, where, us: 0 };
      e.us += us;
      inclusive.set(key, e);
    }
  }
  return {
    totalMs: totalUs / 1000,
    busyMs: (totalUs - idleUs) / 1000,
    requests,
    groups: [...groups].map(([group, us]) => ({ group, ms: us / 1000 })).sort((a, b) => b.ms - a.ms),
    inclusive: [...inclusive.values()].map(({ us, ...f }) => ({ ...f, ms: us / 1000 })).sort((a, b) => b.ms - a.ms),
    functions: [...self.values()].map(({ us, ...f }) => ({ ...f, ms: us / 1000 })).sort((a, b) => b.ms - a.ms),
  };
}

/** Markdown: totals, then self time by group, inclusive time of src/ functions, top self functions. */
export function renderSidecarProfile(s: SidecarProfileSummary, top = 25): string {
  const pct = (ms: number) => `${((100 * ms) / s.busyMs).toFixed(1)}%`;
  const perReq = (ms: number) => (s.requests ? `${((1000 * ms) / s.requests).toFixed(2)}` : '—');
  const lines = [
    `Sampled ${s.totalMs.toFixed(0)} ms, ${s.busyMs.toFixed(0)} ms busy (main thread)` +
      (s.requests ? `, ${s.requests} requests: ${perReq(s.busyMs)} µs of main-thread CPU per request (under the profiler).` : '.'),
    '',
    'Self time by library or part (shares of busy time):',
    '',
    '| group | ms | share | µs/request |',
    '|---|--:|--:|--:|',
  ];
  for (const g of s.groups.slice(0, top)) lines.push(`| ${g.group} | ${g.ms.toFixed(0)} | ${pct(g.ms)} | ${perReq(g.ms)} |`);
  lines.push('', 'Inclusive time of Trellis functions (callees included):', '', '| function | where | ms | share | µs/request |', '|---|---|--:|--:|--:|');
  for (const f of s.inclusive.slice(0, top)) lines.push(`| \`${f.name}\` | ${f.where} | ${f.ms.toFixed(0)} | ${pct(f.ms)} | ${perReq(f.ms)} |`);
  lines.push('', 'Hottest functions by self time:', '', '| function | where | group | ms | share |', '|---|---|---|--:|--:|');
  for (const f of s.functions.slice(0, top)) lines.push(`| \`${f.name}\` | ${f.where} | ${f.group} | ${f.ms.toFixed(1)} | ${pct(f.ms)} |`);
  return lines.join('\n') + '\n';
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({ options: { requests: { type: 'string' }, top: { type: 'string', default: '25' } }, allowPositionals: true });
  if (positionals.length !== 1) {
    process.stderr.write('usage: node bench/summarize-sidecar-profile.ts FILE.cpuprofile [--requests N] [--top N]\n');
    process.exit(2);
  }
  const profile = JSON.parse(await readFile(positionals[0]!, 'utf8')) as TimedCpuProfile;
  process.stdout.write(renderSidecarProfile(summarizeSidecarProfile(profile, values.requests ? Number(values.requests) : undefined), Number(values.top)));
}
