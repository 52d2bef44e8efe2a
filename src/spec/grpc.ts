/**
 * gRPC facts the spec relies on: status names and numbers, the request path a call is
 * sent on, and the names GRPCRoute accepts. Shared by the compiler and the tools that
 * describe gRPC calls (explain, traffic tests, diff).
 */
import type { GRPCStatusName } from './types.ts';

/**
 * gRPC status codes by the names Trellis writes (the canonical upper-snake names in
 * lower-case kebab). Numbers are gRPC's, fixed by its protocol (`OK` is 0 and never retried,
 * so it has no name here).
 */
export const GRPC_STATUS_CODES: Readonly<Record<GRPCStatusName, number>> = {
  cancelled: 1,
  unknown: 2,
  'invalid-argument': 3,
  'deadline-exceeded': 4,
  'not-found': 5,
  'already-exists': 6,
  'permission-denied': 7,
  'resource-exhausted': 8,
  'failed-precondition': 9,
  aborted: 10,
  'out-of-range': 11,
  unimplemented: 12,
  internal: 13,
  unavailable: 14,
  'data-loss': 15,
  unauthenticated: 16,
};

/** `unavailable`: what a GRPCRoute rule retries when it names no codes (the server was not ready; retrying is safe). */
export const GRPC_UNAVAILABLE = GRPC_STATUS_CODES.unavailable;

/** The name of a gRPC status number (`14` → `unavailable`), or the number as text for one Trellis does not name. */
export function grpcStatusName(code: number): string {
  for (const [name, n] of Object.entries(GRPC_STATUS_CODES)) if (n === code) return name;
  return String(code);
}

/**
 * GRPCRoute's rules for `Exact` names (Gateway API `GRPCMethodMatch`): a service is a
 * dotted name of identifier parts, case-insensitive letters, optionally with a leading
 * dot; a method is one identifier.
 */
export const GRPC_SERVICE_NAME = /^\.?[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$/;
export const GRPC_METHOD_NAME = /^[A-Za-z_][A-Za-z_0-9]*$/;

/** The HTTP/2 `:path` of a gRPC call: `/<package.Service>/<Method>`. */
export function grpcPath(service: string, method: string): string {
  return `/${service}/${method}`;
}

/**
 * The service and method of a gRPC request path, or undefined for a path that is not one
 * (`/a/b` has them; `/a`, `/a/b/c` and `/a/` do not).
 */
export function parseGrpcPath(path: string): { service: string; method: string } | undefined {
  const m = /^\/([^/]+)\/([^/]+)$/.exec(path);
  return m ? { service: m[1]!, method: m[2]! } : undefined;
}

/**
 * A `content-type` value that marks a request as gRPC: `application/grpc`, optionally
 * followed by `+<codec>` or parameters (`application/grpc+proto`, `application/grpc;charset=…`).
 * The same pattern, anchored by the router, sits on every compiled GRPCRoute match.
 */
export const GRPC_CONTENT_TYPE_PATTERN = 'application/grpc(?:[+;].*)?';

/** A GRPCRoute method match read back from the path condition it compiled to (see describeGrpcPathMatch). */
export interface GrpcMethodFacts {
  readonly type: 'Exact' | 'RegularExpression';
  /** Null: any service. */
  readonly service: string | null;
  /** Null: any method. */
  readonly method: string | null;
}

const ANY = '[^/]+';

/**
 * Reads one part of a compiled gRPC path pattern from `at`: `[^/]+` (any), a group
 * `(?:…)` (a user's pattern), or an escaped literal name. Returns the part and where it ends.
 */
function readPart(value: string, at: number): { part: { kind: 'any' | 'regex' | 'literal'; text: string }; end: number } | undefined {
  if (value.startsWith(ANY, at)) return { part: { kind: 'any', text: '' }, end: at + ANY.length };
  if (value.startsWith('(?:', at)) {
    let depth = 0;
    let inClass = false;
    for (let i = at; i < value.length; i++) {
      const c = value[i];
      if (c === '\\') i++;
      else if (inClass) inClass = c !== ']';
      else if (c === '[') inClass = true;
      else if (c === '(') depth++;
      else if (c === ')' && --depth === 0) return { part: { kind: 'regex', text: value.slice(at + 3, i) }, end: i + 1 };
    }
    return undefined;
  }
  const m = /^(?:[A-Za-z0-9_]|\\\.)+/.exec(value.slice(at));
  return m ? { part: { kind: 'literal', text: m[0].replaceAll('\\.', '.') }, end: at + m[0].length } : undefined;
}

/**
 * The gRPC service and method a compiled GRPCRoute path condition selects, read back from
 * the forms the compiler writes (an Exact `/S/M`, or `/<part>/<part>` patterns); undefined
 * for any other path condition.
 */
export function grpcMethodOfPath(path: { readonly type: string; readonly value: string }): GrpcMethodFacts | undefined {
  if (path.type === 'Exact') {
    const parsed = parseGrpcPath(path.value);
    return parsed ? { type: 'Exact', service: parsed.service, method: parsed.method } : undefined;
  }
  if (path.type !== 'RegularExpression' || !path.value.startsWith('/')) return undefined;
  const first = readPart(path.value, 1);
  if (!first || path.value[first.end] !== '/') return undefined;
  const second = readPart(path.value, first.end + 1);
  if (!second || second.end !== path.value.length) return undefined;
  const parts = [first.part, second.part];
  const regex = parts.some((p) => p.kind === 'regex');
  if (regex && parts.some((p) => p.kind === 'literal')) return undefined;
  const text = (p: (typeof parts)[number]) => (p.kind === 'any' ? null : p.text);
  return { type: regex ? 'RegularExpression' : 'Exact', service: text(first.part), method: text(second.part) };
}

/**
 * A GRPCRoute method match in words: `pkg.Svc/Get`; a part left out as `*` (any service
 * or method); `any gRPC method`; and for patterns `service ~ <pattern>, method ~ <pattern>`.
 */
export function describeGrpcMethod(facts: GrpcMethodFacts): string {
  if (facts.service === null && facts.method === null) return 'any gRPC method';
  if (facts.type === 'Exact') return `${facts.service ?? '*'}/${facts.method ?? '*'}`;
  return [facts.service === null ? null : `service ~ ${facts.service}`, facts.method === null ? null : `method ~ ${facts.method}`].filter((x) => x !== null).join(', ');
}
