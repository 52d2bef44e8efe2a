/**
 * The request-body deadline, on both listeners: a request's body must have arrived in
 * full within `bodyTimeoutMs` of its headers (`--body-timeout`, 30 s by default). Node's
 * header timeout stops a client that sends its headers slowly; nothing stopped one that
 * sends a body slowly, and 200 connections dripping a byte a second held sidecar and app
 * connections (and the upstream requests behind them) open for as long as they liked.
 *
 * A whole-body deadline rather than a minimum rate: it bounds how long any one caller can
 * hold a connection and an upstream request, whatever its pace, and it is one number an
 * operator can reason about. Its cost is that an upload larger than the deadline allows
 * at the caller's bandwidth is cut too; raise the flag for such services (0 turns it off).
 *
 * When it passes: the caller gets **408 `request_body_timeout`** with `Connection: close`
 * if no response has begun (else the connection is cut: the only signal left); once that
 * answer is written `onExpired` runs (the caller of this module aborts its upstream
 * request there) and the connection is closed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants, type Http2ServerResponse } from 'node:http2';
import { sendProxyError } from './upstream.ts';

/** A request's body deadline; `expired` turns true once it passed with the body incomplete. */
export interface BodyDeadline {
  readonly expired: boolean;
}

const NO_DEADLINE: BodyDeadline = Object.freeze({ expired: false });

/** How long a connection may take to take the 408 before it is cut anyway, in ms. */
const ANSWER_GRACE_MS = 1000;

/** Whether the request announced a body (a non-zero Content-Length, or chunked). */
export function expectsBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * Arms the deadline for `req`'s body, `ms` from now (call when the request's headers have
 * arrived). Nothing is armed for a request without a body, or with `ms` 0. On expiry,
 * with the body still incomplete: `expired` turns true, the 408 is sent (or the
 * connection cut), then `onExpired()` runs (abort the upstream request, count it; at most
 * a second later when the caller does not take the answer), then the connection closes. The timer is cleared
 * when the body ends or the request closes.
 */
export function armBodyDeadline(req: IncomingMessage, res: ServerResponse, ms: number, onExpired: () => void): BodyDeadline {
  if (!(ms > 0) || req.complete || !expectsBody(req)) return NO_DEADLINE;
  const state = { expired: false };
  const timer = setTimeout(() => {
    if (req.complete) return;
    state.expired = true;
    // HTTP/2: only this request's stream ends; the connection carries other requests.
    const h2 = (res as unknown as Partial<Http2ServerResponse>).stream;
    const socket = h2 ? undefined : req.socket;
    if (res.headersSent) {
      res.destroy();
      onExpired();
      return;
    }
    // The 408 goes out before the upstream request is aborted: aborting it destroys the
    // request stream it reads, and with it the connection the answer is written to.
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      clearTimeout(cut);
      onExpired();
      if (h2) h2.close(constants.NGHTTP2_CANCEL);
      else socket?.destroy();
    };
    const cut = setTimeout(end, ANSWER_GRACE_MS);
    res.once('finish', end);
    res.once('close', end);
    if (!h2) res.setHeader('connection', 'close');
    sendProxyError(res, 'request_body_timeout');
  }, ms);
  const disarm = () => clearTimeout(timer);
  req.once('end', disarm);
  req.once('close', disarm);
  return state;
}
