/**
 * The change set for a terminal: the summary line, risks, then each service's changes,
 * access and sidecars. Diagnostics go through the one compiler-style renderer. Pure.
 */
import { renderDiagnostics, type RenderOptions } from '../diagnostics/render.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { RISK_LABELS, summaryLine, type ChangeSet, type RuleChange, type ServiceChange, type SettingChange } from './change-set.ts';
import { arrow, shareArrow } from './describe-config.ts';

function settingLines(changes: readonly SettingChange[], indent: string): string[] {
  return changes.map((c) => `${indent}${c.setting}: ${arrow(c.before, c.after)}`);
}

/**
 * A rule's settings: changes as `before → after`; an added or removed rule lists only what
 * it sets (timeouts and retries that are `none` are left out).
 */
function ruleSettingLines(r: RuleChange, indent: string): string[] {
  if (r.change === 'changed') return settingLines(r.settings, indent);
  const value = (c: SettingChange) => (r.change === 'added' ? c.after : c.before);
  return r.settings.filter((c) => value(c) !== 'none').map((c) => `${indent}${c.setting}: ${value(c)}`);
}

function ruleLines(r: RuleChange): string[] {
  const what = `${r.change} ${r.kind === undefined ? '' : `${r.kind} `}rule ${r.rule}`;
  const head = r.matchBefore === undefined ? `${what}: ${r.match}` : `${what}: match ${r.matchBefore} → ${r.match}`;
  const lines = [`  ${head}`];
  const moved = r.change !== 'changed' || r.shares.some((s) => s.before !== s.after);
  if (moved) for (const s of r.shares) lines.push(`    ${s.backend}: ${shareArrow(s.before, s.after)}`);
  lines.push(...ruleSettingLines(r, '    '));
  return lines;
}

function serviceLines(s: ServiceChange): string[] {
  const lines = [`${s.service} (${s.change})`];
  for (const r of s.rules) lines.push(...ruleLines(r));
  if (s.policy.length > 0) lines.push('  traffic policy:', ...settingLines(s.policy, '    '));
  if (s.endpoints.length > 0) lines.push('  endpoints:', ...settingLines(s.endpoints, '    '));
  if (s.inbound.length > 0) lines.push('  inbound:', ...settingLines(s.inbound, '    '));
  if (s.access.length > 0) lines.push('  access (security):', ...settingLines(s.access, '    '));
  if (lines.length === 1 && s.resources.length > 0) lines.push(`  compiled config differs: ${s.resources.map((r) => r.name).join(', ')}`);
  return lines;
}

/**
 * Renders a change set as plain text (no colour), ending with a newline. Every line is
 * escaped for the terminal (service names, match values and messages come from the spec);
 * diagnostics come escaped from their own renderer.
 */
export function renderText(set: ChangeSet, options: RenderOptions = {}): string {
  const out = [`Trellis traffic diff: ${summaryLine(set)}`];
  for (const side of ['base', 'head'] as const) {
    if (set[side].valid) continue;
    out.push('', `${side} diagnostics:`, ...renderDiagnostics(set[side].diagnostics, options).trimEnd().split('\n'));
  }
  if (set.risks.length > 0) {
    out.push('', 'Risks:');
    for (const r of set.risks) out.push(`  ! ${RISK_LABELS[r.kind]}: ${r.message}`);
  }
  if (set.services.length > 0) {
    out.push('');
    for (const s of set.services) out.push(...serviceLines(s));
  }
  if (set.access.length > 0) {
    out.push('', 'Access (security-relevant):');
    for (const e of set.access) out.push(`  ${e.change === 'granted' ? '+' : '-'} ${e.caller} ${e.change === 'granted' ? 'may now call' : 'may no longer call'} ${e.service}`);
  }
  if (set.sidecars.length > 0) {
    out.push('', 'Sidecars whose config changes:');
    for (const s of set.sidecars) out.push(`  ${s.service} (${s.change}): ${s.resources.join(', ')}`);
  }
  return out.map((line) => escapeForTerminal(line, { keepTabs: true })).join('\n') + '\n';
}
