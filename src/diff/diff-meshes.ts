/**
 * The semantic traffic diff: two compiled meshes in, a {@link ChangeSet} out. It reads only
 * the proxy configs, so what it reports is exactly what sidecars would run after a merge:
 * who may call whom is which `route/<service>` resources a caller's sidecar holds, and a
 * service's rules, policy and endpoints are its shared `route/`, `cluster/`, `endpoints/`
 * resources. Pure and deterministic.
 */
import { canonicalJson, prettyJson } from '../config/canonical.ts';
import type { ClusterBody, CompiledRule, EndpointsBody, InboundBody, ProxyConfig, RouteBody } from '../config/types.ts';
import type { CompiledMesh } from '../compiler/emit.ts';
import { hasErrors, type Diagnostic } from '../diagnostics/diagnostic.ts';
import { parseServiceKey } from '../spec/names.ts';
import type { AccessEdgeChange, ChangeSet, RuleChange, ServiceChange, SettingChange, ShareChange, SidecarChange } from './change-set.ts';
import { backendShares, describeMatch, diffLeaves, endpointLeaves, inboundLeaves, policyLeaves, ruleSettings } from './describe-config.ts';
import { assessRisks } from './risk-flags.ts';

/** One side of a diff: what `compileFiles` returns (a mesh only when there are no errors). */
export interface DiffSide {
  readonly mesh?: CompiledMesh;
  readonly diagnostics: readonly Diagnostic[];
}

/** What the diff needs of one compiled mesh, indexed once. */
interface MeshView {
  readonly services: ReadonlySet<string>;
  readonly configs: ReadonlyMap<string, ProxyConfig>;
  readonly routes: ReadonlyMap<string, RouteBody>;
  readonly clusters: ReadonlyMap<string, ClusterBody>;
  readonly endpoints: ReadonlyMap<string, EndpointsBody>;
  readonly inbounds: ReadonlyMap<string, InboundBody>;
  /** `caller → service` pairs (self-calls left out). */
  readonly edges: ReadonlySet<string>;
  /** Services that some rule sends a non-zero share of traffic to. */
  readonly receiving: ReadonlySet<string>;
}

const EDGE = '\u0000';

/**
 * The caller namespace a route table serves when it is a GAMMA consumer table: one whose
 * rules come from a route in another namespace than the service's. Null for the producer
 * table, which every other caller holds.
 */
function consumerNamespace(target: string, body: RouteBody): string | null {
  const own = parseServiceKey(target).namespace;
  for (const rule of body.rules) {
    if (rule.route === null) continue;
    const ns = parseServiceKey(rule.route).namespace;
    if (ns !== own) return ns;
  }
  return null;
}

/** How the diff names the route table that callers of namespace `ns` hold for `target`. */
export function consumerTableName(target: string, ns: string): string {
  return `${target} (callers in ${ns})`;
}

/** Whether a name in the change set is a consumer route table (see consumerTableName), not a service. */
export function isConsumerTable(name: string): boolean {
  return name.endsWith(')') && name.includes(' (callers in ');
}

function viewOf(mesh: CompiledMesh | undefined): MeshView {
  const routes = new Map<string, RouteBody>();
  const clusters = new Map<string, ClusterBody>();
  const endpoints = new Map<string, EndpointsBody>();
  const inbounds = new Map<string, InboundBody>();
  const edges = new Set<string>();
  const configs = mesh?.configs ?? new Map<string, ProxyConfig>();
  for (const [caller, config] of configs) {
    for (const r of config.resources) {
      const slash = r.name.indexOf('/');
      const kind = slash < 0 ? r.name : r.name.slice(0, slash);
      const target = r.name.slice(slash + 1);
      if (kind === 'inbound') inbounds.set(caller, r.body as InboundBody);
      else if (kind === 'route') {
        // Callers of a namespace with consumer routes hold their own table under the same
        // resource name; it is diffed as a table of its own, apart from the producer table.
        const ns = consumerNamespace(target, r.body as RouteBody);
        routes.set(ns === null ? target : consumerTableName(target, ns), r.body as RouteBody);
        if (target !== caller) edges.add(`${caller}${EDGE}${target}`);
      } else if (kind === 'cluster') clusters.set(target, r.body as ClusterBody);
      else if (kind === 'endpoints') endpoints.set(target, r.body as EndpointsBody);
    }
  }
  const receiving = new Set<string>();
  for (const route of routes.values()) {
    for (const rule of route.rules) for (const [backend, share] of backendShares(rule.backends)) if (share > 0) receiving.add(backend);
  }
  const services = new Set([...configs.keys(), ...routes.keys(), ...clusters.keys(), ...endpoints.keys()]);
  return { services, configs, routes, clusters, endpoints, inbounds, edges, receiving };
}

/** Code-unit order: the same on every machine, whatever its locale. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sorted(values: Iterable<string>): string[] {
  return [...values].sort(compareText);
}

function settingsOf(rule: CompiledRule | undefined): Map<string, string> | null {
  return rule ? ruleSettings(rule) : null;
}

function shareChanges(before: CompiledRule | undefined, after: CompiledRule | undefined): ShareChange[] {
  const b = before ? backendShares(before.backends) : new Map<string, number>();
  const a = after ? backendShares(after.backends) : new Map<string, number>();
  return sorted(new Set([...b.keys(), ...a.keys()])).map((backend) => ({ backend, before: b.get(backend) ?? null, after: a.get(backend) ?? null }));
}

/** Keys rules by their match (a repeated match gets `#n`), so an unchanged condition pairs across sides. */
function keyRules(rules: readonly CompiledRule[]): Map<string, CompiledRule> {
  const out = new Map<string, CompiledRule>();
  for (const rule of rules) {
    const base = canonicalJson(rule.match);
    let key = base;
    for (let n = 2; out.has(key); n++) key = `${base}#${n}`;
    out.set(key, rule);
  }
  return out;
}

function ruleChange(before: CompiledRule | undefined, after: CompiledRule | undefined): RuleChange | null {
  const shares = shareChanges(before, after);
  const settings: SettingChange[] = diffLeaves(settingsOf(before), settingsOf(after));
  const rule = (after ?? before)!;
  const match = describeMatch(rule.match, rule.kind);
  const kind = rule.kind === undefined ? {} : { kind: rule.kind };
  if (before && after) {
    const matchBefore = describeMatch(before.match, before.kind);
    const sharesMoved = shares.some((s) => s.before !== s.after);
    if (!sharesMoved && settings.length === 0 && matchBefore === match) return null;
    return { change: 'changed', rule: after.id, ...kind, match, ...(matchBefore === match ? {} : { matchBefore }), shares, settings };
  }
  return { change: after ? 'added' : 'removed', rule: rule.id, ...kind, match, shares, settings };
}

/**
 * Rule changes of one route table: rules pair by match, then leftovers pair by id (a match
 * edited in place); the rest are added or removed. Head precedence order, removed rules last.
 */
export function diffRules(before: RouteBody | undefined, after: RouteBody | undefined): RuleChange[] {
  const b = keyRules(before?.rules ?? []);
  const a = keyRules(after?.rules ?? []);
  const pairs: Array<[CompiledRule | undefined, CompiledRule | undefined]> = [];
  const leftBase = new Map<string, CompiledRule>();
  for (const [key, rule] of b) if (!a.has(key)) leftBase.set(rule.id, rule);
  for (const [key, rule] of a) {
    const same = b.get(key);
    if (same) pairs.push([same, rule]);
    else if (leftBase.has(rule.id)) {
      pairs.push([leftBase.get(rule.id), rule]);
      leftBase.delete(rule.id);
    } else pairs.push([undefined, rule]);
  }
  for (const rule of leftBase.values()) pairs.push([rule, undefined]);
  return pairs.map(([x, y]) => ruleChange(x, y)).filter((c): c is RuleChange => c !== null);
}

function resourceChanges(service: string, base: MeshView, head: MeshView): ServiceChange['resources'] {
  const pick = (view: MeshView, name: string): unknown => {
    if (name === 'inbound') return view.inbounds.get(service);
    if (name.startsWith('route/')) return view.routes.get(service);
    if (name.startsWith('cluster/')) return view.clusters.get(service);
    return view.endpoints.get(service);
  };
  const out: Array<ServiceChange['resources'][number]> = [];
  for (const name of [`cluster/${service}`, `endpoints/${service}`, 'inbound', `route/${service}`]) {
    const b = pick(base, name);
    const a = pick(head, name);
    const before = b === undefined ? null : prettyJson(b);
    const after = a === undefined ? null : prettyJson(a);
    if (before !== after) out.push({ name, before, after });
  }
  return out;
}

function diffService(service: string, base: MeshView, head: MeshView): ServiceChange | null {
  const change = !base.services.has(service) ? 'added' : !head.services.has(service) ? 'removed' : 'changed';
  const leaves = <T, R>(map: ReadonlyMap<string, T>, f: (x: T) => R): R | null => {
    const v = map.get(service);
    return v === undefined ? null : f(v);
  };
  const baseInbound = leaves(base.inbounds, inboundLeaves);
  const headInbound = leaves(head.inbounds, inboundLeaves);
  const result: ServiceChange = {
    service,
    change,
    rules: diffRules(base.routes.get(service), head.routes.get(service)),
    // A service that comes or goes is read by its rules, endpoints and access; its policy and
    // inbound leaves would only list defaults, and are in its compiled resources anyway.
    // A service nobody could call (or nobody can any more) has no cluster on that side:
    // listing every default then would bury what changed.
    policy: base.clusters.has(service) && head.clusters.has(service) ? diffLeaves(leaves(base.clusters, policyLeaves), leaves(head.clusters, policyLeaves)) : [],
    endpoints: change !== 'changed' || (base.endpoints.has(service) && head.endpoints.has(service)) ? diffLeaves(leaves(base.endpoints, endpointLeaves), leaves(head.endpoints, endpointLeaves)) : [],
    inbound: change === 'changed' ? diffLeaves(baseInbound?.other ?? null, headInbound?.other ?? null) : [],
    access: diffLeaves(baseInbound?.access ?? null, headInbound?.access ?? null),
    resources: resourceChanges(service, base, head),
  };
  const any = result.rules.length + result.policy.length + result.endpoints.length + result.inbound.length + result.access.length + result.resources.length;
  return change === 'changed' && any === 0 ? null : result;
}

function diffAccess(base: MeshView, head: MeshView): AccessEdgeChange[] {
  const out: AccessEdgeChange[] = [];
  for (const e of head.edges) if (!base.edges.has(e)) out.push(edgeChange(e, 'granted'));
  for (const e of base.edges) if (!head.edges.has(e)) out.push(edgeChange(e, 'revoked'));
  return out.sort((x, y) => compareText(x.service, y.service) || compareText(x.caller, y.caller));
}

function edgeChange(edge: string, change: AccessEdgeChange['change']): AccessEdgeChange {
  const [caller, service] = edge.split(EDGE) as [string, string];
  return { caller, service, change };
}

function diffSidecars(base: MeshView, head: MeshView): SidecarChange[] {
  const out: SidecarChange[] = [];
  for (const service of sorted(new Set([...base.configs.keys(), ...head.configs.keys()]))) {
    const b = base.configs.get(service);
    const a = head.configs.get(service);
    if (b && a && b.version === a.version) continue;
    const bv = new Map((b?.resources ?? []).map((r) => [r.name, r.version]));
    const av = new Map((a?.resources ?? []).map((r) => [r.name, r.version]));
    const resources = sorted(new Set([...bv.keys(), ...av.keys()])).filter((n) => bv.get(n) !== av.get(n));
    out.push({ service, change: !b ? 'added' : !a ? 'removed' : 'changed', resources });
  }
  return out;
}

/**
 * Diffs two compiled meshes. A side without a mesh (it did not compile) contributes its
 * diagnostics only: the change set is then empty apart from its risk flags, since nothing
 * would be pushed. Services are those the configs mention (every meshed service, and every
 * service some sidecar may call).
 */
export function diffMeshes(baseSide: DiffSide, headSide: DiffSide): ChangeSet {
  const summary = (side: DiffSide) => ({ valid: side.mesh !== undefined && !hasErrors(side.diagnostics), version: side.mesh?.version ?? null, diagnostics: side.diagnostics.filter((d) => d.severity !== 'info') });
  const comparable = baseSide.mesh !== undefined && headSide.mesh !== undefined;
  const base = viewOf(comparable ? baseSide.mesh : undefined);
  const head = viewOf(comparable ? headSide.mesh : undefined);
  const services = sorted(new Set([...base.services, ...head.services]))
    .map((s) => diffService(s, base, head))
    .filter((s): s is ServiceChange => s !== null);
  const access = diffAccess(base, head);
  const sidecars = diffSidecars(base, head);
  const risks = assessRisks({ baseServices: base.services, baseReceiving: base.receiving, services, access, baseDiagnostics: baseSide.diagnostics, headDiagnostics: headSide.diagnostics });
  const changed = services.filter((s) => s.change === 'changed');
  // A consumer route table that comes or goes is a change of routing, not a new service.
  const servicesAdded = services.filter((s) => s.change === 'added' && !isConsumerTable(s.service)).map((s) => s.service);
  const servicesRemoved = services.filter((s) => s.change === 'removed' && !isConsumerTable(s.service)).map((s) => s.service);
  const tablesComeOrGo = services.filter((s) => s.change !== 'changed' && isConsumerTable(s.service));
  const traffic =
    servicesAdded.length +
    servicesRemoved.length +
    changed.reduce((n, s) => n + s.rules.length + s.policy.length + s.endpoints.length + s.inbound.length, 0) +
    tablesComeOrGo.reduce((n, s) => n + s.rules.length, 0);
  const accessCount = access.length + changed.reduce((n, s) => n + s.access.length, 0);
  return {
    base: summary(baseSide),
    head: summary(headSide),
    servicesAdded,
    servicesRemoved,
    services,
    access,
    sidecars,
    risks,
    counts: { traffic, access: accessCount, sidecars: sidecars.length, risks: risks.length },
  };
}
