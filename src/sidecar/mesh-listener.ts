/**
 * The inbound port's connection layer: mTLS per the mesh's `mtls.mode`, in front of the
 * HTTP server that handles the requests.
 *
 * - `strict`: every connection is TLS 1.3 with a client certificate. Plaintext fails the
 *   handshake, so no request is ever read from it.
 * - `permissive` and `off`: the first byte tells TLS (a handshake record, 0x16) from
 *   plaintext HTTP, and both are served: permissive is for migrating a mesh to mTLS, and
 *   `off` still answers callers that already switched. TLS connections sniffed this way
 *   run through a JavaScript stream, which costs throughput; strict mode avoids it.
 *
 * A TLS peer is admitted only when its chain verifies against the trust bundle and its
 * certificate names one SPIFFE ID of this mesh's trust domain; its identity is then
 * attached to the connection for the access decision (`peerOf`). The mode is read per
 * connection, so a config change applies to new connections at once.
 */
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { MtlsMode } from '../spec/types.ts';
import { parseMeshIdentity, spiffeIdOfAltNames } from '../identity/spiffe.ts';
import type { Credential } from './identity.ts';
import { sniffPlaintext, type H2Listener } from './h2-server.ts';

/** Who is at the other end of an inbound connection. */
export interface Peer {
  /** The verified SPIFFE ID; null for a plaintext connection or a refused peer. */
  readonly identity: string | null;
  readonly transport: 'mtls' | 'plaintext';
  /**
   * Set when the peer completed the TLS handshake but was not admitted (its chain, expiry
   * or identity): each of its requests is answered 403 peer_rejected and the connection
   * closed, so the calling sidecar learns why instead of seeing a bare reset.
   */
  readonly refused?: { readonly reason: TlsRefusal; readonly detail: string };
}

const PLAINTEXT: Peer = Object.freeze({ identity: null, transport: 'plaintext' });
/**
 * Where a connection's peer is kept: a symbol-keyed property of the socket rather than a
 * WeakMap, because HTTP/2 requests show their socket only through a proxy object, which
 * forwards property reads to the real socket but is not the same key.
 */
const PEER = Symbol('trellis.peer');

function setPeer(socket: object, peer: Peer): void {
  (socket as { [PEER]?: Peer })[PEER] = peer;
}

/** The peer of a connection accepted by a mesh listener (plaintext when unknown); takes the socket of either HTTP version's request. */
export function peerOf(socket: object): Peer {
  return (socket as { [PEER]?: Peer })[PEER] ?? PLAINTEXT;
}

/** First byte of a TLS record carrying a handshake message. */
const TLS_HANDSHAKE = 0x16;

export type TlsRefusal = 'plaintext_refused' | 'untrusted_certificate' | 'expired_certificate' | 'no_client_certificate' | 'bad_identity' | 'other_trust_domain' | 'no_identity' | 'handshake_failed';

export interface MeshListenerOptions {
  /** Handles the HTTP/1.1 requests of every admitted connection (it does not listen itself). */
  readonly http: HttpServer;
  /** Handles the connections that speak HTTP/2 (ALPN `h2`, or the h2c preface). */
  readonly h2: H2Listener;
  /** The current mode; undefined (no config yet) counts as strict. */
  readonly mode: () => MtlsMode | undefined;
  /** The trust domain peers must belong to (from the config), or undefined. */
  readonly trustDomain: () => string | undefined;
  readonly credential: () => Credential | undefined;
  readonly handshakeTimeoutMs: number;
  readonly onConnection: (transport: Peer['transport']) => void;
  readonly onRefused: (reason: TlsRefusal, detail: string) => void;
}

/** Why a verified-or-not TLS peer is refused, or its identity. */
export function verifyPeer(socket: TLSSocket, trustDomain: string | undefined): { ok: true; identity: string } | { ok: false; reason: TlsRefusal; detail: string } {
  const cert = socket.getPeerX509Certificate();
  if (!cert) return { ok: false, reason: 'no_client_certificate', detail: 'the peer sent no client certificate' };
  if (!socket.authorized) {
    const code = String(socket.authorizationError ?? 'unknown');
    return { ok: false, reason: code === 'CERT_HAS_EXPIRED' ? 'expired_certificate' : 'untrusted_certificate', detail: code };
  }
  const identity = spiffeIdOfAltNames(cert.subjectAltName);
  const parsed = identity ? parseMeshIdentity(identity) : null;
  if (!identity || !parsed) return { ok: false, reason: 'bad_identity', detail: `no mesh SPIFFE ID in ${cert.subjectAltName ?? 'no names'}` };
  if (trustDomain !== undefined && parsed.trustDomain !== trustDomain) return { ok: false, reason: 'other_trust_domain', detail: `${identity} is not in trust domain ${trustDomain}` };
  return { ok: true, identity };
}

export class MeshListener {
  readonly #o: MeshListenerOptions;
  readonly #net: NetServer;
  #tls: TlsServer | undefined;
  #tlsCredential: Credential | undefined;

  constructor(options: MeshListenerOptions) {
    this.#o = options;
    this.#net = createNetServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.#accept(socket));
  }

  /** The TLS server for the current credential (made on first use, re-keyed on rotation). */
  #tlsServer(): TlsServer | undefined {
    const credential = this.#o.credential();
    if (!credential) return undefined;
    if (!this.#tls) {
      // Verification happens in #admit rather than in the handshake: Node would close a
      // refused peer's connection without a word, where #admit tells it why (403 peer_rejected).
      this.#tls = createTlsServer({ ...credential.tlsOptions, requestCert: true, rejectUnauthorized: false, handshakeTimeout: this.#o.handshakeTimeoutMs, ALPNProtocols: ['h2', 'http/1.1'] });
      this.#tls.on('secureConnection', (socket: TLSSocket) => this.#admit(socket));
      this.#tls.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
        this.#o.onRefused(err.code === 'ERR_SSL_HTTP_REQUEST' ? 'plaintext_refused' : 'handshake_failed', err.code ?? err.message);
        socket.destroy();
      });
    } else if (this.#tlsCredential !== credential) {
      // New connections use the new certificate; connections already open keep theirs.
      this.#tls.setSecureContext({ ...credential.tlsOptions });
    }
    this.#tlsCredential = credential;
    return this.#tls;
  }

  #accept(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    const mode = this.#o.mode() ?? 'strict';
    if (mode === 'strict') {
      const tls = this.#tlsServer();
      if (!tls) {
        this.#o.onRefused('no_identity', 'this sidecar has no certificate yet');
        socket.destroy();
        return;
      }
      tls.emit('connection', socket);
      return;
    }
    // A peer that connects and sends nothing is cut off like a slow TLS handshake would be.
    const silent = setTimeout(() => socket.destroy(), this.#o.handshakeTimeoutMs);
    socket.once('close', () => clearTimeout(silent));
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(silent);
      socket.pause();
      if (chunk[0] !== TLS_HANDSHAKE) {
        // Plaintext: HTTP/1.1, or h2c when it opens with the HTTP/2 preface.
        this.#o.onConnection('plaintext');
        sniffPlaintext(socket, (s) => this.#o.http.emit('connection', s), (s) => this.#o.h2.accept(s), chunk);
        return;
      }
      socket.unshift(chunk);
      const tls = this.#tlsServer();
      if (!tls) {
        this.#o.onRefused('no_identity', 'this sidecar has no certificate yet');
        socket.destroy();
        return;
      }
      // A native TLS socket would read past the byte we put back; a stream wrapper does not.
      const wrapped = Duplex.from({ readable: socket, writable: socket });
      wrapped.on('error', () => socket.destroy());
      wrapped.on('close', () => socket.destroy());
      tls.emit('connection', wrapped);
    });
    socket.resume();
  }

  #admit(socket: TLSSocket): void {
    const verdict = verifyPeer(socket, this.#o.trustDomain());
    if (!verdict.ok) {
      this.#o.onRefused(verdict.reason, verdict.detail);
      setPeer(socket, Object.freeze({ identity: null, transport: 'mtls', refused: { reason: verdict.reason, detail: verdict.detail } }));
      this.#serve(socket);
      return;
    }
    setPeer(socket, Object.freeze({ identity: verdict.identity, transport: 'mtls' }));
    this.#o.onConnection('mtls');
    this.#serve(socket);
  }

  /** Hands an admitted TLS connection to the server of the HTTP version ALPN agreed on. */
  #serve(socket: TLSSocket): void {
    if (socket.alpnProtocol === 'h2') this.#o.h2.accept(socket);
    else this.#o.http.emit('connection', socket);
  }

  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#net.once('error', reject);
      this.#net.listen(port, host, () => resolve(this.#net.address() as AddressInfo));
    });
  }

  /** Stops accepting connections (those open are the HTTP server's to close). */
  close(): Promise<void> {
    return new Promise((resolve) => this.#net.close(() => resolve()));
  }
}
