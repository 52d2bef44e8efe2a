/**
 * Route compilation: HTTPRoute and GRPCRoute rules → one compiled rule per match, with
 * defaults resolved, in Gateway API precedence order. Pure helpers used by the check stage.
 *
 * What becomes part of a resource body is built with its keys in sorted order: such a body
 * is canonical JSON as it is, and emit hashes it without a sorted copy (config/canonical.ts).
 * Another order is still correct, only slower.
 */
import type { CompiledBackend, CompiledFilter, CompiledHeaderModifier, CompiledMatch, CompiledPathModifier, CompiledRetry, CompiledRule, PortProtocol } from '../config/types.ts';
import type {
  GRPCBackendRef,
  GRPCMethodMatch,
  GRPCRouteDocument,
  GRPCRouteMatch,
  GRPCRouteRule,
  HTTPHeaderFilter,
  HTTPBackendRef,
  HTTPHeaderMatch,
  HTTPPathModifier,
  HTTPRouteDocument,
  HTTPRouteFilter,
  HTTPRouteMatch,
  HTTPRouteRule,
  RouteDocument,
  ServiceDocument,
  ServicePort,
} from '../spec/types.ts';
import { prefixTest } from '../config/router.ts';
import { GRPC_CONTENT_TYPE_PATTERN, GRPC_STATUS_CODES, GRPC_UNAVAILABLE } from '../spec/grpc.ts';
import { BUILTIN, ms, type MeshSettings } from './defaults.ts';
import { keyOf, namespaceOf, refKey, type Located } from './resolve.ts';

/** Where a compiled rule came from, for diagnostics. */
export interface RuleOrigin {
  readonly route: Located<RouteDocument>;
  readonly ruleIndex: number;
  /** Index into the rule's `matches`, or -1 when the rule has none (it matches everything). */
  readonly matchIndex: number;
  readonly parentIndex: number;
}

export interface PlannedRule {
  readonly rule: CompiledRule;
  /** Undefined for implicit rules of services without routes. */
  readonly origin?: RuleOrigin;
  /** The GRPCRoute match a rule was compiled from (its precedence and shadowing read it); absent for HTTPRoute and implicit rules. */
  readonly grpc?: GrpcMatchFacts;
}

/** What GRPCRoute precedence compares, kept beside the compiled path match it became. */
export interface GrpcMatchFacts {
  readonly type: 'Exact' | 'RegularExpression';
  /** Null: any service (any method). */
  readonly service: string | null;
  readonly method: string | null;
  /** User-written header matches (the compiled match also holds the gRPC content-type condition). */
  readonly headers: number;
}

/** What a Service port speaks, with Kubernetes' `kubernetes.io/h2c` read as `http2`. */
export function portProtocol(port: Pick<ServicePort, 'appProtocol'>): PortProtocol {
  const p = port.appProtocol ?? 'http';
  return p === 'kubernetes.io/h2c' ? 'http2' : p;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compileHeaders(f: HTTPHeaderFilter | undefined): CompiledHeaderModifier {
  const lower = (hs: ReadonlyArray<{ name: string; value: string }> | undefined) => (hs ?? []).map((h) => ({ name: h.name.toLowerCase(), value: h.value }));
  return { add: lower(f?.add), remove: (f?.remove ?? []).map((n) => n.toLowerCase()), set: lower(f?.set) };
}

function compilePathModifier(p: HTTPPathModifier | undefined): CompiledPathModifier | null {
  if (!p) return null;
  return { type: p.type, value: (p.type === 'ReplaceFullPath' ? p.replaceFullPath : p.replacePrefixMatch) ?? '/' };
}

/** Compiles one filter of a route in namespace `namespace` (a mirror's backendRef resolves there). */
export function compileFilter(f: HTTPRouteFilter, namespace: string): CompiledFilter {
  switch (f.type) {
    case 'RequestHeaderModifier':
      return { headers: compileHeaders(f.requestHeaderModifier), type: f.type };
    case 'ResponseHeaderModifier':
      return { headers: compileHeaders(f.responseHeaderModifier), type: f.type };
    case 'RequestMirror': {
      const m = f.requestMirror!;
      const [numerator, denominator] = m.fraction ? [m.fraction.numerator, m.fraction.denominator ?? 100] : [m.percent ?? 100, 100];
      return { backend: { port: m.backendRef.port ?? null, service: refKey(namespace, m.backendRef) }, denominator, numerator, type: f.type };
    }
    case 'RequestRedirect': {
      const r = f.requestRedirect ?? {};
      return { hostname: r.hostname ?? null, path: compilePathModifier(r.path), port: r.port ?? null, scheme: r.scheme ?? null, statusCode: r.statusCode ?? 302, type: f.type };
    }
    case 'URLRewrite': {
      const u = f.urlRewrite ?? {};
      return { hostname: u.hostname ?? null, path: compilePathModifier(u.path), type: f.type };
    }
  }
}

const byKey = (a: { name: string; type: string; value: string }, b: { name: string; type: string; value: string }) => cmp(a.name, b.name) || cmp(a.type, b.type) || cmp(a.value, b.value);

function compileHeaderMatches(headers: readonly HTTPHeaderMatch[] | undefined): CompiledMatch['headers'] {
  return (headers ?? []).map((h) => ({ name: h.name.toLowerCase(), type: h.type ?? 'Exact', value: h.value })).sort(byKey);
}

function compileMatch(m: HTTPRouteMatch | undefined, port: number | null): CompiledMatch {
  return {
    headers: compileHeaderMatches(m?.headers),
    method: m?.method ?? null,
    path: { type: m?.path?.type ?? 'PathPrefix', value: m?.path?.value ?? '/' },
    port,
    queryParams: (m?.queryParams ?? []).map((q) => ({ name: q.name, type: q.type ?? 'Exact', value: q.value })).sort(byKey),
  };
}

/** A literal for a regular expression: every character the ECMAScript syntax gives meaning to, escaped. */
function escapeRegex(literal: string): string {
  return literal.replace(/[\\^$.*+?()[\]{}|\/-]/g, '\\$&');
}

/** One path segment of a gRPC path that matches any name: gRPC names never hold a `/`. */
const ANY_SEGMENT = '[^/]+';

/**
 * The path condition a GRPCRoute method match becomes. A gRPC call is sent on the path
 * `/<service>/<method>` (always two segments), so:
 * - service and method, `Exact`: path `Exact` `/S/M`;
 * - one of them `Exact`: a regular expression with the given part escaped and the other
 *   part any one segment (`/pkg\.Svc/[^/]+`, `/[^/]+/Get`). A `PathPrefix` `/S` would
 *   also take `/S` and `/S/a/b`, which are no gRPC calls, so it is not used;
 * - `RegularExpression`: each given pattern wrapped in its own group (`/(?:S)/(?:M)`), the
 *   part left out any one segment. Each pattern is checked on its own first (balanced
 *   groups), so the groups keep it in its segment's place; since the router anchors the
 *   whole pattern, each part must match its whole segment. A part's pattern may match a
 *   `/` (`.*`), which only a path of more than two segments, never a gRPC call, could use.
 * - no method match: any two segments, `/[^/]+/[^/]+`.
 */
export function grpcPathMatch(method: GRPCMethodMatch | undefined): CompiledMatch['path'] {
  if (!method || (method.service === undefined && method.method === undefined)) return { type: 'RegularExpression', value: `/${ANY_SEGMENT}/${ANY_SEGMENT}` };
  const regex = (method.type ?? 'Exact') === 'RegularExpression';
  if (!regex && method.service !== undefined && method.method !== undefined) return { type: 'Exact', value: `/${method.service}/${method.method}` };
  const part = (value: string | undefined) => (value === undefined ? ANY_SEGMENT : regex ? `(?:${value})` : escapeRegex(value));
  return { type: 'RegularExpression', value: `/${part(method.service)}/${part(method.method)}` };
}

/**
 * The compiled match of one GRPCRoute match: the path condition above, no HTTP method
 * (gRPC always POSTs, and Gateway API does not match on it), the user's header matches,
 * and a `content-type` condition that only gRPC requests meet, so a GRPCRoute rule never
 * takes a plain HTTP request to the same Service (say `GET /a/b`).
 */
export function compileGrpcMatch(m: GRPCRouteMatch | undefined, port: number | null): CompiledMatch {
  const headers = [...compileHeaderMatches(m?.headers), { name: 'content-type', type: 'RegularExpression' as const, value: GRPC_CONTENT_TYPE_PATTERN }].sort(byKey);
  return { headers, method: null, path: grpcPathMatch(m?.method), port, queryParams: [] };
}

function grpcFacts(m: GRPCRouteMatch | undefined): GrpcMatchFacts {
  return { type: m?.method?.type ?? 'Exact', service: m?.method?.service ?? null, method: m?.method?.method ?? null, headers: m?.headers?.length ?? 0 };
}

/** Timeouts and retry of a rule after layering rule → Mesh defaults → built-in. */
export function ruleTimeouts(rule: Pick<HTTPRouteRule, 'timeouts' | 'retry'>, mesh: MeshSettings): { timeouts: CompiledRule['timeouts']; retry: CompiledRetry } {
  return {
    timeouts: {
      backendRequestMs: ms(rule.timeouts?.backendRequest ?? mesh.timeouts.backendRequest ?? '0s'),
      requestMs: ms(rule.timeouts?.request ?? mesh.timeouts.request ?? BUILTIN.requestTimeout),
    },
    retry: {
      attempts: rule.retry?.attempts ?? mesh.retry.attempts ?? BUILTIN.retryAttempts,
      backoffMs: ms(rule.retry?.backoff ?? mesh.retry.backoff ?? BUILTIN.retryBackoff),
      codes: [...(rule.retry?.codes ?? mesh.retry.codes ?? [])].sort((a, b) => a - b),
    },
  };
}

/**
 * Timeouts and retry of a GRPCRoute rule: timeouts and `attempts`/`backoff` layer as for
 * HTTPRoute rules; the retried gRPC statuses are the rule's `codes` (by number, sorted) or,
 * when it names none, `unavailable` (whenever retries are on). HTTP `codes` stay empty: a
 * gRPC failure is a status in the trailers, not an HTTP status.
 */
export function grpcRuleTimeouts(rule: Pick<GRPCRouteRule, 'timeouts' | 'retry'>, mesh: MeshSettings): { timeouts: CompiledRule['timeouts']; retry: CompiledRetry } {
  const { timeouts, retry } = ruleTimeouts({ timeouts: rule.timeouts, retry: { ...(rule.retry?.attempts !== undefined ? { attempts: rule.retry.attempts } : {}), ...(rule.retry?.backoff !== undefined ? { backoff: rule.retry.backoff } : {}) } }, mesh);
  const named = rule.retry?.codes;
  const grpcCodes = named !== undefined ? named.map((n) => GRPC_STATUS_CODES[n]).sort((a, b) => a - b) : retry.attempts > 0 ? [GRPC_UNAVAILABLE] : [];
  return { timeouts, retry: { attempts: retry.attempts, backoffMs: retry.backoffMs, codes: [], grpcCodes } };
}

/** The port a backend is called on: as written, else the backend's only port, else the port the caller named (null). */
function backendPort(ref: { port?: number }, backend: ServiceDocument | undefined): number | null {
  if (ref.port !== undefined) return ref.port;
  if (backend && backend.spec.ports.length === 1) return backend.spec.ports[0]!.port;
  return null;
}

/**
 * Compiles one HTTPRoute rule as attached to one parent port: one compiled rule per match.
 * `services` (by service key) resolves backend ports; unknown backends were reported by
 * resolve and compile with a null port. Compiled rules name the route by its key
 * (`name`, or `namespace/name` outside `default`) and backends by service key.
 */
export function compileRule(
  located: Located<RouteDocument>,
  ruleIndex: number,
  parentIndex: number,
  port: number | null,
  mesh: MeshSettings,
  services: ReadonlyMap<string, { doc: ServiceDocument }>,
): PlannedRule[] {
  if (located.doc.kind === 'GRPCRoute') return compileGrpcRule(located as Located<GRPCRouteDocument>, ruleIndex, parentIndex, port, mesh, services);
  const { routeKey, rule, filters, backends } = ruleParts(located as Located<HTTPRouteDocument>, ruleIndex, services);
  const { timeouts, retry } = ruleTimeouts(rule, mesh);
  const matches = rule.matches && rule.matches.length > 0 ? rule.matches : [undefined];
  return matches.map((m, matchIndex) => ({
    rule: {
      backends,
      filters,
      id: `${routeKey}/${ruleIndex}/${matchIndex}`,
      match: compileMatch(m, port),
      retry,
      route: routeKey,
      ruleName: rule.name ?? null,
      timeouts,
    },
    origin: { route: located, ruleIndex, matchIndex: rule.matches && rule.matches.length > 0 ? matchIndex : -1, parentIndex },
  }));
}

/** What HTTPRoute and GRPCRoute rules compile alike: the route's key, the rule, its filters and its backends. */
function ruleParts<D extends HTTPRouteDocument | GRPCRouteDocument>(located: Located<D>, ruleIndex: number, services: ReadonlyMap<string, { doc: ServiceDocument }>) {
  const route = located.doc;
  const namespace = namespaceOf(route);
  const rule = route.spec.rules![ruleIndex]! as NonNullable<D['spec']['rules']>[number];
  return {
    routeKey: keyOf(route),
    rule,
    filters: (rule.filters ?? []).map((f) => compileFilter(f, namespace)),
    backends: compileBackends(rule.backendRefs, namespace, services),
  };
}

/** Backends of a rule of a route in `namespace`, ports resolved. */
function compileBackends(backendRefs: ReadonlyArray<HTTPBackendRef | GRPCBackendRef> | undefined, namespace: string, services: ReadonlyMap<string, { doc: ServiceDocument }>): CompiledBackend[] {
  return (backendRefs ?? []).map((b) => ({
    filters: (b.filters ?? []).map((f) => compileFilter(f, namespace)),
    port: backendPort(b, services.get(refKey(namespace, b))?.doc),
    service: refKey(namespace, b),
    weight: b.weight ?? 1,
  }));
}

/**
 * Compiles one GRPCRoute rule as attached to one parent port: one compiled rule per match
 * (kind `GRPCRoute`), its matches turned into gRPC path matches (see compileGrpcMatch).
 */
export function compileGrpcRule(
  located: Located<GRPCRouteDocument>,
  ruleIndex: number,
  parentIndex: number,
  port: number | null,
  mesh: MeshSettings,
  services: ReadonlyMap<string, { doc: ServiceDocument }>,
): PlannedRule[] {
  const { routeKey, rule, filters, backends } = ruleParts(located, ruleIndex, services);
  const { timeouts, retry } = grpcRuleTimeouts(rule, mesh);
  const written = rule.matches && rule.matches.length > 0;
  const matches = written ? rule.matches! : [undefined];
  return matches.map((m, matchIndex) => ({
    rule: {
      backends,
      filters,
      id: `${routeKey}/${ruleIndex}/${matchIndex}`,
      kind: 'GRPCRoute' as const,
      match: compileGrpcMatch(m, port),
      retry,
      route: routeKey,
      ruleName: rule.name ?? null,
      timeouts,
    },
    origin: { route: located, ruleIndex, matchIndex: written ? matchIndex : -1, parentIndex },
    grpc: grpcFacts(m),
  }));
}

/**
 * The rule a port without routes gets: all traffic to the service itself, with mesh
 * defaults. On a `grpc` port (`grpc`: the port is gRPC, or with `port` null every port
 * is) it also retries gRPC `unavailable` whenever retries are on, as a GRPCRoute rule
 * that names no codes does.
 */
export function implicitRule(service: ServiceDocument, port: number | null, mesh: MeshSettings, grpc = false): PlannedRule {
  const key = keyOf(service);
  const { timeouts, retry: httpRetry } = ruleTimeouts({}, mesh);
  const retry: CompiledRetry = grpc ? { ...httpRetry, grpcCodes: httpRetry.attempts > 0 ? [GRPC_UNAVAILABLE] : [] } : httpRetry;
  return {
    rule: {
      backends: [{ filters: [], port: port ?? backendPort({}, service), service: key, weight: 1 }],
      filters: [],
      id: port === null ? 'default' : `default/${port}`,
      match: { headers: [], method: null, path: { type: 'PathPrefix', value: '/' }, port, queryParams: [] },
      retry,
      route: null,
      ruleName: null,
      timeouts,
    },
  };
}

const PATH_RANK = { Exact: 0, RegularExpression: 1, PathPrefix: 2 } as const;

/** `namespace/name` of a route key, as Gateway API compares routes on a tie (`default/…` for bare keys). */
function fullRouteName(key: string | null): string {
  return key === null ? '' : key.includes('/') ? key : `default/${key}`;
}

/**
 * GRPCRoute precedence (Gateway API GRPCRouteRule): the most characters in a matching
 * service, then in a matching method, then the most header matches (hostnames, first in
 * Gateway API's list, are ignored in a mesh). A part left out counts 0 characters.
 */
function compareGrpc(a: GrpcMatchFacts, b: GrpcMatchFacts): number {
  return (b.service?.length ?? 0) - (a.service?.length ?? 0) || (b.method?.length ?? 0) - (a.method?.length ?? 0) || b.headers - a.headers;
}

/**
 * Gateway API precedence. GRPCRoute rules come first (they match only gRPC requests, and
 * Gateway API never merges the two kinds), ordered by compareGrpc; HTTPRoute rules by exact
 * path, then regular-expression path (Trellis: longer pattern first), then longest prefix,
 * then a method match, then most header matches, then most query matches. For both kinds
 * Trellis then puts port-specific rules before port-agnostic ones; remaining ties by route
 * `namespace/name` (Gateway API's order after creation time, which git does not have), then
 * rule order, then match order. Implicit rules come last.
 */
export function comparePrecedence(a: PlannedRule, b: PlannedRule): number {
  if (!a.origin !== !b.origin) return a.origin ? -1 : 1;
  if (!a.grpc !== !b.grpc) return a.grpc ? -1 : 1;
  const ma = a.rule.match;
  const mb = b.rule.match;
  return (
    (a.grpc && b.grpc ? compareGrpc(a.grpc, b.grpc) : 0) ||
    PATH_RANK[ma.path.type] - PATH_RANK[mb.path.type] ||
    (ma.path.type === 'Exact' ? 0 : mb.path.value.length - ma.path.value.length) ||
    (ma.method === null ? 1 : 0) - (mb.method === null ? 1 : 0) ||
    mb.headers.length - ma.headers.length ||
    mb.queryParams.length - ma.queryParams.length ||
    (ma.port === null ? 1 : 0) - (mb.port === null ? 1 : 0) ||
    cmp(fullRouteName(a.rule.route), fullRouteName(b.rule.route)) ||
    (a.origin?.ruleIndex ?? 0) - (b.origin?.ruleIndex ?? 0) ||
    (a.origin?.matchIndex ?? 0) - (b.origin?.matchIndex ?? 0) ||
    (a.origin?.parentIndex ?? 0) - (b.origin?.parentIndex ?? 0) ||
    cmp(a.rule.id, b.rule.id)
  );
}

/**
 * Whether a PathPrefix `prefix` matches every path that `path` (an Exact path or a PathPrefix)
 * matches. Prefixes match whole segments, so if `prefix` matches `path` itself it matches
 * everything below it too.
 */
function prefixCovers(prefix: string, path: string): boolean {
  return prefixTest(prefix)(path);
}

/**
 * Whether every request that matches `b` also matches `a` — so if `a` comes first, `b`
 * can never be chosen. Conservative: false whenever it cannot be sure (regexes other
 * than identical ones, say).
 */
export function subsumes(a: CompiledMatch, b: CompiledMatch): boolean {
  if (a.port !== null && a.port !== b.port) return false;
  if (a.method !== null && a.method !== b.method) return false;
  const has = (list: CompiledMatch['headers'], m: CompiledMatch['headers'][number]) => list.some((x) => x.name === m.name && x.type === m.type && x.value === m.value);
  if (!a.headers.every((h) => has(b.headers, h))) return false;
  if (!a.queryParams.every((q) => has(b.queryParams, q))) return false;
  const pa = a.path;
  const pb = b.path;
  if (pa.type === 'PathPrefix') return pb.type === 'RegularExpression' ? pa.value === '/' : prefixCovers(pa.value, pb.value);
  return pa.type === pb.type && pa.value === pb.value;
}

/**
 * `subsumes` for planned rules: two GRPCRoute rules are compared on their gRPC match (a
 * service or method left out covers every one; patterns only when identical), since their
 * compiled regular expressions are opaque to `subsumes`; anything else on the compiled match.
 */
export function plannedSubsumes(a: PlannedRule, b: PlannedRule): boolean {
  if (!a.grpc || !b.grpc) return subsumes(a.rule.match, b.rule.match);
  const ma = a.rule.match;
  const mb = b.rule.match;
  if (ma.port !== null && ma.port !== mb.port) return false;
  const has = (list: CompiledMatch['headers'], m: CompiledMatch['headers'][number]) => list.some((x) => x.name === m.name && x.type === m.type && x.value === m.value);
  if (!ma.headers.every((h) => has(mb.headers, h))) return false;
  const part = (x: string | null, y: string | null) => x === null || (y !== null && x === y && a.grpc!.type === b.grpc!.type);
  return part(a.grpc.service, b.grpc.service) && part(a.grpc.method, b.grpc.method);
}
