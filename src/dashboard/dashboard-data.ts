/**
 * What the dashboard page shows, as one JSON document (GET /v1/dashboard): the traffic
 * (stats), the applied revision with its author and message, sidecars in sync, propagation
 * time, recent revisions (rejected ones with their diagnostics), the service graph from the
 * applied config (who may call whom, over mTLS or not), every service's routes, and for each
 * weighted rule its configured split beside the split observed in the window.
 *
 * Everything here is data: the page escapes what it shows (it only ever sets textContent).
 */
import type { ClusterBody, CompiledMatch, InboundBody, ProxyConfig, RouteBody } from '../config/types.ts';
import type { DiagnosticJson } from '../diagnostics/render.ts';
import type { AppliedRevision, ReconcilerStatus } from '../reconciler/reconciler.ts';
import { quantile, type RouteStats, type StatsView } from './mesh-stats.ts';

/** A revision the reconciler attempted, as the dashboard lists it. */
export interface RevisionEntry {
  readonly revision: string;
  readonly description: string;
  /** `<short sha> <subject> (<author>)` split up, when the source is git. */
  readonly commit: { readonly sha: string; readonly message: string; readonly author: string } | null;
  readonly at: string;
  readonly ok: boolean;
  readonly diagnostics: readonly DiagnosticJson[];
}

export interface ServiceNode {
  readonly service: string;
  /** Runs a sidecar (has a config of its own). */
  readonly meshed: boolean;
  /** Services its config lets it call. */
  readonly callees: readonly string[];
  /** Per callee: whether calls to it go over mTLS. */
  readonly mtlsTo: Readonly<Record<string, boolean>>;
  /** Its routing rules as callers see them, in precedence order. */
  readonly rules: ReadonlyArray<{ readonly id: string; readonly route: string | null; readonly name: string | null; readonly match: string; readonly backends: ReadonlyArray<{ readonly service: string; readonly weight: number }> }>;
}

export interface SplitView {
  /** The service callers name. */
  readonly service: string;
  readonly route: string;
  readonly rule: string | null;
  readonly ruleId: string;
  /** Configured weights and shares (0..1). */
  readonly configured: ReadonlyArray<{ readonly service: string; readonly weight: number; readonly share: number }>;
  /** Requests of the route in the window per backend, and their shares; the route's every rule counts (sidecars label requests by route, not rule). */
  readonly observed: ReadonlyArray<{ readonly service: string; readonly requests: number; readonly share: number | null }>;
}

export interface DashboardData {
  readonly stats: StatsView;
  readonly source: ReconcilerStatus['source'];
  readonly applied: (RevisionEntry & { readonly meshVersion: string }) | null;
  /** The last attempt when it failed and the source still holds it (the mesh runs on `applied`). */
  readonly failing: RevisionEntry | null;
  readonly revisions: readonly RevisionEntry[];
  readonly sync: { readonly inSync: number; readonly connected: number; readonly sidecars: number };
  /** From a revision being seen to a sidecar acknowledging it, over every push since the reconciler started; ms. */
  readonly propagation: { readonly count: number; readonly p50Ms: number | null; readonly p99Ms: number | null };
  readonly services: readonly ServiceNode[];
  readonly splits: readonly SplitView[];
}

/** Splits a git revision description (`3f2a1c9 Move 25% to checkout-v2 (Ana)`); null for other sources. */
export function commitOf(description: string): RevisionEntry['commit'] {
  const m = /^([0-9a-f]{7,40}) (.*) \(([^()]*)\)$/.exec(description);
  return m ? { sha: m[1]!, message: m[2]!, author: m[3]! } : null;
}

/**
 * The last `max` revisions the reconciler attempted, newest first. The reconciler reports
 * only its latest attempt, so the history is kept by looking at it (`observe`) often: an
 * attempt replaced by another between two looks is not listed.
 */
export class RevisionHistory {
  readonly #entries: RevisionEntry[] = [];
  readonly #max: number;

  constructor(max = 20) {
    this.#max = max;
  }

  observe(status: ReconcilerStatus): void {
    const a = status.attempted;
    if (!a) return;
    const last = this.#entries[0];
    if (last && last.revision === a.revision && last.at === a.at) return;
    this.#entries.unshift({ revision: a.revision, description: a.description, commit: commitOf(a.description), at: a.at, ok: a.ok, diagnostics: a.diagnostics });
    if (this.#entries.length > this.#max) this.#entries.pop();
  }

  get entries(): readonly RevisionEntry[] {
    return this.#entries;
  }
}

/** A rule's match in a few words: `GET /api* header x-canary=1`. */
export function describeMatch(m: CompiledMatch): string {
  const path = m.path.type === 'Exact' ? m.path.value : m.path.type === 'PathPrefix' ? (m.path.value === '/' ? '/*' : `${m.path.value}*`) : `~${m.path.value}`;
  const parts = [m.method ?? '', path];
  for (const h of m.headers) parts.push(`header ${h.name}${h.type === 'Exact' ? '=' : '~'}${h.value}`);
  for (const q of m.queryParams) parts.push(`query ${q.name}${q.type === 'Exact' ? '=' : '~'}${q.value}`);
  if (m.port !== null) parts.push(`port ${m.port}`);
  return parts.filter((p) => p !== '').join(' ');
}

/** Nodes of the graph: every meshed service and every backend they may call. */
export function serviceNodes(configs: ReadonlyMap<string, ProxyConfig>): ServiceNode[] {
  const routesOf = new Map<string, RouteBody>();
  const nodes = new Map<string, ServiceNode>();
  const all = new Set<string>(configs.keys());
  for (const [service, config] of configs) {
    const callees: string[] = [];
    const mtlsTo: Record<string, boolean> = {};
    const inbound = config.resources.find((r) => r.name === 'inbound')?.body as InboundBody | undefined;
    for (const r of config.resources) {
      if (r.name.startsWith('route/')) {
        const body = r.body as RouteBody;
        callees.push(body.service);
        if (!routesOf.has(body.service)) routesOf.set(body.service, body);
        all.add(body.service);
      } else if (r.name.startsWith('cluster/')) {
        const body = r.body as ClusterBody;
        mtlsTo[body.service] = body.meshed && body.identity !== null && inbound?.mtls.mode !== 'off';
        all.add(body.service);
      }
    }
    nodes.set(service, { service, meshed: true, callees: callees.filter((c) => c !== service), mtlsTo, rules: [] });
  }
  return [...all].sort().map((service) => {
    const base = nodes.get(service) ?? { service, meshed: false, callees: [], mtlsTo: {}, rules: [] };
    const rules = (routesOf.get(service)?.rules ?? []).map((r) => ({ id: r.id, route: r.route, name: r.ruleName, match: describeMatch(r.match), backends: r.backends.map((b) => ({ service: b.service, weight: b.weight })) }));
    return { ...base, rules };
  });
}

/** Every rule with more than one backend: its configured shares, and what the route's traffic did in the window. */
export function splitViews(services: readonly ServiceNode[], routes: readonly RouteStats[]): SplitView[] {
  const out: SplitView[] = [];
  for (const node of services) {
    for (const rule of node.rules) {
      if (rule.backends.length < 2 || rule.route === null) continue;
      const total = rule.backends.reduce((n, b) => n + b.weight, 0);
      const counts = rule.backends.map((b) => routes.filter((r) => r.route === rule.route && r.destination === b.service).reduce((n, r) => n + r.requests, 0));
      const seen = counts.reduce((a, b) => a + b, 0);
      out.push({
        service: node.service,
        route: rule.route,
        rule: rule.name,
        ruleId: rule.id,
        configured: rule.backends.map((b) => ({ service: b.service, weight: b.weight, share: total === 0 ? 0 : b.weight / total })),
        observed: rule.backends.map((b, i) => ({ service: b.service, requests: counts[i]!, share: seen === 0 ? null : counts[i]! / seen })),
      });
    }
  }
  return out;
}

/** Cumulative Prometheus histogram values (prom-client `get()`) → quantiles in ms. */
export function histogramQuantilesMs(values: ReadonlyArray<{ labels: Partial<Record<string, string | number>>; value: number; metricName?: string }>): { count: number; p50Ms: number | null; p99Ms: number | null } {
  const buckets = values.filter((v) => v.metricName?.endsWith('_bucket')).map((v) => ({ le: v.labels.le === '+Inf' ? Infinity : Number(v.labels.le), c: v.value })).sort((a, b) => a.le - b.le);
  const bounds = buckets.filter((b) => b.le !== Infinity).map((b) => b.le);
  const counts = buckets.map((b, i) => b.c - (i === 0 ? 0 : buckets[i - 1]!.c));
  const count = buckets.at(-1)?.c ?? 0;
  const ms = (s: number | null) => (s === null ? null : Math.round(s * 1000 * 10) / 10);
  return { count, p50Ms: ms(quantile(0.5, bounds, counts)), p99Ms: ms(quantile(0.99, bounds, counts)) };
}

/** Puts the page's document together. */
export function dashboardData(input: {
  stats: StatsView;
  status: ReconcilerStatus;
  applied: AppliedRevision | null;
  history: RevisionHistory;
  propagation: DashboardData['propagation'];
}): DashboardData {
  const { status, applied } = input;
  const services = applied ? serviceNodes(applied.mesh.configs) : [];
  const attempted = status.attempted;
  return {
    stats: input.stats,
    source: status.source,
    applied: status.applied
      ? { revision: status.applied.revision, description: status.applied.description, commit: commitOf(status.applied.description), at: status.applied.at, ok: true, diagnostics: [], meshVersion: status.applied.meshVersion }
      : null,
    // Only while the source still holds it: a folder edited back to the applied state is not attempted again.
    failing: attempted && !attempted.ok && attempted.revision === status.source.revision ? { revision: attempted.revision, description: attempted.description, commit: commitOf(attempted.description), at: attempted.at, ok: false, diagnostics: attempted.diagnostics } : null,
    revisions: input.history.entries,
    sync: { inSync: status.summary.inSync, connected: status.summary.connected, sidecars: status.summary.sidecars },
    propagation: input.propagation,
    services,
    splits: splitViews(services, input.stats.routes),
  };
}
