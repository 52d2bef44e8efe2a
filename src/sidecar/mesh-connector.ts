/**
 * How a sidecar connects to a meshed instance (an HTTP/2 session, which also carries TCP
 * tunnels), chosen per new connection. Calls to a meshed service go over mTLS (TLS 1.3,
 * this sidecar's certificate, the trust bundle) when the mesh's mode is `strict` or
 * `permissive`, and the server must present exactly the identity the cluster resource
 * names; anything else is refused before a byte of the request is sent; the peer must also
 * agree to HTTP/2 (ALPN `h2`). Unmeshed services, and meshes with mTLS `off`, get plain TCP
 * (h2c; HTTP/1.1 backends are undici pools of their own, always plain: clusters.ts).
 * In `permissive` mode a sidecar without a certificate yet falls back to plaintext; in
 * `strict` it fails the connection (`no_identity`).
 *
 * The credential is read at connect time, so after a rotation new connections present the
 * new certificate while pooled ones carry on. TLS sessions are not resumed: every
 * connection proves its identity with the certificate current at that moment.
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls';
import type { ClusterBody } from '../config/types.ts';
import type { MtlsMode } from '../spec/types.ts';
import { spiffeIdOfAltNames } from '../identity/spiffe.ts';
import type { Credential } from './identity.ts';

/** Error codes of refusals this layer makes itself (classified as `tls_failure`). */
export const NO_IDENTITY = 'ERR_TRELLIS_NO_IDENTITY';
export const IDENTITY_MISMATCH = 'ERR_TRELLIS_PEER_IDENTITY';

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** OpenSSL and Node TLS error codes: the connection failed at the TLS layer, before any request went out. */
export function isTlsErrorCode(code: unknown): boolean {
  return typeof code === 'string' && (code.startsWith('ERR_TRELLIS_') || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || code.startsWith('CERT_') || code.startsWith('UNABLE_TO_') || code.startsWith('SELF_SIGNED_') || code.startsWith('DEPTH_ZERO_'));
}

export interface MeshConnectorDeps {
  readonly credential: () => Credential | undefined;
  readonly mode: () => MtlsMode | undefined;
  /** Told of every TLS refusal (for metrics and logs). */
  readonly onRefused: (reason: 'no_identity' | 'identity_mismatch' | 'handshake_failed', detail: string) => void;
}

export class MeshConnector {
  readonly #deps: MeshConnectorDeps;

  constructor(deps: MeshConnectorDeps) {
    this.#deps = deps;
  }

  /**
   * Opens a connection for HTTP/2 to an endpoint of the cluster `settings()` describes (read
   * at each connect): mTLS with ALPN `h2` to a meshed service (the peer's sidecar must agree
   * to h2), else plain TCP for h2c.
   */
  forCluster(settings: () => ClusterBody): (host: string, port: number) => Promise<Socket | TLSSocket> {
    return (host, port) => {
      const s = settings();
      const timeout = s.connection.connectTimeoutMs;
      const mode = this.#deps.mode() ?? 'strict';
      if (!s.meshed || s.identity === null || mode === 'off') return connectPlain(host, port, timeout);
      const credential = this.#deps.credential();
      if (!credential) {
        if (mode === 'permissive') return connectPlain(host, port, timeout);
        this.#deps.onRefused('no_identity', 'this sidecar has no certificate yet');
        return Promise.reject(codedError(NO_IDENTITY, 'this sidecar has no certificate yet, and the mesh requires mTLS'));
      }
      const expected = s.identity;
      return connectH2Tls(host, port, timeout, credential, expected).catch((err: NodeJS.ErrnoException) => {
        if (isTlsErrorCode(err.code)) this.#deps.onRefused(err.code === IDENTITY_MISMATCH ? 'identity_mismatch' : 'handshake_failed', `${err.code}: ${err.message}`);
        throw err;
      });
    };
  }
}

/** The error of a connect that took too long (classified like undici's: a connect failure). */
function connectTimeout(host: string, port: number, timeoutMs: number): Error {
  return codedError('UND_ERR_CONNECT_TIMEOUT', `could not connect to ${host}:${port} within ${timeoutMs} ms`);
}

/** A plain TCP connection (h2c, or a TCP service's), resolved once connected; half-open so a FIN from either side passes through. */
export function connectPlain(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port, noDelay: true, allowHalfOpen: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(connectTimeout(host, port, timeoutMs));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** An mTLS connection that agreed on HTTP/2 (ALPN `h2`) with a peer presenting `expected`. */
function connectH2Tls(host: string, port: number, timeoutMs: number, credential: Credential, expected: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(host) === 0 ? { servername: host } : {}),
      secureContext: credential.context,
      minVersion: 'TLSv1.3',
      ALPNProtocols: ['h2'],
      rejectUnauthorized: true,
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        const got = spiffeIdOfAltNames(cert.subjectaltname);
        return got === expected ? undefined : codedError(IDENTITY_MISMATCH, `the backend presented ${got ?? 'no SPIFFE ID'}, expected ${expected}`);
      },
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(connectTimeout(host, port, timeoutMs));
    }, timeoutMs);
    socket.setNoDelay(true);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.removeListener('error', reject);
      if (socket.alpnProtocol !== 'h2') {
        socket.destroy();
        reject(codedError('ERR_TRELLIS_NO_H2', `the peer at ${host}:${port} did not agree to HTTP/2 (ALPN ${String(socket.alpnProtocol)})`));
        return;
      }
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
