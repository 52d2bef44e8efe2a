/**
 * Stage 4: check. Resolves every setting through the default layers, compiles route
 * tables in precedence order, and checks what the spec means: conflicts, impossible or
 * dangerous settings, rules that can never match. Produces the mesh plan that emit
 * turns into proxy configs. `checkSpec` is pure.
 *
 * The work is cut into units (a service's own checks and cluster, a route's checks and
 * compiled rules, a service's plan, its backend-access and timeout checks, …), each a
 * function of inputs it names. For the incremental compiler (`checkIncrementally`) a unit
 * whose inputs are the same objects as last time is reused from the memo (memo.ts), and a
 * revision that only changed, added or removed documents is patched: only the units those
 * documents feed, and the units that read what those changed, run again (`patch`).
 * Diagnostics are kept per unit in a ledger, so the units that did not run still report
 * what they found.
 */
import { canonicalJson } from '../config/canonical.ts';
import type { ClusterBody, CompiledAccessRule, CompiledPort, EndpointsBody, InboundBody, RouteBody } from '../config/types.ts';
import { diagnostic, type Diagnostic, type RelatedInfo, type Span } from '../diagnostics/diagnostic.ts';
import { compileMatchRegex, MatchRegexError } from '../spec/regex.ts';
import type { AccessPolicyDocument, SpecDocument, GRPCRouteDocument, GRPCRouteFilter, HTTPHeaderFilter, HTTPRouteDocument, HTTPRouteFilter, MeshDocument, ParentReference, RouteDocument, ServiceDocument, TrafficPolicyDocument, TrafficPolicySettings } from '../spec/types.ts';
import { formatDuration } from '../spec/duration.ts';
import { BUILTIN, getLeaf, meshSettings, ms, namespaceSources, POLICY_LEAVES, resolveTrafficSettings, serviceIdentity, type MeshSettings } from './defaults.ts';
import type { DocPath } from './load.ts';
import { accessSources, targetKeys, at, findPort, keyOf, nameKey, namespaceOf, referencedServices, refKey, type ContentChange, type Located, type ResolvedSpec } from './resolve.ts';
import { admitsCaller } from '../config/access.ts';
import { describeChar, invalidFieldValueIndex } from '../config/http-field.ts';
import { chainHead, TAIL_KEPT, worstChains, type ChainLink } from './call-chains.ts';
import type { CompileMemo } from './memo.ts';
import { comparePrecedence, compileRule, implicitRule, plannedSubsumes, portProtocol, type PlannedRule } from './routes.ts';

/** Who may call a service: everyone in the mesh, or the named services. */
export type Callers = 'everyone' | ReadonlySet<string>;

/** The route table of a service as callers of one namespace see it (GAMMA consumer routes). */
export interface ConsumerTable {
  readonly route: RouteBody;
  /** Services a caller needs cluster and endpoints of, to follow this table (sorted). */
  readonly dependencies: readonly string[];
}

/** Everything the compiler knows about one service, resolved. */
export interface ServicePlan {
  /** The service key: `name` in namespace `default`, else `namespace/name`. */
  readonly name: string;
  readonly namespace: string;
  readonly meshed: boolean;
  /** Null for unmeshed services: they run no sidecar and get no proxy config. */
  readonly inbound: InboundBody | null;
  readonly route: RouteBody;
  readonly cluster: ClusterBody;
  readonly endpoints: EndpointsBody;
  readonly callers: Callers;
  /** Services a caller needs cluster and endpoints of, to follow this service's routes (sorted). */
  readonly dependencies: readonly string[];
  /**
   * Route tables for callers of other namespaces that attach consumer routes to this
   * service, by caller namespace: callers there get this table instead of `route`
   * (the producer table). Empty for most services.
   */
  readonly consumers: ReadonlyMap<string, ConsumerTable>;
}

export interface MeshPlan {
  readonly settings: MeshSettings;
  /** Sorted by name. */
  readonly services: ReadonlyMap<string, ServicePlan>;
}

/** Appends in a loop (a spread of a long list overflows the argument stack). */
function append<T>(into: T[], list: readonly T[]): void {
  for (const x of list) into.push(x);
}

function compilePorts(service: ServiceDocument): CompiledPort[] {
  return service.spec.ports.map((p) => ({ name: p.name ?? null, port: p.port, protocol: portProtocol(p), targetPort: p.targetPort ?? p.port }));
}

/** Sets a leaf in a nested settings object, creating parents. */
function setLeaf(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const k of path.slice(0, -1)) node = (node[k] ??= {}) as Record<string, unknown>;
  node[path[path.length - 1]!] = value;
}

/**
 * The span of character `index` of a scalar's value, when the source spells the value
 * character for character (plain, or quoted without escapes); else the whole scalar.
 */
function characterSpan(span: Span, value: string, index: number): Span {
  const source = span.file.text.slice(span.start, span.end);
  const quoted = source.length === value.length + 2 && (source[0] === '"' || source[0] === "'") && source.at(-1) === source[0];
  const offset = source === value ? 0 : quoted && source.slice(1, -1) === value ? 1 : -1;
  return offset < 0 ? span : { file: span.file, start: span.start + offset + index, end: span.start + offset + index + 1 };
}

/**
 * Services named at each end of a long call chain in a TRL4021 message; the middle is
 * counted. A large mesh's worst chains run hundreds of hops, and naming every hop made each
 * message tens of kilobytes that nobody reads.
 */
const CHAIN_ENDS_SHOWN = TAIL_KEPT;

/** A call chain for a message: every service, or for a long chain both ends and a count. */
function describeChain(chain: ChainLink): string {
  if (chain.length <= 2 * CHAIN_ENDS_SHOWN + 2) return chainHead(chain, chain.length).join(' → ');
  const hidden = chain.length - 2 * CHAIN_ENDS_SHOWN;
  return `${chainHead(chain, CHAIN_ENDS_SHOWN).join(' → ')} → … ${hidden} more … → ${chain.tail.slice(-CHAIN_ENDS_SHOWN).join(' → ')} (${chain.length} services)`;
}

/**
 * An amplification factor for a message: exact up to 10^15, "more than 10^15" beyond (a long
 * chain's product overflows to Infinity, which no one should read in a warning).
 */
function describeFactor(factor: number): string {
  return factor <= 1e15 ? String(factor) : 'more than 10^15';
}

/** Worst-case request multiplication along a call chain above which Trellis warns (a 3-hop chain at 2 retries each is 27×). */
const CHAIN_AMPLIFICATION_LIMIT = 8;

/** A unique separator between lists of one unit's inputs. */
const NEXT = Symbol('next');
/** Keys of the units per compile that are about the whole mesh. */
const SETTINGS = {};
const CHAINS = {};

/** A service's plan with its route tables as finished, and what the checks across services read of them. */
interface PlannedService {
  readonly plan: ServicePlan;
  /** The producer table's rules: sorted, with implicit rules. */
  readonly rules: PlannedRule[];
  readonly consumerRules: Map<string, PlannedRule[]>;
  /** The most attempts a producer rule retries on statuses (0 for none). */
  readonly worstRetry: number;
  /** The longest request timeout of a producer rule, in ms. */
  readonly longestTimeout: number;
  /** Its callers as one string (`*` for everyone), equal when the callers are. */
  readonly callersSignature: string;
}
const NO_POLICY: TrafficPolicySettings = Object.freeze({});

/** A route's rules compiled for one parent it attaches to. */
interface Attached {
  readonly parent: string;
  /** The route's namespace when it is a consumer route of the parent (another namespace), else null. */
  readonly consumerNamespace: string | null;
  readonly rules: PlannedRule[];
}

/** Merged TrafficPolicies of one target, and which policy set each leaf (`<target>|<leaf path>`). */
interface MergedTraffic {
  readonly settings: TrafficPolicySettings;
  readonly setBy: ReadonlyMap<string, { policy: Located<TrafficPolicyDocument>; value: string }>;
}

const NO_ACCESS_POLICIES: ReadonlyArray<Located<AccessPolicyDocument>> = [];

/** The list at `key`, made empty first when there is none. */
function listAt<K, V>(map: Map<K, V[]>, key: K): V[] {
  let list = map.get(key);
  if (!list) map.set(key, (list = []));
  return list;
}

function setAt<K, V>(map: Map<K, Set<V>>, key: K): Set<V> {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  return set;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The service keys a route's parentRefs name, each once. */
function parentKeys(route: RouteDocument): string[] {
  const ns = namespaceOf(route);
  return [...new Set((route.spec.parentRefs ?? []).map((p) => refKey(ns, p)))];
}

/** Puts a policy in a target's list at its place in spec order (by key). */
function insertPolicy<P extends SpecDocument>(list: Array<Located<P>>, policy: Located<P>): void {
  const key = keyOf(policy.doc);
  let i = 0;
  while (i < list.length && keyOf(list[i]!.doc) < key) i++;
  list.splice(i, 0, policy);
}

/** Puts a route in a parent's list at its place in route order (HTTPRoutes, then GRPCRoutes, each by key). */
function insertRoute(list: Array<Located<RouteDocument>>, route: Located<RouteDocument>): void {
  const rank = (r: Located<RouteDocument>) => (r.doc.kind === 'HTTPRoute' ? 0 : 1);
  const key = keyOf(route.doc);
  let i = 0;
  while (i < list.length && (rank(list[i]!) < rank(route) || (rank(list[i]!) === rank(route) && keyOf(list[i]!.doc) < key))) i++;
  list.splice(i, 0, route);
}

/** What a patched check tells emit: the services whose plans changed (with their plans before; none for a new service), and whether who may call whom changed. */
export interface CheckDelta {
  readonly changed: ReadonlySet<string>;
  readonly before: ReadonlyMap<string, ServicePlan | undefined>;
  readonly graphChanged: boolean;
}

/** Every service one of a plan's route tables sends to. */
function tableDependencies(plan: ServicePlan): Set<string> {
  const deps = new Set(plan.dependencies);
  for (const table of plan.consumers.values()) for (const d of table.dependencies) deps.add(d);
  return deps;
}

class Checker {
  readonly diagnostics: Diagnostic[] = [];
  /** Where `report` puts diagnostics: `diagnostics`, or the unit under way's own list. */
  #sink: Diagnostic[] = this.diagnostics;
  readonly #memo: CompileMemo | undefined;
  /**
   * With the incremental compiler: every diagnostic by the unit or section that reported it
   * (`kind\0name`), kept from compile to compile, so that a compile that redoes only some
   * units still reports what the others found.
   */
  ledger = new Map<string, readonly Diagnostic[]>();
  #depth = 0;
  settings: MeshSettings;
  spec: ResolvedSpec;
  /** The identity of every service (meshed or not), by service key, in service order. */
  identities: ReadonlyMap<string, string>;
  /** Stands for every service's key, namespace, identity and whether it is meshed: an input of units that look at the whole set. */
  servicesToken: object;

  // What the checks found, kept by the incremental compiler for the next compile to patch.
  /** TrafficPolicies and AccessPolicies per target service, in spec order. */
  trafficByTarget = new Map<string, Array<Located<TrafficPolicyDocument>>>();
  accessByTarget = new Map<string, Array<Located<AccessPolicyDocument>>>();
  traffic = new Map<string, MergedTraffic>();
  clusters = new Map<string, ClusterBody>();
  /** Each route's rules by the parents it attaches to. */
  attachments = new Map<Located<RouteDocument>, readonly Attached[]>();
  /** The routes whose parentRefs name each service, in route order (HTTPRoutes, then GRPCRoutes, by key). */
  routesOf = new Map<string, Array<Located<RouteDocument>>>();
  planned = new Map<string, PlannedService>();
  plans = new Map<string, ServicePlan>();
  /** The services one of whose route tables sends to (or mirrors to) each service. */
  dependents = new Map<string, Set<string>>();
  graph: { readonly calls: ReadonlyMap<string, readonly string[]>; readonly called: ReadonlySet<string> } = { calls: new Map(), called: new Set() };
  /** Whether some service's retry budget is lifted (ratio ≥ 1), or some service injects aborts: checks across every rule run only then. */
  lifted = false;
  faults = false;
  /** Services with an access rule that admits by identity or namespace: they read every service's identity. */
  #identityAccess = new Set<string>();

  constructor(spec: ResolvedSpec, memo?: CompileMemo) {
    this.spec = spec;
    this.#memo = memo;
    const mesh = spec.mesh?.doc;
    this.settings = this.unit('settings', SETTINGS, [mesh], () => meshSettings(mesh));
    this.identities = new Map();
    this.servicesToken = {};
  }

  /** Every service's identity, and the token that stands for the services' shape. */
  identify(): void {
    const identities = new Map<string, string>();
    const shape: unknown[] = [];
    for (const [key, svc] of this.spec.services) {
      const id = this.unit('identity', svc, [this.settings], () => serviceIdentity(this.settings.trustDomain, svc.doc));
      identities.set(key, id);
      if (this.#memo) shape.push(key, id, namespaceOf(svc.doc), svc.doc.spec.sidecar !== false);
    }
    this.identities = identities;
    this.servicesToken = this.token('services', shape);
  }

  /**
   * `identify` after services came or went: the others' identities are kept. The services
   * token is a new one (every unit that reads the whole set is redone when it next runs;
   * a token standing for a shape seen before stays what it was).
   */
  patchIdentities(added: readonly string[]): void {
    const identities = new Map<string, string>();
    const fresh = new Set(added);
    for (const [key, svc] of this.spec.services) {
      identities.set(key, fresh.has(key) ? this.unit('identity', svc, [this.settings], () => serviceIdentity(this.settings.trustDomain, svc.doc)) : this.identities.get(key)!);
    }
    this.identities = identities;
    this.servicesToken = {};
  }

  /** The memo's token for `parts` (see CompileMemo.token); without a memo, a new object. */
  token(id: string, parts: readonly unknown[]): object {
    return this.#memo ? this.#memo.token(id, parts) : {};
  }

  /**
   * Runs `compute`, or with the incremental compiler's memo gives back its last result when
   * `deps` (every input it reads beyond `key`, by identity) are the same as last time; the
   * diagnostics it reported are reported again either way, and recorded in the ledger under
   * `name` (units do not nest).
   */
  unit<T>(kind: string, key: object, deps: readonly unknown[], compute: () => T, name?: string): T {
    const memo = this.#memo;
    if (!memo) return compute();
    const hit = memo.lookup(kind, key, deps);
    if (hit) {
      for (const d of hit.diagnostics) this.#sink.push(d);
      if (name !== undefined) this.#record(`${kind}\u0000${name}`, hit.diagnostics);
      return hit.value as T;
    }
    const own: Diagnostic[] = [];
    const value = this.#capture(own, compute);
    memo.store(kind, key, deps, value, own);
    if (name !== undefined) this.#record(`${kind}\u0000${name}`, own);
    return value;
  }

  /** Runs a check that is not memoised; with the incremental compiler its diagnostics replace those it recorded last time. */
  section(name: string, compute: () => void): void {
    if (!this.#memo) return compute();
    const own: Diagnostic[] = [];
    this.#capture(own, compute);
    this.#record(name, own);
  }

  /** Forgets what a unit or section recorded (it no longer applies). */
  forget(name: string): void {
    this.ledger.delete(name);
  }

  #capture<T>(own: Diagnostic[], compute: () => T): T {
    const outer = this.#sink;
    this.#sink = own;
    this.#depth++;
    try {
      return compute();
    } finally {
      this.#depth--;
      this.#sink = outer;
      for (const d of own) outer.push(d);
    }
  }

  #record(name: string, found: readonly Diagnostic[]): void {
    if (this.#depth > 0) throw new Error(`bug: unit ${name} runs inside another`);
    if (found.length > 0) this.ledger.set(name, found);
    else this.ledger.delete(name);
  }

  /**
   * Service keys by identity, in service order (several services may share one): an exact
   * `from` entry finds its callers here rather than by a scan of every service, which made
   * a mesh with a policy per service quadratic.
   */
  get servicesByIdentity(): ReadonlyMap<string, readonly string[]> {
    if (!this.#servicesByIdentity) {
      const index = new Map<string, string[]>();
      for (const [key, id] of this.identities) {
        const list = index.get(id);
        if (list) list.push(key);
        else index.set(id, [key]);
      }
      this.#servicesByIdentity = index;
    }
    return this.#servicesByIdentity;
  }
  #servicesByIdentity: Map<string, string[]> | undefined;

  report(...args: Parameters<typeof diagnostic>): void {
    this.#sink.push(diagnostic(...args));
  }

  /** A span in the Mesh document, or none when there is no Mesh document. */
  meshSpan(path: DocPath): Span | undefined {
    return this.spec.mesh ? at(this.spec.mesh, path) : undefined;
  }

  /** Which TrafficPolicy set a leaf (`retryBudget.ratio`) for a target, for diagnostics. */
  setBy(target: string, leaf: string): { policy: Located<TrafficPolicyDocument>; value: string } | undefined {
    return this.traffic.get(target)?.setBy.get(`${target}|${leaf}`);
  }

  /** The TrafficPolicies on `target` merged (a unit); two policies may not set one leaf differently. */
  mergeTarget(target: string): void {
    const policies = this.trafficByTarget.get(target);
    if (!policies || policies.length === 0) {
      this.traffic.delete(target);
      this.forget(`traffic\u0000${target}`);
      return;
    }
    this.traffic.set(target, this.unit('traffic', this.spec.services.get(target)!, policies, () => this.mergeFor(target, policies), target));
  }

  /** The TrafficPolicies on one target merged, in spec order, and which policy set each leaf (`<target>|<leaf path>`). */
  mergeFor(target: string, policies: ReadonlyArray<Located<TrafficPolicyDocument>>): MergedTraffic {
    const into: Record<string, unknown> = {};
    const setBy = new Map<string, { policy: Located<TrafficPolicyDocument>; value: string }>();
    for (const policy of policies) {
      for (const leaf of POLICY_LEAVES) {
        const value = getLeaf(policy.doc.spec, leaf);
        if (value === undefined) continue;
        const key = `${target}|${leaf.join('.')}`;
        const json = canonicalJson(value);
        const earlier = setBy.get(key);
        if (earlier && earlier.value !== json) {
          this.report(
            'TRL4005',
            `TrafficPolicies "${keyOf(earlier.policy.doc)}" and "${keyOf(policy.doc)}" both set ${leaf.join('.')} for service "${target}", to different values`,
            at(policy, ['spec', ...leaf]),
            { related: [{ span: at(earlier.policy, ['spec', ...leaf]), message: 'the other value' }], hint: 'set it in one policy only' },
          );
          continue;
        }
        setBy.set(key, { policy, value: json });
        setLeaf(into, leaf, value);
      }
    }
    return { settings: into as TrafficPolicySettings, setBy };
  }

  /** Durations that mean nothing at zero: a retry budget window, a latency decay window. */
  checkPositiveDurations(located: Located<MeshDocument | TrafficPolicyDocument>, prefix: readonly string[], settings: TrafficPolicySettings | undefined): void {
    if (!settings) return;
    for (const leaf of [['retryBudget', 'ttl'], ['loadBalancer', 'ewma', 'decay']] as const) {
      const value = getLeaf(settings, leaf);
      if (typeof value === 'string' && ms(value) === 0) {
        this.report('TRL4020', `${leaf.join('.')} is 0s, which leaves it no time to measure over`, at(located, [...prefix, ...leaf]), { hint: 'leave it out for the default (10s), or give a positive duration' });
      }
    }
  }

  checkMeshDefaults(): void {
    const t = this.settings.timeouts;
    const request = ms(t.request ?? BUILTIN.requestTimeout);
    const backend = ms(t.backendRequest ?? '0s');
    if (request > 0 && backend > request) {
      this.report('TRL4003', `default backendRequest timeout ${t.backendRequest} is longer than the default request timeout ${formatDuration(request)}`, this.meshSpan(['spec', 'defaults', 'timeouts', 'backendRequest']), {
        hint: 'a try can never outlast the whole request; shorten backendRequest',
      });
    }
    if (t.request !== undefined && request === 0) {
      this.report('TRL4017', 'the default request timeout is 0s, which disables it: calls may wait forever', this.meshSpan(['spec', 'defaults', 'timeouts', 'request']), {
        hint: 'set the longest time a caller should wait, such as 30s',
      });
    }
  }

  checkService(svc: Located<ServiceDocument>): void {
    const eps = svc.doc.spec.endpoints;
    const key = keyOf(svc.doc);
    const count = (eps?.static?.length ?? 0) + (eps?.dns ? 1 : 0) + (eps?.kubernetes ? 1 : 0);
    if (count === 0) {
      this.report('TRL4014', `service "${key}" has no endpoints; calls to it will fail with 503`, at(svc, ['spec'], true), {
        hint: 'add spec.endpoints.static or spec.endpoints.dns',
      });
    }
    const ports = new Map<string, number>();
    svc.doc.spec.ports.forEach((p, i) => {
      for (const [portKey, field] of [[`#${p.port}`, 'port'], [p.name === undefined ? undefined : `@${p.name}`, 'name']] as const) {
        if (portKey === undefined) continue;
        const first = ports.get(portKey);
        if (first !== undefined) {
          this.report('TRL4018', `service "${key}" lists port ${field === 'port' ? p.port : `name "${p.name}"`} twice`, at(svc, ['spec', 'ports', i, field]), {
            related: [{ span: at(svc, ['spec', 'ports', first, field]), message: 'first listed here' }],
          });
        } else ports.set(portKey, i);
      }
    });
    const seen = new Map<string, number>();
    eps?.static?.forEach((e, i) => {
      const key = `${e.address}:${e.port ?? ''}`;
      const first = seen.get(key);
      if (first !== undefined) {
        this.report('TRL4015', `endpoint ${e.address}${e.port !== undefined ? `:${e.port}` : ''} is listed twice`, at(svc, ['spec', 'endpoints', 'static', i]), {
          related: [{ span: at(svc, ['spec', 'endpoints', 'static', first]), message: 'first listed here' }],
          hint: 'use weight to send an instance more traffic',
        });
      } else seen.set(key, i);
    });
  }

  checkHeaderFilter(route: Located<RouteDocument>, f: HTTPHeaderFilter | undefined, path: DocPath): void {
    if (!f) return;
    const seen = new Map<string, DocPath>();
    const visit = (name: string, p: DocPath) => {
      const lower = name.toLowerCase();
      const first = seen.get(lower);
      if (first) {
        this.report('TRL4012', `header "${name}" is modified twice by one filter`, at(route, p), {
          related: [{ span: at(route, first), message: 'also modified here' }],
          hint: 'header names are case-insensitive; keep one of set, add or remove per header',
        });
      } else seen.set(lower, p);
    };
    // Names are tokens by the schema (httpHeaderName); values have no schema pattern, so
    // the one rule the sidecar's config check also applies is checked here.
    const value = (v: string, p: DocPath) => {
      const bad = invalidFieldValueIndex(v);
      if (bad < 0) return;
      this.report('TRL4026', `header value has ${describeChar(v[bad]!)} at character ${bad + 1}, which an HTTP header may not carry`, at(route, p), {
        hint: 'header values may hold tabs, spaces, visible ASCII and Latin-1 characters; CR, LF, NUL and other control characters would forge or break headers',
      });
    };
    f.set?.forEach((h, i) => (visit(h.name, [...path, 'set', i, 'name']), value(h.value, [...path, 'set', i, 'value'])));
    f.add?.forEach((h, i) => (visit(h.name, [...path, 'add', i, 'name']), value(h.value, [...path, 'add', i, 'value'])));
    f.remove?.forEach((n, i) => visit(n, [...path, 'remove', i]));
  }

  checkFilters(route: Located<RouteDocument>, filters: ReadonlyArray<HTTPRouteFilter | GRPCRouteFilter> | undefined, path: DocPath, allPrefix: boolean): void {
    const once = new Map<string, number>();
    filters?.forEach((f, i) => {
      const fp = [...path, i];
      // The schema has already checked that each filter carries the field its type names.
      const field = f.type === 'URLRewrite' ? 'urlRewrite' : f.type === 'RequestRedirect' ? 'requestRedirect' : '';
      if (f.type !== 'RequestMirror') {
        const first = once.get(f.type);
        if (first !== undefined) {
          this.report('TRL4009', `${f.type} may appear only once in a filter list`, at(route, [...fp, 'type']), {
            related: [{ span: at(route, [...path, first, 'type']), message: 'first one here' }],
            hint: 'merge the two filters',
          });
        } else once.set(f.type, i);
      }
      const fraction = f.type === 'RequestMirror' ? f.requestMirror?.fraction : undefined;
      if (fraction && fraction.numerator > (fraction.denominator ?? 100)) {
        this.report('TRL4019', `mirror fraction ${fraction.numerator}/${fraction.denominator ?? 100} is more than every request`, at(route, [...fp, 'requestMirror', 'fraction', 'numerator']), {
          hint: 'the numerator may be at most the denominator (100 by default)',
        });
      }
      if (f.type === 'RequestHeaderModifier') this.checkHeaderFilter(route, f.requestHeaderModifier, [...fp, 'requestHeaderModifier']);
      if (f.type === 'ResponseHeaderModifier') this.checkHeaderFilter(route, f.responseHeaderModifier, [...fp, 'responseHeaderModifier']);
      const modifier = f.type === 'RequestRedirect' ? f.requestRedirect?.path : f.type === 'URLRewrite' ? f.urlRewrite?.path : undefined;
      if (modifier) {
        const mp = [...fp, field, 'path'];
        if (modifier.type === 'ReplacePrefixMatch' && !allPrefix) {
          this.report('TRL4008', 'ReplacePrefixMatch needs every match of its rule to be a PathPrefix match', at(route, [...mp, 'type']), {
            hint: 'use ReplaceFullPath, or make the rule match by PathPrefix',
          });
        }
      }
    });
    if (once.has('RequestRedirect') && once.has('URLRewrite')) {
      this.report('TRL4009', 'RequestRedirect and URLRewrite cannot be used together', at(route, [...path, once.get('URLRewrite')!, 'type']));
    }
  }

  checkRegex(route: Located<RouteDocument>, value: string, path: DocPath): void {
    try {
      compileMatchRegex(value);
    } catch (err) {
      const index = err instanceof MatchRegexError ? err.index : undefined;
      const span = at(route, path);
      this.report('TRL4007', `regular expression rejected: ${(err as Error).message}`, index === undefined ? span : characterSpan(span, value, index), {
        hint:
          index === undefined
            ? 'Trellis matches regexes in linear time; rewrite without backreferences or lookahead'
            : 'Trellis matches the whole value against the whole pattern; escape a literal parenthesis as \\( or \\), or put it in a class: [(]',
      });
    }
  }

  checkRule(route: Located<HTTPRouteDocument>, r: number): void {
    const rule = route.doc.spec.rules![r]!;
    const rp: DocPath = ['spec', 'rules', r];
    const backends = rule.backendRefs ?? [];
    rule.matches?.forEach((m, i) => {
      if (m.path?.type === 'RegularExpression') this.checkRegex(route, m.path.value ?? '/', [...rp, 'matches', i, 'path', 'value']);
      m.headers?.forEach((h, j) => h.type === 'RegularExpression' && this.checkRegex(route, h.value, [...rp, 'matches', i, 'headers', j, 'value']));
      m.queryParams?.forEach((q, j) => q.type === 'RegularExpression' && this.checkRegex(route, q.value, [...rp, 'matches', i, 'queryParams', j, 'value']));
    });
    const allPrefix = (rule.matches ?? []).every((m) => (m.path?.type ?? 'PathPrefix') === 'PathPrefix');
    this.checkFilters(route, rule.filters, [...rp, 'filters'], allPrefix);
    backends.forEach((b, j) => this.checkFilters(route, b.filters, [...rp, 'backendRefs', j, 'filters'], allPrefix));

    const redirect = rule.filters?.some((f) => f.type === 'RequestRedirect') ?? false;
    this.checkBackendsAndTimeouts(route, r, redirect);
  }

  /**
   * A GRPCRoute rule: its service and method patterns (each on its own, so a diagnostic
   * points into the field, then as the one path pattern they compile to), header
   * patterns, filters, backends and timeouts.
   */
  checkGrpcRule(route: Located<GRPCRouteDocument>, r: number): void {
    const rule = route.doc.spec.rules![r]!;
    const rp: DocPath = ['spec', 'rules', r];
    rule.matches?.forEach((m, i) => {
      const mp: DocPath = [...rp, 'matches', i];
      if (m.method && m.method.type === 'RegularExpression') {
        for (const part of ['service', 'method'] as const) {
          const value = m.method[part];
          if (value !== undefined) this.checkRegex(route, value, [...mp, 'method', part]);
        }
      }
      m.headers?.forEach((h, j) => h.type === 'RegularExpression' && this.checkRegex(route, h.value, [...mp, 'headers', j, 'value']));
    });
    this.checkFilters(route, rule.filters, [...rp, 'filters'], false);
    rule.backendRefs?.forEach((b, j) => this.checkFilters(route, b.filters, [...rp, 'backendRefs', j, 'filters'], false));
    this.checkBackendsAndTimeouts(route, r, false);
  }

  /**
   * A backend (or mirror) port that cannot carry the route's calls: a GRPCRoute's on a port
   * that speaks HTTP/1.1 or tcp, an HTTPRoute's on a tcp port (TRL4030). Without a `port`
   * the backend's ports are checked together: warned only when none fits. A route's own
   * parent is left to the attachment checks.
   */
  checkBackendProtocol(route: Located<RouteDocument>, ref: { namespace?: string; name: string; port?: number }, path: DocPath): void {
    const ns = namespaceOf(route.doc);
    const key = refKey(ns, ref);
    const backend = this.spec.services.get(key);
    // A parent that sends to itself: attachedPorts already reports a port it cannot route (TRL4027, TRL4028).
    if (!backend || (route.doc.spec.parentRefs ?? []).some((p) => refKey(ns, p) === key)) return;
    const grpc = route.doc.kind === 'GRPCRoute';
    const fits = (proto: string) => proto !== 'tcp' && !(grpc && proto === 'http');
    const ports = ref.port !== undefined ? backend.doc.spec.ports.filter((p) => p.port === ref.port) : backend.doc.spec.ports;
    if (ports.length === 0 || ports.some((p) => fits(portProtocol(p)))) return;
    const protos = [...new Set(ports.map((p) => portProtocol(p)))];
    const speaks = protos.map((p) => (p === 'http' ? 'HTTP/1.1 (appProtocol http)' : p)).join(' and ');
    this.report(
      'TRL4030',
      `${route.doc.kind} "${keyOf(route.doc)}" sends calls to service "${keyOf(backend.doc)}"${ref.port !== undefined ? ` port ${ref.port}` : ''}, which speaks ${speaks}: ${grpc ? 'gRPC calls need HTTP/2 to the app' : 'an HTTP request cannot be carried to a TCP port'}, so they will fail`,
      at(route, [...path, ref.port !== undefined ? 'port' : 'name']),
      { hint: grpc ? 'send to a port with appProtocol grpc or http2, or set that on the backend port its gRPC server listens on' : 'send to an HTTP port of the backend' },
    );
  }

  /** What HTTPRoute and GRPCRoute rules share: weights, missing backends, timeouts. */
  checkBackendsAndTimeouts(route: Located<RouteDocument>, r: number, redirect: boolean): void {
    const rule = route.doc.spec.rules![r]!;
    const rp: DocPath = ['spec', 'rules', r];
    const backends = rule.backendRefs ?? [];
    const grpc = route.doc.kind === 'GRPCRoute';
    backends.forEach((b, j) => {
      const bp: DocPath = [...rp, 'backendRefs', j];
      this.checkBackendProtocol(route, b, bp);
      b.filters?.forEach((f, k) => f.type === 'RequestMirror' && f.requestMirror && this.checkBackendProtocol(route, f.requestMirror.backendRef, [...bp, 'filters', k, 'requestMirror', 'backendRef']));
    });
    rule.filters?.forEach((f, k) => f.type === 'RequestMirror' && f.requestMirror && this.checkBackendProtocol(route, f.requestMirror.backendRef, [...rp, 'filters', k, 'requestMirror', 'backendRef']));
    const failure = grpc ? 'fails with gRPC status unavailable' : 'fails with 500';
    if (backends.length > 0 && backends.every((b) => (b.weight ?? 1) === 0)) {
      this.report('TRL4001', `every backendRef of this rule has weight 0, so every ${grpc ? 'call' : 'request'} it matches ${failure}`, at(route, [...rp, 'backendRefs']), {
        hint: 'give at least one backend a positive weight',
      });
    }
    if (backends.length === 0 && !redirect) {
      if (grpc) this.report('TRL4010', 'rule has no backendRefs: calls it matches fail with gRPC status unavailable', at(route, rp), { hint: 'add backendRefs' });
      else this.report('TRL4010', 'rule has no backendRefs and no redirect: requests it matches get 500', at(route, rp), { hint: 'add backendRefs, or a RequestRedirect filter' });
    }
    if (backends.length > 0 && redirect) {
      this.report('TRL4011', 'rule redirects every request, so its backendRefs are never used', at(route, [...rp, 'backendRefs']), {
        hint: 'remove the backendRefs, or move the redirect to a rule of its own',
      });
    }

    const t = rule.timeouts;
    if (t) {
      const request = ms(t.request ?? this.settings.timeouts.request ?? BUILTIN.requestTimeout);
      const backend = ms(t.backendRequest ?? this.settings.timeouts.backendRequest ?? '0s');
      if (request > 0 && backend > request) {
        this.report('TRL4003', `backendRequest timeout ${formatDuration(backend)} is longer than the request timeout ${formatDuration(request)}`, at(route, [...rp, 'timeouts', t.backendRequest ? 'backendRequest' : 'request']), {
          hint: 'one try can never outlast the whole request (which includes retries); shorten backendRequest',
        });
      }
      if (t.request !== undefined && request === 0) {
        this.report('TRL4017', 'request timeout 0s disables the timeout: calls may wait forever', at(route, [...rp, 'timeouts', 'request']), {
          hint: 'set the longest time a caller should wait, such as 30s',
        });
      }
    }

  }

  /** Access per target: compiled rules, who may call, and mode conflicts. */
  access(target: Located<ServiceDocument>, policies: ReadonlyArray<Located<AccessPolicyDocument>>): { inboundAccess: InboundBody['access']; callers: Callers } {
    const name = keyOf(target.doc);
    if (policies.length === 0) {
      // The mesh default is enforced by a service's own sidecar; a service without one
      // is reachable by every caller unless an AccessPolicy narrows who gets a route.
      const d = target.doc.spec.sidecar === false ? 'allow' : this.settings.accessDefault;
      return { inboundAccess: { default: d, mode: 'enforce', rules: [] }, callers: d === 'deny' ? new Set() : 'everyone' };
    }
    if (target.doc.spec.sidecar === false) {
      this.report(
        'TRL4013',
        `service "${name}" runs no sidecar, so ${policies.length === 1 ? 'AccessPolicy' : 'AccessPolicies'} ${policies.map((p) => `"${keyOf(p.doc)}"`).join(', ')} ${policies.length === 1 ? 'is' : 'are'} enforced only by its callers' sidecars (others get no route to it); an app that bypasses its sidecar is not stopped`,
        at(policies[0]!, ['spec', 'targetRefs', policies[0]!.doc.spec.targetRefs.findIndex((t) => refKey(namespaceOf(policies[0]!.doc), t) === name), 'name']),
        { hint: 'mesh the service (sidecar: true) to enforce the policy at its door' },
      );
    }
    const modes = new Set(policies.map((p) => p.doc.spec.mode ?? 'enforce'));
    if (modes.size > 1) {
      const audit = policies.find((p) => (p.doc.spec.mode ?? 'enforce') === 'audit')!;
      const enforce = policies.find((p) => (p.doc.spec.mode ?? 'enforce') === 'enforce')!;
      this.report('TRL4006', `AccessPolicies on service "${name}" disagree on mode: "${keyOf(audit.doc)}" audits, "${keyOf(enforce.doc)}" enforces`, at(audit, ['spec', 'mode']), {
        related: [{ span: at(enforce, ['metadata', 'name']), message: 'enforcing policy' }],
        hint: 'use one mode for every policy on a service',
      });
    }
    const mode = modes.has('enforce') ? 'enforce' : 'audit';
    const td = this.settings.trustDomain;
    const callers = new Set<string>();
    const rules: CompiledAccessRule[] = [];
    // Services whose identity an identity or namespace source admits are callers too (in
    // service order); several services sharing a ServiceAccount identity are all admitted.
    const admitted = (entry: string) => {
      if (!entry.endsWith('/*')) {
        for (const key of this.servicesByIdentity.get(entry) ?? []) callers.add(key);
        return;
      }
      for (const [key, id] of this.identities) if (admitsCaller(entry, id)) callers.add(key);
    };
    for (const p of policies) {
      for (const rule of p.doc.spec.rules) {
        const from = new Set<string>();
        for (const src of rule.from) {
          if (src.service !== undefined) {
            const key = nameKey(namespaceOf(p.doc), src.service);
            const id = this.identities.get(key);
            if (id === undefined) continue;
            from.add(id);
            callers.add(key);
            admitted(id);
          } else if (src.identity !== undefined) {
            from.add(src.identity);
            admitted(src.identity);
          } else if (src.namespace !== undefined) {
            for (const entry of namespaceSources(td, src.namespace)) {
              from.add(entry);
              admitted(entry);
            }
          }
        }
        if (rule.to !== undefined) this.checkAccessOperationsOnTcp(target, p, p.doc.spec.rules.indexOf(rule));
        rules.push({
          from: [...from].sort(),
          policy: keyOf(p.doc),
          to: (rule.to ?? []).map((t) => ({
            methods: [...(t.methods ?? [])].sort(),
            paths: (t.paths ?? []).map((x) => ({ type: x.type ?? 'PathPrefix', value: x.value })),
          })),
        });
      }
    }
    return { inboundAccess: { default: 'policy', mode, rules }, callers: mode === 'audit' ? 'everyone' : callers };
  }

  /**
   * A TCP connection has no method or path, so an access rule with `to` admits none
   * (only rules without `to` admit callers on `tcp` ports). Warned at the rule's `to`.
   */
  checkAccessOperationsOnTcp(target: Located<ServiceDocument>, policy: Located<AccessPolicyDocument>, r: number): void {
    const tcp = target.doc.spec.ports.filter((p) => portProtocol(p) === 'tcp');
    if (tcp.length === 0) return;
    const all = tcp.length === target.doc.spec.ports.length;
    const where = all ? `service "${keyOf(target.doc)}" speaks only tcp` : `port${tcp.length === 1 ? '' : 's'} ${tcp.map((p) => p.port).join(', ')} of service "${keyOf(target.doc)}" speak${tcp.length === 1 ? 's' : ''} tcp`;
    this.report('TRL4029', `${where}, and a TCP connection has no method or path: this rule, which names operations (to), admits no connection ${all ? 'to it' : 'on those ports'}`, at(policy, ['spec', 'rules', r, 'to'], true), {
      hint: 'on tcp ports only `from` is checked: give TCP callers a rule without `to`',
    });
  }

  endpoints(svc: ServiceDocument, meshed: boolean): EndpointsBody {
    const eps = svc.spec.endpoints;
    const k = eps?.kubernetes;
    if (k) {
      // Instances are runtime state: the reconciler fills `static` from EndpointSlices.
      return {
        dns: null,
        kubernetes: { namespace: k.namespace ?? namespaceOf(svc), port: k.port ?? null, service: k.service ?? svc.metadata.name },
        service: keyOf(svc),
        static: [],
      };
    }
    const defaultPort = meshed ? this.settings.inboundPort : null;
    const list = (eps?.static ?? []).map((e) => ({ address: e.address, port: e.port ?? defaultPort, weight: e.weight ?? 1, zone: e.zone ?? null }));
    list.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : (a.port ?? 0) - (b.port ?? 0)));
    return {
      dns: eps?.dns ? { hostname: eps.dns.hostname, port: eps.dns.port ?? defaultPort, refreshIntervalMs: ms(eps.dns.refreshInterval ?? BUILTIN.dnsRefresh) } : null,
      service: keyOf(svc),
      static: list,
    };
  }

  /** Warns when a route of `name` sends a caller's requests to a backend whose access policy denies that caller (a unit). */
  checkBackendAccess(name: string): void {
    const made = this.planned.get(name)!;
    const own = made.plan;
    // What the unit reads beyond its own plan and tables: the plans of the services they
    // send to, and every service's namespace and whether it is meshed (servicesToken).
    const deps: unknown[] = [this.servicesToken];
    if (this.#memo) for (const d of tableDependencies(own)) deps.push(this.plans.get(d));
    this.unit('backend-access', own, deps, () => this.checkBackendAccessOf(name, this.plans, made.rules, made.consumerRules, () => [...this.plans.values()].filter((p) => p.meshed).map((p) => p.name)), name);
  }

  checkBackendAccessOf(name: string, plan: ReadonlyMap<string, ServicePlan>, producerRules: readonly PlannedRule[], consumers: ReadonlyMap<string, PlannedRule[]> | undefined, meshedNames: () => readonly string[]): void {
    // Each table is checked against the callers that hold it: a consumer table against the
    // callers of its namespace, the producer table against everyone else.
    const tables: Array<[readonly PlannedRule[], (caller: string) => boolean]> = [[producerRules, (c) => !consumers?.has(plan.get(c)!.namespace)]];
    for (const [ns, consumerRules] of consumers ?? []) tables.push([consumerRules, (c) => plan.get(c)!.namespace === ns]);
    const callers = plan.get(name)!.callers;
    for (const [rules, holds] of tables) {
      const warned = new Set<string>();
      for (const { rule, origin } of rules) {
        if (!origin) continue;
        rule.backends.forEach((b, j) => {
          const backend = plan.get(b.service);
          if (!backend || b.service === name || warned.has(b.service) || backend.callers === 'everyone' || !backend.meshed) return;
          const allowed = backend.callers;
          const denied = (callers === 'everyone' ? meshedNames() : [...callers]).filter((c) => plan.has(c) && holds(c) && !allowed.has(c)).sort();
          if (denied.length === 0) return;
          warned.add(b.service);
          const shown = denied.slice(0, 5).join(', ') + (denied.length > 5 ? ` and ${denied.length - 5} more` : '');
          this.report(
            'TRL4016',
            `"${name}" routes to "${b.service}", whose ${backend.inbound?.access.default === 'policy' ? 'access policy' : `access (mesh default "${backend.inbound?.access.default}")`} does not admit ${denied.length} of "${name}"'s callers (${shown}); their requests routed there will be denied`,
            at(origin.route, ['spec', 'rules', origin.ruleIndex, 'backendRefs', j, 'name']),
            { hint: `admit them in an AccessPolicy on "${b.service}"` },
          );
        });
      }
    }
  }

  /** Checks and plans the whole spec. */
  run(): MeshPlan {
    this.identify();
    this.section('mesh', () => {
      this.checkMeshDefaults();
      if (this.spec.mesh) this.checkPositiveDurations(this.spec.mesh, ['spec', 'defaults', 'trafficPolicy'], this.spec.mesh.doc.spec.defaults?.trafficPolicy);
    });
    for (const p of this.spec.trafficPolicies) this.unit('durations', p, [], () => this.checkPositiveDurations(p, ['spec'], p.doc.spec), keyOf(p.doc));
    this.section('shared-identities', () => this.checkSharedIdentities());

    for (const policy of this.spec.trafficPolicies) for (const target of targetKeys(policy.doc)) if (this.spec.services.has(target)) listAt(this.trafficByTarget, target).push(policy);
    for (const target of this.trafficByTarget.keys()) this.mergeTarget(target);
    for (const policy of this.spec.accessPolicies) for (const target of targetKeys(policy.doc)) if (this.spec.services.has(target)) listAt(this.accessByTarget, target).push(policy);
    for (const name of this.spec.services.keys()) this.checkServiceAndCluster(name);

    // Attach each route rule to the service ports its parentRefs name. A route in the
    // parent's namespace is a producer route; one in another namespace is a consumer route,
    // planned apart per the route's namespace (GAMMA).
    for (const route of [...this.spec.routes, ...this.spec.grpcRoutes] as Array<Located<RouteDocument>>) {
      for (const parent of parentKeys(route.doc)) if (this.spec.services.has(parent)) listAt(this.routesOf, parent).push(route);
      this.checkRoute(route);
    }
    for (const name of this.spec.services.keys()) {
      const made = this.planOf(name);
      for (const d of tableDependencies(made.plan)) setAt(this.dependents, d).add(name);
    }
    this.buildCallGraph();
    for (const name of this.plans.keys()) this.checkBackendAccess(name);
    this.checkChains(true, true);
    for (const name of this.plans.keys()) this.checkTimeouts(name);
    for (const p of this.plans.values()) {
      if (p.cluster.retryBudget.ratio >= 1) this.lifted = true;
      if (p.cluster.faultInjection.abort) this.faults = true;
    }
    this.checkAcrossRules();
    return { settings: this.settings, services: this.plans };
  }

  /**
   * Patches this checker's last check and plan to `spec`, a revision in which only
   * documents came, went or changed content (see ContentChange): redoes the units those
   * documents feed, and those that read what they changed, and keeps the rest. A service
   * whose meshing or identity changed, and a route moved to other parents, are patched as
   * the old document removed and the new one added. ReferenceGrants are resolve's alone:
   * check reads none. (A change to the Mesh, or a duplicate name, never comes here: see
   * `changeOf` in resolve.ts.)
   */
  patch(spec: ResolvedSpec, change: ContentChange, referrers: ReadonlyMap<string, ReadonlySet<Located<SpecDocument>>>): { plan: MeshPlan; delta: CheckDelta } {
    // A service that joins or leaves the mesh, or takes another identity, reaches whoever
    // admits or calls it, as a service that comes or goes does; a route moved to other
    // parents leaves the old ones' tables and joins the new ones'. Each is patched as the
    // old document removed and the new one added.
    const moved: Array<{ before: Located<SpecDocument>; after: Located<SpecDocument> }> = [];
    for (const pair of change.replaced) {
      const { before, after } = pair;
      if (after.doc.kind === 'Service') {
        const b = before.doc as ServiceDocument;
        const a = after.doc as ServiceDocument;
        if ((b.spec.sidecar !== false) !== (a.spec.sidecar !== false) || serviceIdentity(this.settings.trustDomain, a) !== this.identities.get(keyOf(a))) moved.push(pair);
      } else if (after.doc.kind === 'HTTPRoute' || after.doc.kind === 'GRPCRoute') {
        if (!sameList(parentKeys(before.doc as RouteDocument), parentKeys(after.doc as RouteDocument))) moved.push(pair);
      }
    }
    if (moved.length > 0) {
      change = {
        ...change,
        replaced: change.replaced.filter((pair) => !moved.includes(pair)),
        removed: [...change.removed, ...moved.map((m) => m.before)],
        added: [...change.added, ...moved.map((m) => m.after)],
      };
    }
    this.spec = spec;
    // Only the ledger says what this check found; what units report on the way is not kept.
    this.diagnostics.length = 0;

    const services = new Set<string>();
    const targets = new Set<string>();
    const routes = new Set<Located<RouteDocument>>();
    const dirty = new Set<string>();
    /** Plans before this compile, of services whose plan may change (undefined for a service new to the spec). */
    const before = new Map<string, ServicePlan | undefined>();
    let sharedIdentities = false;
    const isRoute = (doc: Located<SpecDocument>): doc is Located<RouteDocument> => doc.doc.kind === 'HTTPRoute' || doc.doc.kind === 'GRPCRoute';
    const kubernetes = (doc: Located<SpecDocument>) => (doc.doc as ServiceDocument).spec.endpoints?.kubernetes !== undefined;

    // Services that came or went: every identity, and what reads the whole set, again.
    const added = change.added.filter((d) => d.doc.kind === 'Service').map((d) => keyOf(d.doc));
    const removed = change.removed.filter((d) => d.doc.kind === 'Service').map((d) => keyOf(d.doc));
    if (added.length > 0 || removed.length > 0) {
      this.patchIdentities(added);
      this.#servicesByIdentity = undefined;
      for (const name of removed) this.dropService(name, before);
      for (const name of added) {
        // A service that was there (its meshing or identity changed) keeps its plan from before.
        if (!before.has(name)) before.set(name, undefined);
        services.add(name);
        const svc = this.spec.services.get(name)!;
        for (const doc of referrers.get(name) ?? []) {
          if (isRoute(doc) && parentKeys(doc.doc).includes(name)) insertRoute(listAt(this.routesOf, name), doc);
          else if (doc.doc.kind === 'TrafficPolicy' && targetKeys(doc.doc).includes(name)) insertPolicy(listAt(this.trafficByTarget, name), doc as Located<TrafficPolicyDocument>);
          else if (doc.doc.kind === 'AccessPolicy' && targetKeys(doc.doc).includes(name)) insertPolicy(listAt(this.accessByTarget, name), doc as Located<AccessPolicyDocument>);
        }
        targets.add(name);
        if (kubernetes(svc)) sharedIdentities = true;
      }
      for (const d of change.removed) if (d.doc.kind === 'Service' && kubernetes(d)) sharedIdentities = true;
      // Access rules that admit by identity or namespace, and checks that read who is meshed.
      for (const name of this.#identityAccess) dirty.add(name);
      for (const name of [...added, ...removed]) {
        for (const doc of referrers.get(name) ?? []) {
          if (isRoute(doc)) routes.add(doc);
          else if (doc.doc.kind === 'TrafficPolicy' || doc.doc.kind === 'AccessPolicy') {
            for (const t of targetKeys(doc.doc)) if (this.spec.services.has(t)) (doc.doc.kind === 'TrafficPolicy' ? targets : dirty).add(t);
          }
        }
      }
    }

    for (const { before: was, after } of change.replaced) {
      const key = keyOf(after.doc);
      switch (after.doc.kind) {
        case 'Service': {
          services.add(key);
          this.unit('identity', after, [this.settings], () => serviceIdentity(this.settings.trustDomain, (after as Located<ServiceDocument>).doc));
          if (kubernetes(was) || kubernetes(after)) sharedIdentities = true;
          for (const doc of referrers.get(key) ?? []) if (isRoute(doc)) routes.add(doc);
          break;
        }
        case 'HTTPRoute':
        case 'GRPCRoute': {
          const route = after as Located<RouteDocument>;
          for (const parent of parentKeys(route.doc)) {
            const list = this.routesOf.get(parent);
            const i = list ? list.indexOf(was as Located<RouteDocument>) : -1;
            if (i >= 0) list![i] = route;
          }
          this.attachments.delete(was as Located<RouteDocument>);
          routes.delete(was as Located<RouteDocument>);
          routes.add(route);
          break;
        }
        case 'TrafficPolicy': {
          const policy = after as Located<TrafficPolicyDocument>;
          for (const t of this.replaceTargeting(this.trafficByTarget, was as Located<TrafficPolicyDocument>, policy, added)) targets.add(t);
          this.unit('durations', policy, [], () => this.checkPositiveDurations(policy, ['spec'], policy.doc.spec), key);
          break;
        }
        case 'AccessPolicy':
          for (const t of this.replaceTargeting(this.accessByTarget, was as Located<AccessPolicyDocument>, after as Located<AccessPolicyDocument>, added)) dirty.add(t);
          break;
      }
    }
    for (const doc of change.removed) {
      const key = keyOf(doc.doc);
      if (isRoute(doc)) {
        for (const parent of parentKeys(doc.doc)) {
          const list = this.routesOf.get(parent);
          const i = list ? list.indexOf(doc) : -1;
          if (i >= 0) list!.splice(i, 1);
          if (this.spec.services.has(parent)) dirty.add(parent);
        }
        this.attachments.delete(doc);
        routes.delete(doc);
        this.forget(`route\u0000${doc.doc.kind}/${key}`);
      } else if (doc.doc.kind === 'TrafficPolicy') {
        for (const t of this.replaceTargeting(this.trafficByTarget, doc as Located<TrafficPolicyDocument>, undefined)) targets.add(t);
        this.forget(`durations\u0000${key}`);
      } else if (doc.doc.kind === 'AccessPolicy') {
        for (const t of this.replaceTargeting(this.accessByTarget, doc as Located<AccessPolicyDocument>, undefined)) dirty.add(t);
      }
    }
    for (const doc of change.added) {
      const key = keyOf(doc.doc);
      if (isRoute(doc)) {
        for (const parent of parentKeys(doc.doc)) if (this.spec.services.has(parent) && !added.includes(parent)) insertRoute(listAt(this.routesOf, parent), doc);
        routes.add(doc);
      } else if (doc.doc.kind === 'TrafficPolicy') {
        const policy = doc as Located<TrafficPolicyDocument>;
        for (const t of this.replaceTargeting(this.trafficByTarget, undefined, policy, added)) targets.add(t);
        this.unit('durations', policy, [], () => this.checkPositiveDurations(policy, ['spec'], policy.doc.spec), key);
      } else if (doc.doc.kind === 'AccessPolicy') {
        for (const t of this.replaceTargeting(this.accessByTarget, undefined, doc as Located<AccessPolicyDocument>, added)) dirty.add(t);
      }
    }

    for (const t of targets) if (this.spec.services.has(t)) this.mergeTarget(t);
    for (const name of new Set([...services, ...targets])) {
      if (!this.spec.services.has(name)) continue;
      const cluster = this.clusters.get(name);
      if (this.checkServiceAndCluster(name) !== cluster || services.has(name)) dirty.add(name);
    }
    for (const route of routes) for (const a of this.checkRoute(route)) if (this.spec.services.has(a)) dirty.add(a);
    if (sharedIdentities) this.section('shared-identities', () => this.checkSharedIdentities());

    const changed = new Set<string>(removed);
    let graphChanged = removed.length > 0 || added.length > 0;
    let retriesChanged = false;
    const timeouts = new Set<string>();
    for (const name of dirty) {
      const old = this.planned.get(name);
      if (!before.has(name)) before.set(name, old?.plan);
      const made = this.planOf(name);
      if (made.plan === old?.plan) continue;
      changed.add(name);
      if (old) for (const d of tableDependencies(old.plan)) this.dependents.get(d)?.delete(name);
      for (const d of tableDependencies(made.plan)) setAt(this.dependents, d).add(name);
      if (made.callersSignature !== old?.callersSignature) graphChanged = true;
      if (made.worstRetry !== old?.worstRetry) retriesChanged = true;
      timeouts.add(name);
      // The services that call this one wait on its calls: their timeouts are checked against its longest.
      if (made.longestTimeout !== old?.longestTimeout && made.plan.callers !== 'everyone') for (const c of made.plan.callers) timeouts.add(c);
    }
    if (added.length > 0) this.plans = new Map([...this.spec.services.keys()].map((k) => [k, this.plans.get(k)!]));
    // Who calls whom, patched where callers changed; the services whose callees changed check their timeouts again.
    if (graphChanged) for (const c of this.patchCallGraph(before)) if (this.plans.has(c)) timeouts.add(c);
    const backendAccess = new Set<string>();
    for (const name of changed) {
      if (!this.plans.has(name)) continue;
      backendAccess.add(name);
      for (const d of this.dependents.get(name) ?? []) backendAccess.add(d);
    }
    // Who is meshed is what a service open to every caller holds against its backends.
    if (added.length > 0 || removed.length > 0) for (const p of this.plans.values()) if (p.callers === 'everyone') backendAccess.add(p.name);
    for (const name of backendAccess) this.checkBackendAccess(name);
    if (graphChanged || retriesChanged || services.size > 0) this.checkChains(graphChanged || retriesChanged);
    for (const name of timeouts) if (this.plans.has(name)) this.checkTimeouts(name);
    if (changed.size > 0) {
      for (const name of changed) {
        const p = this.plans.get(name);
        if (p?.cluster.retryBudget.ratio !== undefined && p.cluster.retryBudget.ratio >= 1) this.lifted = true;
        if (p?.cluster.faultInjection.abort) this.faults = true;
      }
      this.checkAcrossRules();
    }
    return { plan: { settings: this.settings, services: this.plans }, delta: { changed, before, graphChanged } };
  }

  /** Forgets a service gone from the spec: its cluster, policies, routes, plan and diagnostics. */
  dropService(name: string, before: Map<string, ServicePlan | undefined>): void {
    const old = this.planned.get(name);
    before.set(name, old?.plan);
    if (old) for (const d of tableDependencies(old.plan)) this.dependents.get(d)?.delete(name);
    this.dependents.delete(name);
    this.clusters.delete(name);
    this.traffic.delete(name);
    this.trafficByTarget.delete(name);
    this.accessByTarget.delete(name);
    this.routesOf.delete(name);
    this.planned.delete(name);
    this.plans.delete(name);
    this.#identityAccess.delete(name);
    for (const kind of ['service', 'traffic', 'plan', 'backend-access', 'timeouts']) this.forget(`${kind}\u0000${name}`);
  }

  /**
   * Puts policy `after` in place of `before` in the per-target lists (either may be
   * undefined: a policy added or removed), keeping spec order (by key); returns every
   * existing target either names. Targets in `skip` (services new to the spec, whose lists
   * are made whole) are left alone.
   */
  replaceTargeting<P extends TrafficPolicyDocument | AccessPolicyDocument>(byTarget: Map<string, Array<Located<P>>>, before: Located<P> | undefined, after: Located<P> | undefined, skip: readonly string[] = []): Set<string> {
    const touched = new Set<string>();
    for (const t of before ? targetKeys(before.doc) : []) {
      const list = byTarget.get(t);
      const i = list ? list.indexOf(before!) : -1;
      if (i < 0) continue;
      list!.splice(i, 1);
      if (list!.length === 0) byTarget.delete(t);
      touched.add(t);
    }
    for (const t of after ? targetKeys(after.doc) : []) {
      if (!this.spec.services.has(t)) continue;
      touched.add(t);
      if (!skip.includes(t)) insertPolicy(listAt(byTarget, t), after!);
    }
    return touched;
  }

  /**
   * Cluster settings of a service with TrafficPolicy settings `policy` over the Mesh's. Most
   * services have no policy of their own, and share one resolved copy of the Mesh's
   * (resource bodies are never changed once built).
   */
  trafficSettings(policy: TrafficPolicySettings): ReturnType<typeof resolveTrafficSettings> {
    if (policy !== NO_POLICY) return resolveTrafficSettings([this.settings.trafficPolicy, policy]);
    return (this.#meshTraffic ??= resolveTrafficSettings([this.settings.trafficPolicy]));
  }

  #meshTraffic: ReturnType<typeof resolveTrafficSettings> | undefined;

  /** A service's own checks (a unit) and its cluster (a unit); returns the cluster. */
  checkServiceAndCluster(name: string): ClusterBody {
    const svc = this.spec.services.get(name)!;
    this.unit('service', svc, [], () => this.checkService(svc), name);
    const identity = this.identities.get(name)!;
    const policy = this.traffic.get(name)?.settings ?? NO_POLICY;
    const cluster = this.unit('cluster', svc, [this.settings, identity, policy], (): ClusterBody => {
      const meshed = svc.doc.spec.sidecar !== false;
      const t = this.trafficSettings(policy);
      // Keys in sorted order (see routes.ts).
      return {
        circuitBreaker: t.circuitBreaker,
        connection: t.connection,
        faultInjection: t.faultInjection,
        identity: meshed ? identity : null,
        loadBalancer: t.loadBalancer,
        meshed,
        outlierDetection: t.outlierDetection,
        ports: compilePorts(svc.doc),
        retryBudget: t.retryBudget,
        service: name,
      };
    });
    this.clusters.set(name, cluster);
    return cluster;
  }

  /** A route's checks and attachments (a unit); returns the parents it attaches to, before and after. */
  checkRoute(route: Located<RouteDocument>): Set<string> {
    const deps: unknown[] = [this.settings];
    if (this.#memo) for (const key of referencedServices(route.doc)) deps.push(this.spec.services.get(key));
    const parents = new Set<string>();
    for (const a of this.attachments.get(route) ?? []) parents.add(a.parent);
    const attached = this.unit('route', route, deps, () => this.checkAndAttach(route), `${route.doc.kind}/${keyOf(route.doc)}`);
    this.attachments.set(route, attached);
    for (const a of attached) parents.add(a.parent);
    return parents;
  }

  /** A service's plan (a unit) from its cluster, the rules attached to it and its access policies. */
  planOf(name: string): PlannedService {
    const svc = this.spec.services.get(name)!;
    const rules: PlannedRule[] = [];
    let consumerRules: Map<string, PlannedRule[]> | undefined;
    for (const route of this.routesOf.get(name) ?? []) {
      for (const a of this.attachments.get(route)!) {
        if (a.parent !== name) continue;
        if (a.consumerNamespace === null) append(rules, a.rules);
        else append(listAt((consumerRules ??= new Map()), a.consumerNamespace), a.rules);
      }
    }
    const policies = this.accessByTarget.get(name) ?? NO_ACCESS_POLICIES;
    const cluster = this.clusters.get(name)!;
    // Its inputs, for the memo (a cold compile has none, and skips listing them).
    const deps: unknown[] = [this.settings, this.identities.get(name), cluster, NEXT];
    if (this.#memo) {
      append(deps, rules);
      deps.push(NEXT);
      append(deps, policies);
      deps.push(NEXT);
      this.accessInputs(policies, deps);
      if (consumerRules) for (const [ns, list] of consumerRules) (deps.push(NEXT, ns), append(deps, list));
    }
    const made = this.unit('plan', svc, deps, () => this.planService(name, svc, rules, consumerRules, policies, cluster), name);
    if (this.#memo) {
      if (policies.some((p) => accessSources(p.doc).some((source) => source.service === undefined))) this.#identityAccess.add(name);
      else this.#identityAccess.delete(name);
    }
    this.planned.set(name, made);
    this.plans.set(name, made.plan);
    return made;
  }

  /**
   * Who calls whom, as AccessPolicies declare it. A service open to everyone adds no edge
   * (in an open mesh any service may call any other, which says nothing about which do).
   * Built whole here; a patched check patches it (patchCallGraph).
   */
  buildCallGraph(): void {
    const calls = new Map<string, string[]>();
    for (const target of this.plans.values()) {
      if (target.callers === 'everyone') continue;
      for (const c of target.callers) if (c !== target.name) listAt(calls, c).push(target.name);
    }
    const called = new Set<string>();
    for (const list of calls.values()) for (const t of list) called.add(t);
    this.graph = { calls, called };
  }

  /**
   * The call graph after the plans in `before` changed (or came, or went): each caller's
   * list of callees loses and gains those targets, kept in plan order (by key). Returns the
   * callers whose lists changed.
   */
  patchCallGraph(before: ReadonlyMap<string, ServicePlan | undefined>): Set<string> {
    const calls = this.graph.calls as Map<string, string[]>;
    const called = this.graph.called as Set<string>;
    const touched = new Set<string>();
    const edges = (plan: ServicePlan | undefined) => (plan && plan.callers !== 'everyone' ? [...plan.callers].filter((c) => c !== plan.name) : []);
    for (const [name, old] of before) {
      const now = this.plans.get(name);
      const was = new Set(edges(old));
      const is = new Set(edges(now));
      for (const c of was) {
        if (is.has(c)) continue;
        const list = calls.get(c);
        const i = list ? list.indexOf(name) : -1;
        if (i >= 0) list!.splice(i, 1);
        if (list?.length === 0) calls.delete(c);
        touched.add(c);
      }
      for (const c of is) {
        if (was.has(c)) continue;
        const list = listAt(calls, c);
        let i = 0;
        while (i < list.length && list[i]! < name) i++;
        list.splice(i, 0, name);
        touched.add(c);
      }
      if (is.size > 0) called.add(name);
      else called.delete(name);
    }
    return touched;
  }

  /** Checks that read every service's rules; each runs only when the mesh has what it looks for. */
  checkAcrossRules(): void {
    if (this.lifted) {
      this.lifted = [...this.plans.values()].some((p) => p.cluster.retryBudget.ratio >= 1);
      this.section('retry-amplification', () => this.checkRetryAmplification());
    }
    if (this.faults) {
      this.faults = [...this.plans.values()].some((p) => p.cluster.faultInjection.abort);
      this.section('faults', () => this.checkFaults());
    }
    if (this.settings.mtlsMode === 'off') this.section('access-without-mtls', () => this.checkAccessWithoutMtls());
  }

  /** A route's checks, and its rules compiled for each parent port it attaches to, in parentRef order. */
  checkAndAttach(route: Located<RouteDocument>): Array<{ parent: string; consumerNamespace: string | null; rules: PlannedRule[] }> {
    if (route.doc.kind === 'GRPCRoute') route.doc.spec.rules?.forEach((_, r) => this.checkGrpcRule(route as Located<GRPCRouteDocument>, r));
    else route.doc.spec.rules?.forEach((_, r) => this.checkRule(route as Located<HTTPRouteDocument>, r));
    const routeNs = namespaceOf(route.doc);
    const attached: Array<{ parent: string; consumerNamespace: string | null; rules: PlannedRule[] }> = [];
    route.doc.spec.parentRefs?.forEach((p, pi) => {
      const key = refKey(routeNs, p);
      const parent = this.spec.services.get(key);
      if (!parent) return;
      const ports = this.attachedPorts(route, p, pi, parent);
      if (ports === undefined) return;
      const rules: PlannedRule[] = [];
      for (const port of ports) route.doc.spec.rules?.forEach((_, r) => append(rules, compileRule(route, r, pi, port, this.settings, this.spec.services)));
      attached.push({ parent: key, consumerNamespace: namespaceOf(parent.doc) !== routeNs ? routeNs : null, rules });
    });
    return attached;
  }

  /**
   * What a service's access (`access`) reads beyond its policies: the identities its rules
   * name and the services holding each, or for a namespace or wildcard source every
   * service (`servicesToken`).
   */
  accessInputs(policies: ReadonlyArray<Located<AccessPolicyDocument>>, out: unknown[]): void {
    const holders = (id: string) => {
      if (id.endsWith('/*')) out.push(this.servicesToken);
      else {
        out.push(id);
        append(out, this.servicesByIdentity.get(id) ?? []);
        out.push(NEXT);
      }
    };
    for (const p of policies) {
      for (const source of accessSources(p.doc)) {
        if (source.service !== undefined) {
          const id = this.identities.get(source.service);
          if (id === undefined) out.push(undefined);
          else holders(id);
        } else if (source.identity !== undefined) holders(source.identity);
        else out.push(this.servicesToken);
      }
    }
  }

  /** One service's plan from its parts, with its route tables as finished (sorted, implicit rules added). */
  planService(
    name: string,
    svc: Located<ServiceDocument>,
    rules: PlannedRule[],
    consumerRules: ReadonlyMap<string, PlannedRule[]> | undefined,
    policies: ReadonlyArray<Located<AccessPolicyDocument>>,
    cluster: ClusterBody,
  ): PlannedService {
    const table = this.routeTable(svc.doc, rules);
    const consumers = new Map<string, ConsumerTable>();
    const sortedConsumers = new Map<string, PlannedRule[]>();
    for (const [ns, list] of [...(consumerRules ?? new Map<string, PlannedRule[]>())].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      consumers.set(ns, this.routeTable(svc.doc, list));
      sortedConsumers.set(ns, list);
    }
    const meshed = svc.doc.spec.sidecar !== false;
    const { inboundAccess, callers } = this.access(svc, policies);
    const plan: ServicePlan = {
      name,
      namespace: namespaceOf(svc.doc),
      meshed,
      inbound: meshed
        ? {
            access: inboundAccess,
            ...(this.settings.egress === 'passthrough' ? { egress: 'passthrough' as const } : {}),
            identity: this.identities.get(name)!,
            mtls: { mode: this.settings.mtlsMode },
            ports: compilePorts(svc.doc),
            service: name,
            trustDomain: this.settings.trustDomain,
          }
        : null,
      route: table.route,
      cluster,
      endpoints: this.endpoints(svc.doc, meshed),
      callers,
      dependencies: table.dependencies,
      consumers,
    };
    // Only retries on status codes multiply the work a backend does; a connect failure never reached it.
    let worstRetry = 0;
    let longestTimeout = 0;
    for (const { rule: r } of rules) {
      if (r.retry.codes.length > 0 || (r.retry.grpcCodes?.length ?? 0) > 0) worstRetry = Math.max(worstRetry, r.retry.attempts);
      longestTimeout = Math.max(longestTimeout, r.timeouts.requestMs);
    }
    const callersSignature = callers === 'everyone' ? '*' : [...callers].join('\u0000');
    return { plan, rules, consumerRules: sortedConsumers, worstRetry, longestTimeout, callersSignature };
  }

  /**
   * The ports of `parent` a route's parentRef attaches its rules to: `[null]` for every
   * port, the port numbers otherwise, undefined for none (reported). No L7 rule applies to
   * a `tcp` port (TRL4027), and a GRPCRoute needs HTTP/2 to the app, so not an `http`
   * port (TRL4028): a parentRef naming such a port is an error, and one naming the whole
   * Service leaves such ports out (an error only when none is left).
   */
  attachedPorts(route: Located<RouteDocument>, p: ParentReference, pi: number, parent: Located<ServiceDocument>): Array<number | null> | undefined {
    const grpc = route.doc.kind === 'GRPCRoute';
    const fits = (proto: string) => proto !== 'tcp' && !(grpc && proto === 'http');
    const key = keyOf(parent.doc);
    const refuse = (proto: string, span: Span | undefined, what: string) => {
      if (proto === 'tcp') {
        this.report('TRL4027', `${route.doc.kind} "${keyOf(route.doc)}" is attached to ${what} of service "${key}", which speaks tcp: no ${route.doc.kind} rule applies to a TCP stream`, span, {
          hint: 'remove the route (the sidecar proxies TCP as an opaque stream with the Mesh default timeouts), or attach it to an HTTP, HTTP/2 or gRPC port',
        });
      } else {
        this.report('TRL4028', `GRPCRoute "${keyOf(route.doc)}" is attached to ${what} of service "${key}", which speaks HTTP/1.1 (appProtocol http): gRPC needs HTTP/2 to the app`, span, {
          hint: 'set appProtocol: grpc (or http2) on the port the gRPC server listens on, or use an HTTPRoute',
        });
      }
    };
    if (p.port !== undefined || p.sectionName !== undefined) {
      const found = findPort(parent.doc, p);
      if (!found) return undefined;
      const proto = portProtocol(found);
      if (!fits(proto)) {
        refuse(proto, at(route, ['spec', 'parentRefs', pi, p.port !== undefined ? 'port' : 'sectionName']), `port ${found.port}`);
        return undefined;
      }
      return [found.port];
    }
    const all = parent.doc.spec.ports;
    const fitting = all.filter((x) => fits(portProtocol(x)));
    if (fitting.length === 0) {
      const protos = new Set(all.map((x) => portProtocol(x)));
      refuse(protos.has('http') && grpc ? 'http' : 'tcp', at(route, ['spec', 'parentRefs', pi, 'name']), all.length === 1 ? 'the only port' : 'every port');
      return undefined;
    }
    return fitting.length === all.length ? [null] : fitting.map((x) => x.port);
  }

  /**
   * One route table of a service from its planned rules: ports no route claims keep their
   * default (traffic to the service itself), rules sorted by precedence and checked for
   * shadowing, and the services the table sends to. A service whose ports are partly
   * `grpc` gets an implicit rule per port, so that only its gRPC ports retry gRPC statuses.
   */
  routeTable(svc: ServiceDocument, rules: PlannedRule[]): ConsumerTable {
    if (!rules.some((x) => x.rule.match.port === null)) {
      const claimed = new Set(rules.map((x) => x.rule.match.port));
      const grpcPorts = new Set(svc.spec.ports.filter((p) => portProtocol(p) === 'grpc').map((p) => p.port));
      const mixed = grpcPorts.size > 0 && grpcPorts.size < svc.spec.ports.length;
      const ports = svc.spec.ports.map((p) => p.port).filter((p) => !claimed.has(p));
      if (rules.length === 0 && !mixed) rules.push(implicitRule(svc, null, this.settings, grpcPorts.size > 0));
      else for (const port of ports) rules.push(implicitRule(svc, port, this.settings, grpcPorts.has(port)));
    }
    rules.sort(comparePrecedence);
    this.checkShadowing(rules);
    const deps = new Set<string>();
    for (const { rule } of rules) {
      for (const b of rule.backends) {
        deps.add(b.service);
        for (const f of b.filters) if (f.type === 'RequestMirror') deps.add(f.backend.service);
      }
      for (const f of rule.filters) if (f.type === 'RequestMirror') deps.add(f.backend.service);
    }
    const key = keyOf(svc);
    return {
      route: { ports: svc.spec.ports.map((p) => p.port), rules: rules.map((x) => x.rule), service: key },
      dependencies: [...deps].filter((d) => this.spec.services.has(d)).sort(),
    };
  }

  /**
   * Services whose pods run as one ServiceAccount in one namespace share one identity: an
   * AccessPolicy that admits one admits all of them, and their sidecars hold the same
   * certificate. Warned once per further service, at its serviceAccount (or its name).
   */
  checkSharedIdentities(): void {
    const first = new Map<string, Located<ServiceDocument>>();
    for (const [key, svc] of this.spec.services) {
      if (!svc.doc.spec.endpoints?.kubernetes || svc.doc.spec.sidecar === false) continue;
      const id = this.identities.get(key)!;
      const earlier = first.get(id);
      if (!earlier) {
        first.set(id, svc);
        continue;
      }
      const path = (s: Located<ServiceDocument>): DocPath => (s.doc.spec.serviceAccount !== undefined ? ['spec', 'serviceAccount'] : ['metadata', 'name']);
      const sa = svc.doc.spec.serviceAccount ?? 'default';
      this.report(
        'TRL4025',
        `services "${keyOf(earlier.doc)}" and "${key}" both run as ServiceAccount "${sa}" in namespace "${namespaceOf(svc.doc)}", so they share the identity ${id}: access policies cannot tell them apart`,
        at(svc, path(svc)),
        {
          related: [{ span: at(earlier, path(earlier)), message: 'the other service with this identity' }],
          hint: 'give each Service its own ServiceAccount (spec.serviceAccount, and serviceAccountName in its pods)',
        },
      );
    }
  }


  /**
   * With mTLS off no sidecar can verify a caller, so every call reaches the inbound port
   * unauthenticated: AccessPolicy rules never admit it and the access default
   * `all-authenticated` admits no one. Warned once, at the Mesh's `spec.mtls.mode`, naming
   * the meshed services whose access needs a verified caller. Policies on unmeshed
   * services are left out: their callers' own sidecars apply them, which needs no
   * verification (TRL4013 says what that leaves open).
   */
  checkAccessWithoutMtls(): void {
    const plan = this.plans;
    if (this.settings.mtlsMode !== 'off') return;
    const needsIdentity = [...plan.values()].filter((s) => s.inbound && (s.inbound.access.default === 'policy' || s.inbound.access.default === 'all-authenticated'));
    if (needsIdentity.length === 0) return;
    const byPolicy = needsIdentity.filter((s) => s.inbound!.access.default === 'policy');
    const byDefault = needsIdentity.filter((s) => s.inbound!.access.default === 'all-authenticated');
    const named = (list: readonly ServicePlan[]) => list.slice(0, 5).map((s) => `"${s.name}"`).join(', ') + (list.length > 5 ? ` and ${list.length - 5} more` : '');
    const effects: string[] = [];
    if (byPolicy.length > 0) effects.push(`AccessPolicy rules on ${named(byPolicy)} admit no caller`);
    if (byDefault.length > 0) effects.push(`the access default all-authenticated admits no caller to ${named(byDefault)}`);
    const audited = byPolicy.some((s) => s.inbound!.access.mode === 'audit');
    const related: RelatedInfo[] = [];
    const policy = this.spec.accessPolicies.find((p) => p.doc.spec.targetRefs.some((t) => byPolicy.some((s) => s.name === refKey(namespaceOf(p.doc), t))));
    if (policy) related.push({ span: at(policy, ['metadata', 'name']), message: 'an AccessPolicy that needs verified callers' });
    const defaultSpan = byDefault.length > 0 && this.spec.mesh?.doc.spec.access?.default !== undefined ? this.meshSpan(['spec', 'access', 'default']) : undefined;
    if (defaultSpan) related.push({ span: defaultSpan, message: 'the access default' });
    this.report(
      'TRL4024',
      `mTLS is off, so sidecars cannot verify any caller and treat every call as unauthenticated: ${effects.join(', and ')}; calls to them are refused with 403${audited ? ' (only logged where a policy is in audit mode)' : ''}`,
      this.meshSpan(['spec', 'mtls', 'mode']),
      { related, hint: 'turn mTLS on (mode: strict), or use mode: permissive while services migrate in: callers that present a mesh certificate are then verified' },
    );
  }

  /**
   * A retry budget whose ratio is 1 or more does not bound retries: each caller may retry
   * every request as often as its rule allows, multiplying the load on a failing service.
   * Warned once per service, at the setting that lifted the budget.
   */
  checkRetryAmplification(): void {
    const plan = this.plans;
    const worst = new Map<string, number>();
    for (const svc of plan.values()) {
      for (const rule of svc.route.rules) {
        if (rule.retry.attempts === 0) continue;
        for (const b of rule.backends) worst.set(b.service, Math.max(worst.get(b.service) ?? 0, rule.retry.attempts));
      }
    }
    for (const [name, attempts] of worst) {
      const budget = plan.get(name)?.cluster.retryBudget;
      if (!budget || budget.ratio < 1) continue;
      const setBy = this.setBy(name, 'retryBudget.ratio');
      const span = setBy ? at(setBy.policy, ['spec', 'retryBudget', 'ratio']) : this.meshSpan(['spec', 'defaults', 'trafficPolicy', 'retryBudget', 'ratio']);
      this.report(
        'TRL4004',
        `retry budget ratio ${budget.ratio} for "${name}" does not bound retries: callers retry up to ${attempts} times, so under failure its load can grow ${attempts + 1}×`,
        span,
        { hint: 'use a ratio below 1 (0.2 lets retries add at most 20% load)' },
      );
    }
  }

  /**
   * Checks across hops of the call graph that AccessPolicies declare (who may call whom):
   * - retries multiply along a chain: A retrying B, which retries C, can send C
   *   (1 + a) × (1 + b) times the traffic; warned for each entry service (one nobody calls)
   *   whose worst chain exceeds CHAIN_AMPLIFICATION_LIMIT;
   * - a rule's timeout shorter than what its backend may spend on one of its own calls
   *   (that call's timeout): the caller gives up while the work goes on, wasted;
   * - fault injection on a backend whose callers retry the injected status: injected faults
   *   are never retried, so the retries do not hide them (said once, as information).
   */
  checkChains(recompute: boolean, full = false): void {
    const { calls, called } = this.graph;
    const walk = () => {
      const worst = worstChains(calls, (target) => 1 + (this.planned.get(target)?.worstRetry ?? 0));
      const found: Array<{ entry: string; chain: ChainLink; factor: number }> = [];
      for (const entry of this.plans.values()) {
        if (!entry.meshed || called.has(entry.name)) continue;
        const w = worst(entry.name);
        if (w.factor > CHAIN_AMPLIFICATION_LIMIT) found.push({ entry: entry.name, chain: w, factor: w.factor });
      }
      return found;
    };
    let found: ReadonlyArray<{ entry: string; chain: ChainLink; factor: number }>;
    if (!this.#memo || !full) found = recompute ? walk() : this.#chains;
    else {
      // A full check walks again only when some service's callers or worst retry count changed.
      const callers: unknown[] = [];
      const attempts: unknown[] = [];
      for (const p of this.planned.values()) callers.push(p.callersSignature), attempts.push(p.worstRetry);
      found = this.unit('chains', CHAINS, [this.token('call-graph', callers), this.servicesToken, this.token('worst-retry', attempts)], walk);
    }
    this.#chains = found;
    this.section('chains', () => {
      for (const { entry, chain, factor } of found) {
        this.report(
          'TRL4021',
          `retries multiply along ${describeChain(chain)}: one request from ${entry} can become ${describeFactor(factor)} requests at ${chain.tail.at(-1)} when everything fails`,
          at(this.spec.services.get(entry)!, ['metadata', 'name']),
          { hint: 'retry at one hop only (usually the one nearest the caller), or lower retry.attempts on the inner hops; retry budgets cap it per hop' },
        );
      }
    });
  }
  #chains: ReadonlyArray<{ entry: string; chain: ChainLink; factor: number }> = [];

  /** Timeouts (a unit per service): a rule of X → `target` waiting less than `target`'s own calls may take. */
  checkTimeouts(target: string): void {
    const p = this.planned.get(target)!;
    let inner = 0;
    for (const callee of this.graph.calls.get(target) ?? []) inner = Math.max(inner, this.planned.get(callee)?.longestTimeout ?? 0);
    if (inner === 0) {
      this.forget(`timeouts\u0000${target}`);
      return;
    }
    this.unit(
      'timeouts',
      p.rules,
      [inner],
      () => {
        const reported = new Set<string>();
        for (const { rule, origin } of p.rules) {
          if (!origin || rule.timeouts.requestMs === 0 || rule.timeouts.requestMs >= inner) continue;
          const key = `${keyOf(origin.route.doc)}/${origin.ruleIndex}`;
          if (reported.has(key)) continue;
          reported.add(key);
          this.report(
            'TRL4022',
            `calls to "${target}" time out after ${formatDuration(rule.timeouts.requestMs)}, but "${target}" may wait up to ${formatDuration(inner)} on its own calls: callers give up while that work goes on`,
            at(origin.route, ['spec', 'rules', origin.ruleIndex, ...(origin.route.doc.spec.rules?.[origin.ruleIndex]?.timeouts?.request !== undefined ? ['timeouts', 'request'] : [])]),
            { hint: `give "${target}"'s callers a longer timeout, or its own calls shorter ones` },
          );
        }
      },
      target,
    );
  }

  /** Faults: injected statuses that callers' rules would retry (said once per target, as information). */
  checkFaults(): void {
    let allRules: PlannedRule[] | undefined;
    for (const target of this.plans.values()) {
      const abort = target.cluster.faultInjection.abort;
      if (!abort) continue;
      allRules ??= [...this.planned.values()].flatMap((p) => p.rules);
      const retried = allRules.find(({ rule }) => rule.backends.some((b) => b.service === target.name) && rule.retry.attempts > 0 && rule.retry.codes.includes(abort.httpStatus));
      if (!retried) continue;
      const setBy = this.setBy(target.name, 'faultInjection.abort');
      this.report(
        'TRL4023',
        `${abort.percentage}% of calls to "${target.name}" are answered ${abort.httpStatus} by fault injection; callers retry ${abort.httpStatus}, but injected faults are never retried, so callers see every one`,
        setBy ? at(setBy.policy, ['spec', 'faultInjection', 'abort']) : undefined,
        { hint: 'this is what fault injection is for: it tests how callers cope' },
      );
    }
  }

  /** Warns about each rule that an earlier rule of the same table always pre-empts. */
  checkShadowing(rules: readonly PlannedRule[]): void {
    for (let j = 1; j < rules.length; j++) {
      const later = rules[j]!;
      if (!later.origin) continue;
      for (let i = 0; i < j; i++) {
        const earlier = rules[i]!;
        if (!earlier.origin || !plannedSubsumes(earlier, later)) continue;
        const o = later.origin;
        const e = earlier.origin;
        const path: DocPath = o.matchIndex >= 0 ? ['spec', 'rules', o.ruleIndex, 'matches', o.matchIndex] : ['spec', 'rules', o.ruleIndex];
        const epath: DocPath = e.matchIndex >= 0 ? ['spec', 'rules', e.ruleIndex, 'matches', e.matchIndex] : ['spec', 'rules', e.ruleIndex];
        const identical = plannedSubsumes(later, earlier);
        const winner = `rules[${e.ruleIndex}]${earlier.rule.ruleName ? ` ("${earlier.rule.ruleName}")` : ''} of ${e.route.doc.kind} "${keyOf(e.route.doc)}"`;
        this.report('TRL4002', `this match can never be selected: ${winner} matches every request it would and takes precedence`, at(o.route, path), {
          related: [{ span: at(e.route, epath), message: 'the rule that always wins' }],
          hint: identical
            ? `both match the same requests; ties go to the route whose name sorts first, then to rule order — remove one, or make this one more specific`
            : later.grpc
              ? 'make the earlier match narrower, or this one more specific (Gateway API GRPCRoute precedence: longest service, longest method, most headers)'
              : 'make the earlier match narrower, or this one more specific (Gateway API precedence: exact path, longest prefix, method, headers, query)',
        });
        break;
      }
    }
  }
}

/** Checks and plans the resolved spec (pure). */
export function checkSpec(spec: ResolvedSpec): { plan: MeshPlan; diagnostics: Diagnostic[] } {
  const checker = new Checker(spec);
  const plan = checker.run();
  return { plan, diagnostics: checker.diagnostics };
}

/** What the incremental compiler keeps of a check for the next one: the checker itself, which the next check patches. */
export type CheckState = Checker;

/**
 * `checkSpec` for the incremental compiler: the same plan and diagnostics. Units whose inputs
 * are unchanged are reused from `memo`; when `change` says only documents' content changed
 * since `previous`, `previous` is patched (only what those documents feed is checked again), and `delta` says which
 * services' plans changed (and whether who may call whom did).
 */
export function checkIncrementally(
  spec: ResolvedSpec,
  memo: CompileMemo,
  previous: CheckState | undefined,
  change: ContentChange | undefined,
  referrers: ReadonlyMap<string, ReadonlySet<Located<SpecDocument>>>,
): { plan: MeshPlan; diagnostics: Diagnostic[]; state: CheckState; delta: CheckDelta | undefined } {
  const patched = previous && change ? previous.patch(spec, change, referrers) : undefined;
  const checker = patched ? previous! : new Checker(spec, memo);
  const plan = patched ? patched.plan : checker.run();
  const diagnostics: Diagnostic[] = [];
  for (const found of checker.ledger.values()) append(diagnostics, found);
  return { plan, diagnostics, state: checker, delta: patched?.delta };
}
