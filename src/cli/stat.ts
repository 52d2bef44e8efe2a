/**
 * `trellis stat`: the mesh's golden metrics (success rate, requests per second, p50/p95/p99)
 * per service, per edge (caller → backend) and per route, over a window, from the
 * reconciler's aggregates of what sidecars report — like `linkerd viz stat`.
 */
import { request } from 'undici';
import type { StatsView } from '../dashboard/mesh-stats.ts';
import { GOLDEN_HEADERS, goldenCells, table } from '../dashboard/format.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { EXIT, type CliIo } from './io.ts';

export interface StatFlags {
  readonly url: string;
  readonly window: string;
  readonly namespace?: string;
  readonly from?: string;
  readonly to?: string;
  readonly route?: string;
  readonly format: 'text' | 'json';
}

/** The text rendering: services, edges, routes, then access denials and TLS failures. Every name is escaped. */
export function renderStat(view: StatsView, window: string): string {
  const e = (s: string) => escapeForTerminal(s);
  const lines: string[] = [];
  const section = (title: string, head: string[], rows: string[][]) => {
    if (lines.length > 0) lines.push('');
    lines.push(title);
    if (rows.length === 0) lines.push('  (no traffic)');
    else lines.push(...table([[...head, ...GOLDEN_HEADERS], ...rows]).map((l) => `  ${l}`));
  };
  const covered = view.warmingUp ? ` (reports cover the last ${Math.round(view.coveredSeconds)} s)` : '';
  const from = view.source === 'prometheus' ? '  (from Prometheus)' : '';
  section(`SERVICES  last ${e(window)}${covered}${from}`, ['NAME', 'SEEN_BY'], view.services.map((s) => [e(s.service), s.reporter === 'inbound' ? 'itself' : 'callers', ...goldenCells(s)]));
  section('EDGES  caller → backend, as the caller\'s sidecar saw it', ['FROM', 'TO'], view.edges.map((x) => [e(x.source), e(x.destination), ...goldenCells(x)]));
  section('ROUTES', ['FROM', 'TO', 'ROUTE'], view.routes.map((x) => [e(x.source), e(x.destination), e(x.route), ...goldenCells(x)]));
  const denied = view.access.filter((a) => a.what !== 'allowed');
  if (denied.length > 0 || view.tls.length > 0) {
    lines.push('', 'REFUSED');
    for (const a of denied) lines.push(`  ${e(a.service)}: ${a.count} ${a.what === 'audited' ? 'would be denied (audit mode)' : 'denied by access policy'} (${e(a.reason)})`);
    for (const t of view.tls) lines.push(`  ${e(t.service)}: ${t.count} ${e(t.what)} mTLS connection${t.count === 1 ? '' : 's'} refused (${e(t.reason)})`);
  }
  if (view.limits.droppedSeries > 0) lines.push('', `note: ${view.limits.droppedSeries} series were not kept (the reconciler keeps at most ${view.limits.maxSeries})`);
  return lines.join('\n') + '\n';
}

export async function runStat(flags: StatFlags, io: CliIo): Promise<number> {
  const url = new URL('/v1/stats', flags.url);
  url.searchParams.set('window', flags.window);
  for (const name of ['namespace', 'from', 'to', 'route'] as const) if (flags[name]) url.searchParams.set(name, flags[name]);
  let view: StatsView;
  try {
    const res = await request(url, { headersTimeout: 5000, bodyTimeout: 5000 });
    if (res.statusCode === 400) {
      const body = (await res.body.json()) as { message?: string };
      io.stderr.write(`trellis stat: ${escapeForTerminal(body.message ?? 'the reconciler refused the query')}\n`);
      return EXIT.usage;
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`answered ${res.statusCode}${res.statusCode === 404 ? ' (a reconciler older than trellis stat?)' : ''}`);
    }
    view = (await res.body.json()) as StatsView;
  } catch (err) {
    io.stderr.write(`trellis stat: cannot reach the reconciler at ${escapeForTerminal(flags.url)}: ${escapeForTerminal((err as Error).message)}\n`);
    return EXIT.failed;
  }
  if (flags.format === 'json') io.stdout.write(JSON.stringify(view, null, 2) + '\n');
  else io.stdout.write(renderStat(view, flags.window));
  return EXIT.ok;
}
