/**
 * Route compilation: HTTPRoute rules → one compiled rule per match, with defaults resolved,
 * in Gateway API precedence order. Pure helpers used by the check stage.
 */
import type { CompiledBackend, CompiledFilter, CompiledHeaderModifier, CompiledMatch, CompiledPathModifier, CompiledRetry, CompiledRule } from '../config/types.ts';
import type { HTTPHeaderFilter, HTTPPathModifier, HTTPRouteDocument, HTTPRouteFilter, HTTPRouteMatch, HTTPRouteRule, ServiceDocument } from '../spec/types.ts';
import { prefixTest } from '../config/router.ts';
import { BUILTIN, ms, type MeshSettings } from './defaults.ts';
import { keyOf, namespaceOf, refKey, type Located } from './resolve.ts';

/** Where a compiled rule came from, for diagnostics. */
export interface RuleOrigin {
  readonly route: Located<HTTPRouteDocument>;
  readonly ruleIndex: number;
  /** Index into the rule's `matches`, or -1 when the rule has none (it matches everything). */
  readonly matchIndex: number;
  readonly parentIndex: number;
}

export interface PlannedRule {
  readonly rule: CompiledRule;
  /** Undefined for implicit rules of services without routes. */
  readonly origin?: RuleOrigin;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compileHeaders(f: HTTPHeaderFilter | undefined): CompiledHeaderModifier {
  const lower = (hs: ReadonlyArray<{ name: string; value: string }> | undefined) => (hs ?? []).map((h) => ({ name: h.name.toLowerCase(), value: h.value }));
  return { set: lower(f?.set), add: lower(f?.add), remove: (f?.remove ?? []).map((n) => n.toLowerCase()) };
}

function compilePathModifier(p: HTTPPathModifier | undefined): CompiledPathModifier | null {
  if (!p) return null;
  return { type: p.type, value: (p.type === 'ReplaceFullPath' ? p.replaceFullPath : p.replacePrefixMatch) ?? '/' };
}

/** Compiles one filter of a route in namespace `namespace` (a mirror's backendRef resolves there). */
export function compileFilter(f: HTTPRouteFilter, namespace: string): CompiledFilter {
  switch (f.type) {
    case 'RequestHeaderModifier':
      return { type: f.type, headers: compileHeaders(f.requestHeaderModifier) };
    case 'ResponseHeaderModifier':
      return { type: f.type, headers: compileHeaders(f.responseHeaderModifier) };
    case 'RequestMirror': {
      const m = f.requestMirror!;
      const [numerator, denominator] = m.fraction ? [m.fraction.numerator, m.fraction.denominator ?? 100] : [m.percent ?? 100, 100];
      return { type: f.type, backend: { service: refKey(namespace, m.backendRef), port: m.backendRef.port ?? null }, numerator, denominator };
    }
    case 'RequestRedirect': {
      const r = f.requestRedirect ?? {};
      return { type: f.type, scheme: r.scheme ?? null, hostname: r.hostname ?? null, path: compilePathModifier(r.path), port: r.port ?? null, statusCode: r.statusCode ?? 302 };
    }
    case 'URLRewrite': {
      const u = f.urlRewrite ?? {};
      return { type: f.type, hostname: u.hostname ?? null, path: compilePathModifier(u.path) };
    }
  }
}

function compileMatch(m: HTTPRouteMatch | undefined, port: number | null): CompiledMatch {
  const byKey = (a: { name: string; type: string; value: string }, b: { name: string; type: string; value: string }) =>
    cmp(a.name, b.name) || cmp(a.type, b.type) || cmp(a.value, b.value);
  return {
    port,
    path: { type: m?.path?.type ?? 'PathPrefix', value: m?.path?.value ?? '/' },
    method: m?.method ?? null,
    headers: (m?.headers ?? []).map((h) => ({ type: h.type ?? 'Exact', name: h.name.toLowerCase(), value: h.value })).sort(byKey),
    queryParams: (m?.queryParams ?? []).map((q) => ({ type: q.type ?? 'Exact', name: q.name, value: q.value })).sort(byKey),
  };
}

/** Timeouts and retry of a rule after layering rule → Mesh defaults → built-in. */
export function ruleTimeouts(rule: Pick<HTTPRouteRule, 'timeouts' | 'retry'>, mesh: MeshSettings): { timeouts: CompiledRule['timeouts']; retry: CompiledRetry } {
  return {
    timeouts: {
      requestMs: ms(rule.timeouts?.request ?? mesh.timeouts.request ?? BUILTIN.requestTimeout),
      backendRequestMs: ms(rule.timeouts?.backendRequest ?? mesh.timeouts.backendRequest ?? '0s'),
    },
    retry: {
      attempts: rule.retry?.attempts ?? mesh.retry.attempts ?? BUILTIN.retryAttempts,
      codes: [...(rule.retry?.codes ?? mesh.retry.codes ?? [])].sort((a, b) => a - b),
      backoffMs: ms(rule.retry?.backoff ?? mesh.retry.backoff ?? BUILTIN.retryBackoff),
    },
  };
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
  located: Located<HTTPRouteDocument>,
  ruleIndex: number,
  parentIndex: number,
  port: number | null,
  mesh: MeshSettings,
  services: ReadonlyMap<string, { doc: ServiceDocument }>,
): PlannedRule[] {
  const route = located.doc;
  const namespace = namespaceOf(route);
  const routeKey = keyOf(route);
  const rule = route.spec.rules![ruleIndex]!;
  const filters = (rule.filters ?? []).map((f) => compileFilter(f, namespace));
  const backends: CompiledBackend[] = (rule.backendRefs ?? []).map((b) => ({
    service: refKey(namespace, b),
    port: backendPort(b, services.get(refKey(namespace, b))?.doc),
    weight: b.weight ?? 1,
    filters: (b.filters ?? []).map((f) => compileFilter(f, namespace)),
  }));
  const { timeouts, retry } = ruleTimeouts(rule, mesh);
  const matches = rule.matches && rule.matches.length > 0 ? rule.matches : [undefined];
  return matches.map((m, matchIndex) => ({
    rule: {
      id: `${routeKey}/${ruleIndex}/${matchIndex}`,
      route: routeKey,
      ruleName: rule.name ?? null,
      match: compileMatch(m, port),
      filters,
      backends,
      timeouts,
      retry,
    },
    origin: { route: located, ruleIndex, matchIndex: rule.matches && rule.matches.length > 0 ? matchIndex : -1, parentIndex },
  }));
}

/** The rule a port without routes gets: all traffic to the service itself, with mesh defaults. */
export function implicitRule(service: ServiceDocument, port: number | null, mesh: MeshSettings): PlannedRule {
  const key = keyOf(service);
  const { timeouts, retry } = ruleTimeouts({}, mesh);
  return {
    rule: {
      id: port === null ? 'default' : `default/${port}`,
      route: null,
      ruleName: null,
      match: { port, path: { type: 'PathPrefix', value: '/' }, method: null, headers: [], queryParams: [] },
      filters: [],
      backends: [{ service: key, port: port ?? backendPort({}, service), weight: 1, filters: [] }],
      timeouts,
      retry,
    },
  };
}

const PATH_RANK = { Exact: 0, RegularExpression: 1, PathPrefix: 2 } as const;

/** `namespace/name` of a route key, as Gateway API compares routes on a tie (`default/…` for bare keys). */
function fullRouteName(key: string | null): string {
  return key === null ? '' : key.includes('/') ? key : `default/${key}`;
}

/**
 * Gateway API precedence: exact path, then regular-expression path (Trellis: longer
 * pattern first), then longest prefix, then a method match, then most header matches,
 * then most query matches; Trellis then puts port-specific rules before port-agnostic
 * ones; remaining ties by route `namespace/name` (Gateway API's order after creation time,
 * which git does not have), then rule order, then match order. Implicit rules come last.
 */
export function comparePrecedence(a: PlannedRule, b: PlannedRule): number {
  if (!a.origin !== !b.origin) return a.origin ? -1 : 1;
  const ma = a.rule.match;
  const mb = b.rule.match;
  return (
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
