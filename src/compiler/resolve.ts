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

export function resolveSpec(valid: readonly ValidDocument[]): { spec: ResolvedSpec; diagnostics: Diagnostic[] } {
  const diagnostics: Diagnostic[] = [];
  const firstByKey = new Map<string, Located<SpecDocument>>();
  const kept: Record<SpecKind, Array<Located<SpecDocument>>> = { Mesh: [], Service: [], HTTPRoute: [], TrafficPolicy: [], AccessPolicy: [], TrafficTest: [], ReferenceGrant: [], GRPCRoute: [] };

  // Duplicates: the first in file order wins, so the message points at the later copy.
  for (const v of [...valid].sort(sourceOrder)) {
    const located: Located<SpecDocument> = { doc: v.doc, source: v.source };
    const key = v.doc.kind === 'Mesh' ? 'Mesh' : `${v.doc.kind}/${keyOf(v.doc)}`;
    const first = firstByKey.get(key);
    if (first) {
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

  for (const route of [...spec.routes, ...spec.grpcRoutes] as Array<Located<RouteDocument>>) {
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

  for (const policy of [...spec.trafficPolicies, ...spec.accessPolicies]) {
    policy.doc.spec.targetRefs.forEach((t, i) => {
      const key = refKey(namespaceOf(policy.doc), t);
      if (!services.has(key)) {
        diagnostics.push(diagnostic('TRL3004', `${policy.doc.kind} targets unknown service "${key}"`, at(policy, ['spec', 'targetRefs', i, 'name']), { hint: unknownService(key) }));
      }
    });
  }

  for (const policy of spec.accessPolicies) {
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

  return { spec, diagnostics };
}
