/**
 * Compiled config pieces described for people: a match as `GET /api/* x-canary: 1`, a rule's
 * settings as `request timeout: 2s`, a cluster as flat `circuitBreaker.maxRequests: 100`
 * leaves. The diff compares these descriptions, so what it reports is what a reader sees.
 * Pure; every output is deterministic.
 */
import type { ClusterBody, CompiledAccessRule, CompiledBackend, CompiledFilter, CompiledHeaderModifier, CompiledMatch, CompiledPathModifier, CompiledRule, EndpointsBody, InboundBody } from '../config/types.ts';
import { formatDuration } from '../spec/duration.ts';
import { describeGrpcMethod, GRPC_CONTENT_TYPE_PATTERN, grpcMethodOfPath, grpcStatusName } from '../spec/grpc.ts';

/**
 * `every request`, or the conditions of a match joined by spaces (port, method, path,
 * headers, query). A GRPCRoute rule's match (`kind`) reads as the gRPC call it selects:
 * `gRPC pkg.Svc/Get x-canary: 1`, without the content-type condition every such match has.
 */
export function describeMatch(match: CompiledMatch, kind?: CompiledRule['kind']): string {
  const parts: string[] = [];
  if (match.port !== null) parts.push(`port ${match.port}`);
  const grpc = kind === 'GRPCRoute' ? grpcMethodOfPath(match.path) : undefined;
  if (grpc) {
    parts.push(`gRPC ${describeGrpcMethod(grpc)}`);
    for (const h of match.headers) {
      if (h.name === 'content-type' && h.type === 'RegularExpression' && h.value === GRPC_CONTENT_TYPE_PATTERN) continue;
      parts.push(h.type === 'Exact' ? `${h.name}: ${h.value}` : `${h.name} ~ ${h.value}`);
    }
    return parts.join(' ');
  }
  if (match.method !== null) parts.push(match.method);
  const p = match.path;
  if (p.type === 'Exact') parts.push(`= ${p.value}`);
  else if (p.type === 'RegularExpression') parts.push(`~ ${p.value}`);
  else if (p.value !== '/') parts.push(`${p.value.replace(/\/$/, '')}/*`);
  for (const h of match.headers) parts.push(h.type === 'Exact' ? `${h.name}: ${h.value}` : `${h.name} ~ ${h.value}`);
  for (const q of match.queryParams) parts.push(q.type === 'Exact' ? `?${q.name}=${q.value}` : `?${q.name}~${q.value}`);
  return parts.length === 0 ? 'every request' : parts.join(' ');
}

/**
 * Each backend's share of a rule's traffic in percent, summed per backend service (two
 * ports of one service are one backend to a reader). All weights zero: every share is 0
 * (Gateway API answers such requests with 500).
 */
export function backendShares(backends: readonly CompiledBackend[]): Map<string, number> {
  const total = backends.reduce((n, b) => n + b.weight, 0);
  const shares = new Map<string, number>();
  for (const b of backends) shares.set(b.service, (shares.get(b.service) ?? 0) + (total === 0 ? 0 : (b.weight / total) * 100));
  return shares;
}

/** A percentage with at most two decimals and no trailing zeros: `33.33%`, `5%`. */
export function formatShare(percent: number): string {
  return `${Number(percent.toFixed(2))}%`;
}

/** `before → after`, with absent values as `(none)`. */
export function arrow(before: string | null, after: string | null): string {
  return `${before ?? '(none)'} → ${after ?? '(none)'}`;
}

/** A share before → after: `5% → 25%`, and `—` for a backend not in the rule on that side. */
export function shareArrow(before: number | null, after: number | null): string {
  return `${before === null ? '—' : formatShare(before)} → ${after === null ? '—' : formatShare(after)}`;
}

function describeHeaders(h: CompiledHeaderModifier): string {
  const parts = [...h.set.map((x) => `set ${x.name}: ${x.value}`), ...h.add.map((x) => `add ${x.name}: ${x.value}`), ...h.remove.map((x) => `remove ${x}`)];
  return parts.join('; ');
}

function describePathModifier(p: CompiledPathModifier): string {
  return p.type === 'ReplaceFullPath' ? `path → ${p.value}` : `path prefix → ${p.value}`;
}

/** One filter as a `[setting, value]` pair; a rule holding two of one kind gets both values joined. */
function describeFilter(f: CompiledFilter): [string, string] {
  switch (f.type) {
    case 'RequestHeaderModifier':
      return ['request headers', describeHeaders(f.headers)];
    case 'ResponseHeaderModifier':
      return ['response headers', describeHeaders(f.headers)];
    case 'RequestMirror':
      return ['mirror', `${f.backend.service}${f.backend.port === null ? '' : `:${f.backend.port}`} (${formatShare((f.numerator / f.denominator) * 100)} of requests)`];
    case 'URLRewrite':
      return ['rewrite', [f.hostname === null ? null : `host → ${f.hostname}`, f.path === null ? null : describePathModifier(f.path)].filter((x) => x !== null).join(', ')];
    case 'RequestRedirect': {
      const target = [f.scheme === null ? null : `scheme ${f.scheme}`, f.hostname === null ? null : `host ${f.hostname}`, f.port === null ? null : `port ${f.port}`, f.path === null ? null : describePathModifier(f.path)].filter((x) => x !== null);
      return ['redirect', `${f.statusCode}${target.length === 0 ? '' : ` (${target.join(', ')})`}`];
    }
  }
}

function addSetting(into: Map<string, string>, key: string, value: string): void {
  const had = into.get(key);
  into.set(key, had === undefined ? value : `${had}; ${value}`);
}

/**
 * A rule's settings other than its match and shares, by setting name: timeouts and
 * retries always, filters only when present (backend filters as `<setting> via <backend>`).
 */
export function ruleSettings(rule: CompiledRule): Map<string, string> {
  const out = new Map<string, string>();
  out.set('request timeout', rule.timeouts.requestMs === 0 ? 'none' : formatDuration(rule.timeouts.requestMs));
  out.set('per-try timeout', rule.timeouts.backendRequestMs === 0 ? 'none' : formatDuration(rule.timeouts.backendRequestMs));
  const r = rule.retry;
  const on = [...r.codes.map(String), ...(r.grpcCodes ?? []).map((c) => `gRPC ${grpcStatusName(c)}`)];
  out.set('retries', r.attempts === 0 ? 'none' : `${r.attempts}× on ${on.length === 0 ? 'connection failures' : on.join(', ')}, backoff ${formatDuration(r.backoffMs)}`);
  for (const f of rule.filters) {
    const [k, v] = describeFilter(f);
    addSetting(out, k, v);
  }
  for (const b of rule.backends) {
    for (const f of b.filters) {
      const [k, v] = describeFilter(f);
      addSetting(out, `${k} via ${b.service}`, v);
    }
  }
  return out;
}

/**
 * Flattens a value to `dotted.path → JSON text` leaves; arrays are leaves (their order
 * and members are read as one). Keys are visited in sorted order.
 */
export function flattenLeaves(value: unknown, prefix = '', into = new Map<string, string>()): Map<string, string> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const key of Object.keys(value).sort()) flattenLeaves((value as Record<string, unknown>)[key], prefix === '' ? key : `${prefix}.${key}`, into);
    return into;
  }
  into.set(prefix, typeof value === 'string' ? value : JSON.stringify(value));
  return into;
}

/** Traffic-policy leaves of a cluster (the fields that identify the service are left out). */
export function policyLeaves(cluster: ClusterBody): Map<string, string> {
  const { service: _service, meshed: _meshed, identity: _identity, ports: _ports, ...policy } = cluster;
  return flattenLeaves(policy);
}

/** Endpoint leaves: the static instances as one sorted list, and DNS discovery. */
export function endpointLeaves(endpoints: EndpointsBody): Map<string, string> {
  const out = new Map<string, string>();
  const statics = endpoints.static.map((e) => `${e.address}${e.port === null ? '' : `:${e.port}`}${e.weight === 1 ? '' : ` weight ${e.weight}`}${e.zone === null ? '' : ` zone ${e.zone}`}`);
  out.set('static instances', statics.length === 0 ? 'none' : statics.join(', '));
  out.set('dns', endpoints.dns === null ? 'none' : `${endpoints.dns.hostname}${endpoints.dns.port === null ? '' : `:${endpoints.dns.port}`} every ${formatDuration(endpoints.dns.refreshIntervalMs)}`);
  return out;
}

function describeAccessRule(rule: CompiledAccessRule): string {
  const to = rule.to.length === 0 ? 'anything' : rule.to.map((t) => `${t.methods.length === 0 ? 'any method' : t.methods.join('|')} ${t.paths.length === 0 ? 'any path' : t.paths.map((p) => (p.type === 'Exact' ? `= ${p.value}` : `${p.value.replace(/\/$/, '')}/*`)).join(', ')}`).join('; ');
  return `${rule.from.join(', ')} → ${to} (AccessPolicy ${rule.policy})`;
}

/** Inbound leaves split into access (default, mode, rules) and the rest (identity, mTLS, ports). */
export function inboundLeaves(inbound: InboundBody): { access: Map<string, string>; other: Map<string, string> } {
  const access = new Map<string, string>([
    ['access default', inbound.access.default === 'policy' ? 'only AccessPolicy rules' : inbound.access.default],
    ['access mode', inbound.access.mode],
    ['access rules', inbound.access.rules.length === 0 ? 'none' : inbound.access.rules.map(describeAccessRule).join('; ')],
  ]);
  const other = new Map<string, string>([
    ['identity', inbound.identity],
    ['mtls mode', inbound.mtls.mode],
    ['ports', inbound.ports.map((p) => `${p.port}→${p.targetPort}${p.protocol === 'http' ? '' : ` ${p.protocol}`}`).join(', ')],
  ]);
  return { access, other };
}

/** Setting changes between two leaf maps (a missing map reads as every leaf absent), sorted by setting. */
export function diffLeaves(before: ReadonlyMap<string, string> | null, after: ReadonlyMap<string, string> | null): Array<{ setting: string; before: string | null; after: string | null }> {
  const keys = new Set([...(before?.keys() ?? []), ...(after?.keys() ?? [])]);
  const out: Array<{ setting: string; before: string | null; after: string | null }> = [];
  for (const k of [...keys].sort()) {
    const b = before?.get(k) ?? null;
    const a = after?.get(k) ?? null;
    if (b !== a) out.push({ setting: k, before: b, after: a });
  }
  return out;
}
