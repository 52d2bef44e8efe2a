/**
 * Header handling on the way through: hop-by-hop headers dropped, forwarding and tracing
 * headers generated or passed on, header modifiers applied.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { CompiledHeaderModifier } from '../config/types.ts';
import type { RequestSpan } from './tracing.ts';

/** RFC 9110 §7.6.1 connection-specific headers, plus the legacy ones proxies also drop. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);

/** Copies headers without hop-by-hop ones (including those the Connection header names), HTTP/2 pseudo-headers, and `drop`. */
export function endToEndHeaders(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>, drop?: ReadonlySet<string>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const connection = headers.connection;
  const named = typeof connection === 'string' && connection !== 'keep-alive' && connection !== 'close' ? new Set(connection.toLowerCase().split(',').map((s) => s.trim())) : undefined;
  for (const name in headers) {
    const value = headers[name];
    // HTTP/2 pseudo-headers (`:path`, `:authority`…) belong to their hop.
    if (value === undefined || HOP_BY_HOP.has(name) || name.charCodeAt(0) === 0x3a || named?.has(name) || drop?.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Applies a compiled header modifier in place: set replaces, add appends, remove deletes. */
export function applyHeaderModifier(headers: Record<string, string | string[]> | OutgoingHttpHeaders, m: CompiledHeaderModifier): void {
  for (const h of m.set) headers[h.name] = h.value;
  for (const h of m.add) {
    const prev = headers[h.name];
    headers[h.name] = prev === undefined ? h.value : Array.isArray(prev) ? [...prev, h.value] : `${String(prev)},${h.value}`;
  }
  for (const name of m.remove) delete headers[name];
}

/**
 * Adds the headers a mesh hop owes the next one: `x-forwarded-for` (appended),
 * `x-forwarded-proto`, `x-forwarded-host`, an `x-request-id` when the caller sent none,
 * and a W3C `traceparent` when neither it nor B3 headers are present. With a `span` (tracing
 * on), the trace headers carry that span's context instead (tracing.ts `RequestSpan.inject`).
 */
export function addForwardingHeaders(headers: Record<string, string | string[]>, clientAddress: string | undefined, originalHost: string | undefined, span?: RequestSpan): void {
  const xff = headers['x-forwarded-for'];
  const client = clientAddress?.startsWith('::ffff:') ? clientAddress.slice(7) : clientAddress;
  if (client) headers['x-forwarded-for'] = xff ? `${Array.isArray(xff) ? xff.join(', ') : xff}, ${client}` : client;
  if (!headers['x-forwarded-proto']) headers['x-forwarded-proto'] = 'http';
  if (originalHost && !headers['x-forwarded-host']) headers['x-forwarded-host'] = originalHost;
  if (!headers['x-request-id']) headers['x-request-id'] = randomUUID();
  if (span !== undefined) span.inject(headers);
  else if (!headers.traceparent && !headers['x-b3-traceid'] && !headers.b3) {
    // randomUUID draws from a cached entropy pool; two randomBytes calls per request cost
    // about 5% of the proxy's CPU. The UUID's fixed version bits leave 122 random bits.
    const id = randomUUID().replaceAll('-', '');
    headers.traceparent = `00-${id}-${randomUUID().replaceAll('-', '').slice(0, 16)}-01`;
  }
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/**
 * Whether a request may be sent twice: an idempotent method (RFC 9110 §9.2.2), or any
 * request carrying an `Idempotency-Key` (the server promised to deduplicate it).
 */
export function isRetrySafe(method: string, headers: IncomingHttpHeaders): boolean {
  return IDEMPOTENT.has(method) || headers['idempotency-key'] !== undefined;
}
