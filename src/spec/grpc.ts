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
