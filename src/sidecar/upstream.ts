/**
 * One attempt to an upstream over an undici pool, its failures classified the way retry,
 * outlier detection and error responses need them, and the streaming of a response back.
 */
import { cutOff } from './h2-server.ts';
import type { ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import type { Readable } from 'node:stream';
import type { Dispatcher, Pool } from 'undici';
import type { CompiledHeaderModifier } from '../config/types.ts';
import { ERROR_HEADER, OVERLOAD_HEADER, PROXY_ERRORS, type ProxyErrorCode } from './errors.ts';
import { applyHeaderModifier, endToEndHeaders } from './headers.ts';
import { isTlsErrorCode } from './mesh-connector.ts';
import { grpcStatusOfHttp, PROXY_ERROR_GRPC_STATUS, trailersOnlyHeaders } from './grpc.ts';
import { ReplayBody } from './replay-body.ts';

/** Why an attempt produced no response. */
export type AttemptFailure = 'connect_failure' | 'tls_failure' | 'upstream_reset' | 'request_timeout' | 'aborted';

/** A response body: streamed, never buffered; `dump` discards it (before a retry). */
export type ResponseBody = Readable & { dump(): Promise<void> };

export type AttemptResult =
  | {
      readonly ok: true;
      readonly statusCode: number;
      readonly headers: Record<string, string | string[] | undefined>;
      readonly body: ResponseBody;
      /** The trailers, once the body has ended (undefined when there were none). */
      readonly trailers: () => Record<string, string | string[] | undefined> | undefined;
      /** HTTP/2: the response ended with its headers (gRPC's Trailers-Only form): they are its trailers too. */
      readonly trailersOnly?: boolean;
    }
  | { readonly ok: false; readonly failure: AttemptFailure; readonly error: Error };

/** The response side a listener writes to: HTTP/1.1's, or HTTP/2's compatibility response. */
export type DownstreamResponse = ServerResponse | Http2ServerResponse;

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
  /** A replayable body (Buffer, or a ReplayBody while it still holds the whole body), a one-shot stream, or none. */
  readonly body: Buffer | Readable | ReplayBody | undefined;
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
      body: o.body instanceof ReplayBody ? o.body.stream() : o.body,
      signal: o.signal,
      headersTimeout: o.timeoutMs,
      bodyTimeout: o.timeoutMs,
    });
    return { ok: true, statusCode: response.statusCode, headers: response.headers, body: response.body, trailers: () => (Object.keys(response.trailers).length === 0 ? undefined : response.trailers) };
  } catch (error) {
    // A request undici refuses to send is a bug of ours, not a backend failure.
    if ((error as { code?: string }).code === 'UND_ERR_INVALID_ARG') throw error;
    return { ok: false, failure: classifyFailure(error), error: error as Error };
  }
}

/**
 * Sends a proxy-made error response with its stable code; nothing if headers already went
 * out. To a gRPC call (`grpc`), the error is a gRPC status in a Trailers-Only response
 * (HTTP 200), its stable code in the `x-trellis-error` metadata; the HTTP status it
 * stands for is still what is returned (for metrics and logs).
 */
export function sendProxyError(res: DownstreamResponse, code: ProxyErrorCode, extraHeaders: Record<string, string> = {}, grpc = false): number {
  const status = PROXY_ERRORS[code].status;
  if (res.headersSent) {
    res.destroy();
    return status;
  }
  const marks = { [ERROR_HEADER]: code, ...(code === 'overloaded' ? { [OVERLOAD_HEADER]: 'true' } : {}), ...extraHeaders };
  if (grpc) {
    endTrailersOnly(res, trailersOnlyHeaders(PROXY_ERROR_GRPC_STATUS[code], `${code}: ${PROXY_ERRORS[code].message}`, marks));
    return status;
  }
  const body = JSON.stringify({ error: code, message: PROXY_ERRORS[code].message });
  (res as ServerResponse).writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...marks });
  res.end(body);
  return status;
}

/** A gRPC error made by the sidecar that carries an HTTP status of its own (fault injection's abort). */
export function sendGrpcStatusOfHttp(res: DownstreamResponse, httpStatus: number, message: string, marks: Record<string, string>): void {
  endTrailersOnly(res, trailersOnlyHeaders(grpcStatusOfHttp(httpStatus), message, marks));
}

/**
 * Ends a response with its headers only: on HTTP/2 a single HEADERS frame with END_STREAM
 * (what gRPC clients read as Trailers-Only), on HTTP/1.1 headers and an empty body.
 */
function endTrailersOnly(res: DownstreamResponse, headers: Record<string, string>): void {
  if ('stream' in res) {
    res.stream.respond({ ':status': 200, ...headers }, { endStream: true });
    return;
  }
  (res as ServerResponse).writeHead(200, { ...headers, 'content-length': 0 });
  res.end();
}

/**
 * Streams an upstream response to the client: end-to-end headers, then modifiers, then
 * the body as it arrives (never buffered), then the trailers (gRPC's status lives there).
 * A Trailers-Only response (HTTP/2 headers with END_STREAM: how gRPC servers answer with
 * an error at once) is passed on in the same form to an HTTP/2 client. Resolves with the
 * trailers when the body is done, or undefined when the client went away; rejects when the
 * upstream failed mid-body (the client connection is then destroyed, the only honest
 * signal left once headers are sent). Plain `pipe` rather than `stream.pipeline`:
 * pipeline's abort machinery costs more than the relay itself (it made the proxy about
 * 1.5× slower in the proxy benchmark).
 */
export function relayResponse(res: DownstreamResponse, result: Extract<AttemptResult, { ok: true }>, modifiers: readonly CompiledHeaderModifier[]): Promise<Record<string, string | string[] | undefined> | undefined> {
  const headers = endToEndHeaders(result.headers as Record<string, string | string[] | undefined>);
  for (const m of modifiers) applyHeaderModifier(headers, m);
  const body = result.body;
  if (result.trailersOnly && 'stream' in res) {
    body.resume();
    res.stream.respond({ ...headers, ':status': result.statusCode }, { endStream: true });
    return Promise.resolve(result.headers);
  }
  (res as ServerResponse).writeHead(result.statusCode, headers);
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      if (err) reject(err);
      else resolve(result.trailersOnly ? result.headers : result.trailers());
    };
    body.once('error', (err: Error) => {
      res.destroy(err);
      settle(err);
    });
    body.once('end', () => {
      const trailers = result.trailers();
      if (trailers !== undefined) res.addTrailers(endToEndHeaders(trailers) as Record<string, string>);
      res.end();
    });
    res.once('finish', () => settle());
    res.once('close', () => {
      if (cutOff(res)) body.destroy();
      settle();
    });
    body.pipe(res as NodeJS.WritableStream, { end: false });
  });
}
