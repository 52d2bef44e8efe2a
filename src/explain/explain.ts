/**
 * `trellis explain`: one request traced through the compiled mesh, each decision with the
 * spec line that caused it. Routing uses the sidecar's own router (RouteTable.trace) and
 * access the shared decision (config/access.ts), so an explanation cannot drift from what a
 * sidecar does.
 */
import { decideAccess, decideConnection } from '../config/access.ts';
import { normalizePath } from '../config/normalize-path.ts';
import type { ClusterBody, CompiledFilter, InboundBody, PortProtocol, RouteBody } from '../config/types.ts';
import type { CompileResult } from '../compiler/compile.ts';
import { getLeaf } from '../compiler/defaults.ts';
import { at, keyOf, namespaceOf, refKey, type Located } from '../compiler/resolve.ts';
import type { Span } from '../diagnostics/diagnostic.ts';
import { formatLocation } from '../diagnostics/render.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { RouteTable } from '../config/router.ts';
import { formatDuration } from '../spec/duration.ts';
import { describeGrpcMethod, GRPC_CONTENT_TYPE_PATTERN, grpcMethodOfPath, grpcPath, grpcStatusName, parseGrpcPath } from '../spec/grpc.ts';
import type { RouteDocument, SpecDocument } from '../spec/types.ts';

export interface ExplainRequest {
  /** Service key of the caller: `name` in namespace `default`, else `namespace/name`. */
  readonly from: string;
  /** Service key of the destination. */
  readonly to: string;
  readonly method: string;
  readonly path: string;
  readonly query: string;
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  /** Service port; default the destination's first port. */
  readonly port?: number;
}

/** Where a value came from: a spec location, or the built-in default. */
export interface Origin {
  readonly source: 'spec' | 'mesh-default' | 'built-in';
  /** `file:line:col`, when in the spec. */
  readonly at: string | null;
}

export interface Explanation {
  readonly request: ExplainRequest & { readonly port: number };
  /**
   * What the called port speaks, when not `http`: for `tcp` the "request" is a connection
   * (no method, path or header reaches the router; the implicit rule's backends apply).
   */
  readonly protocol?: Exclude<PortProtocol, 'http'>;
  /**
   * The caller's namespace when it holds GAMMA consumer routes for the destination: the
   * caller then follows those, and the destination's producer routes do not apply to it.
   */
  readonly consumerNamespace: string | null;
  /** Whether the caller's sidecar has a route to the destination at all. */
  readonly reachable: { readonly ok: boolean; readonly reason: string; readonly at: string | null };
  /** `kind` is present (`GRPCRoute`) for rules compiled from a GRPCRoute. */
  readonly rules: ReadonlyArray<{ readonly id: string; readonly route: string | null; readonly kind?: 'GRPCRoute'; readonly ruleName: string | null; readonly at: string | null; readonly matched: boolean; readonly failed: string | null }>;
  readonly matched: {
    readonly id: string;
    readonly redirect: string | null;
    readonly filters: readonly string[];
    readonly backends: ReadonlyArray<{ readonly service: string; readonly port: number | null; readonly share: number; readonly at: string | null }>;
    readonly timeouts: { readonly requestMs: number; readonly backendRequestMs: number; readonly request: Origin; readonly backendRequest: Origin };
    readonly retry: { readonly attempts: number; readonly codes: readonly number[]; readonly grpcCodes?: readonly number[]; readonly backoffMs: number; readonly origin: Origin };
  } | null;
  readonly clusters: ReadonlyArray<{
    readonly service: string;
    readonly endpoints: number;
    /** `namespace/name` of the Kubernetes Service whose EndpointSlices list the instances (known at runtime only); null otherwise. */
    readonly kubernetes: string | null;
    readonly settings: ReadonlyArray<{ readonly name: string; readonly value: string; readonly origin: Origin }>;
    readonly access: { readonly allowed: boolean; readonly audited: boolean; readonly reason: string; readonly at: string | null } | null;
  }>;
  /** One sentence: where the request ends up. */
  readonly outcome: string;
}

/**
 * The request a gRPC client sends for `service`/`method`: `POST /<service>/<method>` with
 * `content-type: application/grpc` (and the given metadata, lower-case names), which is what
 * GRPCRoute rules match.
 */
export function grpcExplainRequest(from: string, to: string, service: string, method: string, headers: Readonly<Record<string, string>> = {}, port?: number): ExplainRequest {
  return { from, to, method: 'POST', path: grpcPath(service, method), query: '', headers: { ...headers, 'content-type': 'application/grpc' }, ...(port !== undefined ? { port } : {}) };
}

/** Whether a request is a gRPC call (content-type application/grpc…, a two-segment path): explanations then name it as one. */
function grpcCallOf(request: ExplainRequest): { service: string; method: string } | undefined {
  const type = request.headers['content-type'];
  if (type === undefined || !new RegExp(`^(?:${GRPC_CONTENT_TYPE_PATTERN})$`).test(type)) return undefined;
  return parseGrpcPath(request.path);
}

/**
 * A router condition of a GRPCRoute rule in gRPC's words: the path condition as the
 * service/method it selects, the content-type condition as "a gRPC call".
 */
function grpcWants(wants: string, path: { type: string; value: string }): string {
  if (wants.startsWith('path ')) {
    const facts = grpcMethodOfPath(path);
    return facts ? `gRPC ${describeGrpcMethod(facts)}` : wants;
  }
  if (wants.startsWith('header content-type ~')) return 'a gRPC call (content-type application/grpc)';
  return wants;
}

/**
 * The access decision for a call, or on a `tcp` port for a connection: it has no method or
 * path, so only rules without `to` admit it (docs/spec.md, Protocols; TRL4029). The rule
 * index returned is the index among all the inbound's rules.
 */
function decideCall(access: InboundBody['access'], caller: string, method: string, path: string, tcp: boolean): ReturnType<typeof decideAccess> {
  return tcp ? decideConnection(access, caller) : decideAccess(access, caller, method, path);
}

export class ExplainError extends Error {
  override readonly name = 'ExplainError';
}

/** Explains one request against a successful compile of a spec read from `pathPrefix`. */
export function explain(result: CompileResult, request: ExplainRequest, pathPrefix: string): Explanation {
  const { mesh, plan, spec } = result;
  if (!mesh || !plan || !spec) throw new ExplainError('the spec does not compile; run trellis validate');
  const loc = (span: Span | undefined) => (span ? formatLocation(span, { pathPrefix }) : null);
  const callerConfig = mesh.configs.get(request.from);
  if (!callerConfig) throw new ExplainError(plan.services.has(request.from) ? `"${request.from}" runs no sidecar, so the mesh does not route its calls` : `there is no service "${request.from}"`);
  const target = plan.services.get(request.to);
  if (!target) {
    const egress =
      plan.settings.egress === 'passthrough'
        ? 'a call to a host the mesh does not know is passed through as named (Mesh egress mode passthrough), outside routing, mTLS and policy'
        : 'a call to a host the mesh does not know is refused with 404 unknown_service (Mesh egress mode refuse)';
    throw new ExplainError(`there is no service "${request.to}"; ${egress}`);
  }
  const port = request.port ?? target.route.ports[0]!;
  const portProtocol = target.cluster.ports.find((p) => p.port === port)?.protocol ?? 'http';
  const tcp = portProtocol === 'tcp';
  const req = { ...request, port };
  const protocolField = portProtocol === 'http' ? {} : { protocol: portProtocol };
  const callerPlan = plan.services.get(request.from)!;
  const callerIdentity = callerPlan.inbound!.identity;
  const consumerNamespace = target.consumers.has(callerPlan.namespace) ? callerPlan.namespace : null;
  // The destination sidecar decides on the normalised path (a path it refuses gets 400 there).
  const normalized = normalizePath(request.path);
  const accessPath = normalized.ok ? normalized.path : request.path;
  const accessPolicyFor = (service: string) => spec.accessPolicies.find((p) => p.doc.spec.targetRefs.some((t) => refKey(namespaceOf(p.doc), t) === service));

  const routeResource = callerConfig.resources.find((r) => r.name === `route/${request.to}`);
  if (!routeResource) {
    const decision = target.inbound ? decideCall(target.inbound.access, callerIdentity, request.method, accessPath, tcp) : null;
    const policy = accessPolicyFor(request.to);
    const reason = `${request.from} may not call ${request.to}: ${decision?.reason ?? 'an AccessPolicy on it admits other callers only'}; its sidecar has no route to it and answers 404 unknown_service`;
    return { request: req, ...protocolField, consumerNamespace, reachable: { ok: false, reason, at: loc(policy ? at(policy, ['metadata', 'name']) : spec.mesh ? at(spec.mesh, ['spec', 'access']) : undefined) }, rules: [], matched: null, clusters: [], outcome: reason };
  }

  const table = new RouteTable(routeResource.body as RouteBody);
  const trace = table.trace({ port, method: request.method, path: request.path, headers: request.headers, query: request.query });
  const routeOf = (key: string | null, kind?: 'GRPCRoute'): Located<RouteDocument> | undefined =>
    key === null ? undefined : ((kind === 'GRPCRoute' ? spec.grpcRoutes : spec.routes) as ReadonlyArray<Located<RouteDocument>>).find((r) => keyOf(r.doc) === key);
  // A rule id is `<route key>/<rule>/<match>`, and a route key may hold a slash itself.
  const indexesOf = (id: string) => id.split('/').slice(-2).map(Number) as [number, number];
  const ruleSpan = (id: string, route: Located<RouteDocument> | undefined) => {
    if (!route) return undefined;
    const [r, m] = indexesOf(id);
    const rule = route.doc.spec.rules?.[r!];
    return at(route, rule?.matches && rule.matches.length > 0 ? ['spec', 'rules', r!, 'matches', m!] : ['spec', 'rules', r!]);
  };
  const rules = trace.rules.map(({ rule, failed }) => ({
    id: rule.id,
    route: rule.route,
    ...(rule.kind === undefined ? {} : { kind: rule.kind }),
    ruleName: rule.ruleName,
    at: loc(ruleSpan(rule.id, routeOf(rule.route, rule.kind))),
    matched: failed === null,
    failed: failed !== null && rule.kind === 'GRPCRoute' ? grpcWants(failed, rule.match.path) : failed,
  }));
  const reachable = { ok: true, reason: `${request.from} may call ${request.to}`, at: loc(accessPolicyFor(request.to) ? at(accessPolicyFor(request.to)!, ['metadata', 'name']) : undefined) };
  if (trace.matched < 0) {
    const answer = grpcCallOf(request) ? 'gRPC status unimplemented (no_route)' : '404 no_route';
    return { request: req, ...protocolField, consumerNamespace, reachable, rules, matched: null, clusters: [], outcome: `no rule of ${request.to}'s routes matches: the caller's sidecar answers ${answer}` };
  }

  const rule = table.rules[trace.matched]!;
  const route = routeOf(rule.route, rule.kind);
  const ruleIndex = rule.route === null ? -1 : indexesOf(rule.id)[0];
  const rulePath = ['spec', 'rules', ruleIndex] as const;
  const specRule = route?.doc.spec.rules?.[ruleIndex];
  const meshDefault = (path: readonly (string | number)[], value: unknown): Origin =>
    value !== undefined && spec.mesh ? { source: 'mesh-default', at: loc(at(spec.mesh, ['spec', 'defaults', ...path])) } : { source: 'built-in', at: null };
  const fromRule = (path: readonly (string | number)[], present: boolean, fallback: () => Origin): Origin => (present && route ? { source: 'spec', at: loc(at(route, [...rulePath, ...path])) } : fallback());
  const meshSpec = spec.mesh?.doc.spec.defaults;
  const timeouts = {
    requestMs: rule.timeouts.requestMs,
    backendRequestMs: rule.timeouts.backendRequestMs,
    request: fromRule(['timeouts', 'request'], specRule?.timeouts?.request !== undefined, () => meshDefault(['timeouts', 'request'], meshSpec?.timeouts?.request)),
    backendRequest: fromRule(['timeouts', 'backendRequest'], specRule?.timeouts?.backendRequest !== undefined, () => meshDefault(['timeouts', 'backendRequest'], meshSpec?.timeouts?.backendRequest)),
  };
  const retry = { ...rule.retry, origin: fromRule(['retry'], specRule?.retry !== undefined, () => meshDefault(['retry'], meshSpec?.retry)) };
  const total = rule.backends.reduce((n, b) => n + b.weight, 0);
  const backends = rule.backends.map((b, j) => ({ service: b.service, port: b.port, share: total > 0 ? b.weight / total : 0, at: route ? loc(at(route, [...rulePath, 'backendRefs', j])) : null }));
  const redirect = rule.filters.find((f): f is Extract<CompiledFilter, { type: 'RequestRedirect' }> => f.type === 'RequestRedirect');

  const clusters = redirect
    ? []
    : backends
        .filter((b) => b.share > 0)
        .map((b) => {
          const svc = plan.services.get(b.service)!;
          const backendTcp = svc.cluster.ports.find((p) => p.port === (b.port ?? port))?.protocol === 'tcp';
          const decision = svc.inbound ? decideCall(svc.inbound.access, callerIdentity, request.method, accessPath, backendTcp) : null;
          const policy = decision?.policy ? spec.accessPolicies.find((p) => keyOf(p.doc) === decision.policy) : undefined;
          // ruleIndex counts the compiled rules of every policy on the service; the spec line needs the index within its policy.
          const indexInPolicy = decision?.ruleIndex != null ? svc.inbound!.access.rules.slice(0, decision.ruleIndex).filter((r) => r.policy === decision.policy).length : null;
          return {
            service: b.service,
            endpoints: svc.endpoints.static.length + (svc.endpoints.dns ? 1 : 0),
            kubernetes: svc.endpoints.kubernetes ? `${svc.endpoints.kubernetes.namespace}/${svc.endpoints.kubernetes.service}` : null,
            settings: clusterSettings(svc.cluster, b.service, spec, loc),
            access: decision ? { allowed: decision.allowed, audited: decision.audited, reason: decision.reason, at: loc(policy ? at(policy, ['spec', 'rules', indexInPolicy!]) : undefined) } : null,
          };
        });

  const shares = backends.filter((b) => b.share > 0).map((b) => `${b.service} ${formatShare(b.share)}`);
  const call = grpcCallOf(request);
  const denied = clusters.filter((c) => c.access && !c.access.allowed).map((c) => c.service);
  const outcome = redirect
    ? `redirected with ${redirect.statusCode}; no backend is called`
    : shares.length === 0
      ? `every backend has weight 0: the caller gets ${call ? 'gRPC status unavailable' : '500'}`
      : `${call ? `gRPC ${call.service}/${call.method}` : tcp ? 'a TCP connection' : `${request.method} ${request.path}`} from ${request.from} goes to ${shares.join(', ')}${denied.length > 0 ? `; ${denied.join(', ')} would deny it (${call ? 'gRPC permission-denied' : '403'})` : ''}`;
  return {
    request: req,
    ...protocolField,
    consumerNamespace,
    reachable,
    rules,
    matched: { id: rule.id, redirect: redirect ? `${redirect.statusCode} to ${redirect.scheme ?? 'http'}://${redirect.hostname ?? '(same host)'}` : null, filters: rule.filters.map((f) => f.type), backends, timeouts, retry },
    clusters,
    outcome,
  };
}

function formatShare(share: number): string {
  return `${Math.round(share * 1000) / 10}%`;
}

const SETTINGS: ReadonlyArray<{ name: string; leaf: readonly string[]; show: (c: ClusterBody) => string }> = [
  { name: 'load balancer', leaf: ['loadBalancer', 'type'], show: (c) => c.loadBalancer.type },
  { name: 'max requests in flight', leaf: ['circuitBreaker', 'maxRequests'], show: (c) => String(c.circuitBreaker.maxRequests) },
  { name: 'max pending requests', leaf: ['circuitBreaker', 'maxPendingRequests'], show: (c) => String(c.circuitBreaker.maxPendingRequests) },
  {
    name: 'max connections',
    leaf: ['circuitBreaker', 'maxConnections'],
    // A meshed instance is called over one multiplexed HTTP/2 connection: the limit bounds only HTTP/1.1 and TCP connections.
    show: (c) => {
      const n = String(c.circuitBreaker.maxConnections);
      if (!c.meshed) return n;
      return c.ports.some((p) => p.protocol === 'tcp') ? `${n} (TCP connections; calls share one HTTP/2 connection per instance)` : `${n} (no bound here: calls share one HTTP/2 connection per instance)`;
    },
  },
  { name: 'ejection after consecutive 5xx', leaf: ['outlierDetection', 'consecutive5xx'], show: (c) => String(c.outlierDetection.consecutive5xx) },
  { name: 'base ejection time', leaf: ['outlierDetection', 'baseEjectionTime'], show: (c) => formatDuration(c.outlierDetection.baseEjectionMs) },
  { name: 'retry budget', leaf: ['retryBudget', 'ratio'], show: (c) => `${Math.round(c.retryBudget.ratio * 100)}% + ${c.retryBudget.minRetriesPerSecond}/s` },
  { name: 'connect timeout', leaf: ['connection', 'connectTimeout'], show: (c) => formatDuration(c.connection.connectTimeoutMs) },
  { name: 'fault injection', leaf: ['faultInjection', 'abort'], show: (c) => (c.faultInjection.abort || c.faultInjection.delay ? JSON.stringify(c.faultInjection) : 'none') },
];

/** Each cluster setting with the TrafficPolicy line, Mesh default or built-in it came from. */
function clusterSettings(cluster: ClusterBody, service: string, spec: NonNullable<CompileResult['spec']>, loc: (s: Span | undefined) => string | null) {
  return SETTINGS.map(({ name, leaf, show }) => {
    const policy = spec.trafficPolicies.find((p) => p.doc.spec.targetRefs.some((t) => refKey(namespaceOf(p.doc), t) === service) && getLeaf(p.doc.spec, leaf) !== undefined);
    let origin: Origin;
    if (policy) origin = { source: 'spec', at: loc(at(policy as Located<SpecDocument>, ['spec', ...leaf])) };
    else if (spec.mesh && getLeaf(spec.mesh.doc.spec.defaults?.trafficPolicy ?? {}, leaf) !== undefined) origin = { source: 'mesh-default', at: loc(at(spec.mesh, ['spec', 'defaults', 'trafficPolicy', ...leaf])) };
    else origin = { source: 'built-in', at: null };
    return { name, value: show(cluster), origin };
  });
}

function originText(o: Origin): string {
  return o.source === 'built-in' ? 'built-in default' : `${o.source === 'mesh-default' ? 'Mesh default, ' : ''}${o.at}`;
}

/**
 * The human rendering: numbered steps, each with the spec line behind it. Each line is
 * escaped for the terminal: paths, headers and match values come from the command line
 * and the spec.
 */
export function renderExplanation(e: Explanation): string {
  return explanationLines(e).map((line) => escapeForTerminal(line)).join('\n');
}

/** The lines of `renderExplanation`, unescaped; the last is empty (the text ends with a newline). */
function explanationLines(e: Explanation): string[] {
  const r = e.request;
  const headers = Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`);
  const call = grpcCallOf(r);
  const shown = call ? headers.filter((h) => !h.startsWith('content-type: ')) : headers;
  const what = call ? `gRPC ${call.service}/${call.method} (POST ${r.path})` : e.protocol === 'tcp' ? 'A TCP connection' : `${r.method} ${r.path}${r.query ? `?${r.query}` : ''}`;
  const lines = [`${what} from ${r.from} to ${r.to}:${r.port}${shown.length ? `  (${shown.join(', ')})` : ''}`, ''];
  if (e.protocol === 'tcp') lines.push(`   (port ${r.port} of ${r.to} speaks tcp: no route rule applies, only its backends, timeouts and access by caller)`, '');
  lines.push(`1. Caller: ${e.reachable.reason}${e.reachable.at ? `  [${e.reachable.at}]` : ''}`);
  if (!e.reachable.ok) return [...lines, '', `Outcome: ${e.outcome}`, ''];
  lines.push(
    e.consumerNamespace === null
      ? `2. Route rules of ${r.to}, in precedence order (the first match wins):`
      : `2. Route rules of ${r.to} for callers in namespace ${e.consumerNamespace} (its consumer routes; producer routes do not apply), in precedence order:`,
  );
  for (const rule of e.rules) {
    const name = rule.route === null ? 'the default rule (no route attached)' : `${rule.kind === 'GRPCRoute' ? 'GRPCRoute ' : ''}${rule.id}${rule.ruleName ? ` "${rule.ruleName}"` : ''}`;
    lines.push(`   ${rule.matched ? '✓' : '✗'} ${name}${rule.at ? `  [${rule.at}]` : ''}${rule.matched ? '  matches' : `  needs ${rule.failed}`}`);
  }
  const m = e.matched;
  if (!m) return [...lines, '', `Outcome: ${e.outcome}`, ''];
  if (m.redirect) lines.push(`3. Redirect: ${m.redirect}`);
  else {
    lines.push(`3. Backends: ${m.backends.map((b) => `${b.service}${b.port ? `:${b.port}` : ''} ${formatShare(b.share)}${b.at ? ` [${b.at}]` : ''}`).join(', ')}`);
    if (m.filters.length > 0) lines.push(`   Filters: ${m.filters.join(', ')}`);
  }
  const t = m.timeouts;
  lines.push(`4. Timeouts: request ${t.requestMs ? formatDuration(t.requestMs) : 'none'} (${originText(t.request)}); per try ${t.backendRequestMs ? formatDuration(t.backendRequestMs) : 'none'} (${originText(t.backendRequest)})`);
  const retried = [...m.retry.codes.map(String), ...(m.retry.grpcCodes ?? []).map((c) => `gRPC ${grpcStatusName(c)}`)];
  lines.push(`   Retries: up to ${m.retry.attempts}${retried.length ? ` on ${retried.join(', ')}` : ''} and on connect failures, backoff ${formatDuration(m.retry.backoffMs)} (${originText(m.retry.origin)})`);
  e.clusters.forEach((c, i) => {
    const instances = c.kubernetes ? `endpoints from Kubernetes Service ${c.kubernetes}` : `${c.endpoints} endpoint${c.endpoints === 1 ? '' : 's'}`;
    lines.push(`${5 + i}. Calling ${c.service} (${instances}):`);
    for (const s of c.settings) lines.push(`     ${s.name}: ${s.value} (${originText(s.origin)})`);
    if (c.access) lines.push(`     access at ${c.service}: ${c.access.allowed ? (c.access.audited ? 'would be denied (audit mode lets it through)' : 'allowed') : 'DENIED (403)'} — ${c.access.reason}${c.access.at ? `  [${c.access.at}]` : ''}`);
    else lines.push(`     access at ${c.service}: not checked (it runs no sidecar)`);
  });
  lines.push('', `Outcome: ${e.outcome}`, '');
  return lines;
}

