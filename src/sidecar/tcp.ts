/**
 * TCP through the mesh: services whose port says `appProtocol: tcp` carry opaque byte
 * streams. No route rule or L7 access rule applies; what does:
 *
 * - the caller reaches such a service either with HTTP `CONNECT service:port` to its
 *   sidecar's outbound port (any proxy-aware client), or through a local port the sidecar
 *   listens on for one service port (`--tcp-upstream 127.0.0.1:15432=db:5432`, for clients
 *   that only dial an address);
 * - the caller's sidecar picks an instance (balancer, outlier state, circuit breaker: the
 *   cluster's `maxConnections` bounds its open connections) and, for a meshed service,
 *   opens an HTTP/2 CONNECT tunnel over mTLS to that instance's sidecar — many tunnels share
 *   one connection — or, for an unmeshed one, a plain TCP connection;
 * - the destination's sidecar admits the tunnel on the caller's verified identity (its
 *   AccessPolicy's `from`), then connects to the app's target port;
 * - bytes flow both ways as they come, half-closes pass through, and a connection idle
 *   for the cluster's `idleTimeout` is closed.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Logger } from 'pino';
import { decideConnection } from '../config/access.ts';
import { serviceKeyOfHost } from '../spec/names.ts';
import type { TcpUpstream } from './tcp-upstream.ts';
import type { Cluster, ClusterManager } from './clusters.ts';
import type { ConfigStore } from './config-store.ts';
import { hostOfServiceKey, splitAuthority } from './destination.ts';
import type { Endpoint } from './endpoint.ts';
import { rawErrorResponse, type ProxyErrorCode } from './errors.ts';
import type { SidecarMetrics } from './metrics.ts';
import { callerLabel } from './inbound.ts';
import { peerOf } from './mesh-listener.ts';
import { DESTINATION_HEADER } from './outbound.ts';
import { untriedFirst } from './retry.ts';
import { sendProxyError } from './upstream.ts';
import { connectPlain } from './mesh-connector.ts';



/** Connect attempts per connection: a refused instance is followed by one other. */
const CONNECT_TRIES = 2;

/**
 * Copies bytes both ways until both sides are done: an end on one side half-closes the
 * other, an error or an idle period of `idleMs` (0: none) closes both. Calls `done` once
 * with the bytes each way.
 */
export function splice(a: Duplex, b: Duplex, idleMs: number, done: (aToB: number, bToA: number) => void): void {
  let aToB = 0;
  let bToA = 0;
  let finished = false;
  const close = () => {
    if (finished) return;
    finished = true;
    clearTimeout(idle);
    a.destroy();
    b.destroy();
    done(aToB, bToA);
  };
  let idle: NodeJS.Timeout | undefined;
  const touch = () => {
    if (idleMs <= 0) return;
    clearTimeout(idle);
    idle = setTimeout(close, idleMs);
  };
  a.on('data', (c: Buffer) => {
    aToB += c.length;
    touch();
  });
  b.on('data', (c: Buffer) => {
    bToA += c.length;
    touch();
  });
  let ended = 0;
  const halfDone = () => {
    if (++ended === 2) close();
  };
  // Both directions finished (each side's readable ended and was passed on), or either failed.
  a.once('end', halfDone);
  b.once('end', halfDone);
  a.once('error', close);
  b.once('error', close);
  a.once('close', close);
  b.once('close', close);
  touch();
  a.pipe(b);
  b.pipe(a);
}

export interface TcpDeps {
  readonly store: ConfigStore;
  readonly clusters: ClusterManager;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  readonly draining: () => boolean;
  /** Counts a connection in flight until it closes (for the drain). */
  readonly track: (closed: Promise<void>) => void;
}

type Opened = { readonly ok: true; readonly stream: Duplex; readonly release: () => void } | { readonly ok: false; readonly code: ProxyErrorCode };

/**
 * The outbound side: opens connections to TCP services for `CONNECT` requests and the
 * `--tcp-upstream` listeners.
 */
export class TcpOutbound {
  readonly #deps: TcpDeps;
  readonly #servers: Server[] = [];
  /** Client connections being carried, closed at once by `destroy` (after the drain period). */
  readonly #carried = new Set<Duplex>();

  constructor(deps: TcpDeps) {
    this.#deps = deps;
  }

  /** The service port a `host:port` names, or why not: unknown, or not a tcp port. */
  #resolve(authority: string): { cluster: Cluster; servicePort: number } | { code: ProxyErrorCode } {
    const snap = this.#deps.store.current;
    if (!snap) return { code: 'not_ready' };
    const split = splitAuthority(authority);
    if (!split || split.port === undefined) return { code: 'bad_request' };
    let host = split.host.endsWith('.') ? split.host.slice(0, -1) : split.host;
    if (host.endsWith(snap.hostSuffix)) host = host.slice(0, -snap.hostSuffix.length);
    const key = serviceKeyOfHost(host, snap.namespace);
    const cluster = key === null ? undefined : this.#deps.clusters.get(key);
    if (!cluster) return { code: 'unknown_service' };
    if (cluster.protocolOf(split.port) !== 'tcp' || !cluster.settings.ports.some((p) => p.port === split.port)) return { code: 'not_a_tcp_port' };
    return { cluster, servicePort: split.port };
  }

  /** Opens a connection to an instance of `cluster`: breaker, pick, connect (a tunnel to a meshed one). */
  async #open(cluster: Cluster, servicePort: number): Promise<Opened> {
    const { breaker } = cluster;
    // A connection holds its slot while open: `maxConnections` bounds them (and `maxRequests`, as for any attempt).
    if (breaker.active >= breaker.maxConnections || !breaker.tryAcquire()) {
      this.#deps.metrics.breakerRejections.inc({ destination_service: cluster.service });
      return { ok: false, code: 'overloaded' };
    }
    const tried = new Set<Endpoint>();
    let code: ProxyErrorCode = 'no_endpoints';
    for (let attempt = 0; attempt < CONNECT_TRIES; attempt++) {
      const endpoint = cluster.picker.pick(untriedFirst(cluster.candidates(), tried));
      if (!endpoint || tried.has(endpoint)) break;
      tried.add(endpoint);
      const connectPort = endpoint.port || (cluster.settings.ports.find((p) => p.port === servicePort) ?? cluster.settings.ports[0]!).targetPort;
      cluster.picker.onStart(endpoint);
      const opened = await this.#connect(cluster, endpoint, connectPort, servicePort);
      if (opened.ok) {
        let released = false;
        const release = () => {
          if (released) return;
          released = true;
          cluster.picker.onFinish(endpoint, Number.NaN, true);
          breaker.release();
        };
        return { ok: true, stream: opened.stream, release };
      }
      cluster.picker.onFinish(endpoint, Number.NaN, false);
      code = opened.code;
      if (code === 'connect_failure' || code === 'tls_failure') {
        if (cluster.outlier.record(endpoint, 'connect-failure', cluster.endpoints)) this.#deps.metrics.ejections.inc({ destination_service: cluster.service });
        continue;
      }
      break;
    }
    breaker.release();
    return { ok: false, code };
  }

  async #connect(cluster: Cluster, endpoint: Endpoint, connectPort: number, servicePort: number): Promise<{ ok: true; stream: Duplex } | { ok: false; code: ProxyErrorCode }> {
    const timeout = cluster.settings.connection.connectTimeoutMs;
    if (!cluster.settings.meshed) {
      try {
        return { ok: true, stream: await connectPlain(endpoint.address, connectPort, timeout) };
      } catch {
        return { ok: false, code: 'connect_failure' };
      }
    }
    const authority = `${hostOfServiceKey(cluster.service)}:${servicePort}`;
    const r = await cluster.h2PoolFor(endpoint, connectPort).tunnel(authority, { [DESTINATION_HEADER]: authority }, timeout);
    if (r.ok) return r;
    return { ok: false, code: r.code };
  }

  /** Carries one accepted connection to `cluster` (already resolved), then records it. */
  async #carry(client: Duplex, cluster: Cluster, servicePort: number, answer: (code: ProxyErrorCode | null) => void): Promise<void> {
    const source = this.#deps.store.current?.service ?? 'unknown';
    const opened = await this.#open(cluster, servicePort);
    const labels = { reporter: 'outbound', source_workload: source, destination_service: cluster.service } as const;
    if (!opened.ok) {
      this.#deps.metrics.tcpConnections.inc({ ...labels, result: opened.code });
      answer(opened.code);
      return;
    }
    this.#deps.metrics.tcpConnections.inc({ ...labels, result: 'opened' });
    this.#carried.add(client);
    const carried = new Promise<void>((resolve) =>
      splice(client, opened.stream, cluster.settings.connection.idleTimeoutMs, (sent, received) => {
        this.#carried.delete(client);
        opened.release();
        this.#deps.metrics.tcpBytes.inc({ ...labels, direction: 'sent' }, sent);
        this.#deps.metrics.tcpBytes.inc({ ...labels, direction: 'received' }, received);
        resolve();
      }),
    );
    // Only now that both sides are spliced may the client's bytes flow.
    answer(null);
    await carried;
  }

  /** An HTTP/1.1 `CONNECT host:port` on the outbound port (Node's 'connect' event). */
  onConnect = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    // The client may end its side and still read the service's answer.
    (socket as Socket).allowHalfOpen = true;
    const refuse = (code: ProxyErrorCode): void => void socket.end(rawErrorResponse(code));
    if (this.#deps.draining()) return refuse('shutting_down');
    const target = this.#resolve(req.url ?? '');
    if ('code' in target) return refuse(target.code);
    if (head.length > 0) socket.unshift(head);
    socket.pause();
    const closed = this.#carry(socket, target.cluster, target.servicePort, (code) => {
      if (code !== null) return refuse(code);
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      socket.resume();
    });
    this.#deps.track(closed);
  };

  /** Starts a local listener for one TCP service port. */
  listen(upstream: TcpUpstream): Promise<AddressInfo> {
    const server = createServer({ pauseOnConnect: true, noDelay: true, allowHalfOpen: true }, (socket: Socket) => {
      socket.on('error', () => socket.destroy());
      const target = this.#deps.draining() ? { code: 'shutting_down' as const } : this.#resolve(`${upstream.service}:${upstream.servicePort}`);
      if ('code' in target) {
        this.#deps.log.warn({ type: 'tcp_refused', service: upstream.service, port: upstream.servicePort, code: target.code }, 'TCP connection refused');
        socket.destroy();
        return;
      }
      const closed = this.#carry(socket, target.cluster, target.servicePort, (code) => {
        if (code !== null) {
          this.#deps.log.warn({ type: 'tcp_refused', service: upstream.service, port: upstream.servicePort, code }, 'TCP connection refused');
          socket.destroy();
        } else socket.resume();
      });
      this.#deps.track(closed);
    });
    this.#servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(upstream.port, upstream.host, () => resolve(server.address() as AddressInfo));
    });
  }

  /** Closes every connection still carried. */
  destroy(): void {
    for (const c of this.#carried) c.destroy();
  }

  /** Stops the local listeners (open connections are the drain's). */
  async close(): Promise<void> {
    await Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

export interface TcpInboundDeps {
  readonly store: ConfigStore;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  readonly app: { readonly host: string; readonly port?: number };
  readonly draining: () => boolean;
  readonly track: (closed: Promise<void>) => void;
}

/**
 * The inbound side: an HTTP/2 CONNECT tunnel from another sidecar, for one of this
 * service's tcp ports. Admitted on the caller's verified identity (AccessPolicy `from`;
 * rules that name methods or paths never match a connection), then spliced to the app.
 */
export function createTcpInbound(deps: TcpInboundDeps): (req: Http2ServerRequest, res: Http2ServerResponse) => void {
  return (req, res) => {
    const snap = deps.store.current;
    const peer = peerOf(req.socket);
    const caller = peer.identity === null ? 'unauthenticated' : callerLabel(peer.identity);
    const labels = { reporter: 'inbound', source_workload: caller, destination_service: snap?.service ?? 'unknown' } as const;
    const refuse = (code: ProxyErrorCode) => {
      deps.metrics.tcpConnections.inc({ ...labels, result: code });
      sendProxyError(res, code);
    };
    if (!snap) return refuse('not_ready');
    if (deps.draining()) return refuse('shutting_down');
    if (peer.refused) return refuse('peer_rejected');
    if (peer.transport === 'plaintext' && snap.inbound.mtls.mode === 'strict') return refuse('mtls_required');
    const named = req.headers[DESTINATION_HEADER] ?? req.headers[':authority'];
    const asked = typeof named === 'string' ? splitAuthority(named)?.port : undefined;
    const port = snap.inbound.ports.find((p) => p.port === asked);
    if (!port || port.protocol !== 'tcp') return refuse('not_a_tcp_port');
    const decision = decideConnection(snap.inbound.access, peer.identity);
    const reason = decision.policy ?? (snap.inbound.access.default === 'policy' ? 'no_matching_rule' : `default_${snap.inbound.access.default}`);
    deps.metrics.accessDecisions.inc({ result: decision.audited ? 'audited' : decision.allowed ? 'allowed' : 'denied', reason });
    if (!decision.allowed || decision.audited) {
      deps.log[decision.audited ? 'warn' : 'info']({ type: decision.audited ? 'access_audited' : 'access_denied', caller: peer.identity, port: port.port, protocol: 'tcp', reason: decision.reason }, decision.audited ? 'connection would be denied (audit mode lets it through)' : 'connection denied');
      if (!decision.allowed) return refuse('access_denied');
    }
    const stream = req.stream;
    stream.pause();
    const closed = connectPlain(deps.app.host, deps.app.port ?? port.targetPort, 1000).then(
      (app) =>
        new Promise<void>((resolve) => {
          deps.metrics.tcpConnections.inc({ ...labels, result: 'opened' });
          res.writeHead(200);
          splice(stream, app, 0, (received, sent) => {
            deps.metrics.tcpBytes.inc({ ...labels, direction: 'received' }, received);
            deps.metrics.tcpBytes.inc({ ...labels, direction: 'sent' }, sent);
            resolve();
          });
        }),
      () => refuse('connect_failure'),
    );
    deps.track(closed);
  };
}
