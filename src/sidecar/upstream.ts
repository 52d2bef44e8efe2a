/**
 * One attempt to an upstream over an undici pool, its failures classified the way retry,
 * outlier detection and error responses need them, and the streaming of a response back.
 */
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher, Pool } from 'undici';
import type { CompiledHeaderModifier } from '../config/types.ts';
import { ERROR_HEADER, OVERLOAD_HEADER, PROXY_ERRORS, type ProxyErrorCode } from './errors.ts';
import { applyHeaderModifier, endToEndHeaders } from './headers.ts';
import { isTlsErrorCode } from './mesh-connector.ts';

/** Why an attempt produced no response. */
export type AttemptFailure = 'connect_failure' | 'tls_failure' | 'upstream_reset' | 'request_timeout' | 'aborted';

export type AttemptResult =
  | { readonly ok: true; readonly statusCode: number; readonly headers: Record<string, string | string[] | undefined>; readonly body: Dispatcher.ResponseData['body'] }
  | { readonly ok: false; readonly failure: AttemptFailure; readonly error: Error };

/** Errors raised before the connection was made: nothing reached the upstream. */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

export function classifyFailure(err: unknown): AttemptFailure {
  const e = err as { code?: string; name?: string; cause?: { code?: string } };
  const code = e.code ?? e.cause?.code;
  if (code !== undefined && CONNECT_ERRORS.has(code)) return 'connect_failure';
  // A TLS alert after the handshake (a server that refused our certificate) arrives as a socket error.
  if (isTlsErrorCode(code) || isTlsErrorCode(e.cause?.code)) return 'tls_failure';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'request_timeout';
  if (e.name === 'AbortError' || code === 'UND_ERR_ABORTED' || code === 'ABORT_ERR') return 'aborted';
  return 'upstream_reset';
}

export interface AttemptOptions {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  /** A replayable body (Buffer), a one-shot stream, or none. */
  readonly body: Buffer | Readable | undefined;
  /** Time allowed for response headers, and for each gap in the response body, in ms; 0 waits forever. */
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
}

/**
 * Sends one attempt over a pool (or, with `o.origin`, any dispatcher: an Agent for egress);
 * throws only for requests undici refuses to send (bugs).
 */
export async function sendAttempt(pool: Pool | Dispatcher, o: AttemptOptions & { readonly origin?: string }): Promise<AttemptResult> {
  try {
    const response = await pool.request({
      ...(o.origin === undefined ? {} : { origin: o.origin }),
      method: o.method as Dispatcher.HttpMethod,
      path: o.path,
      headers: o.headers,
      body: o.body,
      signal: o.signal,
      headersTimeout: o.timeoutMs,
      bodyTimeout: o.timeoutMs,
    });
    return { ok: true, statusCode: response.statusCode, headers: response.headers, body: response.body };
  } catch (error) {
    // A request undici refuses to send is a bug of ours, not a backend failure.
    if ((error as { code?: string }).code === 'UND_ERR_INVALID_ARG') throw error;
    return { ok: false, failure: classifyFailure(error), error: error as Error };
  }
}

/** Sends a proxy-made error response with its stable code; nothing if headers already went out. */
export function sendProxyError(res: ServerResponse, code: ProxyErrorCode, extraHeaders: Record<string, string> = {}): number {
  const status = PROXY_ERRORS[code].status;
  if (res.headersSent) {
    res.destroy();
    return status;
  }
  const body = JSON.stringify({ error: code, message: PROXY_ERRORS[code].message });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), [ERROR_HEADER]: code, ...(code === 'overloaded' ? { [OVERLOAD_HEADER]: 'true' } : {}), ...extraHeaders });
  res.end(body);
  return status;
}

/**
 * Streams an upstream response to the client: end-to-end headers, then modifiers, then
 * the body as it arrives (never buffered). Resolves when the body is done or the client
 * went away; rejects when the upstream failed mid-body (the client connection is then
 * destroyed, the only honest signal left once headers are sent). Plain `pipe` rather than
 * `stream.pipeline`: pipeline's abort machinery costs more than the relay itself (it made
 * the proxy about 1.5× slower in the proxy benchmark).
 */
export function relayResponse(res: ServerResponse, result: Extract<AttemptResult, { ok: true }>, modifiers: readonly CompiledHeaderModifier[]): Promise<void> {
  const headers = endToEndHeaders(result.headers as Record<string, string | string[] | undefined>);
  for (const m of modifiers) applyHeaderModifier(headers, m);
  res.writeHead(result.statusCode, headers);
  const body = result.body;
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      if (err) reject(err);
      else resolve();
    };
    body.once('error', (err: Error) => {
      res.destroy(err);
      settle(err);
    });
    res.once('finish', () => settle());
    res.once('close', () => {
      if (!res.writableFinished) body.destroy();
      settle();
    });
    body.pipe(res);
  });
}
