/**
 * The change set as a pull-request comment (GitHub-flavoured markdown): the summary line
 * first, then risks, share tables, access changes, a flowchart of the affected edges, one
 * collapsible section per service with its compiled config change, and the sidecars.
 * An invalid side shows its diagnostics, each linked to its file and line at the commit.
 *
 * Every user-controlled string is escaped (see markdown-escape.ts). `renderMarkdown` gives
 * the whole text; `fitMarkdown` keeps it under a size limit by leaving out service sections,
 * then capping table rows, and says so. Pure and deterministic.
 */
import type { Diagnostic } from '../diagnostics/diagnostic.ts';
import { diagnosticToJson, renderDiagnostics } from '../diagnostics/render.ts';
import { RISK_LABELS, summaryLine, type ChangeSet, type RuleChange, type ServiceChange, type SettingChange } from './change-set.ts';
import { formatShare } from './describe-config.ts';
import { unifiedLineDiff } from './line-diff.ts';
import { codeBlock, escapeMarkdown as esc } from './markdown-escape.ts';
import { affectedEdges, renderFlowchart, type AffectedEdge } from './mermaid.ts';

/** GitHub rejects comment bodies over 65 536 characters; this leaves room for the marker and a note. */
export const COMMENT_LIMIT = 60_000;

/** Resources named per sidecar row: a sidecar that starts calling a whole new mesh would otherwise fill the comment. */
const MAX_RESOURCES = 8;

export interface MarkdownOptions {
  /**
   * Base of links to spec files at the compared commit, such as
   * `https://github.com/acme/mesh/blob/<head sha>`; without it locations are not linked.
   */
  readonly headBlobUrl?: string;
  readonly baseBlobUrl?: string;
  /** Spec folder inside the repository (prepended to diagnostic paths), such as `mesh`. */
  readonly pathPrefix?: string;
  /** Short names of the compared revisions, shown under the summary (`a1b2c3d`). */
  readonly baseLabel?: string;
  readonly headLabel?: string;
  /** Table rows shown per table before `… N more`; unbounded by default. */
  readonly maxRows?: number;
}

function pct(n: number | null): string {
  return n === null ? '—' : formatShare(n);
}

/** A cell that is bold when it changed, so the eye finds the move in a wide table. */
function after(before: string, now: string): string {
  return before === now ? now : `**${now}**`;
}

function table(header: readonly string[], align: readonly string[], rows: ReadonlyArray<readonly string[]>, maxRows: number): string {
  const shown = rows.slice(0, maxRows);
  const lines = [`| ${header.join(' | ')} |`, `|${align.join('|')}|`, ...shown.map((r) => `| ${r.join(' | ')} |`)];
  if (rows.length > shown.length) lines.push('', `… and ${rows.length - shown.length} more rows (\`trellis diff\` lists them all)`);
  return lines.join('\n');
}

function linkedLocation(d: Diagnostic, blobUrl: string | undefined, pathPrefix: string | undefined): string {
  const j = diagnosticToJson(d, pathPrefix ? { pathPrefix } : {});
  if (j.file === undefined) return '';
  const where = `${j.file}${j.line === undefined ? '' : `:${j.line}:${j.col}`}`;
  const label = `<code>${esc(where)}</code>`;
  if (!blobUrl) return `${label} `;
  const path = j.file.split('/').map(encodeURIComponent).join('/');
  return `[${label}](${blobUrl.replace(/\/$/, '')}/${path}${j.line === undefined ? '' : `#L${j.line}`}) `;
}

function diagnosticsSection(side: 'base' | 'head', diagnostics: readonly Diagnostic[], blobUrl: string | undefined, options: MarkdownOptions): string {
  const items = diagnostics.map((d) => `- ${linkedLocation(d, blobUrl, options.pathPrefix)}**${d.severity} ${d.code}**: ${esc(d.message)}`);
  const full = renderDiagnostics(diagnostics, options.pathPrefix ? { pathPrefix: options.pathPrefix } : {});
  return [`#### ❌ The ${side} spec does not compile`, '', ...items, '', '<details><summary>Compiler output</summary>', '', codeBlock(full, 'text'), '', '</details>'].join('\n');
}

function risksSection(set: ChangeSet, maxRows: number): string {
  const shown = set.risks.slice(0, maxRows);
  const more = set.risks.length - shown.length;
  return ['#### ⚠️ Risks', '', ...shown.map((r) => `- **${RISK_LABELS[r.kind]}**: ${esc(r.message)}`), ...(more > 0 ? [`- … and ${more} more`] : [])].join('\n');
}

function sharesSection(set: ChangeSet, maxRows: number): string | null {
  const rows: string[][] = [];
  for (const s of set.services) {
    for (const r of s.rules) {
      if (r.change === 'changed' && r.shares.every((x) => x.before === x.after)) continue;
      const match = r.matchBefore === undefined ? esc(r.match) : `${esc(r.matchBefore)} → ${esc(r.match)}`;
      for (const sh of r.shares) rows.push([esc(s.service), `${match} (${r.change === 'changed' ? 'changed' : r.change})`, esc(sh.backend), pct(sh.before), after(pct(sh.before), pct(sh.after))]);
    }
  }
  if (rows.length === 0) return null;
  return ['#### Traffic shares', '', table(['calls to', 'requests', 'backend', 'before', 'after'], ['---', '---', '---', '--:', '--:'], rows, maxRows)].join('\n');
}

function settingsRows(s: ServiceChange): string[][] {
  const rows: string[][] = [];
  const add = (where: string, changes: readonly SettingChange[]) => {
    for (const c of changes) rows.push([esc(s.service), where, esc(c.setting), esc(c.before ?? '—'), after(esc(c.before ?? '—'), esc(c.after ?? '—'))]);
  };
  for (const r of s.rules) if (r.change === 'changed') add(esc(r.match), r.settings);
  add('traffic policy', s.policy);
  add('endpoints', s.endpoints);
  add('inbound', s.inbound);
  return rows;
}

function settingsSection(set: ChangeSet, maxRows: number): string | null {
  const rows = set.services.filter((s) => s.change === 'changed').flatMap(settingsRows);
  if (rows.length === 0) return null;
  return ['#### Timeouts, retries, filters and policy', '', table(['service', 'where', 'setting', 'before', 'after'], ['---', '---', '---', '---', '---'], rows, maxRows)].join('\n');
}

function accessSection(set: ChangeSet, maxRows: number): string | null {
  const rows = set.access.map((e) => [esc(e.caller), esc(e.service), e.change === 'granted' ? '🔓 **may now call**' : '🔒 may no longer call']);
  for (const s of set.services) for (const c of s.access) rows.push(['', esc(s.service), `${esc(c.setting)}: ${esc(c.before ?? '—')} → **${esc(c.after ?? '—')}**`]);
  if (rows.length === 0) return null;
  return ['#### Access (security-relevant)', '', table(['caller', 'service', 'change'], ['---', '---', '---'], rows, maxRows)].join('\n');
}

function edgesSection(edges: readonly AffectedEdge[], maxRows: number): string | null {
  if (edges.length === 0) return null;
  const chart = renderFlowchart(edges);
  if (chart !== null) return ['#### Affected edges', '', codeBlock(chart, 'mermaid')].join('\n');
  // Access edges are already in the access table; the fallback lists the traffic edges.
  const traffic = edges.filter((e) => e.kind === 'traffic');
  const title = `#### Affected edges (${edges.length}, too many for a diagram; access changes are listed above)`;
  if (traffic.length === 0) return null;
  const rows = traffic.map((e) => [`calls to ${esc(e.from)}`, esc(e.to), esc(e.label)]);
  return [title, '', table(['from', 'to', 'share'], ['---', '---', '---'], rows, maxRows)].join('\n');
}

function ruleItem(r: RuleChange): string {
  const match = r.matchBefore === undefined ? esc(r.match) : `${esc(r.matchBefore)} → ${esc(r.match)}`;
  const moved = r.change !== 'changed' || r.shares.some((s) => s.before !== s.after);
  const shares = moved ? r.shares.map((s) => `${esc(s.backend)} ${pct(s.before)} → ${pct(s.after)}`).join(', ') : '';
  const settings = r.settings
    .filter((c) => r.change === 'changed' || (r.change === 'added' ? c.after : c.before) !== 'none')
    .map((c) => (r.change === 'changed' ? `${esc(c.setting)} ${esc(c.before ?? '—')} → ${esc(c.after ?? '—')}` : `${esc(c.setting)} ${esc((r.change === 'added' ? c.after : c.before) ?? '—')}`));
  return `- ${r.change} ${r.kind === undefined ? '' : `${r.kind} `}rule <code>${esc(r.rule)}</code> (${match}): ${[shares, ...settings].filter((x) => x !== '').join('; ')}`;
}

/** One service's collapsible section: its rule changes in words and its compiled resources as a diff. */
function serviceDetails(s: ServiceChange): string {
  const parts = [s.rules.length > 0 ? `${s.rules.length} rule${s.rules.length === 1 ? '' : 's'}` : null, s.policy.length > 0 ? 'policy' : null, s.endpoints.length > 0 ? 'endpoints' : null, s.access.length > 0 ? 'access' : null, s.inbound.length > 0 ? 'inbound' : null].filter((x) => x !== null);
  const lines = [`<details><summary><b>${esc(s.service)}</b> · ${s.change}${parts.length > 0 ? ` · ${parts.join(', ')}` : ''}</summary>`, ''];
  for (const r of s.rules) lines.push(ruleItem(r));
  if (s.rules.length > 0) lines.push('');
  for (const res of s.resources) {
    lines.push(`<code>${esc(res.name)}</code>${res.before === null ? ' (new)' : res.after === null ? ' (removed)' : ''}`, '', codeBlock(unifiedLineDiff(res.before, res.after), 'diff'), '');
  }
  lines.push('</details>');
  return lines.join('\n');
}

function sidecarsSection(set: ChangeSet, maxRows: number): string | null {
  if (set.sidecars.length === 0) return null;
  const rows = set.sidecars.map((s) => {
    const shown = s.resources.slice(0, MAX_RESOURCES).map((r) => `<code>${esc(r)}</code>`);
    if (s.resources.length > MAX_RESOURCES) shown.push(`and ${s.resources.length - MAX_RESOURCES} more`);
    return [esc(s.service), s.change, shown.join(' ')];
  });
  return ['#### Sidecars whose config changes', '', table(['sidecar', 'change', 'resources'], ['---', '---', '---'], rows, maxRows)].join('\n');
}

/** The comment in three parts, so a size limit can drop service sections first. */
interface MarkdownParts {
  readonly top: string;
  readonly services: readonly string[];
  readonly bottom: string;
}

function renderParts(set: ChangeSet, options: MarkdownOptions, maxRows: number): MarkdownParts {
  // The summary is the first line, so notification e-mails and previews show it.
  const top = [`### Trellis traffic diff: ${esc(summaryLine(set))}`];
  if (options.baseLabel && options.headLabel) top.push('', `<sub>base <code>${esc(options.baseLabel)}</code> → head <code>${esc(options.headLabel)}</code></sub>`);
  if (!set.base.valid) top.push('', diagnosticsSection('base', set.base.diagnostics, options.baseBlobUrl, options));
  if (!set.head.valid) top.push('', diagnosticsSection('head', set.head.diagnostics, options.headBlobUrl, options));
  if (set.risks.length > 0) top.push('', risksSection(set, maxRows));
  if (set.servicesAdded.length > 0) top.push('', `**New services:** ${set.servicesAdded.map(esc).join(', ')}`);
  if (set.servicesRemoved.length > 0) top.push('', `**Removed services:** ${set.servicesRemoved.map(esc).join(', ')}`);
  for (const section of [sharesSection(set, maxRows), settingsSection(set, maxRows), accessSection(set, maxRows), edgesSection(affectedEdges(set), maxRows)]) {
    if (section !== null) top.push('', section);
  }
  const services = set.services.map(serviceDetails);
  if (services.length > 0) top.push('', '#### Services');
  const sidecars = sidecarsSection(set, maxRows);
  return { top: top.join('\n'), services, bottom: sidecars ?? '' };
}

function join(parts: MarkdownParts, services: readonly string[], note: string | null): string {
  return [parts.top, ...services, ...(note === null ? [] : [note]), ...(parts.bottom === '' ? [] : [parts.bottom])].join('\n\n') + '\n';
}

/** The whole comment, unbounded (what `trellis diff --format markdown` prints and job summaries hold). */
export function renderMarkdown(set: ChangeSet, options: MarkdownOptions = {}): string {
  const parts = renderParts(set, options, options.maxRows ?? Number.POSITIVE_INFINITY);
  return join(parts, parts.services, null);
}

/**
 * The comment within `limit` characters: all of it when it fits; otherwise as many service
 * sections as fit (in order), then tables capped at fewer rows, and as a last resort a cut
 * at a line boundary — each time with a note that says what was left out and `where` the
 * full text is (`this run's job summary`, say).
 */
export function fitMarkdown(set: ChangeSet, options: MarkdownOptions & { readonly limit?: number; readonly where?: string } = {}): string {
  const limit = options.limit ?? COMMENT_LIMIT;
  const where = options.where ?? 'the output of `trellis diff`';
  for (const maxRows of [options.maxRows ?? Number.POSITIVE_INFINITY, 50, 10]) {
    const parts = renderParts(set, options, maxRows);
    const whole = join(parts, parts.services, null);
    if (whole.length <= limit && maxRows === (options.maxRows ?? Number.POSITIVE_INFINITY)) return whole;
    const kept: string[] = [];
    const note = (left: number) => `> [!NOTE]\n> Shortened to stay under GitHub's comment size limit: ${left} of ${parts.services.length} service sections${maxRows === Number.POSITIVE_INFINITY ? '' : ` and table rows past ${maxRows}`} left out. The full diff is in ${where}.`;
    for (const section of parts.services) {
      if (join(parts, [...kept, section], note(parts.services.length - kept.length - 1)).length > limit) break;
      kept.push(section);
    }
    const text = join(parts, kept, note(parts.services.length - kept.length));
    if (text.length <= limit) return text;
  }
  const full = renderMarkdown(set, { ...options, maxRows: 10 });
  const cutNote = `\n\n> [!NOTE]\n> Cut at ${limit} characters to stay under GitHub's comment size limit. The full diff is in ${where}.\n`;
  let cut = full.slice(0, full.lastIndexOf('\n', limit - cutNote.length - 8));
  // Close a code fence the cut left open, so the note is not swallowed by it.
  const fences = cut.split('\n').filter((l) => /^`{3,}/.test(l));
  if (fences.length % 2 === 1) cut += `\n${fences[fences.length - 1]!.replace(/[^`].*$/, '')}`;
  return cut + cutNote;
}
