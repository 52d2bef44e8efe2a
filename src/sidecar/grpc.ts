/**
 * What the sidecar knows of gRPC: which requests are gRPC calls, their deadline
 * (`grpc-timeout`), their status (`grpc-status`, in the response headers of a
 * "Trailers-Only" response or in the trailers), and how an error the sidecar makes itself
 * is said to a gRPC client: as a gRPC status, in a Trailers-Only response, with the
 * sidecar's stable code in the `x-trellis-error` metadata (never an HTTP page a gRPC
 * client cannot read). Pure.
 *
 * Reference: gRPC over HTTP/2 (PROTOCOL-HTTP2.md in the gRPC repository) and its status
 * codes (doc/statuscodes.md).
 */
import type { ProxyErrorCode } from './errors.ts';
import { GRPC_STATUS_CODES } from '../spec/grpc.ts';

/** gRPC status codes by name, `ok` (0) included: the spec's table (spec/grpc.ts) is the one source. */
export const GRPC_STATUS = { ok: 0, ...GRPC_STATUS_CODES } as const;

type HeaderValue = string | string[] | number | undefined;
type Headers = Readonly<Record<string, HeaderValue>>;

function first(v: HeaderValue): string | undefined {
  return Array.isArray(v) ? v[0] : v === undefined ? undefined : String(v);
}

/**
 * Whether a request is a gRPC call: its content type is `application/grpc` or
 * `application/grpc+<codec>` (gRPC-Web, which carries its status in the body, is not).
 */
export function isGrpc(headers: Headers): boolean {
  const ct = first(headers['content-type']);
  if (ct === undefined || !ct.startsWith('application/grpc')) return false;
  const next = ct.charCodeAt(16);
  // End, '+codec' or ';params'.
  return Number.isNaN(next) || next === 0x2b || next === 0x3b;
}

const UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * The `grpc-timeout` header in milliseconds (at least 1 for any positive value, so a
 * sub-millisecond deadline is not mistaken for none); undefined when absent or malformed
 * (1 to 8 digits and a unit: H M S m u n).
 */
export function parseGrpcTimeout(value: HeaderValue): number | undefined {
  const v = first(value);
  if (v === undefined || v.length < 2 || v.length > 9) return undefined;
  const unit = UNIT_MS[v[v.length - 1]!];
  const digits = v.slice(0, -1);
  if (unit === undefined || !/^\d+$/.test(digits)) return undefined;
  const ms = Number(digits) * unit;
  return ms > 0 ? Math.max(1, Math.ceil(ms)) : 0;
}

/** A `grpc-timeout` value for `ms` milliseconds: in ms while it fits 8 digits, else in seconds. */
export function formatGrpcTimeout(ms: number): string {
  const whole = Math.max(0, Math.ceil(ms));
  return whole <= 99_999_999 ? `${whole}m` : `${Math.min(99_999_999, Math.ceil(whole / 1000))}S`;
}

/** The `grpc-status` in headers or trailers, or undefined when there is none (or it is not a number). */
export function grpcStatusOf(headers: Headers | undefined): number | undefined {
  const v = headers === undefined ? undefined : first(headers['grpc-status']);
  if (v === undefined || !/^\d{1,2}$/.test(v)) return undefined;
  return Number(v);
}

/**
 * Statuses that say the server (or the way to it) failed, as an HTTP 5xx does: they count
 * against success rate, as in Linkerd's and Envoy's gRPC classification. Statuses about the
 * request (not found, invalid argument, permission denied…) are the application's answers.
 */
const SERVER_FAILURES: ReadonlySet<number> = new Set([GRPC_STATUS.unknown, GRPC_STATUS['deadline-exceeded'], GRPC_STATUS.unimplemented, GRPC_STATUS.internal, GRPC_STATUS.unavailable, GRPC_STATUS['data-loss']]);

export function isGrpcServerFailure(status: number): boolean {
  return SERVER_FAILURES.has(status);
}

/** The gRPC status of each error the sidecar makes itself (HTTP 404 → unimplemented, 503 → unavailable, as gRPC maps HTTP statuses). */
export const PROXY_ERROR_GRPC_STATUS: Readonly<Record<ProxyErrorCode, number>> = {
  unknown_service: GRPC_STATUS.unimplemented,
  no_route: GRPC_STATUS.unimplemented,
  no_backend: GRPC_STATUS.unavailable,
  no_endpoints: GRPC_STATUS.unavailable,
  overloaded: GRPC_STATUS.unavailable,
  connect_failure: GRPC_STATUS.unavailable,
  tls_failure: GRPC_STATUS.unavailable,
  access_denied: GRPC_STATUS['permission-denied'],
  peer_rejected: GRPC_STATUS.unauthenticated,
  mtls_required: GRPC_STATUS.unauthenticated,
  upstream_reset: GRPC_STATUS.unavailable,
  request_timeout: GRPC_STATUS['deadline-exceeded'],
  fault_abort: GRPC_STATUS.unavailable,
  proxy_loop: GRPC_STATUS.internal,
  bad_request: GRPC_STATUS.internal,
  not_a_tcp_port: GRPC_STATUS.unimplemented,
  client_timeout: GRPC_STATUS['deadline-exceeded'],
  request_body_timeout: GRPC_STATUS['deadline-exceeded'],
  headers_too_large: GRPC_STATUS['resource-exhausted'],
  body_too_large: GRPC_STATUS['resource-exhausted'],
  shutting_down: GRPC_STATUS.unavailable,
  not_ready: GRPC_STATUS.unavailable,
};

/** gRPC's own mapping of an HTTP status to a gRPC status, for a response that carries none (fault injection's abort status). */
export function grpcStatusOfHttp(status: number): number {
  switch (status) {
    case 400:
      return GRPC_STATUS.internal;
    case 401:
      return GRPC_STATUS.unauthenticated;
    case 403:
      return GRPC_STATUS['permission-denied'];
    case 404:
      return GRPC_STATUS.unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return GRPC_STATUS.unavailable;
    default:
      return GRPC_STATUS.unknown;
  }
}

/**
 * `grpc-message` is percent-encoded: everything outside printable ASCII, and `%` itself
 * (PROTOCOL-HTTP2.md, "Status-Message").
 */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

/** The headers of a Trailers-Only gRPC response carrying `status`. */
export function trailersOnlyHeaders(status: number, message: string, extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  return { 'content-type': 'application/grpc', 'grpc-status': String(status), 'grpc-message': encodeGrpcMessage(message), ...extra };
}
