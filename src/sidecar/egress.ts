/**
 * Egress: calls to hosts the mesh does not know (no service, no instance of one), when
 * the mesh allows them (`Mesh.spec.egress.mode: passthrough`, compiled to
 * `inbound.egress`). The sidecar is then a plain HTTP proxy: it connects to the host and
 * port the app named (port 80 when none), resolving names with the system resolver, sends
 * the request once, and streams the answer back. No mTLS, no route rules, no mesh policy,
 * no retries: outside the mesh nothing is known to make them safe. Without passthrough the
 * outbound path refuses such calls (404 `unknown_service`).
 *
 * Metrics label these requests `destination_service="egress"` rather than by host, so a
 * client calling many hosts cannot grow the label set without bound.
 */
import { cutOff } from './h2-server.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Agent } from 'undici';
import type { Target } from './destination.ts';
import { endToEndHeaders } from './headers.ts';
import type { RequestRecord } from './request-record.ts';
import { relayResponse, sendAttempt } from './upstream.ts';

/** The `destination_service` label of egress requests. */
export const EGRESS_DESTINATION = 'egress';

/** Connect timeout towards hosts outside the mesh, in ms: generous, since they may be far away. */
const EGRESS_CONNECT_TIMEOUT_MS = 10_000;
/** Backstop for response headers and body gaps, in ms (undici's default would be 300 s). */
const EGRESS_IDLE_TIMEOUT_MS = 60_000;

export interface Egress {
  /** Sends the request to the host the app named and relays the answer; records the outcome. */
  forward(req: IncomingMessage, res: ServerResponse, record: RequestRecord, target: Target, dropHeaders: ReadonlySet<string>): void;
  /** Closes the idle connections; what is in flight is destroyed. */
  close(): Promise<void>;
}

export function createEgress(): Egress {
  const agent = new Agent({ connect: { timeout: EGRESS_CONNECT_TIMEOUT_MS }, headersTimeout: EGRESS_IDLE_TIMEOUT_MS, bodyTimeout: EGRESS_IDLE_TIMEOUT_MS, keepAliveTimeout: 30_000 });
  return {
    forward(req, res, record, target, dropHeaders) {
      record.destination = EGRESS_DESTINATION;
      record.route = EGRESS_DESTINATION;
      const origin = `http://${target.originalHost}:${target.port ?? 80}`;
      const headers = endToEndHeaders(req.headers, dropHeaders);
      headers.host = target.authority;
      const controller = new AbortController();
      const onClose = () => {
        if (cutOff(res)) controller.abort();
      };
      res.on('close', onClose);
      const body = req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined ? undefined : req;
      const path = target.query ? `${target.path}?${target.query}` : target.path;
      void sendAttempt(agent, { origin, method: req.method ?? 'GET', path, headers, body, timeoutMs: EGRESS_IDLE_TIMEOUT_MS, signal: controller.signal })
        .then(async (result) => {
          if (!result.ok) {
            if (result.failure === 'aborted') return record.done(499);
            return record.fail(res, result.failure === 'connect_failure' ? 'connect_failure' : result.failure === 'request_timeout' ? 'request_timeout' : 'upstream_reset');
          }
          try {
            await relayResponse(res, result, []);
          } catch {
            res.destroy();
          }
          record.done(result.statusCode);
        })
        .catch(() => record.fail(res, 'bad_request'))
        .finally(() => res.off('close', onClose));
    },
    close: () => agent.destroy(),
  };
}
