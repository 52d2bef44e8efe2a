/**
 * HTTP/2 to one endpoint: one multiplexed session, opened on first use (over the
 * connection `connect` makes: mTLS with ALPN `h2` to a sidecar, plain h2c to an app or an
 * unmeshed backend), shared by every request to that endpoint, and replaced when the peer
 * sends GOAWAY, the connection fails, or it sat idle past the cluster's idle timeout.
 * Because the session carries many requests at once, the balancer picks an endpoint per
 * *request*: a gRPC client's single connection to its sidecar spreads over every backend.
 *
 * `send` has the contract of upstream.ts `sendAttempt`: it resolves with the response
 * (headers, a body stream that is never buffered, its trailers once they came) or a
 * classified failure. A stream the peer refused (REFUSED_STREAM, or beyond the last stream
 * of a GOAWAY) never reached the app and is classified `connect_failure`, so it is retried
 * like a refused connection.
 */
import { connect as connectSession, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { Duplex, Readable } from 'node:stream';
import { classifyFailure, type AttemptFailure, type AttemptOptions, type AttemptResult, type ResponseBody } from './upstream.ts';
import { ReplayBody } from './replay-body.ts';
import { MAX_SESSION_MEMORY_MB } from './h2-server.ts';
import { ERROR_HEADER, PROXY_ERRORS, type ProxyErrorCode } from './errors.ts';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_FLAG_END_STREAM } = constants;


/** Opens the connection a session runs over; rejects with a coded error undici-style (ECONNREFUSED, TLS codes…). */
export type H2Connect = () => Promise<Duplex>;

/** Request headers as HTTP/2 wants them: pseudo-headers first, `host` moved to `:authority`. */
export function h2RequestHeaders(method: string, path: string, headers: Readonly<Record<string, string | string[]>>, scheme: 'http' | 'https'): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ':method': method, ':path': path, ':scheme': scheme };
  const host = headers.host ?? headers[':authority'];
  if (host !== undefined) out[':authority'] = Array.isArray(host) ? host[0] : host;
  for (const name in headers) {
    if (name === 'host' || name.charCodeAt(0) === 0x3a) continue;
    out[name] = headers[name];
  }
  return out;
}

/** Response headers without pseudo-headers. */
function plainHeaders(headers: IncomingHttpHeaders): Record<string, string | string[] | undefined> {
  const out: Record<string, string | string[] | undefined> = {};
  for (const name in headers) if (name.charCodeAt(0) !== 0x3a) out[name] = headers[name];
  return out;
}

/** The error code of an attempt whose stream the peer refused unprocessed. */
const REFUSED_STREAM_CODE = 'ERR_TRELLIS_REFUSED_STREAM';

/** A refused stream: its session takes no more (the next attempt opens a new one). */
function refusedStream(session: ClientHttp2Session, pool: H2Pool): AttemptResult {
  pool.retire(session);
  return { ok: false, failure: 'connect_failure', error: Object.assign(new Error('the peer refused the stream unprocessed (GOAWAY or REFUSED_STREAM)'), { code: REFUSED_STREAM_CODE }) };
}

function refused(err: NodeJS.ErrnoException | undefined, stream: ClientHttp2Stream): boolean {
  return stream.rstCode === NGHTTP2_REFUSED_STREAM || err?.code === 'ERR_HTTP2_GOAWAY_SESSION' || err?.code === 'ERR_HTTP2_OUT_OF_STREAMS';
}

export class H2Pool {
  readonly #origin: string;
  readonly #connect: H2Connect;
  readonly #idleTimeoutMs: number;
  #session: ClientHttp2Session | undefined;
  #opening: Promise<ClientHttp2Session> | undefined;
  /** Sessions still finishing their streams after GOAWAY or a pool close. */
  readonly #old = new Set<ClientHttp2Session>();
  #closed = false;
  #active = 0;

  /** `origin`: `http://host:port` (the scheme of `:scheme`; the transport is whatever `connect` makes). */
  constructor(origin: string, connect: H2Connect, idleTimeoutMs: number) {
    this.#origin = origin;
    this.#connect = connect;
    this.#idleTimeoutMs = idleTimeoutMs;
  }

  /** Requests in flight on this pool. */
  get active(): number {
    return this.#active;
  }

  /** Sessions open (for tests and the admin view): 0 or 1, plus any draining after GOAWAY. */
  get sessions(): number {
    return (this.#session ? 1 : 0) + this.#old.size;
  }

  /** Takes `session` out of use: no new streams on it; it closes once its streams are done. */
  retire(session: ClientHttp2Session): void {
    if (this.#session === session) this.#session = undefined;
    if (!session.closed && !session.destroyed) {
      this.#old.add(session);
      session.close();
    }
  }

  /** The next request opens a new session; the current one finishes its streams, then closes. */
  renew(): void {
    if (this.#session) this.retire(this.#session);
  }

  #open(): Promise<ClientHttp2Session> {
    if (this.#session && !this.#session.closed && !this.#session.destroyed) return Promise.resolve(this.#session);
    if (this.#opening) return this.#opening;
    const opening = this.#connect().then((socket) => {
      const session = connectSession(this.#origin, { createConnection: () => socket, maxSessionMemory: MAX_SESSION_MEMORY_MB, settings: { enablePush: false } });
      session.on('error', () => undefined);
      session.on('goaway', () => this.retire(session));
      session.on('close', () => {
        this.#old.delete(session);
        if (this.#session === session) this.#session = undefined;
      });
      if (this.#idleTimeoutMs > 0) session.setTimeout(this.#idleTimeoutMs, () => this.retire(session));
      // The pool's session should not keep a process alive on its own.
      session.unref();
      if (this.#closed) session.close();
      else this.#session = session;
      return session;
    });
    this.#opening = opening;
    const clear = () => {
      if (this.#opening === opening) this.#opening = undefined;
    };
    opening.then(clear, clear);
    return opening;
  }

  /**
   * Sends one attempt. A stream the peer refused unprocessed (it had sent GOAWAY, which had
   * not arrived yet: a peer rotating its certificate or draining) is sent once more on a new
   * session, when the body can be sent again: HTTP/2 guarantees such a stream was never seen
   * by the app (RFC 9113 §8.7), so this is no retry in the route's sense.
   */
  async send(o: AttemptOptions & { readonly scheme?: 'http' | 'https' }): Promise<AttemptResult> {
    const first = await this.#sendOnce(o);
    if (first.ok || (first.error as NodeJS.ErrnoException).code !== REFUSED_STREAM_CODE) return first;
    const body = o.body;
    const replayable = body === undefined || Buffer.isBuffer(body) || (body instanceof ReplayBody && body.replayable);
    return replayable && !o.signal.aborted ? this.#sendOnce(o) : first;
  }

  /**
   * A new stream on the pool's session (opened first if need be), counted in `active`
   * until it closes; or why there is none: the pool is closed, the connection failed, the
   * caller went away meanwhile (`signal`), or the session closed under it (GOAWAY: nothing
   * was sent).
   */
  async #stream(headers: OutgoingHttpHeaders, endStream: boolean, signal?: AbortSignal): Promise<{ ok: true; session: ClientHttp2Session; stream: ClientHttp2Stream } | { ok: false; failure: AttemptFailure; error: Error }> {
    if (this.#closed) return { ok: false, failure: 'connect_failure', error: Object.assign(new Error('the pool is closed'), { code: 'ECONNREFUSED' }) };
    let session: ClientHttp2Session;
    try {
      session = await this.#open();
    } catch (error) {
      return { ok: false, failure: classifyFailure(error), error: error as Error };
    }
    if (signal?.aborted) return { ok: false, failure: 'aborted', error: new Error('aborted') };
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream });
    } catch (error) {
      this.retire(session);
      return { ok: false, failure: 'connect_failure', error: error as Error };
    }
    this.#active++;
    stream.once('close', () => this.#active--);
    return { ok: true, session, stream };
  }

  async #sendOnce(o: AttemptOptions & { readonly scheme?: 'http' | 'https' }): Promise<AttemptResult> {
    const opened = await this.#stream(h2RequestHeaders(o.method, o.path, o.headers, o.scheme ?? 'http'), o.body === undefined, o.signal);
    if (!opened.ok) return opened;
    const { session, stream } = opened;
    const body = o.body instanceof ReplayBody ? o.body.stream() : o.body;
    return new Promise<AttemptResult>((resolve) => {
      let answered = false;
      let trailers: IncomingHttpHeaders | undefined;
      const answer = (r: AttemptResult) => {
        if (answered) return;
        answered = true;
        clearTimeout(timer);
        resolve(r);
      };
      const onAbort = () => {
        stream.close(NGHTTP2_CANCEL);
        if (answered) stream.destroy(Object.assign(new Error('request aborted'), { name: 'AbortError', code: 'ABORT_ERR' }));
        else answer({ ok: false, failure: 'aborted', error: new Error('aborted') });
      };
      o.signal.addEventListener('abort', onAbort, { once: true });
      stream.once('close', () => {
        o.signal.removeEventListener('abort', onAbort);
        if (!answered) answer(refused(undefined, stream) ? refusedStream(session, this) : { ok: false, failure: 'upstream_reset', error: new Error(`stream closed before a response (code ${stream.rstCode})`) });
      });
      const timer = o.timeoutMs > 0 ? setTimeout(() => {
        stream.close(NGHTTP2_CANCEL);
        answer({ ok: false, failure: 'request_timeout', error: Object.assign(new Error('no response headers within the timeout'), { code: 'UND_ERR_HEADERS_TIMEOUT' }) });
      }, o.timeoutMs) : undefined;
      stream.on('error', (err: NodeJS.ErrnoException) => {
        if (!answered) answer(refused(err, stream) ? refusedStream(session, this) : { ok: false, failure: classifyFailure(err), error: err });
      });
      stream.once('trailers', (t: IncomingHttpHeaders) => (trailers = t));
      stream.once('response', (headers: IncomingHttpHeaders, flags: number) => {
        const status = Number(headers[':status']);
        if (o.timeoutMs > 0) {
          stream.setTimeout(o.timeoutMs, () => stream.destroy(Object.assign(new Error('the response body stalled past the timeout'), { code: 'UND_ERR_BODY_TIMEOUT' })));
        }
        const responseBody = stream as unknown as ResponseBody;
        responseBody.dump = () => {
          if (!stream.closed) stream.close(NGHTTP2_CANCEL);
          return Promise.resolve();
        };
        answer({
          ok: true,
          statusCode: status,
          headers: plainHeaders(headers),
          body: responseBody,
          trailers: () => (trailers === undefined ? undefined : plainHeaders(trailers)),
          trailersOnly: (flags & NGHTTP2_FLAG_END_STREAM) !== 0,
        });
      });
      if (body !== undefined) {
        if (Buffer.isBuffer(body)) stream.end(body);
        else pipeBody(body, stream);
      }
    });
  }

  /**
   * Opens an HTTP/2 CONNECT tunnel for a TCP connection (the peer's sidecar splices it to
   * its app): the stream once the peer answered 200, or the stable code it refused with
   * (`x-trellis-error`), or how the connection failed.
   */
  async tunnel(authority: string, headers: Readonly<Record<string, string>>, timeoutMs: number): Promise<{ ok: true; stream: ClientHttp2Stream } | { ok: false; code: ProxyErrorCode }> {
    const opened = await this.#stream({ ':method': 'CONNECT', ':authority': authority, ...headers }, false);
    if (!opened.ok) return { ok: false, code: opened.failure === 'tls_failure' ? 'tls_failure' : 'connect_failure' };
    const { stream } = opened;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        stream.close(NGHTTP2_CANCEL);
        resolve({ ok: false, code: 'connect_failure' });
      }, timeoutMs);
      stream.once('error', () => {
        clearTimeout(timer);
        resolve({ ok: false, code: 'connect_failure' });
      });
      stream.once('close', () => {
        clearTimeout(timer);
        resolve({ ok: false, code: refused(undefined, stream) ? 'connect_failure' : 'upstream_reset' });
      });
      stream.once('response', (h: IncomingHttpHeaders) => {
        clearTimeout(timer);
        if (Number(h[':status']) === 200) return resolve({ ok: true, stream });
        const code = h[ERROR_HEADER];
        stream.close(NGHTTP2_CANCEL);
        resolve({ ok: false, code: typeof code === 'string' && code in PROXY_ERRORS ? (code as ProxyErrorCode) : 'upstream_reset' });
      });
    });
  }

  /** Closes gracefully: no new requests, those in flight finish. */
  async close(): Promise<void> {
    this.#closed = true;
    const sessions = [...this.#old, ...(this.#session ? [this.#session] : [])];
    this.#session = undefined;
    await Promise.all(sessions.map((s) => new Promise<void>((resolve) => (s.closed || s.destroyed ? resolve() : s.close(() => resolve())))));
  }

  /** Closes at once, failing what is in flight. */
  async destroy(): Promise<void> {
    this.#closed = true;
    for (const s of [...this.#old, ...(this.#session ? [this.#session] : [])]) s.destroy();
    this.#old.clear();
    this.#session = undefined;
  }
}

/** Streams a request body into an HTTP/2 stream (flow control through backpressure); a failed body cancels the stream. */
function pipeBody(body: Readable, stream: ClientHttp2Stream): void {
  body.on('error', () => {
    if (!stream.closed) stream.close(NGHTTP2_CANCEL);
  });
  // The upstream may finish (a response and its trailers) before the app's body ends: stop
  // feeding it, and leave the app's stream to the listener that owns it.
  stream.on('close', () => body.unpipe(stream));
  body.pipe(stream);
}
