/**
 * Stage 3: resolve. Indexes the valid documents by kind, namespace and name, reports
 * duplicates, and checks that every reference (route parents and backends, policy targets,
 * access callers, ports) names something that exists. References resolve in the referring
 * document's namespace unless they name another; a backendRef into another namespace needs a
 * ReferenceGrant there (Gateway API). Pure.
 */
import { diagnostic, type Diagnostic } from '../diagnostics/diagnostic.ts';
import { DEFAULT_NAMESPACE, parseServiceKey, serviceKey } from '../spec/names.ts';
import type {
  AccessPolicyDocument,
  BackendObjectReference,
  GRPCRouteDocument,
  GRPCRouteFilter,
  HTTPRouteDocument,
  HTTPRouteFilter,
  MeshDocument,
  ReferenceGrantDocument,
  RouteDocument,
  ServiceDocument,
  SpecDocument,
  SpecKind,
  TrafficPolicyDocument,
  TrafficTestDocument,
} from '../spec/types.ts';
import { locate, type DocPath, type ParsedDocument } from './load.ts';
import { closest } from './suggest.ts';
import type { ValidDocument } from './validate.ts';

/** A valid document together with where it came from. */
export interface Located<D extends SpecDocument> {
  readonly doc: D;
  readonly source: ParsedDocument;
}

/** The namespace a document is in (`default` when it names none). */
export function namespaceOf(doc: SpecDocument): string {
  return doc.metadata.namespace ?? DEFAULT_NAMESPACE;
}

/** The key of a document by namespace and name (`name` in `default`, else `namespace/name`): how messages and compiled rules name routes and policies. */
export function keyOf(doc: SpecDocument): string {
  return serviceKey(doc.metadata.namespace, doc.metadata.name);
}

/** The service key a reference means, written in a document of namespace `from`: its own `namespace`, else `from`. */
export function refKey(from: string, ref: { readonly namespace?: string; readonly name: string }): string {
  return serviceKey(ref.namespace ?? from, ref.name);
}

/** The service key an access source or traffic test means by `name` or `namespace/name`, written in namespace `from`. */
export function nameKey(from: string, written: string): string {
  if (!written.includes('/')) return serviceKey(from, written);
  const { namespace, name } = parseServiceKey(written);
  return serviceKey(namespace, name);
}

const referenced = new WeakMap<RouteDocument, readonly string[]>();

/**
 * Every service key a route names: parents, backends and mirror backends (kept per
 * document: the incremental compiler asks for a route's inputs on every compile).
 */
export function referencedServices(route: RouteDocument): readonly string[] {
  let keys = referenced.get(route);
  if (keys) return keys;
  const from = namespaceOf(route);
  const set = new Set<string>();
  const mirrors = (filters: ReadonlyArray<HTTPRouteFilter | GRPCRouteFilter> | undefined) => {
    for (const f of filters ?? []) if (f.type === 'RequestMirror' && f.requestMirror) set.add(refKey(from, f.requestMirror.backendRef));
  };
  for (const p of route.spec.parentRefs ?? []) set.add(refKey(from, p));
  for (const rule of route.spec.rules ?? []) {
    mirrors(rule.filters);
    for (const b of rule.backendRefs ?? []) {
      set.add(refKey(from, b));
      mirrors(b.filters);
    }
  }
  keys = [...set];
  referenced.set(route, keys);
  return keys;
}

const targets = new WeakMap<TrafficPolicyDocument | AccessPolicyDocument, readonly string[]>();

/** The service keys a policy targets, each once, in order (kept per document, like `referencedServices`). */
export function targetKeys(policy: TrafficPolicyDocument | AccessPolicyDocument): readonly string[] {
  let keys = targets.get(policy);
  if (keys) return keys;
  const ns = namespaceOf(policy);
  keys = [...new Set(policy.spec.targetRefs.map((t) => refKey(ns, t)))];
  targets.set(policy, keys);
  return keys;
}

const sources = new WeakMap<AccessPolicyDocument, ReadonlyArray<{ readonly service?: string; readonly identity?: string }>>();

/**
 * The sources of every rule of an AccessPolicy, in order: a service by its key, an
 * identity, or `{}` for a namespace (kept per document, like `referencedServices`).
 */
export function accessSources(policy: AccessPolicyDocument): ReadonlyArray<{ readonly service?: string; readonly identity?: string }> {
  let list = sources.get(policy);
  if (list) return list;
  const ns = namespaceOf(policy);
  list = policy.spec.rules.flatMap((rule) => rule.from.map((src) => (src.service !== undefined ? { service: nameKey(ns, src.service) } : src.identity !== undefined ? { identity: src.identity } : {})));
  sources.set(policy, list);
  return list;
}

/** The spec as an index: one entry per kind, namespace and name; documents sorted by key. */
export interface ResolvedSpec {
  readonly mesh: Located<MeshDocument> | undefined;
  /** By service key (`name` in `default`, else `namespace/name`). */
  readonly services: ReadonlyMap<string, Located<ServiceDocument>>;
  readonly routes: ReadonlyArray<Located<HTTPRouteDocument>>;
  /** GRPCRoutes, sorted by key like `routes`. */
  readonly grpcRoutes: ReadonlyArray<Located<GRPCRouteDocument>>;
  readonly trafficPolicies: ReadonlyArray<Located<TrafficPolicyDocument>>;
  readonly accessPolicies: ReadonlyArray<Located<AccessPolicyDocument>>;
  readonly trafficTests: ReadonlyArray<Located<TrafficTestDocument>>;
  readonly referenceGrants: ReadonlyArray<Located<ReferenceGrantDocument>>;
}

/** Span of a path inside a located document. */
export function at(located: { source: ParsedDocument }, path: DocPath, key = false) {
  return locate(located.source, path, key);
}

/**
 * Sorted by key: in a spec without namespaces, by name as before namespaces existed. Each
 * key is worked out once, not once per comparison (a tenth of the resolve stage at 30 000
 * documents).
 */
function sortedByName<D extends SpecDocument>(list: ReadonlyArray<Located<D>>): Array<Located<D>> {
  const keyed = list.map((item) => ({ key: keyOf(item.doc), item }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return keyed.map((k) => k.item);
}

/** Whether a ReferenceGrant lets routes of `kind` in namespace `from` refer to Service `name` in the grant's namespace. */
function grants(grant: ReferenceGrantDocument, kind: RouteDocument['kind'], from: string, name: string): boolean {
  return (
    grant.spec.from.some((f) => f.group === 'gateway.networking.k8s.io' && f.kind === kind && f.namespace === from) &&
    grant.spec.to.some((t) => (t.group === '' || t.group === 'trellis.dev') && t.kind === 'Service' && (t.name === undefined || t.name === name))
  );
}

function sourceOrder(a: ValidDocument, b: ValidDocument): number {
  if (a.source.file.path !== b.source.file.path) return a.source.file.path < b.source.file.path ? -1 : 1;
  return a.source.index - b.source.index;
}

/** A port of a service, found by number or name; undefined when the service has no such port. */
export function findPort(service: ServiceDocument, by: { port?: number; sectionName?: string }) {
  return service.spec.ports.find((p) => (by.port === undefined || p.port === by.port) && (by.sectionName === undefined || p.name === by.sectionName));
}

/** The spec indexed: kinds, keys, duplicates; and the diagnostics that takes (duplicates, no Mesh). */
function indexSpec(valid: readonly ValidDocument[]): { spec: ResolvedSpec; diagnostics: Diagnostic[]; duplicated: Set<string> } {
  const duplicated = new Set<string>();
  const diagnostics: Diagnostic[] = [];
  const firstByKey = new Map<string, Located<SpecDocument>>();
  const kept: Record<SpecKind, Array<Located<SpecDocument>>> = { Mesh: [], Service: [], HTTPRoute: [], TrafficPolicy: [], AccessPolicy: [], TrafficTest: [], ReferenceGrant: [], GRPCRoute: [] };

  // Duplicates: the first in file order wins, so the message points at the later copy.
  for (const v of [...valid].sort(sourceOrder)) {
    // The valid document itself: an unchanged file's documents are the same objects from one
    // compile to the next, which is what the incremental compiler's memo compares.
    const located: Located<SpecDocument> = v;
    const key = v.doc.kind === 'Mesh' ? 'Mesh' : `${v.doc.kind}/${keyOf(v.doc)}`;
    const first = firstByKey.get(key);
    if (first) {
      duplicated.add(key);
      const mesh = v.doc.kind === 'Mesh';
      diagnostics.push(
        diagnostic(
          mesh ? 'TRL3006' : 'TRL3001',
          mesh ? 'a spec may hold only one Mesh document' : `${v.doc.kind} "${keyOf(v.doc)}" is defined twice`,
          at(located, ['metadata', 'name']),
          { related: [{ span: at(first, ['metadata', 'name']), message: 'first defined here' }], hint: mesh ? 'merge the two Mesh documents' : 'rename one of them or delete the copy' },
        ),
      );
      continue;
    }
    firstByKey.set(key, located);
    kept[v.doc.kind].push(located);
  }

  const services = new Map<string, Located<ServiceDocument>>();
  for (const s of sortedByName(kept.Service as Array<Located<ServiceDocument>>)) services.set(keyOf(s.doc), s);
  const spec: ResolvedSpec = {
    mesh: kept.Mesh[0] as Located<MeshDocument> | undefined,
    services,
    routes: sortedByName(kept.HTTPRoute as Array<Located<HTTPRouteDocument>>),
    grpcRoutes: sortedByName(kept.GRPCRoute as Array<Located<GRPCRouteDocument>>),
    trafficPolicies: sortedByName(kept.TrafficPolicy as Array<Located<TrafficPolicyDocument>>),
    accessPolicies: sortedByName(kept.AccessPolicy as Array<Located<AccessPolicyDocument>>),
    trafficTests: sortedByName(kept.TrafficTest as Array<Located<TrafficTestDocument>>),
    referenceGrants: sortedByName(kept.ReferenceGrant as Array<Located<ReferenceGrantDocument>>),
  };

  if (!spec.mesh && valid.length > 0) {
    diagnostics.push(
      diagnostic('TRL3007', 'the spec has no Mesh document; built-in defaults apply (mTLS strict, access all-authenticated, trust domain trellis.local)', undefined, {
        hint: 'add a mesh.yaml with kind: Mesh to make these choices explicit',
      }),
    );
  }
  return { spec, diagnostics, duplicated };
}

/**
 * The reference checks of one route or policy: that what it names exists (with the port it
 * names), and that a backend in another namespace is granted. What each reads: the document,
 * the services it names (`referencedServices`, `targetKeys`, `accessSources`), the
 * ReferenceGrants, and for a name that finds no service every service's key (the hint names
 * the closest).
 */
function checkReferences(spec: ResolvedSpec, doc: Located<SpecDocument>): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const services = spec.services;
  const unknownService = (key: string) => {
    const guess = closest(key, services.keys());
    return guess ? `did you mean "${guess}"?` : 'define it with kind: Service';
  };

  const checkBackend = (route: Located<RouteDocument>, ref: BackendObjectReference, path: DocPath, what: string) => {
    const from = namespaceOf(route.doc);
    const key = refKey(from, ref);
    const target = services.get(key);
    if (!target) {
      diagnostics.push(diagnostic('TRL3003', `${what} names unknown service "${key}"`, at(route, [...path, 'name']), { hint: unknownService(key) }));
      return;
    }
    if (ref.port !== undefined && !findPort(target.doc, { port: ref.port })) {
      diagnostics.push(
        diagnostic('TRL3008', `service "${key}" has no port ${ref.port}`, at(route, [...path, 'port']), {
          hint: `its ports: ${target.doc.spec.ports.map((p) => p.port).join(', ')}`,
        }),
      );
    }
    const to = namespaceOf(target.doc);
    if (to === from) return;
    // A consumer route may send its namespace's calls on to the very Service it is attached
    // to: that reaches nothing the callers could not call already, so it needs no grant.
    const parentKeys = (route.doc.spec.parentRefs ?? []).map((p) => refKey(from, p));
    if (parentKeys.includes(key)) return;
    const kind = route.doc.kind;
    if (spec.referenceGrants.some((g) => namespaceOf(g.doc) === to && grants(g.doc, kind, from, ref.name))) return;
    diagnostics.push(
      diagnostic('TRL3009', `${what} refers to service "${key}" in namespace "${to}", but no ReferenceGrant in "${to}" lets ${kind}s from namespace "${from}" refer to it`, at(route, [...path, 'namespace']), {
        hint: `add to namespace "${to}": kind: ReferenceGrant with spec.from [{ group: gateway.networking.k8s.io, kind: ${kind}, namespace: ${from} }] and spec.to [{ group: "", kind: Service, name: ${ref.name} }]`,
      }),
    );
  };
  const checkFilters = (route: Located<RouteDocument>, filters: ReadonlyArray<HTTPRouteFilter | GRPCRouteFilter> | undefined, path: DocPath) => {
    filters?.forEach((f, i) => {
      if (f.type === 'RequestMirror' && f.requestMirror) checkBackend(route, f.requestMirror.backendRef, [...path, i, 'requestMirror', 'backendRef'], 'mirror backendRef');
    });
  };

  if (doc.doc.kind === 'HTTPRoute' || doc.doc.kind === 'GRPCRoute') {
    const route = doc as Located<RouteDocument>;
    const parents = route.doc.spec.parentRefs ?? [];
    if (parents.length === 0) {
      diagnostics.push(
        diagnostic('TRL3002', `${route.doc.kind} "${route.doc.metadata.name}" names no parent Service, so it applies to no traffic`, at(route, ['spec']), {
          hint: 'add parentRefs: [{ kind: Service, name: <service> }]',
        }),
      );
    }
    parents.forEach((p, i) => {
      const key = refKey(namespaceOf(route.doc), p);
      const target = services.get(key);
      if (!target) {
        diagnostics.push(diagnostic('TRL3002', `route is attached to unknown service "${key}"`, at(route, ['spec', 'parentRefs', i, 'name']), { hint: unknownService(key) }));
      } else if ((p.port !== undefined || p.sectionName !== undefined) && !findPort(target.doc, p)) {
        const field = p.sectionName !== undefined ? 'sectionName' : 'port';
        const what = p.sectionName !== undefined ? `a port named "${p.sectionName}"${p.port !== undefined ? ` with number ${p.port}` : ''}` : `port ${p.port}`;
        diagnostics.push(
          diagnostic('TRL3008', `service "${key}" has no ${what}`, at(route, ['spec', 'parentRefs', i, field]), {
            hint: `its ports: ${target.doc.spec.ports.map((x) => (x.name ? `${x.name}=${x.port}` : String(x.port))).join(', ')}`,
          }),
        );
      }
    });
    route.doc.spec.rules?.forEach((rule, r) => {
      checkFilters(route, rule.filters, ['spec', 'rules', r, 'filters']);
      rule.backendRefs?.forEach((b, j) => {
        checkBackend(route, b, ['spec', 'rules', r, 'backendRefs', j], 'backendRef');
        checkFilters(route, b.filters, ['spec', 'rules', r, 'backendRefs', j, 'filters']);
      });
    });
  }

  if (doc.doc.kind === 'TrafficPolicy' || doc.doc.kind === 'AccessPolicy') {
    const policy = doc as Located<TrafficPolicyDocument | AccessPolicyDocument>;
    policy.doc.spec.targetRefs.forEach((t, i) => {
      const key = refKey(namespaceOf(policy.doc), t);
      if (!services.has(key)) {
        diagnostics.push(diagnostic('TRL3004', `${policy.doc.kind} targets unknown service "${key}"`, at(policy, ['spec', 'targetRefs', i, 'name']), { hint: unknownService(key) }));
      }
    });
  }

  if (doc.doc.kind === 'AccessPolicy') {
    const policy = doc as Located<AccessPolicyDocument>;
    policy.doc.spec.rules.forEach((rule, r) => {
      rule.from.forEach((src, s) => {
        if (src.service === undefined) return;
        const key = nameKey(namespaceOf(policy.doc), src.service);
        const caller = services.get(key);
        const path = ['spec', 'rules', r, 'from', s, 'service'];
        if (!caller) {
          diagnostics.push(diagnostic('TRL3005', `access rule admits unknown service "${key}"`, at(policy, path), { hint: unknownService(key) }));
        } else if (caller.doc.spec.sidecar === false) {
          diagnostics.push(
            diagnostic('TRL3005', `service "${key}" runs no sidecar (sidecar: false), so it has no identity and this rule can never admit it`, at(policy, path), {
              hint: 'mesh the caller, or reach this service through a meshed one',
            }),
          );
        }
      });
    });
  }

  return diagnostics;
}

/** The documents whose references `checkReferences` checks: routes, then policies. */
function referring(spec: ResolvedSpec): Array<Located<SpecDocument>> {
  return [...spec.routes, ...spec.grpcRoutes, ...spec.trafficPolicies, ...spec.accessPolicies];
}

/** The service keys a referring document names. */
function namedServices(doc: SpecDocument): readonly string[] {
  if (doc.kind === 'HTTPRoute' || doc.kind === 'GRPCRoute') return referencedServices(doc);
  if (doc.kind === 'TrafficPolicy') return targetKeys(doc);
  if (doc.kind === 'AccessPolicy') {
    const keys = [...targetKeys(doc)];
    for (const s of accessSources(doc)) if (s.service !== undefined) keys.push(s.service);
    return keys;
  }
  return [];
}

export function resolveSpec(valid: readonly ValidDocument[]): { spec: ResolvedSpec; diagnostics: Diagnostic[] } {
  const { spec, diagnostics } = indexSpec(valid);
  for (const doc of referring(spec)) for (const d of checkReferences(spec, doc)) diagnostics.push(d);
  return { spec, diagnostics };
}

/**
 * What the incremental compiler keeps of a resolve for the next one. Owned by one
 * incremental compiler: the next `resolveIncrementally` updates its indexes in place.
 */
export interface ResolveState {
  readonly valid: readonly ValidDocument[];
  readonly spec: ResolvedSpec;
  /** Duplicate and no-Mesh diagnostics (what indexing every document finds). */
  readonly indexDiagnostics: readonly Diagnostic[];
  /** `kind/key` of every document defined more than once. */
  readonly duplicated: ReadonlySet<string>;
  /** Reference diagnostics by document, for documents that have some. */
  readonly references: Map<Located<SpecDocument>, Diagnostic[]>;
  /** The referring documents that name each service key. */
  readonly referrers: Map<string, Set<Located<SpecDocument>>>;
}

/**
 * How a revision's documents differ from the last one's, when only documents came, went or
 * changed content: each `replaced` document takes the place of one of the same kind and
 * key; `added` ones have keys the spec did not have, `removed` ones keys it no longer has.
 * Anything else (a document renamed into a key another has, a duplicate, the Mesh changed)
 * is a structural change, and every later stage looks at the whole spec again. A changed,
 * new or removed ReferenceGrant has what refers into its namespace checked again.
 */
export interface ContentChange {
  readonly replaced: ReadonlyArray<{ readonly before: Located<SpecDocument>; readonly after: Located<SpecDocument> }>;
  readonly added: ReadonlyArray<Located<SpecDocument>>;
  readonly removed: ReadonlyArray<Located<SpecDocument>>;
}

function fullKey(doc: SpecDocument): string {
  return doc.kind === 'Mesh' ? 'Mesh' : `${doc.kind}/${keyOf(doc)}`;
}

/** Where `key` sits in `list` (sorted by key, keys unique), by binary search; -1 when absent. */
function indexByKey<D extends SpecDocument>(list: ReadonlyArray<Located<D>>, key: string): number {
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const k = keyOf(list[mid]!.doc);
    if (k === key) return mid;
    if (k < key) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

function addReferrer(referrers: Map<string, Set<Located<SpecDocument>>>, doc: Located<SpecDocument>): void {
  for (const key of namedServices(doc.doc)) {
    const set = referrers.get(key);
    if (set) set.add(doc);
    else referrers.set(key, new Set([doc]));
  }
}

function fullResolve(valid: readonly ValidDocument[]): { state: ResolveState; diagnostics: Diagnostic[] } {
  const { spec, diagnostics: indexDiagnostics, duplicated } = indexSpec(valid);
  const references = new Map<Located<SpecDocument>, Diagnostic[]>();
  const referrers = new Map<string, Set<Located<SpecDocument>>>();
  const diagnostics = [...indexDiagnostics];
  for (const doc of referring(spec)) {
    addReferrer(referrers, doc);
    const found = checkReferences(spec, doc);
    if (found.length === 0) continue;
    references.set(doc, found);
    for (const d of found) diagnostics.push(d);
  }
  return { state: { valid, spec, indexDiagnostics, duplicated, references, referrers }, diagnostics };
}

/** A document's list in the resolved spec, by kind (undefined for Mesh and Service, kept apart). */
function listOf(spec: ResolvedSpec, kind: SpecKind): ReadonlyArray<Located<SpecDocument>> | undefined {
  switch (kind) {
    case 'HTTPRoute':
      return spec.routes;
    case 'GRPCRoute':
      return spec.grpcRoutes;
    case 'TrafficPolicy':
      return spec.trafficPolicies;
    case 'AccessPolicy':
      return spec.accessPolicies;
    case 'TrafficTest':
      return spec.trafficTests;
    case 'ReferenceGrant':
      return spec.referenceGrants;
    default:
      return undefined;
  }
}

/**
 * `resolveSpec(valid)` for the incremental compiler: the same spec and diagnostics. When
 * `previous` is the last revision's state and only documents' content changed (see
 * ContentChange), the indexes are patched and only the references of the changed documents,
 * of documents naming a changed service, and of documents naming a service in a namespace
 * whose ReferenceGrants changed, are checked again; `change` then lists what changed. Otherwise everything is resolved afresh and `change` is undefined.
 */
export function resolveIncrementally(
  valid: readonly ValidDocument[],
  previous: ResolveState | undefined,
): { state: ResolveState; diagnostics: Diagnostic[]; change: ContentChange | undefined } {
  const change = previous ? changeOf(valid, previous) : undefined;
  if (!previous || !change) return { ...fullResolve(valid), change: undefined };

  const prev = previous.spec;
  const lists = new Map<SpecKind, Array<Located<SpecDocument>>>();
  const listFor = (kind: SpecKind) => {
    let list = lists.get(kind);
    if (!list) lists.set(kind, (list = [...listOf(prev, kind)!]));
    return list;
  };
  let serviceKeys: string[] | undefined;
  const changedServices = new Map<string, Located<ServiceDocument> | undefined>();
  const recheck = new Set<Located<SpecDocument>>();
  const forget = (doc: Located<SpecDocument>) => {
    for (const k of namedServices(doc.doc)) previous.referrers.get(k)?.delete(doc);
    recheck.delete(doc);
    previous.references.delete(doc);
  };
  const remember = (doc: Located<SpecDocument>) => {
    addReferrer(previous.referrers, doc);
    recheck.add(doc);
  };
  // Namespaces whose ReferenceGrants changed: what refers into them is checked again.
  const granting = new Set<string>();
  for (const { before, after } of change.replaced) {
    const kind = after.doc.kind;
    const key = keyOf(after.doc);
    if (kind === 'Service') {
      changedServices.set(key, after as Located<ServiceDocument>);
      continue;
    }
    const list = listFor(kind);
    list[indexByKey(list, key)] = after;
    if (kind === 'ReferenceGrant') granting.add(namespaceOf(after.doc));
    if (kind === 'TrafficTest' || kind === 'ReferenceGrant') continue;
    forget(before);
    remember(after);
  }
  for (const doc of change.removed) {
    const key = keyOf(doc.doc);
    if (doc.doc.kind === 'Service') {
      serviceKeys ??= [...prev.services.keys()];
      serviceKeys.splice(sortedIndex(serviceKeys, key), 1);
      changedServices.set(key, undefined);
      continue;
    }
    const list = listFor(doc.doc.kind);
    list.splice(indexByKey(list, key), 1);
    if (doc.doc.kind === 'ReferenceGrant') granting.add(namespaceOf(doc.doc));
    else if (doc.doc.kind !== 'TrafficTest') forget(doc);
  }
  for (const doc of change.added) {
    const key = keyOf(doc.doc);
    if (doc.doc.kind === 'Service') {
      serviceKeys ??= [...prev.services.keys()];
      serviceKeys.splice(sortedIndex(serviceKeys, key), 0, key);
      changedServices.set(key, doc as Located<ServiceDocument>);
      continue;
    }
    const list = listFor(doc.doc.kind);
    list.splice(insertionIndex(list, key), 0, doc);
    if (doc.doc.kind === 'ReferenceGrant') granting.add(namespaceOf(doc.doc));
    else if (doc.doc.kind !== 'TrafficTest') remember(doc);
  }
  let services = prev.services;
  if (changedServices.size > 0) {
    let next: Map<string, Located<ServiceDocument>>;
    if (serviceKeys) {
      next = new Map();
      for (const key of serviceKeys) next.set(key, (changedServices.has(key) ? changedServices.get(key) : prev.services.get(key))!);
    } else {
      // The same keys: a copy (which keeps their order), the changed ones replaced.
      next = new Map(prev.services);
      for (const [key, svc] of changedServices) next.set(key, svc!);
    }
    services = next;
    // Whatever names a changed, new or removed service is checked again; with the set of
    // services changed, so is every document with a reference problem (its hint names the
    // closest service).
    for (const key of changedServices.keys()) for (const doc of previous.referrers.get(key) ?? []) recheck.add(doc);
    if (serviceKeys) for (const doc of previous.references.keys()) recheck.add(doc);
  }
  if (granting.size > 0) {
    // What names a service of such a namespace, and whatever had a reference problem.
    for (const [key, svc] of services) if (granting.has(namespaceOf(svc.doc))) for (const doc of previous.referrers.get(key) ?? []) recheck.add(doc);
    for (const doc of previous.references.keys()) recheck.add(doc);
  }
  const list = <D extends SpecDocument>(kind: SpecKind, old: ReadonlyArray<Located<D>>) => (lists.get(kind) as Array<Located<D>> | undefined) ?? old;
  const spec: ResolvedSpec = {
    ...prev,
    services,
    routes: list('HTTPRoute', prev.routes),
    grpcRoutes: list('GRPCRoute', prev.grpcRoutes),
    trafficPolicies: list('TrafficPolicy', prev.trafficPolicies),
    accessPolicies: list('AccessPolicy', prev.accessPolicies),
    trafficTests: list('TrafficTest', prev.trafficTests),
    referenceGrants: list('ReferenceGrant', prev.referenceGrants),
  };
  for (const doc of recheck) {
    const found = checkReferences(spec, doc);
    if (found.length > 0) previous.references.set(doc, found);
    else previous.references.delete(doc);
  }
  const diagnostics = [...previous.indexDiagnostics];
  for (const found of previous.references.values()) for (const d of found) diagnostics.push(d);
  const state: ResolveState = { ...previous, valid, spec };
  return { state, diagnostics, change };
}

/** Where a document of key `key` goes in `list` (sorted by key): the index of the first key not below it. */
function insertionIndex(list: ReadonlyArray<Located<SpecDocument>>, key: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (keyOf(list[mid]!.doc) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Where `key` goes in the sorted `keys` (the index of the first key not below it). */
function sortedIndex(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (keys[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * How the documents changed since the last revision (see ContentChange), or undefined for a
 * structural change.
 */
function changeOf(valid: readonly ValidDocument[], previous: ResolveState): ContentChange | undefined {
  const before = previous.valid;
  // With no documents before or now, whether the spec has documents at all changed (TRL3007 says so only then).
  if (before.length === 0 || valid.length === 0) return undefined;
  const replaced: Array<{ before: Located<SpecDocument>; after: Located<SpecDocument> }> = [];
  const accept = (doc: Located<SpecDocument>) => doc.doc.kind !== 'Mesh' && !previous.duplicated.has(fullKey(doc.doc));
  // Most often the documents are where they were, a few with new content.
  if (valid.length === before.length) {
    let aligned = true;
    for (let i = 0; i < valid.length && aligned; i++) {
      const a = before[i]!;
      const b = valid[i]!;
      if (a === b) continue;
      if (fullKey(a.doc) !== fullKey(b.doc)) aligned = false;
      else if (!accept(b)) return undefined;
      else replaced.push({ before: a, after: b });
    }
    if (aligned) return { replaced, added: [], removed: [] };
    replaced.length = 0;
  }
  // Documents come file by file in path order, a file's in file order: walk both lists
  // together, and collect what differs where they part.
  const gone = new Map<string, Located<SpecDocument>>();
  const fresh: Array<Located<SpecDocument>> = [];
  const path = (doc: Located<SpecDocument>) => doc.source.file.path;
  let i = 0;
  let j = 0;
  while (i < before.length || j < valid.length) {
    const a = before[i];
    const b = valid[j];
    if (a !== undefined && a === b) {
      i++;
      j++;
      continue;
    }
    // The file (or files) where they part: every document of it, on either side.
    const at = a === undefined ? path(b!) : b === undefined ? path(a) : path(a) < path(b) ? path(a) : path(b);
    while (i < before.length && path(before[i]!) === at) {
      const doc = before[i++]!;
      if (!accept(doc)) return undefined;
      gone.set(fullKey(doc.doc), doc);
    }
    while (j < valid.length && path(valid[j]!) === at) fresh.push(valid[j++]!);
  }
  // (A file that did not change keeps its very documents, so no document is on both sides.)
  const added: Array<Located<SpecDocument>> = [];
  const seen = new Set<string>();
  for (const doc of fresh) {
    const key = fullKey(doc.doc);
    if (!accept(doc) || seen.has(key)) return undefined;
    seen.add(key);
    const was = gone.get(key);
    if (was) {
      replaced.push({ before: was, after: doc });
      gone.delete(key);
    } else {
      // A new key must not be one a kept document already has (that is a duplicate).
      if (exists(previous.spec, doc.doc)) return undefined;
      added.push(doc);
    }
  }
  return { replaced, added, removed: [...gone.values()] };
}

/** Whether the resolved spec has a document of this kind and key. */
function exists(spec: ResolvedSpec, doc: SpecDocument): boolean {
  if (doc.kind === 'Service') return spec.services.has(keyOf(doc));
  const list = listOf(spec, doc.kind);
  return list !== undefined && indexByKey(list, keyOf(doc)) >= 0;
}
