/**
 * A sidecar: the outbound, inbound and admin listeners around one config store and
 * one set of clusters. Start it, apply configs (file, admin, reconciler), stop it
 * gracefully: readiness goes false, in-flight requests get up to the drain timeout to
 * finish, then every connection closes.
 */
import { hostname } from 'node:os';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { createLogger } from '../logger.ts';
import type { Random, TimerClock, WallClock } from './clock.ts';
import { systemClock, systemRandom } from './clock.ts';
import { ClusterManager } from './clusters.ts';
import { ConfigStore, type Snapshot } from './config-store.ts';
import { rawErrorResponse } from './errors.ts';
import { createAdminHandler } from './admin.ts';
import { createInboundHandler, type AppAddress, type InboundHandler } from './inbound.ts';
import { SidecarMetrics } from './metrics.ts';
import { createOutboundHandler, type OutboundHandler } from './outbound.ts';
import { ControlClient } from './control-client.ts';
import { StatsReporter } from './stats-report.ts';
import type { ControlToken } from './control-token.ts';
import { CertificateClient, loadStoredCredential, storeCredentialOrWarn, watchCredentialFiles, type CredentialFiles } from './certificates.ts';
import { SidecarIdentity } from './identity.ts';
import { MeshConnector } from './mesh-connector.ts';
import { MeshListener } from './mesh-listener.ts';
import { H2Listener, sniffPlaintext, type AnyHandler } from './h2-server.ts';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { SidecarTracer, TracingOptions } from './tracing.ts';
import { createTcpInbound, TcpOutbound } from './tcp.ts';
import type { TcpUpstream } from './tcp-upstream.ts';

export interface ListenAddress {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
}

export interface SidecarOptions {
  /** Service served; configs for another are refused. Default: the first config's service. */
  readonly service?: string;
  /** Folder where the last accepted config is kept, to start from when nothing else is at hand. */
  readonly stateDir?: string;
  readonly outbound: ListenAddress;
  readonly inbound: ListenAddress;
  readonly admin: ListenAddress;
  readonly app: AppAddress;
  readonly adminToken?: string;
  /** How long in-flight requests may take to finish after SIGTERM, in ms. */
  readonly drainTimeoutMs: number;
  /** Time a client has to send its request headers, in ms (slowloris guard). */
  readonly headerTimeoutMs: number;
  /** Time a request body has to arrive in full after its headers, on both listeners, in ms; 0 for none (body-deadline.ts). */
  readonly bodyTimeoutMs: number;
  readonly maxRetryBodyBytes: number;
  readonly accessLog: boolean;
  /** Subscribe to a reconciler for configs and certificates (needs `service`). */
  /** `token`: the bearer, or a source asked on every control request (a token file the kubelet rotates). */
  readonly control?: { readonly url: string; readonly token: string | ControlToken; readonly node?: string };
  /** With `control`: how often traffic aggregates go to the reconciler (stats-report.ts), in ms; default 10 s. */
  readonly statsIntervalMs?: number;
  /** Standalone identity: certificate, key and CA files, reloaded on change (instead of certificates from the reconciler). */
  readonly certificateFiles?: CredentialFiles;
  /** Local ports that each carry one TCP service port (tcp.ts), for clients that cannot use CONNECT. */
  readonly tcpUpstreams?: readonly TcpUpstream[];
  /** Send a span for every request to an OTLP/HTTP collector (tracing.ts). Off when absent: OpenTelemetry is then never loaded. */
  readonly tracing?: TracingOptions;
  readonly logger?: Logger;
  /** Monotonic time and timers: latency, outlier and budget windows, request deadlines, retry backoff. */
  readonly clock?: TimerClock;
  /** Wall time: certificate validity, renewal and backoff, and when a config was applied. */
  readonly wallClock?: WallClock;
  readonly random?: Random;
}

export const DEFAULT_SIDECAR_OPTIONS = {
  outbound: { host: '127.0.0.1', port: 15001 },
  inbound: { host: '127.0.0.1', port: 15006 },
  admin: { host: '127.0.0.1', port: 15000 },
  app: { host: '127.0.0.1' },
  drainTimeoutMs: 20_000,
  headerTimeoutMs: 10_000,
  // A 1 MB upload needs about 35 kB/s to make it; a caller dripping bytes holds a connection and an upstream request 30 s at most.
  bodyTimeoutMs: 30_000,
  // Enough for typical JSON API bodies; larger uploads stream and are not retried.
  maxRetryBodyBytes: 64 * 1024,
  accessLog: false,
} as const satisfies Partial<SidecarOptions>;

/** Idle keep-alive of the app's connections to the outbound listener (Node's own default). */
const APP_KEEP_ALIVE_MS = 5000;
/**
 * Idle keep-alive of other sidecars' connections to the inbound port: longer than the
 * longest default idle timeout of their pools (60 s, less undici's 2 s margin on the hint),
 * so the caller decides when a pooled connection closes. At 5 s callers dropped pooled mTLS
 * connections after about 3 s idle and paid a full handshake on the next call.
 */
const PEER_KEEP_ALIVE_MS = 75_000;

/** Answers a malformed request itself: 431 for oversized headers, 408 for headers too slow to arrive, 400 otherwise; then closes. */
function onClientError(err: NodeJS.ErrnoException, socket: import('node:stream').Duplex): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const code = err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'client_timeout' : 'bad_request';
  socket.end(rawErrorResponse(code));
}

export class Sidecar {
  readonly store: ConfigStore;
  readonly metrics = new SidecarMetrics();
  readonly clusters: ClusterManager;
  readonly log: Logger;
  readonly #options: SidecarOptions;
  #draining = false;
  #inFlight = 0;
  #idle: (() => void) | undefined;
  readonly #servers: Server[] = [];
  #inbound: InboundHandler | undefined;
  #outbound: OutboundHandler | undefined;
  #meshListener: MeshListener | undefined;
  /** The outbound port's connection layer: it tells h2c from HTTP/1.1 (h2-server.ts). */
  #outboundListener: NetServer | undefined;
  /** The HTTP/2 servers of the outbound and inbound ports. */
  readonly #h2: H2Listener[] = [];
  #tcp: TcpOutbound | undefined;
  /** The inbound port's HTTP/2 server (other sidecars' connections). */
  #inboundH2: H2Listener | undefined;
  #control: ControlClient | undefined;
  #stats: StatsReporter | undefined;
  #certificates: CertificateClient | undefined;
  #certificateFiles: { close(): Promise<void> } | undefined;
  #tracer: SidecarTracer | undefined;
  /** This sidecar's certificate and trust bundle (empty until one is obtained). */
  readonly identity: SidecarIdentity;

  constructor(options: SidecarOptions) {
    this.#options = options;
    this.log = options.logger ?? createLogger({ component: 'sidecar', service: options.service });
    const clock = options.clock ?? systemClock;
    this.identity = new SidecarIdentity(options.service, options.wallClock);
    this.identity.onChange((c) => {
      this.metrics.certificateExpiry.set(c.notAfter / 1000);
      this.log.info({ type: 'identity_changed', identity: c.identity, serial: c.serialNumber, notAfter: new Date(c.notAfter).toISOString(), roots: c.trustBundle.length }, 'workload certificate in use');
      // HTTP/2 connections between sidecars are long-lived and TLS 1.3 cannot renegotiate:
      // make-before-break, calls in flight finish on the old connections while new ones
      // handshake with the new certificate (and trust bundle), both ways.
      this.clusters.renewConnections();
      if (!this.#draining) this.#inboundH2?.drain();
    });
    const connector = new MeshConnector({
      credential: () => this.identity.current,
      mode: () => this.store.current?.inbound.mtls.mode,
      onRefused: (reason, detail) => this.#tlsRefused('outbound', reason, detail),
    });
    this.clusters = new ClusterManager(clock, options.random ?? systemRandom, connector);
    this.store = new ConfigStore({
      service: options.service,
      stateFile: options.stateDir ? join(options.stateDir, 'config.json') : undefined,
      ...(options.wallClock ? { wallClock: options.wallClock } : {}),
      onApplied: (snap, previous, source) => this.#onApplied(snap, previous, source),
      onStoreFailed: (err, version, storedVersion, source) => {
        this.metrics.configStoreFailures.inc();
        this.log.warn(
          { type: 'config_store_failed', source, version, storedVersion: storedVersion ?? null, stateDir: options.stateDir, error: err.message },
          `config ${version} runs but could not be written to the state folder; a restart without --config would start from ${storedVersion ?? 'no config'}`,
        );
      },
      onRejected: (reasons, source) => {
        this.metrics.configApplies.inc({ result: 'rejected', source });
        this.log.warn({ type: 'config_rejected', source, reasons }, 'config rejected; the running config stays');
      },
    });
  }

  /** Counts and logs a connection refused at the TLS layer. */
  #tlsRefused(direction: 'inbound' | 'outbound', reason: string, detail: string): void {
    this.metrics.tlsFailures.inc({ direction, reason });
    this.log.warn({ type: 'tls_refused', direction, reason, detail }, direction === 'inbound' ? 'inbound connection refused' : 'mTLS connection to a backend refused');
  }

  #onApplied(snap: Snapshot, previous: Snapshot | undefined, source: string): void {
    this.clusters.sync(snap.clusters, snap.endpoints);
    // A new trust domain (or a first config) needs a certificate that names it.
    if (snap.inbound.mtls.mode !== 'off' && !this.#identityFits(snap)) this.#certificates?.requestNow({ evenWithCertificate: true });
    this.metrics.setConfig(snap.service, snap.version);
    this.metrics.configApplies.inc({ result: 'accepted', source });
    this.log.info({ type: 'config_applied', source, version: snap.version, previous: previous?.version ?? null, resources: snap.config.resources.length }, 'config applied');
  }

  /** Whether the control stream to the reconciler is open (false without one). */
  get controlConnected(): boolean {
    return this.#control?.connected ?? false;
  }

  /** Ready: a config runs, shutdown has not begun, and in a strict-mTLS mesh the sidecar holds a certificate for that config's service. */
  get ready(): boolean {
    const snap = this.store.current;
    return !this.#draining && snap !== undefined && (snap.inbound.mtls.mode !== 'strict' || this.#identityFits(snap));
  }

  /** Whether the certificate in use names the config's service in its trust domain (peers refuse it otherwise). */
  #identityFits(snap: Snapshot): boolean {
    const c = this.identity.current;
    return c !== undefined && c.service === snap.service && c.trustDomain === snap.inbound.trustDomain;
  }

  /** Counts a TCP connection in flight until `closed` settles, so shutdown waits for it (bounded) too. */
  #trackConnection = (closed: Promise<void>): void => {
    this.#inFlight++;
    void closed.finally(() => {
      this.#inFlight--;
      if (this.#inFlight === 0) this.#idle?.();
    });
  };

  /** Counts requests in flight, so shutdown knows when it may close. */
  #track(handler: (req: IncomingMessage, res: ServerResponse) => void): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      this.#inFlight++;
      res.once('close', () => {
        this.#inFlight--;
        if (this.#inFlight === 0) this.#idle?.();
      });
      handler(req, res);
    };
  }

  #httpServer(handler: (req: IncomingMessage, res: ServerResponse) => void, keepAliveTimeoutMs = APP_KEEP_ALIVE_MS): Server {
    const server = createServer(
      {
        headersTimeout: this.#options.headerTimeoutMs,
        requestTimeout: 0,
        keepAliveTimeout: keepAliveTimeoutMs,
        // Node checks header deadlines on this interval (30 s by default), so it bounds how
        // late a slow client is cut off.
        connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(this.#options.headerTimeoutMs / 4))),
      },
      handler,
    );
    server.on('clientError', onClientError);
    this.#servers.push(server);
    return server;
  }

  /**
   * The outbound port: HTTP/1.1 and h2c (prior knowledge, as gRPC clients speak it) on one
   * port, told apart by the connection's first bytes.
   */
  #listenOutbound(handler: (req: IncomingMessage, res: ServerResponse) => void, at: ListenAddress, tcp: TcpOutbound): Promise<AddressInfo> {
    const http = this.#httpServer(handler);
    // CONNECT service:port opens a TCP connection to a tcp service port (tcp.ts).
    http.on('connect', tcp.onConnect);
    const h2 = new H2Listener(handler as AnyHandler, PEER_KEEP_ALIVE_MS);
    this.#h2.push(h2);
    const timeoutMs = this.#options.headerTimeoutMs;
    const net = (this.#outboundListener = createNetServer({ pauseOnConnect: true, noDelay: true }, (socket) => {
      socket.on('error', () => socket.destroy());
      // A connection that sends nothing is cut off as a slow request's headers would be.
      const silent = setTimeout(() => socket.destroy(), timeoutMs);
      const decided = (serve: (s: Socket) => void) => (s: Socket) => {
        clearTimeout(silent);
        serve(s);
      };
      socket.once('close', () => clearTimeout(silent));
      sniffPlaintext(socket, decided((s) => http.emit('connection', s)), decided((s) => h2.accept(s)));
    }));
    return new Promise((resolve, reject) => {
      net.once('error', reject);
      net.listen(at.port, at.host, () => {
        http.emit('listening');
        resolve(net.address() as AddressInfo);
      });
    });
  }

  #listen(handler: (req: IncomingMessage, res: ServerResponse) => void, at: ListenAddress): Promise<AddressInfo> {
    const server = this.#httpServer(handler);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(at.port, at.host, () => resolve(server.address() as AddressInfo));
    });
  }

  /** Starts the three listeners; resolves with their bound addresses. */
  async start(): Promise<{ outbound: AddressInfo; inbound: AddressInfo; admin: AddressInfo; tcp: AddressInfo[] }> {
    const o = this.#options;
    const clock = o.clock ?? systemClock;
    const draining = () => this.#draining;
    const tracer = o.tracing ? (this.#tracer = await this.#startTracing(o.tracing, clock)) : undefined;
    const traced = tracer ? { tracer } : {};
    const outbound = (this.#outbound = createOutboundHandler({
      store: this.store,
      clusters: this.clusters,
      metrics: this.metrics,
      log: this.log,
      clock,
      random: o.random ?? systemRandom,
      maxRetryBodyBytes: o.maxRetryBodyBytes,
      bodyTimeoutMs: o.bodyTimeoutMs,
      accessLog: o.accessLog,
      draining,
      ...traced,
    }));
    this.#inbound = createInboundHandler({ store: this.store, metrics: this.metrics, log: this.log, clock, app: o.app, accessLog: o.accessLog, draining, bodyTimeoutMs: o.bodyTimeoutMs, ...traced });
    const admin = createAdminHandler({ store: this.store, metrics: this.metrics, token: o.adminToken, ready: () => this.ready, identity: this.identity });
    const tcp = (this.#tcp = new TcpOutbound({ store: this.store, clusters: this.clusters, metrics: this.metrics, log: this.log, draining, track: this.#trackConnection }));
    const outboundAddress = await this.#listenOutbound(this.#track(outbound), o.outbound, tcp);
    const inboundHttp = this.#httpServer(this.#track(this.#inbound), PEER_KEEP_ALIVE_MS);
    const tcpInbound = createTcpInbound({ store: this.store, metrics: this.metrics, log: this.log, app: o.app, draining, track: this.#trackConnection });
    const inboundH2 = (this.#inboundH2 = new H2Listener(this.#track(this.#inbound) as AnyHandler, PEER_KEEP_ALIVE_MS, tcpInbound));
    this.#h2.push(inboundH2);
    this.#meshListener = new MeshListener({
      http: inboundHttp,
      h2: inboundH2,
      mode: () => this.store.current?.inbound.mtls.mode,
      trustDomain: () => this.store.current?.inbound.trustDomain,
      credential: () => this.identity.current,
      handshakeTimeoutMs: o.headerTimeoutMs,
      onConnection: (transport) => this.metrics.inboundConnections.inc({ transport }),
      onRefused: (reason, detail) => this.#tlsRefused('inbound', reason, detail),
    });
    const inboundAddress = await this.#meshListener.listen(o.inbound.port, o.inbound.host);
    // The HTTP server is handed connections rather than listening itself; this starts its
    // header-timeout checks, which Node otherwise begins on 'listening'.
    inboundHttp.emit('listening');
    const tcpAddresses: AddressInfo[] = [];
    for (const upstream of o.tcpUpstreams ?? []) tcpAddresses.push(await tcp.listen(upstream));
    const addresses = { outbound: outboundAddress, inbound: inboundAddress, admin: await this.#listen(admin, o.admin), tcp: tcpAddresses };
    this.log.info({ type: 'listening', outbound: addresses.outbound.port, inbound: addresses.inbound.port, admin: addresses.admin.port }, 'sidecar listening');
    if (o.certificateFiles) {
      const watched = await watchCredentialFiles(o.certificateFiles, this.identity, this.log);
      this.#certificateFiles = watched;
      if (!watched.first.ok) this.log.error({ type: 'certificate_invalid', reason: watched.first.reason }, 'the certificate files do not make a valid identity; mTLS calls fail until they do');
    }
    if (o.control) {
      if (!o.service) throw new Error('a sidecar that subscribes to a reconciler needs its service name');
      const connection = { url: o.control.url, token: o.control.token, service: o.service, node: o.control.node ?? `${hostname()}:${addresses.inbound.port}`, log: this.log, random: o.random ?? systemRandom };
      if (!o.certificateFiles) {
        // The stored certificate serves until the CA answers (or while it cannot be reached).
        const stored = o.stateDir ? loadStoredCredential(o.stateDir) : undefined;
        if (stored) this.identity.offer(stored);
        this.#certificates = new CertificateClient({
          ...connection,
          identity: this.identity,
          metrics: this.metrics,
          ...(o.stateDir ? { stateDir: o.stateDir } : {}),
          ...(o.wallClock ? { wallClock: o.wallClock } : {}),
        });
        this.#certificates.start();
      }
      this.#control = new ControlClient({
        ...connection,
        store: this.store,
        beforeAck: () => this.#untilServing(),
        // Standalone identity files bring their own bundle; the reconciler's would override it.
        ...(o.certificateFiles
          ? {}
          : {
              onTrustBundle: (roots: readonly string[]) => {
                const result = this.identity.offerTrustBundle(roots);
                if (!result.ok && this.identity.current) this.log.warn({ type: 'trust_bundle_refused', reason: result.reason }, 'trust bundle from the reconciler refused');
                else if (result.ok && o.stateDir) storeCredentialOrWarn(o.stateDir, result.credential, this.log);
              },
            }),
      });
      this.#control.start();
      // Aggregates go to the replica this sidecar streams from (it knows this sidecar's token).
      const control = this.#control;
      this.#stats = new StatsReporter({ url: () => control.url, token: connection.token, service: o.service, node: connection.node, metrics: this.metrics, log: this.log.child({ component: 'stats' }), ...(o.statsIntervalMs ? { intervalMs: o.statsIntervalMs } : {}) });
      this.#stats.start();
    }
    return addresses;
  }

  /**
   * The tracer, imported only here so a sidecar without tracing never loads OpenTelemetry.
   * Traces are not worth an outage: when the SDK cannot be loaded (an install without it),
   * the sidecar says so and serves untraced.
   */
  async #startTracing(options: TracingOptions, clock: TimerClock): Promise<SidecarTracer | undefined> {
    const log = this.log.child({ component: 'tracing' });
    try {
      return await (await import('./tracing.ts')).createTracer(options, { service: this.#options.service ?? this.store.current?.service ?? 'unknown', log, clock });
    } catch (err) {
      log.error({ type: 'tracing_unavailable', error: (err as Error).message }, 'OpenTelemetry cannot be loaded: serving without traces');
      return undefined;
    }
  }

  /**
   * Resolves once the sidecar can serve its config: at once, unless the mesh uses mTLS
   * and it has no certificate yet; then when one arrives, or after a bound (the ack then
   * goes out anyway and status shows the sidecar as unready).
   */
  async #untilServing(): Promise<void> {
    const fits = () => {
      const snap = this.store.current;
      return snap === undefined || snap.inbound.mtls.mode === 'off' || this.#identityFits(snap);
    };
    if (fits()) return;
    this.#certificates?.requestNow({ evenWithCertificate: true });
    // The CA answers within milliseconds when it is reachable; this bounds a CA that is not.
    for (const until = Date.now() + 5000; !fits() && Date.now() < until && !this.#draining; ) await this.identity.nextChange(until - Date.now());
  }

  /** Graceful stop: not ready, no new connections, in-flight requests drain (bounded), then close. */
  async stop(): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    this.log.info({ type: 'draining', inFlight: this.#inFlight, timeoutMs: this.#options.drainTimeoutMs }, 'draining');
    await this.#control?.stop();
    await this.#stats?.stop();
    await this.#certificates?.stop();
    await this.#certificateFiles?.close();
    const closingListener = this.#meshListener?.close();
    const closingTcp = this.#tcp?.close();
    const outboundListener = this.#outboundListener;
    const closingOutbound = outboundListener && new Promise<void>((r) => outboundListener.close(() => r()));
    // HTTP/2 clients get GOAWAY: they send new calls elsewhere while these finish.
    for (const h2 of this.#h2) h2.drain();
    const [outbound, inbound, admin] = this.#servers;
    const closed = [outbound, inbound].map((s) => s && new Promise<void>((r) => s.close(() => r())));
    outbound?.closeIdleConnections();
    inbound?.closeIdleConnections();
    if (this.#inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#options.drainTimeoutMs);
        this.#idle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    outbound?.closeAllConnections();
    inbound?.closeAllConnections();
    for (const h2 of this.#h2) h2.destroy();
    this.#tcp?.destroy();
    await Promise.all(closed);
    await closingListener;
    await closingOutbound;
    await closingTcp;
    await this.clusters.close(true);
    await this.#inbound?.close();
    await this.#outbound?.close();
    // Every request has ended, so every span has: send the last of them (bounded).
    await this.#tracer?.shutdown();
    admin?.closeAllConnections();
    await new Promise<void>((r) => (admin ? admin.close(() => r()) : r()));
    this.log.info({ type: 'stopped', abandoned: this.#inFlight }, 'sidecar stopped');
  }
}
