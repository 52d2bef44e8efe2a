/** `trellis status`: what the reconciler applied, what it attempted, and which sidecars are in sync. */
import { request } from 'undici';
import type { ReconcilerStatus } from '../reconciler/reconciler.ts';
import { EXIT, useColor, type CliIo } from './io.ts';

function short(id: string | null): string {
  return id ? id.slice(0, 12) : '-';
}

/** The human rendering: a header of source, applied and attempted revisions, then one row per sidecar. */
export function renderStatus(s: ReconcilerStatus, color: boolean): string {
  const red = (t: string) => (color ? `\x1b[31m${t}\x1b[0m` : t);
  const green = (t: string) => (color ? `\x1b[32m${t}\x1b[0m` : t);
  const lines: string[] = [];
  lines.push(`source     ${s.source.description}  (seen ${short(s.source.revision)})${s.source.error ? `  ${red(`error: ${s.source.error}`)}` : ''}`);
  lines.push(`applied    ${s.applied ? `${s.applied.description}  at ${s.applied.at}  (${s.applied.services} sidecar configs)` : red('nothing yet')}`);
  if (s.attempted && (!s.applied || s.attempted.revision !== s.applied.revision)) {
    const errors = s.attempted.diagnostics.filter((d) => d.severity === 'error');
    lines.push(`attempted  ${s.attempted.description}  at ${s.attempted.at}  ${s.attempted.ok ? 'ok' : red(`FAILED: ${errors.length} error${errors.length === 1 ? '' : 's'}; the mesh stays on the applied revision`)}`);
    for (const d of errors.slice(0, 10)) lines.push(`             ${d.file ?? ''}${d.line ? `:${d.line}:${d.col}` : ''} ${d.code} ${d.message}`);
  }
  if (s.discovery) {
    const d = s.discovery;
    const state = d.synced ? green('synced') : red('not listed yet: nothing is pushed until it is');
    lines.push(`discovery  ${d.description}  ${state}${d.lastChangeAt ? `  (last change ${d.lastChangeAt})` : ''}${d.error ? `  ${red(`error: ${d.error}; serving the last known endpoints`)}` : ''}`);
  }
  // Older reconcilers send no snapshot field.
  const empty = s.snapshot?.withoutEndpoints ?? [];
  if (empty.length > 0) {
    const shown = empty.slice(0, 10).join(', ') + (empty.length > 10 ? ` and ${empty.length - 10} more` : '');
    lines.push(`endpoints  consistent, but ${shown} ${empty.length === 1 ? 'has' : 'have'} no endpoints: calls to ${empty.length === 1 ? 'it' : 'them'} fail with 503`);
  }
  const { connected, inSync, sidecars } = s.summary;
  const allGood = inSync === connected && connected > 0;
  lines.push(`sidecars   ${(allGood ? green : red)(`applied to ${inSync} of ${connected} connected sidecars`)}${sidecars > connected ? ` (${sidecars - connected} disconnected)` : ''}`);
  if (s.sidecars.length > 0) {
    const rows = [['SERVICE', 'NODE', 'CONNECTED', 'IN SYNC', 'VERSION', 'REVISION', 'LAST REJECTION']];
    for (const c of s.sidecars) {
      rows.push([c.service, c.node, c.connected ? 'yes' : 'no', c.inSync ? 'yes' : 'no', short(c.version), short(c.revision), c.lastRejection ? `${short(c.lastRejection.revision)}: ${c.lastRejection.reasons[0] ?? ''}` : '-']);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) lines.push(`  ${r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')}`);
  }
  return lines.join('\n') + '\n';
}

/** Exit 0 when every connected sidecar runs the applied revision, the last attempt compiled and a discovery (if any) has listed; 1 otherwise. Backends without endpoints are reported, not failed: the snapshot is consistent. */
export async function runStatus(opts: { url: string; format: 'text' | 'json' }, io: CliIo): Promise<number> {
  let status: ReconcilerStatus;
  try {
    const res = await request(new URL('/status', opts.url), { headersTimeout: 5000, bodyTimeout: 5000 });
    if (res.statusCode !== 200) throw new Error(`answered ${res.statusCode}`);
    status = (await res.body.json()) as ReconcilerStatus;
  } catch (err) {
    io.stderr.write(`trellis status: cannot reach the reconciler at ${opts.url}: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
  if (opts.format === 'json') io.stdout.write(JSON.stringify(status, null, 2) + '\n');
  else io.stdout.write(renderStatus(status, useColor(io, 'stdout')));
  const healthy = status.applied !== null && (status.attempted?.ok ?? true) && status.summary.inSync === status.summary.connected && (status.discovery?.synced ?? true);
  return healthy ? EXIT.ok : EXIT.failed;
}
