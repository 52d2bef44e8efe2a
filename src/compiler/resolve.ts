/**
 * Stage 3: resolve. Indexes the valid documents by kind and name, reports duplicates,
 * and checks that every reference (route parents and backends, policy targets, access
 * callers, ports) names something that exists. Pure.
 */
import { diagnostic, type Diagnostic } from '../diagnostics/diagnostic.ts';
import type {
  AccessPolicyDocument,
  BackendObjectReference,
  HTTPRouteDocument,
  HTTPRouteFilter,
  MeshDocument,
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

/** The spec as an index: one entry per name, documents sorted by name. */
export interface ResolvedSpec {
  readonly mesh: Located<MeshDocument> | undefined;
  readonly services: ReadonlyMap<string, Located<ServiceDocument>>;
  readonly routes: ReadonlyArray<Located<HTTPRouteDocument>>;
  readonly trafficPolicies: ReadonlyArray<Located<TrafficPolicyDocument>>;
  readonly accessPolicies: ReadonlyArray<Located<AccessPolicyDocument>>;
  readonly trafficTests: ReadonlyArray<Located<TrafficTestDocument>>;
}

/** Span of a path inside a located document. */
export function at(located: { source: ParsedDocument }, path: DocPath, key = false) {
  return locate(located.source, path, key);
}

function byName<D extends SpecDocument>(a: Located<D>, b: Located<D>): number {
  return a.doc.metadata.name < b.doc.metadata.name ? -1 : a.doc.metadata.name > b.doc.metadata.name ? 1 : 0;
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
  const kept: Record<SpecKind, Array<Located<SpecDocument>>> = { Mesh: [], Service: [], HTTPRoute: [], TrafficPolicy: [], AccessPolicy: [], TrafficTest: [] };

  // Duplicates: the first in file order wins, so the message points at the later copy.
  for (const v of [...valid].sort(sourceOrder)) {
    const located: Located<SpecDocument> = { doc: v.doc, source: v.source };
    const key = v.doc.kind === 'Mesh' ? 'Mesh' : `${v.doc.kind}/${v.doc.metadata.name}`;
    const first = firstByKey.get(key);
    if (first) {
      const mesh = v.doc.kind === 'Mesh';
      diagnostics.push(
        diagnostic(
          mesh ? 'TRL3006' : 'TRL3001',
          mesh ? 'a spec may hold only one Mesh document' : `${v.doc.kind} "${v.doc.metadata.name}" is defined twice`,
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
  for (const s of (kept.Service as Array<Located<ServiceDocument>>).sort(byName)) services.set(s.doc.metadata.name, s);
  const spec: ResolvedSpec = {
    mesh: kept.Mesh[0] as Located<MeshDocument> | undefined,
    services,
    routes: (kept.HTTPRoute as Array<Located<HTTPRouteDocument>>).sort(byName),
    trafficPolicies: (kept.TrafficPolicy as Array<Located<TrafficPolicyDocument>>).sort(byName),
    accessPolicies: (kept.AccessPolicy as Array<Located<AccessPolicyDocument>>).sort(byName),
    trafficTests: (kept.TrafficTest as Array<Located<TrafficTestDocument>>).sort(byName),
  };

  if (!spec.mesh && valid.length > 0) {
    diagnostics.push(
      diagnostic('TRL3007', 'the spec has no Mesh document; built-in defaults apply (mTLS strict, access all-authenticated, trust domain trellis.local)', undefined, {
        hint: 'add a mesh.yaml with kind: Mesh to make these choices explicit',
      }),
    );
  }

  const unknownService = (name: string) => {
    const guess = closest(name, services.keys());
    return guess ? `did you mean "${guess}"?` : 'define it with kind: Service';
  };

  const checkBackend = (route: Located<HTTPRouteDocument>, ref: BackendObjectReference, path: DocPath, what: string) => {
    const target = services.get(ref.name);
    if (!target) {
      diagnostics.push(diagnostic('TRL3003', `${what} names unknown service "${ref.name}"`, at(route, [...path, 'name']), { hint: unknownService(ref.name) }));
    } else if (ref.port !== undefined && !findPort(target.doc, { port: ref.port })) {
      diagnostics.push(
        diagnostic('TRL3008', `service "${ref.name}" has no port ${ref.port}`, at(route, [...path, 'port']), {
          hint: `its ports: ${target.doc.spec.ports.map((p) => p.port).join(', ')}`,
        }),
      );
    }
  };
  const checkFilters = (route: Located<HTTPRouteDocument>, filters: readonly HTTPRouteFilter[] | undefined, path: DocPath) => {
    filters?.forEach((f, i) => {
      if (f.type === 'RequestMirror' && f.requestMirror) checkBackend(route, f.requestMirror.backendRef, [...path, i, 'requestMirror', 'backendRef'], 'mirror backendRef');
    });
  };

  for (const route of spec.routes) {
    const parents = route.doc.spec.parentRefs ?? [];
    if (parents.length === 0) {
      diagnostics.push(
        diagnostic('TRL3002', `HTTPRoute "${route.doc.metadata.name}" names no parent Service, so it applies to no traffic`, at(route, ['spec']), {
          hint: 'add parentRefs: [{ kind: Service, name: <service> }]',
        }),
      );
    }
    parents.forEach((p, i) => {
      const target = services.get(p.name);
      if (!target) {
        diagnostics.push(diagnostic('TRL3002', `route is attached to unknown service "${p.name}"`, at(route, ['spec', 'parentRefs', i, 'name']), { hint: unknownService(p.name) }));
      } else if ((p.port !== undefined || p.sectionName !== undefined) && !findPort(target.doc, p)) {
        const field = p.sectionName !== undefined ? 'sectionName' : 'port';
        const what = p.sectionName !== undefined ? `a port named "${p.sectionName}"${p.port !== undefined ? ` with number ${p.port}` : ''}` : `port ${p.port}`;
        diagnostics.push(
          diagnostic('TRL3008', `service "${p.name}" has no ${what}`, at(route, ['spec', 'parentRefs', i, field]), {
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
      if (!services.has(t.name)) {
        diagnostics.push(diagnostic('TRL3004', `${policy.doc.kind} targets unknown service "${t.name}"`, at(policy, ['spec', 'targetRefs', i, 'name']), { hint: unknownService(t.name) }));
      }
    });
  }

  for (const policy of spec.accessPolicies) {
    policy.doc.spec.rules.forEach((rule, r) => {
      rule.from.forEach((src, s) => {
        if (src.service === undefined) return;
        const caller = services.get(src.service);
        const path = ['spec', 'rules', r, 'from', s, 'service'];
        if (!caller) {
          diagnostics.push(diagnostic('TRL3005', `access rule admits unknown service "${src.service}"`, at(policy, path), { hint: unknownService(src.service) }));
        } else if (caller.doc.spec.sidecar === false) {
          diagnostics.push(
            diagnostic('TRL3005', `service "${src.service}" runs no sidecar (sidecar: false), so it has no identity and this rule can never admit it`, at(policy, path), {
              hint: 'mesh the caller, or reach this service through a meshed one',
            }),
          );
        }
      });
    });
  }

  return { spec, diagnostics };
}
