/**
 * The change set: what a spec change does to traffic, as plain data. `diffMeshes` builds
 * it from two compiled meshes; the text, markdown and JSON renderers only read it. Every
 * list is sorted, so the same two meshes always give the same change set.
 */
import type { Diagnostic } from '../diagnostics/diagnostic.ts';

/** One setting before and after, as people read it (`2s`, `none`, `round-robin`); null where it does not exist. */
export interface SettingChange {
  /** What the setting is, such as `request timeout` or `circuitBreaker.maxRequests`. */
  readonly setting: string;
  readonly before: string | null;
  readonly after: string | null;
}

/** A backend's share of one match's traffic, in percent (0–100); null where the backend is not in the rule. */
export interface ShareChange {
  readonly backend: string;
  readonly before: number | null;
  readonly after: number | null;
}

/**
 * One rule of a service's route table (one match of an HTTPRoute rule) that was added,
 * removed or changed. Rules are paired by their match; a rule whose match changed but
 * whose id stayed is reported once as `changed` with `matchBefore`.
 */
export interface RuleChange {
  readonly change: 'added' | 'removed' | 'changed';
  /** The compiled rule id (`<route>/<rule>/<match>`, or `default`); head's id unless removed. */
  readonly rule: string;
  /** `GRPCRoute` for a rule compiled from a GRPCRoute; absent for HTTPRoute rules and implicit ones. */
  readonly kind?: 'GRPCRoute';
  /** The match, described for people (`GET /api/* x-canary: 1`, `every request`). */
  readonly match: string;
  /** The base match, only when the match itself changed. */
  readonly matchBefore?: string;
  /** Every backend of the rule on either side, sorted by name. */
  readonly shares: readonly ShareChange[];
  /** Timeouts, retries, mirrors, rewrites, redirects, header changes that differ (all of them for added/removed rules). */
  readonly settings: readonly SettingChange[];
}

/** Everything that changed for one service: its route table, its traffic policy, its endpoints, its inbound side. */
export interface ServiceChange {
  readonly service: string;
  readonly change: 'added' | 'removed' | 'changed';
  /** In head precedence order, removed rules last. */
  readonly rules: readonly RuleChange[];
  /** Cluster settings: load balancer, circuit breaker, outlier detection, retry budget, connection, fault injection. */
  readonly policy: readonly SettingChange[];
  readonly endpoints: readonly SettingChange[];
  /** Inbound settings other than access: identity, mTLS, ports. */
  readonly inbound: readonly SettingChange[];
  /** Inbound access settings: default, mode, rules. Security-relevant. */
  readonly access: readonly SettingChange[];
  /** The compiled resources of this service that differ, as pretty JSON (null where absent), sorted by name. */
  readonly resources: ReadonlyArray<{ readonly name: string; readonly before: string | null; readonly after: string | null }>;
}

/** A caller that may now (or may no longer) call a service: derived from which routes its sidecar holds. */
export interface AccessEdgeChange {
  readonly caller: string;
  readonly service: string;
  readonly change: 'granted' | 'revoked';
}

/** A sidecar whose config changes, with the resources that are added, removed or replaced. */
export interface SidecarChange {
  readonly service: string;
  readonly change: 'added' | 'removed' | 'changed';
  readonly resources: readonly string[];
}

/** The kinds of risk flag; docs/diff.md says when each is raised. */
export type RiskKind = 'large-shift' | 'retry-removed' | 'timeout-removed' | 'new-caller' | 'default-policy' | 'first-traffic' | 'diagnostics';

/** Something a reviewer should look at twice. */
export interface RiskFlag {
  readonly kind: RiskKind;
  /** The service it concerns; null for the whole mesh. */
  readonly service: string | null;
  readonly message: string;
}

/** One side of the comparison: a compiled mesh, or the diagnostics that stopped it compiling. */
export interface DiffSideSummary {
  readonly valid: boolean;
  /** The mesh version (opaque), null when invalid. */
  readonly version: string | null;
  /** Errors and warnings, in the compiler's order. */
  readonly diagnostics: readonly Diagnostic[];
}

/** The whole semantic diff of two meshes. */
export interface ChangeSet {
  readonly base: DiffSideSummary;
  readonly head: DiffSideSummary;
  readonly servicesAdded: readonly string[];
  readonly servicesRemoved: readonly string[];
  /** Services with any change, sorted by name (added and removed ones included). */
  readonly services: readonly ServiceChange[];
  /** Sorted by service, then caller. */
  readonly access: readonly AccessEdgeChange[];
  /** Sorted by service. */
  readonly sidecars: readonly SidecarChange[];
  /** Sorted by kind order of {@link RISK_ORDER}, then service, then message. */
  readonly risks: readonly RiskFlag[];
  readonly counts: ChangeCounts;
}

/** The counts of the summary line. */
export interface ChangeCounts {
  /** Services added or removed, rule changes, and policy, endpoint and inbound setting changes. */
  readonly traffic: number;
  /** Access edges granted or revoked, and inbound access setting changes. */
  readonly access: number;
  readonly sidecars: number;
  readonly risks: number;
}

/** The order risks are listed in: what can hurt most first. */
export const RISK_ORDER: readonly RiskKind[] = ['diagnostics', 'new-caller', 'default-policy', 'large-shift', 'first-traffic', 'retry-removed', 'timeout-removed'];

/** Whether merging would change what any sidecar runs. False when the head does not compile (nothing would be pushed). */
export function changesTraffic(set: ChangeSet): boolean {
  return set.counts.traffic + set.counts.access + set.counts.sidecars > 0;
}

/** How a risk kind reads in a list. */
export const RISK_LABELS: Readonly<Record<RiskKind, string>> = {
  diagnostics: 'diagnostics',
  'new-caller': 'new caller',
  'default-policy': 'default policy change',
  'large-shift': 'large weight shift',
  'first-traffic': 'first traffic',
  'retry-removed': 'retries removed',
  'timeout-removed': 'timeout removed',
};

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * The one-line summary every renderer starts with: `3 traffic changes, 1 access change,
 * 2 sidecars affected`, `no traffic change`, or why nothing can be compared.
 */
export function summaryLine(set: ChangeSet): string {
  const errors = (side: DiffSideSummary) => plural(side.diagnostics.filter((d) => d.severity === 'error').length, 'error', 'errors');
  if (!set.base.valid) return `the base spec does not compile (${errors(set.base)}); nothing to compare against`;
  if (!set.head.valid) return `the head spec does not compile (${errors(set.head)}); merging it would change no traffic: the mesh stays on its last good revision`;
  if (!changesTraffic(set)) return 'no traffic change';
  const parts = [plural(set.counts.traffic, 'traffic change', 'traffic changes'), plural(set.counts.access, 'access change', 'access changes'), `${plural(set.counts.sidecars, 'sidecar', 'sidecars')} affected`];
  if (set.counts.risks > 0) parts.push(plural(set.counts.risks, 'risk flag', 'risk flags'));
  return parts.join(', ');
}
