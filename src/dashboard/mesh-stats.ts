/**
 * The mesh's traffic as the reconciler sees it from sidecar reports (sidecar/stats-report.ts),
 * for `trellis stat` and the dashboard when no Prometheus is configured.
 *
 * Memory is bounded whatever the traffic: each series (reporter, source, destination, route)
 * keeps a ring of per-bucket aggregates (request, failure and denial counts, a latency
 * histogram), `bucketMs` wide, long enough for the longest window; at most `maxSeries`
 * series are kept (reports of new series beyond that are counted as dropped, never stored).
 * Reports are placed in the bucket of the time they arrive.
 */
import { parseServiceKey } from '../spec/names.ts';
import type { StatsReport } from '../sidecar/stats-report.ts';

/** Ring bucket width: a report period of the sidecars. */
export const DEFAULT_BUCKET_MS = 10_000;
/** The longest window a query may ask for. */
export const MAX_WINDOW_MS = 15 * 60_000;
/** About 30 series per service pair and route in a mesh of a few hundred services: 1.7 KB each at 90 buckets with histograms, so at most ~17 MB. */
export const DEFAULT_MAX_SERIES = 10_000;

/** One bucket of one series. */
interface Slot {
  /** Bucket number (epoch ms / bucketMs). */
  index: number;
  requests: number;
  /** 5xx answers, and proxy errors other than access denials. */
  failures: number;
  /** Refused by access policy (403 access_denied). */
  denied: number;
  /** Counts per latency bucket (see `StatsReport.bounds`), or null before any latency arrived. */
  latency: number[] | null;
}

/** A fixed ring of slots: slot `index` lives at `index % size`, replacing whatever older slot was there. */
class Ring {
  readonly #slots: Array<Slot | undefined>;

  constructor(size: number) {
    this.#slots = new Array<Slot | undefined>(size);
  }

  at(index: number): Slot {
    const i = index % this.#slots.length;
    let slot = this.#slots[i];
    if (slot?.index !== index) {
      slot = { index, requests: 0, failures: 0, denied: 0, latency: null };
      this.#slots[i] = slot;
    }
    return slot;
  }

  /** Slots whose bucket number is at least `from` (and not in the future). */
  *since(from: number, to: number): Generator<Slot> {
    for (const s of this.#slots) if (s && s.index >= from && s.index <= to) yield s;
  }
}

interface Series {
  readonly reporter: string;
  readonly source: string;
  readonly destination: string;
  readonly route: string;
  readonly ring: Ring;
}

/** Access decisions and TLS failures of one service: a count ring per (kind, service, result or direction, reason). */
interface EventSeries {
  readonly kind: 'access' | 'tls';
  readonly service: string;
  readonly what: string;
  readonly reason: string;
  readonly ring: Ring;
}

/** The golden metrics of a set of requests over a window. Latencies in seconds; null when no request had one. */
export interface GoldenMetrics {
  readonly requests: number;
  readonly failures: number;
  readonly denied: number;
  /** Share of requests that did not fail (0..1); null without requests. */
  readonly successRate: number | null;
  readonly rps: number;
  readonly p50: number | null;
  readonly p95: number | null;
  readonly p99: number | null;
}

export interface EdgeStats extends GoldenMetrics {
  readonly source: string;
  readonly destination: string;
}

export interface RouteStats extends EdgeStats {
  /** HTTPRoute name (`default` for a service without routes, `instance` for calls to one instance). */
  readonly route: string;
}

export interface ServiceStats extends GoldenMetrics {
  readonly service: string;
  /** Whose counts these are: the service's own sidecars (inbound), or, for services without one, their callers' (outbound). */
  readonly reporter: 'inbound' | 'outbound';
}

export interface EventCount {
  readonly service: string;
  /** allowed, denied or audited (access); inbound or outbound (tls). */
  readonly what: string;
  readonly reason: string;
  readonly count: number;
}

export interface StatsView {
  /** Where the numbers come from: sidecar reports to the reconciler, or a Prometheus scraping the sidecars. */
  readonly source: 'sidecars' | 'prometheus';
  readonly at: string;
  readonly windowMs: number;
  /** Seconds the rates are computed over: the window, or less while the reconciler has not been receiving reports that long. */
  readonly coveredSeconds: number;
  /** The reconciler has been receiving reports for less than the window (rates are over that shorter time). */
  readonly warmingUp: boolean;
  /** Per service, what it served. */
  readonly services: readonly ServiceStats[];
  /** Per caller → backend service, as the caller's sidecar saw it (outbound). */
  readonly edges: readonly EdgeStats[];
  /** Per caller → backend service and route (outbound). */
  readonly routes: readonly RouteStats[];
  readonly access: readonly EventCount[];
  readonly tls: readonly EventCount[];
  readonly limits: { readonly series: number; readonly maxSeries: number; readonly droppedSeries: number };
}

export interface StatsQuery {
  readonly windowMs: number;
  /** Only calls from this service. */
  readonly from?: string;
  /** Only calls to this service. */
  readonly to?: string;
  /** Only this HTTPRoute. */
  readonly route?: string;
  /** Only services of this namespace (either end of an edge). */
  readonly namespace?: string;
  /** The time the counts cover, in ms, when the caller knows it (a Prometheus `increase()`); default: from the ring. */
  readonly coveredMs?: number;
}

export interface MeshStatsOptions {
  readonly bucketMs?: number;
  readonly maxSeries?: number;
  /** Epoch ms; default Date.now. */
  readonly now?: () => number;
}

/** A number of seconds with at most microsecond precision, so JSON stays short. */
const round = (x: number, digits = 6) => Number(x.toFixed(digits));

/**
 * The q-quantile (0..1) of a histogram, interpolating linearly inside the bucket that holds
 * it, as Prometheus' histogram_quantile does; the overflow bucket answers the highest bound.
 */
export function quantile(q: number, bounds: readonly number[], counts: readonly number[]): number | null {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!;
    if (below + c >= rank && c > 0) {
      if (i >= bounds.length) return bounds[bounds.length - 1] ?? null;
      const lower = i === 0 ? 0 : bounds[i - 1]!;
      return round(lower + (bounds[i]! - lower) * ((rank - below) / c));
    }
    below += c;
  }
  return bounds[bounds.length - 1] ?? null;
}

/** Whether a response counts as a failure: a 5xx, or a proxy error other than an access denial. */
function classify(code: string, flags: string): { failed: boolean; denied: boolean } {
  const denied = flags === 'access_denied' || (flags === '-' && code === '403');
  return { failed: !denied && (Number(code) >= 500 || (flags !== '-' && flags !== '')), denied };
}

export class MeshStats {
  readonly #bucketMs: number;
  readonly #maxSeries: number;
  readonly #now: () => number;
  readonly #ringSize: number;
  readonly #series = new Map<string, Series>();
  readonly #events = new Map<string, EventSeries>();
  #bounds: readonly number[] | null = null;
  #dropped = 0;
  /** When the reconciler started counting (the first report's arrival less the period it covers), epoch ms. */
  #since: number | null = null;

  constructor(options: MeshStatsOptions = {}) {
    this.#bucketMs = options.bucketMs ?? DEFAULT_BUCKET_MS;
    this.#maxSeries = options.maxSeries ?? DEFAULT_MAX_SERIES;
    this.#now = options.now ?? Date.now;
    this.#ringSize = Math.ceil(MAX_WINDOW_MS / this.#bucketMs) + 1;
  }

  get bucketMs(): number {
    return this.#bucketMs;
  }

  /** Adds one sidecar report (already authenticated and shape-checked) to the current bucket. */
  record(report: StatsReport): void {
    const now = this.#now();
    this.#since ??= now - Math.min(report.intervalMs, MAX_WINDOW_MS);
    const index = Math.floor(now / this.#bucketMs);
    // The first report that carries latency fixes the buckets; one without (a sidecar that
    // has served no HTTP yet, only TCP connections or access decisions) names none.
    if (report.bounds.length > 0) this.#bounds ??= report.bounds;
    const bounds = this.#bounds ?? [];
    const sameBounds = report.bounds.length === bounds.length && report.bounds.every((b, i) => b === bounds[i]);
    for (const r of report.requests) {
      const slot = this.#seriesFor(r.reporter, r.source, r.destination, r.route)?.ring.at(index);
      if (!slot) continue;
      const { failed, denied } = classify(r.code, r.flags);
      slot.requests += r.count;
      if (failed) slot.failures += r.count;
      if (denied) slot.denied += r.count;
    }
    // Sidecars of another build with other buckets: their counts stay, their latencies cannot be merged.
    if (sameBounds) {
      for (const l of report.latencies) {
        if (l.buckets.length !== bounds.length + 1) continue;
        const slot = this.#seriesFor(l.reporter, l.source, l.destination, l.route)?.ring.at(index);
        if (!slot) continue;
        slot.latency ??= new Array<number>(l.buckets.length).fill(0);
        for (let i = 0; i < l.buckets.length; i++) slot.latency[i]! += l.buckets[i]!;
      }
    }
    for (const g of report.grpcFailures ?? []) {
      const slot = this.#seriesFor(g.reporter, g.source, g.destination, g.route)?.ring.at(index);
      if (slot) slot.failures += g.count;
    }
    for (const a of report.access) {
      const slot = this.#eventFor('access', report.service, a.result, a.reason)?.ring.at(index);
      if (slot) slot.requests += a.count;
    }
    for (const t of report.tls) {
      const slot = this.#eventFor('tls', report.service, t.direction, t.reason)?.ring.at(index);
      if (slot) slot.requests += t.count;
    }
  }

  #seriesFor(reporter: string, source: string, destination: string, route: string): Series | undefined {
    const k = JSON.stringify([reporter, source, destination, route]);
    let s = this.#series.get(k);
    if (!s) {
      if (this.#series.size + this.#events.size >= this.#maxSeries) {
        this.#dropped++;
        return undefined;
      }
      s = { reporter, source, destination, route, ring: new Ring(this.#ringSize) };
      this.#series.set(k, s);
    }
    return s;
  }

  #eventFor(kind: 'access' | 'tls', service: string, what: string, reason: string): EventSeries | undefined {
    const k = JSON.stringify([kind, service, what, reason]);
    let s = this.#events.get(k);
    if (!s) {
      if (this.#series.size + this.#events.size >= this.#maxSeries) {
        this.#dropped++;
        return undefined;
      }
      s = { kind, service, what, reason, ring: new Ring(this.#ringSize) };
      this.#events.set(k, s);
    }
    return s;
  }

  /** The golden metrics over the last `windowMs` (at most MAX_WINDOW_MS), per service, edge and route. */
  query(q: StatsQuery): StatsView {
    const now = this.#now();
    const windowMs = Math.min(Math.max(q.windowMs, this.#bucketMs), MAX_WINDOW_MS);
    const last = Math.floor(now / this.#bucketMs);
    const first = Math.floor((now - windowMs) / this.#bucketMs) + 1;
    const coveredMs = q.coveredMs ?? Math.max(1, now - Math.max(first * this.#bucketMs, this.#since ?? now));
    const bounds = this.#bounds ?? [];
    const inNamespace = (key: string) => q.namespace === undefined || parseServiceKey(key).namespace === q.namespace;

    type Acc = { requests: number; failures: number; denied: number; latency: number[] };
    const add = (groups: Map<string, Acc>, k: string, s: Series) => {
      let acc = groups.get(k);
      for (const slot of s.ring.since(first, last)) {
        acc ??= { requests: 0, failures: 0, denied: 0, latency: new Array<number>(bounds.length + 1).fill(0) };
        acc.requests += slot.requests;
        acc.failures += slot.failures;
        acc.denied += slot.denied;
        if (slot.latency) for (let i = 0; i < slot.latency.length && i < acc.latency.length; i++) acc.latency[i]! += slot.latency[i]!;
      }
      if (acc) groups.set(k, acc);
    };
    const golden = (a: Acc): GoldenMetrics => ({
      requests: a.requests,
      failures: a.failures,
      denied: a.denied,
      successRate: a.requests === 0 ? null : round((a.requests - a.failures) / a.requests, 4),
      rps: round(a.requests / (coveredMs / 1000), 3),
      p50: quantile(0.5, bounds, a.latency),
      p95: quantile(0.95, bounds, a.latency),
      p99: quantile(0.99, bounds, a.latency),
    });

    const edges = new Map<string, Acc>();
    const routes = new Map<string, Acc>();
    const inbound = new Map<string, Acc>();
    const outboundTo = new Map<string, Acc>();
    for (const s of this.#series.values()) {
      if (q.from !== undefined && s.source !== q.from) continue;
      if (q.to !== undefined && s.destination !== q.to) continue;
      if (!inNamespace(s.source) && !inNamespace(s.destination)) continue;
      if (s.reporter === 'inbound') {
        if (q.route === undefined) add(inbound, s.destination, s);
        continue;
      }
      if (q.route !== undefined && s.route !== q.route) continue;
      add(edges, JSON.stringify([s.source, s.destination]), s);
      add(routes, JSON.stringify([s.source, s.destination, s.route]), s);
      add(outboundTo, s.destination, s);
    }
    const services: ServiceStats[] = [];
    for (const [service, acc] of inbound) if (inNamespace(service)) services.push({ service, reporter: 'inbound', ...golden(acc) });
    // Services without a sidecar of their own (or filtered to a route, which only callers know): what their callers saw.
    for (const [service, acc] of outboundTo) if (!inbound.has(service) && inNamespace(service)) services.push({ service, reporter: 'outbound', ...golden(acc) });
    services.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));

    const events = (kind: 'access' | 'tls'): EventCount[] => {
      const out: EventCount[] = [];
      for (const e of this.#events.values()) {
        if (e.kind !== kind || !inNamespace(e.service) || (q.to !== undefined && e.service !== q.to)) continue;
        let count = 0;
        for (const slot of e.ring.since(first, last)) count += slot.requests;
        if (count > 0) out.push({ service: e.service, what: e.what, reason: e.reason, count });
      }
      return out.sort((a, b) => (a.service === b.service ? b.count - a.count : a.service < b.service ? -1 : 1));
    };
    const byKey = <T>(m: Map<string, Acc>, make: (parts: string[], g: GoldenMetrics) => T) =>
      [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, acc]) => make(JSON.parse(k) as string[], golden(acc)));
    return {
      source: 'sidecars',
      at: new Date(now).toISOString(),
      windowMs,
      coveredSeconds: round(coveredMs / 1000, 3),
      warmingUp: q.coveredMs === undefined && (this.#since ?? now) > first * this.#bucketMs,
      services,
      edges: byKey(edges, ([source, destination], g) => ({ source: source!, destination: destination!, ...g })),
      routes: byKey(routes, ([source, destination, route], g) => ({ source: source!, destination: destination!, route: route!, ...g })),
      access: events('access'),
      tls: events('tls'),
      limits: { series: this.#series.size + this.#events.size, maxSeries: this.#maxSeries, droppedSeries: this.#dropped },
    };
  }
}

/** A Gateway API style duration (`30s`, `1m`, `1m30s`, `500ms`) in ms; undefined when malformed. */
export function parseWindow(text: string): number | undefined {
  const m = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/.exec(text);
  if (!m || text === '') return undefined;
  const [, h, min, s, ms] = m;
  return Number(h ?? 0) * 3_600_000 + Number(min ?? 0) * 60_000 + Number(s ?? 0) * 1000 + Number(ms ?? 0);
}

/** Whether a request body is a well-formed StatsReport (bounded sizes, numbers where numbers go). */
export function isStatsReport(v: unknown): v is StatsReport {
  const r = v as StatsReport;
  const str = (x: unknown) => typeof x === 'string' && x.length <= 253;
  const num = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  return (
    typeof r === 'object' && r !== null && str(r.service) && str(r.node) && num(r.intervalMs) &&
    Array.isArray(r.bounds) && r.bounds.length <= 64 && r.bounds.every(num) &&
    Array.isArray(r.requests) && r.requests.every((x) => typeof x === 'object' && x !== null && str(x.reporter) && str(x.source) && str(x.destination) && str(x.route) && str(x.code) && str(x.flags) && num(x.count)) &&
    Array.isArray(r.latencies) && r.latencies.every((x) => typeof x === 'object' && x !== null && str(x.reporter) && str(x.source) && str(x.destination) && str(x.route) && Array.isArray(x.buckets) && x.buckets.length <= 65 && x.buckets.every(num)) &&
    Array.isArray(r.access) && r.access.every((x) => typeof x === 'object' && x !== null && str(x.result) && str(x.reason) && num(x.count)) &&
    Array.isArray(r.tls) && r.tls.every((x) => typeof x === 'object' && x !== null && str(x.direction) && str(x.reason) && num(x.count)) &&
    (r.grpcFailures === undefined || (Array.isArray(r.grpcFailures) && r.grpcFailures.every((x) => typeof x === 'object' && x !== null && str(x.reporter) && str(x.source) && str(x.destination) && str(x.route) && num(x.count))))
  );
}
