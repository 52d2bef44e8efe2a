/**
 * Live state of the services a sidecar calls: their endpoints (with load and health),
 * the load-balancing policy, outlier detection, circuit breaker, retry budget, and one
 * connection pool per endpoint. Policy (picker, detector, breaker, budget) stays apart
 * from plumbing (pools). State is kept across config swaps for as long as what it
 * depends on is unchanged: an endpoint keeps its latency and health while it stays
 * listed, a pool its connections.
 */
import { Pool } from 'undici';
import type { Duplex } from 'node:stream';
import type { ClusterBody, EndpointsBody, PortProtocol } from '../config/types.ts';
import { H2Pool } from './h2-pool.ts';
import { sendAttempt, type AttemptOptions, type AttemptResult } from './upstream.ts';
import { createPicker, type Picker } from './balancer.ts';
import { CircuitBreaker } from './breaker.ts';
import type { Clock, Random } from './clock.ts';
import { Endpoint } from './endpoint.ts';
import type { MeshConnector } from './mesh-connector.ts';
import { OutlierDetector } from './outlier.ts';
import { RetryBudget } from './retry-budget.ts';
import { canonicalIp } from './destination.ts';

/** One upstream service as a caller sees it. */
export class Cluster {
  readonly service: string;
  settings: ClusterBody;
  endpointsBody: EndpointsBody;
  endpoints: Endpoint[] = [];
  picker!: Picker;
  outlier!: OutlierDetector;
  breaker!: CircuitBreaker;
  budget!: RetryBudget;
  readonly #pools = new Map<string, Pool>();
  readonly #h2Pools = new Map<string, H2Pool>();
  readonly #h2Connect: (host: string, port: number) => Promise<Duplex>;
  readonly #clock: Clock;
  readonly #random: Random;

  constructor(settings: ClusterBody, endpoints: EndpointsBody, clock: Clock, random: Random, connector: MeshConnector) {
    this.service = settings.service;
    this.settings = settings;
    this.endpointsBody = endpoints;
    this.#clock = clock;
    this.#random = random;
    this.#h2Connect = connector.forCluster(() => this.settings);
    this.#applySettings();
    this.#applyEndpoints();
  }

  /** Takes new settings and endpoints; unchanged parts keep their state. */
  update(settings: ClusterBody, endpoints: EndpointsBody): void {
    const old = this.settings;
    this.settings = settings;
    if (old !== settings) this.#applySettings(old);
    if (this.endpointsBody !== endpoints || old.connection !== settings.connection || old.circuitBreaker.maxConnections !== settings.circuitBreaker.maxConnections) {
      this.endpointsBody = endpoints;
      this.#applyEndpoints(old.connection !== settings.connection || old.circuitBreaker.maxConnections !== settings.circuitBreaker.maxConnections);
    }
  }

  #applySettings(old?: ClusterBody): void {
    const s = this.settings;
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    if (!old || !same(old.loadBalancer, s.loadBalancer)) {
      this.picker = createPicker(s.loadBalancer.type, { clock: this.#clock, random: this.#random, decayMs: s.loadBalancer.ewmaDecayMs, defaultRttMs: s.loadBalancer.ewmaDefaultRttMs });
    }
    if (!old || !same(old.outlierDetection, s.outlierDetection)) this.outlier = new OutlierDetector(s.outlierDetection, this.#clock);
    if (!old || !same(old.circuitBreaker, s.circuitBreaker)) this.breaker = new CircuitBreaker(s.circuitBreaker);
    if (!old || !same(old.retryBudget, s.retryBudget)) this.budget = new RetryBudget(s.retryBudget, this.#clock);
  }

  /** Rebuilds the endpoint list, keeping the state of endpoints still listed; pools of dropped ones close once idle. */
  #applyEndpoints(recreatePools = false): void {
    const body = this.endpointsBody;
    const listed: Array<{ address: string; port: number | null; weight: number; zone: string | null; terminating?: true }> = [...body.static];
    if (body.dns) listed.push({ address: body.dns.hostname, port: body.dns.port, weight: 1, zone: null });
    const byKey = new Map(this.endpoints.map((e) => [e.key, e]));
    const next: Endpoint[] = [];
    const now = this.#clock.now();
    for (const e of listed) {
      // Unmeshed endpoints without a port are reached on the called port's targetPort; one
      // logical endpoint per address, with the port chosen per request (see poolFor).
      const fresh = new Endpoint(e.address, e.port ?? 0, e.weight, e.zone, null, now);
      const kept = byKey.get(fresh.key);
      const ep = kept ?? fresh;
      ep.weight = e.weight;
      ep.zone = e.zone;
      ep.terminating = e.terminating === true;
      next.push(ep);
    }
    const keep = new Set(next.map((e) => e.key));
    for (const pools of [this.#pools, this.#h2Pools] as Array<Map<string, Pool | H2Pool>>) {
      for (const [key, pool] of pools) {
        const endpointKey = key.slice(0, key.lastIndexOf('|'));
        if (recreatePools || !keep.has(endpointKey)) {
          pools.delete(key);
          void pool.close().catch(() => undefined);
        }
      }
    }
    this.endpoints = next;
  }

  /** The endpoints the next attempt may go to: see `servingCandidates`. */
  candidates(): Endpoint[] {
    return servingCandidates(this.endpoints, this.outlier);
  }

  /** The pool for an endpoint and target port (created on first use). */
  poolFor(ep: Endpoint, port: number): Pool {
    const key = `${ep.key}|${port}`;
    let pool = this.#pools.get(key);
    if (!pool) {
      const host = ep.address.includes(':') ? `[${ep.address}]` : ep.address;
      const c = this.settings.connection;
      pool = new Pool(`http://${host}:${port}`, {
        connections: this.settings.circuitBreaker.maxConnections,
        pipelining: 1,
        // Only unmeshed HTTP/1.1 backends are called over these pools (meshed instances are
        // HTTP/2 sessions over mTLS: h2PoolFor), so connections are plain TCP.
        connectTimeout: c.connectTimeoutMs,
        keepAliveTimeout: c.idleTimeoutMs,
        keepAliveMaxTimeout: c.idleTimeoutMs,
        // Per-request timeouts are set on each request; these are the backstops that
        // replace undici's 300 s defaults.
        headersTimeout: 60_000,
        bodyTimeout: 60_000,
      });
      this.#pools.set(key, pool);
    }
    return pool;
  }

  /** What a service port of this cluster speaks (the first port's protocol for an unknown port). */
  protocolOf(servicePort: number): PortProtocol {
    const ports = this.settings.ports;
    return (ports.find((p) => p.port === servicePort) ?? ports[0])?.protocol ?? 'http';
  }

  /**
   * Whether calls to a service port go over HTTP/2: for `http2` and `grpc` ports (to a
   * meshed instance, over mTLS with ALPN `h2`; to an unmeshed one as h2c).
   */
  speaksH2(servicePort: number): boolean {
    const protocol = this.protocolOf(servicePort);
    return protocol === 'http2' || protocol === 'grpc' || (this.settings.meshed && this.settings.identity !== null);
  }

  /**
   * Sends one attempt to `ep` on `port`, for the service port `servicePort`: over the
   * endpoint's HTTP/2 session when that port and the cluster call for it (`speaksH2`), else
   * over its HTTP/1.1 pool. Every request to a cluster's instances (calls, retries,
   * mirrors) goes through here.
   */
  send(ep: Endpoint, port: number, servicePort: number, attempt: AttemptOptions): Promise<AttemptResult> {
    return this.speaksH2(servicePort) ? this.h2PoolFor(ep, port).send(attempt) : sendAttempt(this.poolFor(ep, port), attempt);
  }

  /** The HTTP/2 pool (one multiplexed session) for an endpoint and target port, created on first use. */
  h2PoolFor(ep: Endpoint, port: number): H2Pool {
    const key = `${ep.key}|${port}`;
    let pool = this.#h2Pools.get(key);
    if (!pool) {
      const host = ep.address.includes(':') ? `[${ep.address}]` : ep.address;
      pool = new H2Pool(`http://${host}:${port}`, () => this.#h2Connect(ep.address, port), this.settings.connection.idleTimeoutMs);
      this.#h2Pools.set(key, pool);
    }
    return pool;
  }

  /** New HTTP/2 sessions for the next calls (after a certificate rotation); those open finish their streams, then close. */
  renewConnections(): void {
    for (const pool of this.#h2Pools.values()) pool.renew();
  }

  /** Requests waiting for a connection across this cluster's pools. */
  get queued(): number {
    let n = 0;
    for (const pool of this.#pools.values()) n += pool.stats.queued;
    return n;
  }

  #takePools(): Array<Pool | H2Pool> {
    const pools = [...this.#pools.values(), ...this.#h2Pools.values()];
    this.#pools.clear();
    this.#h2Pools.clear();
    return pools;
  }

  async close(): Promise<void> {
    await Promise.all(this.#takePools().map((p) => p.close().catch(() => undefined)));
  }

  /** Closes at once, failing what is in flight (shutdown after the drain period). */
  async destroy(): Promise<void> {
    await Promise.all(this.#takePools().map((p) => p.destroy().catch(() => undefined)));
  }
}

/**
 * The endpoints a new attempt may be sent to, for the balancer to choose from.
 *
 * Instances marked terminating (Kubernetes: `serving` and `terminating`, a pod on its way
 * out of a rolling update or scale-down) get no new attempts while any other instance is
 * up — not ejected by outlier detection — so their in-flight requests finish and nothing
 * new lands on a process about to exit. Only when no other instance is up are they used,
 * as a last resort: a terminating pod still serving beats a 503.
 *
 * In order: without terminating instances, `outlier.healthy(endpoints)` as always; with an
 * un-ejected other instance, `outlier.healthy` over the other instances only (its panic
 * rule then spreads over those, never onto terminating ones); else, with an un-ejected
 * terminating instance, `outlier.healthy` over the terminating ones; else (every instance
 * ejected) `outlier.healthy(endpoints)`, which panics over all. Empty only for an empty
 * list. Returns a new array; reads the endpoints and the clock, mutates nothing but the
 * detector's panic counter.
 */
export function servingCandidates(endpoints: readonly Endpoint[], outlier: OutlierDetector): Endpoint[] {
  let terminating = 0;
  for (const ep of endpoints) if (ep.terminating) terminating++;
  if (terminating === 0) return outlier.healthy(endpoints);
  const others = endpoints.filter((ep) => !ep.terminating);
  if (others.some((ep) => !outlier.isEjected(ep))) return outlier.healthy(others);
  const leaving = endpoints.filter((ep) => ep.terminating);
  if (leaving.some((ep) => !outlier.isEjected(ep))) return outlier.healthy(leaving);
  return outlier.healthy(endpoints);
}

/**
 * A call addressed to one instance (its IP and a port, as clients of headless Services and
 * StatefulSets dial), resolved: the instance's cluster, the service port the call is for
 * (what a meshed instance's sidecar is told in Host), and the port to connect to.
 */
export interface InstanceCall {
  readonly cluster: Cluster;
  readonly endpoint: Endpoint;
  readonly servicePort: number;
  readonly connectPort: number;
}

/**
 * Whether a call to `endpoint`'s address on `port` means that instance of `cluster`, and
 * how to make it; `rank` orders rival matches (lower is closer). An instance is called:
 * - on its own listed port (`rank` 0): for a meshed instance that is its sidecar's inbound
 *   port, so the call is for the service's first port;
 * - on a service port's targetPort (`rank` 1): what the app dials for a pod IP, since
 *   behind a meshed pod the app listens there; the call is for that service port;
 * - on a service port (`rank` 2).
 * Meshed instances are always connected to on their listed port (their sidecar, over mTLS);
 * an unmeshed instance on its listed port, or without one, on the targetPort of the port the
 * call is for. Pure.
 */
export function matchInstance(cluster: Cluster, endpoint: Endpoint, port: number): (InstanceCall & { readonly rank: number }) | undefined {
  const ports = cluster.settings.ports;
  if (ports.length === 0) return undefined;
  const byTarget = ports.find((p) => p.targetPort === port);
  const byPort = ports.find((p) => p.port === port);
  let rank: number;
  let servicePort: number;
  if (endpoint.port !== 0 && endpoint.port === port) {
    rank = 0;
    servicePort = (cluster.settings.meshed ? undefined : byTarget?.port) ?? ports[0]!.port;
  } else if (byTarget) {
    rank = 1;
    servicePort = byTarget.port;
  } else if (byPort) {
    rank = 2;
    servicePort = byPort.port;
  } else return undefined;
  const connectPort = endpoint.port !== 0 ? endpoint.port : rank === 1 ? port : byPort!.targetPort;
  return { cluster, endpoint, servicePort, connectPort, rank };
}

/** All clusters of a sidecar, kept in step with the current config. */
export class ClusterManager {
  readonly #clusters = new Map<string, Cluster>();
  /** Instances by canonical IP (instances named by a DNS name are not in it), rebuilt on every sync. */
  #byAddress = new Map<string, Array<{ readonly cluster: Cluster; readonly endpoint: Endpoint }>>();
  readonly #clock: Clock;
  readonly #random: Random;
  readonly #connector: MeshConnector;

  constructor(clock: Clock, random: Random, connector: MeshConnector) {
    this.#clock = clock;
    this.#random = random;
    this.#connector = connector;
  }

  get(service: string): Cluster | undefined {
    return this.#clusters.get(service);
  }

  /** Brings clusters in line with a config's cluster and endpoints resources. */
  sync(clusters: ReadonlyMap<string, ClusterBody>, endpoints: ReadonlyMap<string, EndpointsBody>): void {
    for (const [name, settings] of clusters) {
      const eps = endpoints.get(name)!;
      const existing = this.#clusters.get(name);
      if (existing) existing.update(settings, eps);
      else this.#clusters.set(name, new Cluster(settings, eps, this.#clock, this.#random, this.#connector));
    }
    for (const [name, cluster] of this.#clusters) {
      if (!clusters.has(name)) {
        this.#clusters.delete(name);
        void cluster.close();
      }
    }
    const byAddress = new Map<string, Array<{ cluster: Cluster; endpoint: Endpoint }>>();
    // Sorted by service key, so that when two services list the same instance the choice is stable.
    for (const name of [...this.#clusters.keys()].sort()) {
      const cluster = this.#clusters.get(name)!;
      for (const endpoint of cluster.endpoints) {
        const ip = canonicalIp(endpoint.address);
        if (ip === null) continue;
        let list = byAddress.get(ip);
        if (!list) byAddress.set(ip, (list = []));
        list.push({ cluster, endpoint });
      }
    }
    this.#byAddress = byAddress;
  }

  /**
   * The instance a call to `ip`:`port` is addressed to, among the instances of every
   * service this sidecar may call (see `matchInstance`; the closest match wins, then the
   * first service key in sort order); undefined when no instance has that address and port.
   */
  findInstance(ip: string, port: number): InstanceCall | undefined {
    const address = canonicalIp(ip);
    if (address === null) return undefined;
    let best: (InstanceCall & { rank: number }) | undefined;
    for (const { cluster, endpoint } of this.#byAddress.get(address) ?? []) {
      const m = matchInstance(cluster, endpoint, port);
      if (m && (!best || m.rank < best.rank)) best = m;
    }
    return best;
  }

  /** Every cluster's HTTP/2 connections are replaced for new calls (see `Cluster.renewConnections`). */
  renewConnections(): void {
    for (const c of this.#clusters.values()) c.renewConnections();
  }

  all(): IterableIterator<Cluster> {
    return this.#clusters.values();
  }

  async close(force = false): Promise<void> {
    const list = [...this.#clusters.values()];
    this.#clusters.clear();
    await Promise.all(list.map((c) => (force ? c.destroy() : c.close())));
  }
}
