/**
 * The HTTP/2 side of the sidecar's listeners. A listener speaks both versions on one port:
 * a plaintext connection that opens with the HTTP/2 connection preface is h2c (prior
 * knowledge, as gRPC clients speak), anything else HTTP/1.1; a TLS connection is HTTP/2
 * when ALPN agreed on `h2`. HTTP/2 requests reach the same handlers as HTTP/1.1 ones,
 * through Node's compatibility API, and every session is tracked so a drain can send
 * GOAWAY (clients then open new streams elsewhere while those in flight finish).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Http2Server, type Http2ServerRequest, type Http2ServerResponse, type ServerHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** The client connection preface of HTTP/2 (RFC 9113 §3.4). */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** A request handler for either version (HTTP/2 through the compatibility API). */
export type AnyHandler = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void;

/** Largest memory one HTTP/2 session may hold in nghttp2 (MB), either side: busy multiplexed sessions exceed Node's 10 MB default. */
export const MAX_SESSION_MEMORY_MB = 64;

export class H2Listener {
  readonly server: Http2Server;
  readonly #sessions = new Set<ServerHttp2Session>();

  /** `connect`: HTTP/2 CONNECT requests (TCP tunnels between sidecars); without it they are refused (405). */
  constructor(handler: AnyHandler, idleTimeoutMs: number, connect?: (req: Http2ServerRequest, res: Http2ServerResponse) => void) {
    this.server = createServer({ maxSessionMemory: MAX_SESSION_MEMORY_MB, settings: { enablePush: false } }, (req: Http2ServerRequest, res: Http2ServerResponse) => {
      // The handlers read the authority where HTTP/1.1 puts it.
      if (req.headers.host === undefined && req.headers[':authority'] !== undefined) req.headers.host = req.headers[':authority'];
      handler(req, res);
    });
    this.server.on('session', (session: ServerHttp2Session) => {
      this.#sessions.add(session);
      session.on('error', () => undefined);
      session.once('close', () => this.#sessions.delete(session));
      if (idleTimeoutMs > 0) session.setTimeout(idleTimeoutMs, () => session.close());
    });
    this.server.on('sessionError', () => undefined);
    if (connect) this.server.on('connect', connect);
  }

  /** Serves HTTP/2 on a connection (plain h2c, or TLS that agreed on `h2`). */
  accept(socket: Duplex): void {
    this.server.emit('connection', socket);
  }

  /** Sessions open now. */
  get sessions(): number {
    return this.#sessions.size;
  }

  /** Sends GOAWAY on every session: no new streams; those in flight finish. */
  drain(): void {
    for (const s of this.#sessions) if (!s.closed) s.close();
  }

  /** Ends every session at once. */
  destroy(): void {
    for (const s of this.#sessions) s.destroy();
    this.#sessions.clear();
  }
}

/**
 * Reads just enough of a new plaintext connection to tell h2c from HTTP/1.1, puts it back,
 * and hands the connection to `h2` or `h1`. A connection that sends nothing is left to the
 * caller's timers. The socket must be paused (`pauseOnConnect`) or not yet read from.
 */
export function sniffPlaintext(socket: Socket, h1: (socket: Socket) => void, h2: (socket: Socket) => void, head?: Buffer): void {
  let seen = head ?? Buffer.alloc(0);
  /** 'h2' once the whole preface came, 'h1' at the first byte that differs from it. */
  const decide = (): 'h1' | 'h2' | undefined => {
    const n = Math.min(seen.length, PREFACE.length);
    if (n > 0 && !seen.subarray(0, n).equals(PREFACE.subarray(0, n))) return 'h1';
    return seen.length >= PREFACE.length ? 'h2' : undefined;
  };
  const finish = (version: 'h1' | 'h2') => {
    socket.pause();
    if (seen.length > 0) socket.unshift(seen);
    if (version === 'h2') h2(socket);
    else {
      h1(socket);
      socket.resume();
    }
  };
  const early = seen.length > 0 ? decide() : undefined;
  if (early) return finish(early);
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const version = decide();
    if (!version) return;
    socket.removeListener('data', onData);
    finish(version);
  };
  socket.on('data', onData);
  socket.resume();
}

/**
 * Makes the connection of this response end after it: `Connection: close` on HTTP/1.1;
 * on HTTP/2, GOAWAY on the session (its other streams finish).
 */
export function closeConnectionAfter(res: ServerResponse | Http2ServerResponse): void {
  if ('stream' in res) res.stream.session?.close();
  else res.setHeader('connection', 'close');
}

/**
 * Whether a response that closed was cut off rather than finished: the client went away
 * (or its connection failed) before the whole response was sent. HTTP/2's compatibility
 * response counts as finished once its stream closes, however it closed, so there the
 * stream's reset code tells (0: ended normally).
 */
export function cutOff(res: ServerResponse | Http2ServerResponse): boolean {
  if (!res.writableFinished) return true;
  return 'stream' in res && res.stream.rstCode !== undefined && res.stream.rstCode !== 0;
}
