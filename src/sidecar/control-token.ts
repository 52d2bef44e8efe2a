/**
 * The bearer a sidecar presents to the reconciler (config stream, acks, certificate
 * requests). On Kubernetes it is the pod's projected ServiceAccount token, a file the
 * kubelet rewrites before the token expires (an hour by default): read once at start, the
 * sidecar would present an expired token from then on and be refused. So the token is a
 * source asked anew for every request; outside Kubernetes a fixed shared token
 * (`TRELLIS_CONTROL_TOKEN`) is a source that never changes.
 */
import { readFileSync } from 'node:fs';

/** Returns the token to present now; throws (with a message fit for a log) when there is none. */
export type ControlToken = () => string;

/** A token that never changes. */
export function fixedToken(token: string): ControlToken {
  return () => token;
}

/**
 * A token read from `path` on every call, whitespace trimmed. A read is a few
 * microseconds and control requests are rare, so nothing is cached: the kubelet replaces
 * the file atomically (a symlink swap), so each read sees the old token or the new one.
 * Throws when the file cannot be read or is empty; the callers log it and retry with
 * backoff, like any failed control request.
 */
export function tokenFromFile(path: string): ControlToken {
  return () => {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new Error(`cannot read the control token file ${path}: ${(err as Error).message}`);
    }
    const token = text.trim();
    if (token === '') throw new Error(`the control token file ${path} is empty`);
    return token;
  };
}

/** The Authorization header value for a token given as a string or a source. */
export function bearer(token: string | ControlToken): string {
  return `Bearer ${typeof token === 'string' ? token : token()}`;
}

/**
 * A refusal by the reconciler (401 or 403): its status and the stable code of its JSON
 * body (`{"error": code}`), so logs say *why* (an expired token, a wrong audience…).
 */
export class ControlRefused extends Error {
  readonly status: number;
  readonly code: string;
  constructor(what: string, status: number, body: string) {
    let code = 'unknown';
    try {
      const parsed = JSON.parse(body) as { error?: unknown };
      if (typeof parsed.error === 'string') code = parsed.error;
    } catch {
      // not JSON: the code stays unknown, the text goes into the message
    }
    super(`the reconciler refused the ${what} with ${status} ${code}: ${body.slice(0, 200)}`);
    this.status = status;
    this.code = code;
  }
}
