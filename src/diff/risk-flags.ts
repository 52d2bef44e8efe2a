/**
 * Risk flags: the parts of a change set a reviewer should look at twice. Each kind is one
 * small function over the change set's parts; `assessRisks` runs them all and orders the
 * result by {@link RISK_ORDER}. docs/diff.md lists when each kind is raised. Pure.
 */
import type { Diagnostic } from '../diagnostics/diagnostic.ts';
import { RISK_ORDER, type AccessEdgeChange, type RiskFlag, type ServiceChange } from './change-set.ts';
import { formatShare } from './describe-config.ts';

/**
 * A share moving by this many percentage points or more is a large shift: a canary step
 * of 5 → 25% is flagged, the usual 1 → 5 → 10% ramp is not.
 */
export const LARGE_SHIFT_POINTS = 20;

/** Names listed in one flag before `and N more`: a flag is read at a glance. */
const MAX_NAMED = 8;

/** What the risk assessment reads. */
export interface RiskInput {
  /** Services of the base mesh. */
  readonly baseServices: ReadonlySet<string>;
  /** Services that some base rule sends a non-zero share of traffic to. */
  readonly baseReceiving: ReadonlySet<string>;
  readonly services: readonly ServiceChange[];
  readonly access: readonly AccessEdgeChange[];
  readonly baseDiagnostics: readonly Diagnostic[];
  readonly headDiagnostics: readonly Diagnostic[];
}

function named(names: readonly string[]): string {
  return names.length <= MAX_NAMED ? names.join(', ') : `${names.slice(0, MAX_NAMED).join(', ')} and ${names.length - MAX_NAMED} more`;
}

/** A head that does not compile, and warnings the base did not have (same code and message). */
function diagnosticRisks(input: RiskInput): RiskFlag[] {
  const risks: RiskFlag[] = [];
  const errors = input.headDiagnostics.filter((d) => d.severity === 'error').length;
  if (errors > 0) risks.push({ kind: 'diagnostics', service: null, message: `the head spec does not compile (${errors} error${errors === 1 ? '' : 's'}); the mesh would stay on its last good revision` });
  const known = new Set(input.baseDiagnostics.map((d) => `${d.code} ${d.message}`));
  for (const d of input.headDiagnostics) {
    if (d.severity === 'warning' && !known.has(`${d.code} ${d.message}`)) risks.push({ kind: 'diagnostics', service: null, message: `new warning ${d.code}: ${d.message}` });
  }
  return risks;
}

/** One flag per existing service that gains callers (access changes come sorted by service, then caller). */
function newCallerRisks(input: RiskInput): RiskFlag[] {
  const gained = new Map<string, string[]>();
  for (const e of input.access) if (e.change === 'granted' && input.baseServices.has(e.service)) gained.set(e.service, [...(gained.get(e.service) ?? []), e.caller]);
  return [...gained].map(([service, callers]) => ({ kind: 'new-caller', service, message: `${named(callers)} may now call ${service}` }));
}

/** One flag per distinct change of an access default, access mode or mTLS mode, naming every service it reaches (a Mesh default edit reaches many). */
function defaultPolicyRisks(input: RiskInput): RiskFlag[] {
  const changes = new Map<string, { setting: string; before: string | null; after: string | null; services: string[] }>();
  for (const s of input.services) {
    if (s.change !== 'changed') continue;
    for (const c of [...s.access, ...s.inbound]) {
      if (c.setting !== 'access default' && c.setting !== 'access mode' && c.setting !== 'mtls mode') continue;
      const key = JSON.stringify([c.setting, c.before, c.after]);
      const entry = changes.get(key) ?? { ...c, services: [] };
      entry.services.push(s.service);
      changes.set(key, entry);
    }
  }
  return [...changes.values()].map((c) => ({ kind: 'default-policy', service: c.services.length === 1 ? c.services[0]! : null, message: `${c.setting} ${c.before} → ${c.after} for ${named(c.services)}` }));
}

/** Large shifts, and retries or timeouts that go to none, in rules present on both sides. */
function ruleRisks(input: RiskInput): RiskFlag[] {
  const risks: RiskFlag[] = [];
  for (const s of input.services) {
    for (const r of s.rules) {
      if (r.change !== 'changed') continue;
      const where = `${s.service} (${r.match})`;
      for (const sh of r.shares) {
        if (Math.abs((sh.after ?? 0) - (sh.before ?? 0)) >= LARGE_SHIFT_POINTS) risks.push({ kind: 'large-shift', service: s.service, message: `${where}: ${sh.backend} ${formatShare(sh.before ?? 0)} → ${formatShare(sh.after ?? 0)}` });
      }
      for (const c of r.settings) {
        if (c.before === null || c.before === 'none' || c.after !== 'none') continue;
        if (c.setting === 'retries') risks.push({ kind: 'retry-removed', service: s.service, message: `${where}: retries ${c.before} → none` });
        if (c.setting.endsWith('timeout')) risks.push({ kind: 'timeout-removed', service: s.service, message: `${where}: ${c.setting} ${c.before} → none` });
      }
    }
  }
  return risks;
}

/** A backend that no base rule sent traffic to gets some; once per backend, at its first rule. A new service's own route does not count. */
function firstTrafficRisks(input: RiskInput): RiskFlag[] {
  const risks: RiskFlag[] = [];
  const flagged = new Set<string>();
  for (const s of input.services) {
    for (const r of s.rules) {
      for (const sh of r.shares) {
        const ownNewRoute = sh.backend === s.service && !input.baseServices.has(sh.backend);
        if ((sh.after ?? 0) === 0 || input.baseReceiving.has(sh.backend) || ownNewRoute || flagged.has(sh.backend)) continue;
        flagged.add(sh.backend);
        risks.push({ kind: 'first-traffic', service: sh.backend, message: `${sh.backend} gets traffic for the first time: ${formatShare(sh.after!)} of ${s.service} (${r.match})` });
      }
    }
  }
  return risks;
}

/** Every risk flag, by kind in {@link RISK_ORDER}; within a kind in the (deterministic) order found; no duplicates. */
export function assessRisks(input: RiskInput): RiskFlag[] {
  const all = [...diagnosticRisks(input), ...newCallerRisks(input), ...defaultPolicyRisks(input), ...ruleRisks(input), ...firstTrafficRisks(input)];
  const seen = new Set<string>();
  const unique = all.filter((r) => {
    const key = `${r.kind} ${r.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return unique.sort((x, y) => RISK_ORDER.indexOf(x.kind) - RISK_ORDER.indexOf(y.kind));
}
