/**
 * Validation of a proxy config as a sidecar receives it (from a file, an admin write or
 * the reconciler): shape, content hashes, and consistency (every backend a route names
 * has its cluster and endpoints). A config that fails here is never applied.
 */
import { Ajv, type ErrorObject } from 'ajv';
import { MAX_TIMER_MS } from '../spec/duration.ts';
import { contentHash } from './canonical.ts';
import { describeChar, invalidFieldValueIndex, isHttpFieldName, PATH_MODIFIER_PATTERN } from './http-field.ts';
import { versionOf } from './resources.ts';
import { PROXY_CONFIG_API_VERSION, type CompiledFilter, type ProxyConfig, type RouteBody } from './types.ts';

const str = { type: 'string' };
/** A DNS-1123 label (spec/names.ts DNS_LABEL), the form of a namespace and of a service name. */
const LABEL = '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?';
/** A service key: `name`, or `namespace/name` outside the default namespace. */
const serviceKey = { type: 'string', pattern: `^(${LABEL}/)?${LABEL}$` };
const int = { type: 'integer', minimum: 0 };
/**
 * A millisecond count a timer must hold: Node fires any setTimeout of 2^31 ms or more at
 * once, which would fail every request of a route whose timeout is that long.
 */
const ms = { type: 'integer', minimum: 0, maximum: MAX_TIMER_MS };
const positiveMs = { type: 'integer', minimum: 1, maximum: MAX_TIMER_MS };
const nullable = (s: object) => ({ anyOf: [s, { type: 'null' }] });
const obj = (properties: Record<string, unknown>, required = Object.keys(properties)) => ({ type: 'object', properties, required, additionalProperties: false });
const list = (items: unknown) => ({ type: 'array', items });
const port = { type: 'integer', minimum: 1, maximum: 65535 };
const compiledPort = obj({ name: nullable(str), port, targetPort: port, protocol: { enum: ['http', 'http2', 'grpc', 'tcp'] } });
const headerList = list(obj({ name: str, value: str }));
const headerModifier = obj({ set: headerList, add: headerList, remove: list(str) });
const pathModifier = nullable(obj({ type: { enum: ['ReplaceFullPath', 'ReplacePrefixMatch'] }, value: { type: 'string', pattern: PATH_MODIFIER_PATTERN } }));
const filter = {
  type: 'object',
  required: ['type'],
  properties: { type: { enum: ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror', 'RequestRedirect', 'URLRewrite'] } },
  allOf: [
    { if: { properties: { type: { enum: ['RequestHeaderModifier', 'ResponseHeaderModifier'] } } }, then: obj({ type: str, headers: headerModifier }) },
    { if: { properties: { type: { const: 'RequestMirror' } } }, then: obj({ type: str, backend: obj({ service: serviceKey, port: nullable(port) }), numerator: int, denominator: { type: 'integer', minimum: 1 } }) },
    { if: { properties: { type: { const: 'RequestRedirect' } } }, then: obj({ type: str, scheme: nullable({ enum: ['http', 'https'] }), hostname: nullable(str), path: pathModifier, port: nullable(port), statusCode: { enum: [301, 302, 303, 307, 308] } }) },
    { if: { properties: { type: { const: 'URLRewrite' } } }, then: obj({ type: str, hostname: nullable(str), path: pathModifier }) },
  ],
};
const stringMatch = obj({ type: { enum: ['Exact', 'RegularExpression'] }, name: str, value: str });
const rule = obj(
  {
  id: str,
  route: nullable(str),
  // Present only on rules compiled from a GRPCRoute.
  kind: { const: 'GRPCRoute' },
  ruleName: nullable(str),
  match: obj({
    port: nullable(port),
    path: obj({ type: { enum: ['Exact', 'PathPrefix', 'RegularExpression'] }, value: str }),
    method: nullable(str),
    headers: list(stringMatch),
    queryParams: list(stringMatch),
  }),
  filters: list(filter),
  backends: list(obj({ service: serviceKey, port: nullable(port), weight: int, filters: list(filter) })),
  timeouts: obj({ requestMs: ms, backendRequestMs: ms }),
  // `grpcCodes` (gRPC status codes) only on GRPCRoute rules and a grpc service's implicit rule.
  retry: obj({ attempts: int, codes: list({ type: 'integer', minimum: 100, maximum: 599 }), backoffMs: ms, grpcCodes: list({ type: 'integer', minimum: 0, maximum: 16 }) }, ['attempts', 'codes', 'backoffMs']),
  },
  ['id', 'route', 'ruleName', 'match', 'filters', 'backends', 'timeouts', 'retry'],
);
const percentage = { type: 'number', minimum: 0, maximum: 100 };
const bodies = {
  inbound: obj(
    {
      service: serviceKey,
      identity: str,
      trustDomain: str,
      mtls: obj({ mode: { enum: ['strict', 'permissive', 'off'] } }),
      ports: list(compiledPort),
      access: obj({
        default: { enum: ['deny', 'all-authenticated', 'allow', 'policy'] },
        mode: { enum: ['enforce', 'audit'] },
        rules: list(obj({ from: list(str), to: list(obj({ methods: list(str), paths: list(obj({ type: { enum: ['Exact', 'PathPrefix'] }, value: str })) })), policy: str })),
      }),
      // Absent: calls to hosts the mesh does not know are refused.
      egress: { const: 'passthrough' },
    },
    ['service', 'identity', 'trustDomain', 'mtls', 'ports', 'access'],
  ),
  route: obj({ service: serviceKey, ports: list(port), rules: list(rule) }),
  cluster: obj({
    service: serviceKey,
    meshed: { type: 'boolean' },
    identity: nullable(str),
    ports: list(compiledPort),
    loadBalancer: obj({ type: { enum: ['round-robin', 'least-request', 'peak-ewma'] }, ewmaDecayMs: positiveMs, ewmaDefaultRttMs: ms }),
    circuitBreaker: obj({ maxConnections: { type: 'integer', minimum: 1 }, maxPendingRequests: { type: 'integer', minimum: 1 }, maxRequests: { type: 'integer', minimum: 1 } }),
    outlierDetection: obj({ consecutive5xx: int, consecutiveGatewayErrors: int, intervalMs: ms, baseEjectionMs: ms, maxEjectionPercent: percentage }),
    retryBudget: obj({ ratio: { type: 'number', minimum: 0 }, minRetriesPerSecond: int, ttlMs: positiveMs }),
    connection: obj({ connectTimeoutMs: ms, idleTimeoutMs: ms }),
    faultInjection: obj({ delay: nullable(obj({ delayMs: ms, percentage })), abort: nullable(obj({ httpStatus: { type: 'integer', minimum: 200, maximum: 599 }, percentage })) }),
  }),
  endpoints: obj(
    {
      service: serviceKey,
      static: list(
        obj(
          // `terminating` is present only when true: serving but shutting down, a last resort.
          { address: { type: 'string', minLength: 1 }, port: nullable(port), weight: { type: 'integer', minimum: 1 }, zone: nullable(str), terminating: { const: true } },
          ['address', 'port', 'weight', 'zone'],
        ),
      ),
      dns: nullable(obj({ hostname: { type: 'string', minLength: 1 }, port: nullable(port), refreshIntervalMs: ms })),
      kubernetes: obj({ namespace: str, service: str, port: nullable({ anyOf: [{ type: 'string', minLength: 1 }, port] }) }),
    },
    ['service', 'static', 'dns'],
  ),
};
const resource = (kind: keyof typeof bodies) => obj({ name: str, version: { type: 'string', pattern: '^[0-9a-f]{64}$' }, body: bodies[kind] });
const schema = obj({
  apiVersion: { const: PROXY_CONFIG_API_VERSION },
  kind: { const: 'ProxyConfig' },
  service: serviceKey,
  version: { type: 'string', pattern: '^[0-9a-f]{64}$' },
  resources: list({
    type: 'object',
    required: ['name'],
    // `<kind>/<service key>`: `route/checkout`, or `route/shop/checkout` outside the default namespace.
    properties: { name: { type: 'string', pattern: `^(inbound|(route|cluster|endpoints)/(${LABEL}/)?${LABEL})$` } },
    allOf: [
      ...(['route', 'cluster', 'endpoints'] as const).map((k) => ({ if: { properties: { name: { pattern: `^${k}/` } } }, then: resource(k) })),
      { if: { properties: { name: { const: 'inbound' } } }, then: resource('inbound') },
    ],
  }),
});

let validate: ReturnType<Ajv['compile']> | undefined;

function describe(e: ErrorObject): string {
  return `${e.instancePath || '/'} ${e.message ?? 'is invalid'}${e.keyword === 'additionalProperties' ? ` (${String((e.params as { additionalProperty: string }).additionalProperty)})` : ''}`;
}

/**
 * What is wrong with the headers a filter writes: names must be tokens and values what
 * Node can send (CR or LF would forge headers; Node refuses them and the call fails).
 * The same rule as the compiler's (src/config/http-field.ts). Names are quoted as JSON so
 * a reason never carries a raw control character into a log.
 */
function headerProblems(f: CompiledFilter): string[] {
  if (f.type !== 'RequestHeaderModifier' && f.type !== 'ResponseHeaderModifier') return [];
  const out: string[] = [];
  const name = (n: string) => void (!isHttpFieldName(n) && out.push(`${f.type} header name ${JSON.stringify(n)} is not an HTTP token`));
  for (const h of [...f.headers.set, ...f.headers.add]) {
    name(h.name);
    const bad = invalidFieldValueIndex(h.value);
    if (bad >= 0) out.push(`${f.type} header ${JSON.stringify(h.name)} has ${describeChar(h.value[bad]!)} in its value, which an HTTP header may not carry`);
  }
  for (const n of f.headers.remove) name(n);
  return out;
}

export type ConfigCheck = { ok: true; config: ProxyConfig } | { ok: false; reasons: string[] };

/**
 * Checks a config completely. Reasons are short, stable sentences; at most 20 are
 * returned (a wholly wrong document would otherwise produce thousands).
 */
export function checkProxyConfig(input: unknown): ConfigCheck {
  validate ??= new Ajv({ allErrors: true, strict: false }).compile(schema);
  if (!validate(input)) return { ok: false, reasons: (validate.errors ?? []).filter((e) => e.keyword !== 'if').slice(0, 20).map(describe) };
  const config = input as ProxyConfig;
  const reasons: string[] = [];
  const names = new Set<string>();
  for (const r of config.resources) {
    if (names.has(r.name)) reasons.push(`resource ${r.name} appears twice`);
    names.add(r.name);
    if (contentHash(r.body) !== r.version) reasons.push(`resource ${r.name}: version does not match its content`);
    const kind = r.name.split('/')[0];
    const service = (r.body as { service: string }).service;
    if (kind !== 'inbound' && r.name !== `${kind}/${service}`) reasons.push(`resource ${r.name} holds service "${service}"`);
  }
  if (!names.has('inbound')) reasons.push('config has no inbound resource');
  else if ((config.resources.find((r) => r.name === 'inbound')!.body as { service: string }).service !== config.service) reasons.push('inbound resource is for another service');
  if (versionOf(config.resources) !== config.version) reasons.push('config version does not match its resources');
  for (const r of config.resources) {
    if (!r.name.startsWith('route/')) continue;
    for (const rule of (r.body as RouteBody).rules) {
      const needed = [...rule.backends.map((b) => b.service), ...[...rule.filters, ...rule.backends.flatMap((b) => b.filters)].flatMap((f) => (f.type === 'RequestMirror' ? [f.backend.service] : []))];
      for (const svc of needed) {
        if (!names.has(`cluster/${svc}`) || !names.has(`endpoints/${svc}`)) reasons.push(`${r.name} rule ${rule.id} sends to "${svc}", which has no cluster/endpoints resource`);
      }
      for (const f of [...rule.filters, ...rule.backends.flatMap((b) => b.filters)]) reasons.push(...headerProblems(f).map((p) => `${r.name} rule ${rule.id}: ${p}`));
    }
  }
  return reasons.length > 0 ? { ok: false, reasons: [...new Set(reasons)].slice(0, 20) } : { ok: true, config };
}
