import { STATUS_CODES } from 'node:http';

/**
 * Every response the sidecar makes up itself carries a stable code: in the
 * `x-trellis-error` header, in the JSON body, and as `response_flags` in metrics. Codes
 * never change meaning; docs/sidecar.md lists them.
 */
export const PROXY_ERRORS = {
  unknown_service: {
    status: 404,
    message: 'the destination names no service this sidecar may call, nor an instance of one; egress to hosts outside the mesh is refused (allow it with Mesh spec.egress.mode: passthrough)',
  },
  no_route: { status: 404, message: 'no route rule of the destination matches this request' },
  no_backend: { status: 500, message: 'the matching rule has no backend to send to' },
  no_endpoints: { status: 503, message: 'the backend has no endpoints' },
  overloaded: { status: 503, message: 'the backend circuit breaker is open: too many requests in flight or waiting' },
  connect_failure: { status: 503, message: 'could not connect to the backend' },
  tls_failure: { status: 503, message: 'the mTLS handshake with the backend failed: its certificate or identity was not accepted' },
  access_denied: { status: 403, message: "the destination's access policy does not admit this call" },
  peer_rejected: { status: 403, message: "this sidecar does not accept the caller's certificate (untrusted chain, expired, or not an identity of this mesh)" },
  mtls_required: { status: 403, message: 'this service accepts only mTLS connections from mesh sidecars' },
  upstream_reset: { status: 502, message: 'the backend closed the connection before responding' },
  request_timeout: { status: 504, message: 'the backend did not respond within the request timeout' },
  fault_abort: { status: 503, message: 'aborted by fault injection' },
  proxy_loop: { status: 508, message: "the destination is this sidecar's own outbound listener: passing the call through would loop" },
  bad_request: { status: 400, message: 'malformed request' },
  not_a_tcp_port: { status: 405, message: 'CONNECT tunnels reach only service ports with appProtocol tcp; speak HTTP or gRPC to this one' },
  client_timeout: { status: 408, message: 'the request headers did not arrive in time' },
  request_body_timeout: { status: 408, message: 'the request body did not arrive within the body timeout' },
  headers_too_large: { status: 431, message: 'request headers too large' },
  body_too_large: { status: 413, message: 'request body too large' },
  shutting_down: { status: 503, message: 'the sidecar is shutting down' },
  not_ready: { status: 503, message: 'the sidecar has no config yet' },
} as const;

export type ProxyErrorCode = keyof typeof PROXY_ERRORS;

/** Header that names the code of a sidecar-made response. */
export const ERROR_HEADER = 'x-trellis-error';
/** Header set on circuit-breaker rejections, so clients can tell overload from failure. */
export const OVERLOAD_HEADER = 'x-trellis-overloaded';

/**
 * A proxy error as a whole HTTP/1.1 response, written straight to a socket no HTTP server
 * answers on any more (a malformed request's connection, a refused CONNECT): the status, the
 * code in `x-trellis-error` and the JSON body, then the connection closes.
 */
export function rawErrorResponse(code: ProxyErrorCode): string {
  const { status, message } = PROXY_ERRORS[code];
  const body = JSON.stringify({ error: code, message });
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${ERROR_HEADER}: ${code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}
