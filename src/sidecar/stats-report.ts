/**
 * What a sidecar tells the reconciler about its traffic, for `trellis stat` and the
 * dashboard when no Prometheus is configured: every `intervalMs`, the increase of its
 * request counters and latency histograms since the last report the reconciler took, as
 * aggregates (one entry per label set, never one per request), so the cost is bounded by
 * the number of series, not by the traffic.
 *
 *   POST /v1/stats   body: StatsReport (bearer token, like /v1/ack) → 204
 *
 * The numbers are read from the sidecar's own Prometheus registry (metrics.ts), so the
 * reconciler's view and a Prometheus scrape of `/metrics` count the same requests.
 */
import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import type { SidecarMetrics } from './metrics.ts';
import { bearer, type ControlToken } from './control-token.ts';

export const STATS_PATH = '/v1/stats';

/** Default seconds between reports: one per 10 s ring bucket on the reconciler. */
export const DEFAULT_STATS_INTERVAL_MS = 10_000;

/** One request series' increase since the last report. */
export interface RequestCount {
  readonly reporter: string;
  readonly source: string;
  readonly destination: string;
  readonly route: string;
  /** HTTP status as a string (`200`, `503`). */
  readonly code: string;
  /** Proxy error code, or `-` when the response came from the backend. */
  readonly flags: string;
  readonly count: number;
}

/** One latency series' increase: counts per histogram bucket (not cumulative), in `bounds` order, then the overflow. */
export interface LatencyCounts {
  readonly reporter: string;
  readonly source: string;
  readonly destination: string;
  readonly route: string;
  /** `bounds.length + 1` counts: bucket i holds durations in (bounds[i-1], bounds[i]]; the last, those above every bound. */
  readonly buckets: readonly number[];
}

export interface StatsReport {
  readonly service: string;
  readonly node: string;
  /** How long this report covers, in ms (the reconciler uses it before it has a full window). */
  readonly intervalMs: number;
  /** Histogram bucket upper bounds, in seconds, ascending. */
  readonly bounds: readonly number[];
  readonly requests: readonly RequestCount[];
  readonly latencies: readonly LatencyCounts[];
  /** Inbound access decisions: result (allowed, denied, audited) and reason. */
  readonly access: ReadonlyArray<{ readonly result: string; readonly reason: string; readonly count: number }>;
  /** mTLS connections refused: direction and reason. */
  readonly tls: ReadonlyArray<{ readonly direction: string; readonly reason: string; readonly count: number }>;
  /**
   * gRPC calls counted in `requests` with a non-failing HTTP status whose gRPC status says
   * the server failed: failures too. Absent from sidecars that predate it.
   */
  readonly grpcFailures?: ReadonlyArray<{ readonly reporter: string; readonly source: string; readonly destination: string; readonly route: string; readonly count: number }>;
}

/** Cumulative values of every series, keyed by its label set (JSON of the label values). */
interface Sample {
  readonly requests: Map<string, number>;
  readonly buckets: Map<string, number[]>;
  readonly access: Map<string, number>;
  readonly tls: Map<string, number>;
  readonly grpcFailures: Map<string, number>;
  readonly bounds: number[];
}

const key = (...parts: string[]) => JSON.stringify(parts);

/** Reads the cumulative request, latency, access and TLS counters of `metrics`. */
export async function readSample(metrics: SidecarMetrics): Promise<Sample> {
  const requests = new Map<string, number>();
  for (const v of (await metrics.requests.get()).values) {
    const l = v.labels;
    requests.set(key(String(l.reporter), String(l.source_workload), String(l.destination_service), String(l.route), String(l.response_code), String(l.response_flags)), v.value);
  }
  // prom-client gives cumulative `le` buckets per label set; keep them per series, in bound order.
  const cumulative = new Map<string, Map<number, number>>();
  const bounds = new Set<number>();
  for (const v of (await metrics.duration.get()).values) {
    if (v.metricName !== 'trellis_request_duration_seconds_bucket') continue;
    const l = v.labels as typeof v.labels & { le?: string | number };
    const le = l.le === '+Inf' ? Infinity : Number(l.le);
    if (le !== Infinity) bounds.add(le);
    const k = key(String(l.reporter), String(l.source_workload), String(l.destination_service), String(l.route));
    const byLe = cumulative.get(k) ?? new Map<number, number>();
    // Several response codes share a series here: their buckets add up.
    byLe.set(le, (byLe.get(le) ?? 0) + v.value);
    cumulative.set(k, byLe);
  }
  const sorted = [...bounds].sort((a, b) => a - b);
  const buckets = new Map<string, number[]>();
  for (const [k, byLe] of cumulative) {
    const counts: number[] = [];
    let below = 0;
    for (const le of [...sorted, Infinity]) {
      const c = byLe.get(le) ?? below;
      counts.push(c - below);
      below = c;
    }
    buckets.set(k, counts);
  }
  const access = new Map<string, number>();
  for (const v of (await metrics.accessDecisions.get()).values) access.set(key(String(v.labels.result), String(v.labels.reason)), v.value);
  const tls = new Map<string, number>();
  for (const v of (await metrics.tlsFailures.get()).values) tls.set(key(String(v.labels.direction), String(v.labels.reason)), v.value);
  const grpcFailures = new Map<string, number>();
  for (const v of (await metrics.grpcFailures.get()).values) grpcFailures.set(key(String(v.labels.reporter), String(v.labels.source_workload), String(v.labels.destination_service), String(v.labels.route)), v.value);
  return { requests, buckets, access, tls, grpcFailures, bounds: sorted };
}

/** The increase of a counter; a value below the previous one means the counter restarted. */
function increase(now: number, before: number | undefined): number {
  return before === undefined || now < before ? now : now - before;
}

/** What changed between two samples, as a report body (series that did not move are left out). */
export function reportBetween(before: Sample | undefined, now: Sample, who: { service: string; node: string; intervalMs: number }): StatsReport {
  const requests: RequestCount[] = [];
  for (const [k, v] of now.requests) {
    const count = increase(v, before?.requests.get(k));
    if (count <= 0) continue;
    const [reporter, source, destination, route, code, flags] = JSON.parse(k) as string[];
    requests.push({ reporter: reporter!, source: source!, destination: destination!, route: route!, code: code!, flags: flags!, count });
  }
  const latencies: LatencyCounts[] = [];
  for (const [k, counts] of now.buckets) {
    const prev = before?.buckets.get(k);
    const restarted = prev === undefined || prev.length !== counts.length || counts.some((c, i) => c < prev[i]!);
    const delta = restarted ? counts : counts.map((c, i) => c - prev[i]!);
    if (delta.every((c) => c === 0)) continue;
    const [reporter, source, destination, route] = JSON.parse(k) as string[];
    latencies.push({ reporter: reporter!, source: source!, destination: destination!, route: route!, buckets: delta });
  }
  const pairs = (cur: Map<string, number>, prev: Map<string, number> | undefined) =>
    [...cur].flatMap(([k, v]) => {
      const count = increase(v, prev?.get(k));
      return count > 0 ? [[...(JSON.parse(k) as [string, string]), count] as const] : [];
    });
  return {
    service: who.service,
    node: who.node,
    intervalMs: who.intervalMs,
    bounds: now.bounds,
    requests,
    latencies,
    access: pairs(now.access, before?.access).map(([result, reason, count]) => ({ result, reason, count })),
    tls: pairs(now.tls, before?.tls).map(([direction, reason, count]) => ({ direction, reason, count })),
    grpcFailures: [...now.grpcFailures].flatMap(([k, v]) => {
      const count = increase(v, before?.grpcFailures.get(k));
      if (count <= 0) return [];
      const [reporter, source, destination, route] = JSON.parse(k) as string[];
      return [{ reporter: reporter!, source: source!, destination: destination!, route: route!, count }];
    }),
  };
}

export interface StatsReporterOptions {
  /** Reconciler base URL, or where to ask for it on each report (the replica the control client streams from: it knows this sidecar). */
  readonly url: string | (() => string);
  readonly token: string | ControlToken;
  readonly service: string;
  readonly node: string;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  /** Between reports, in ms (default 10 s). */
  readonly intervalMs?: number;
}

/**
 * Sends a report every `intervalMs`. A report the reconciler did not take is not lost:
 * the next one is computed against the last sample it did take, so it carries both periods.
 */
export class StatsReporter {
  readonly #o: StatsReporterOptions;
  readonly #agent = new Agent({ keepAliveTimeout: 30_000, connections: 1 });
  #taken: Sample | undefined;
  #timer: NodeJS.Timeout | undefined;
  #sending: Promise<void> | undefined;
  #failedBefore = false;

  constructor(options: StatsReporterOptions) {
    this.#o = options;
  }

  start(): void {
    const every = this.#o.intervalMs ?? DEFAULT_STATS_INTERVAL_MS;
    this.#timer ??= setInterval(() => {
      this.#sending ??= this.sendNow().finally(() => (this.#sending = undefined));
    }, every);
    this.#timer.unref();
  }

  /** Sends one report now; resolves when the reconciler answered (or the send failed and was logged). */
  async sendNow(): Promise<void> {
    const sample = await readSample(this.#o.metrics);
    const body = reportBetween(this.#taken, sample, { service: this.#o.service, node: this.#o.node, intervalMs: this.#o.intervalMs ?? DEFAULT_STATS_INTERVAL_MS });
    try {
      const base = typeof this.#o.url === 'string' ? this.#o.url : this.#o.url();
      const res = await request(new URL(STATS_PATH, base), {
        method: 'POST',
        headers: { authorization: bearer(this.#o.token), 'content-type': 'application/json' },
        body: JSON.stringify(body),
        dispatcher: this.#agent,
        headersTimeout: 5000,
        bodyTimeout: 5000,
      });
      await res.body.dump();
      if (res.statusCode !== 204) throw new Error(`reconciler answered ${res.statusCode}`);
      this.#taken = sample;
      this.#failedBefore = false;
    } catch (err) {
      // Logged once per outage: the control stream already says when the reconciler is away.
      if (!this.#failedBefore) this.#o.log.warn({ type: 'stats_report_failed', error: (err as Error).message }, 'could not report traffic stats; the next report carries them');
      this.#failedBefore = true;
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#sending;
    await this.#agent.close();
  }
}
