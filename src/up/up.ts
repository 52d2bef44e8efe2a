/**
 * `trellis up`: a whole mesh on this machine from a spec folder, for trying Trellis out.
 * It starts, in one process: a reconciler watching the folder, one sidecar per service
 * instance (listening on the instance's endpoint port from the spec), a small demo app
 * behind each, and a light traffic generator that calls, from each entry service, every
 * service it may call, and tallies which backend answered. Editing a route in the folder
 * changes the tallies within a second. The reconciler runs a mesh CA made for the run,
 * so sidecars talk mTLS with certificates it issues (in a strict mesh, traffic starts once
 * every sidecar has one). Besides the allowed calls, each entry service sends a few calls
 * that the access policies forbid (found with the sidecars' own decision function), so
 * the tally shows them refused with 403. The tally gives each call's success rate and p99 as the
 * traffic generator measured them. Sidecars report their traffic to the reconciler every
 * two seconds, so `trellis stat` and the dashboard (`<controlUrl>/dashboard`) show it live.
 * A revision that does not compile is reported with its diagnostics (as `trellis validate`
 * prints them) instead of the reconciler's log line. Everything stops on `stop()`.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createLogger } from '../logger.ts';
import { Agent, request } from 'undici';
import { compileDir } from '../compiler/compile.ts';
import { latency as formatLatency } from '../dashboard/format.ts';
import { MeshStats } from '../dashboard/mesh-stats.ts';
import { PrometheusStats } from '../dashboard/prometheus.ts';
import { renderDiagnostics } from '../diagnostics/render.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { decideAccess } from '../config/access.ts';
import type { InboundBody, ProxyConfig } from '../config/types.ts';
import { DEFAULT_CERT_TTL_MS, MeshCertificateAuthority } from '../identity/ca.ts';
import { spiffeId } from '../identity/spiffe.ts';
import { CertificateIssuer } from '../reconciler/certificates.ts';
import { FolderSource } from '../reconciler/folder-source.ts';
import { ReconcilerMetrics } from '../reconciler/metrics.ts';
import { Reconciler } from '../reconciler/reconciler.ts';
import { ReconcilerServer } from '../reconciler/server.ts';
import { DEFAULT_SIDECAR_OPTIONS, Sidecar } from '../sidecar/sidecar.ts';
import { hostOfServiceKey } from '../sidecar/destination.ts';
import type { ClientHttp2Session } from 'node:http2';
import type { PortProtocol, RouteBody } from '../config/types.ts';
import { demoGrpcPath, grpcCall, grpcSession, startDemoApp, tcpCall, type DemoResult } from './demo.ts';

export interface UpOptions {
  readonly dir: string;
  /** Reconciler listener port (0 for any). */
  readonly controlPort: number;
  /** Requests per second from each entry service to each service it may call. */
  readonly rate: number;
  /** Called with each tally line (every `reportEveryMs`). */
  readonly report: (line: string) => void;
  readonly reportEveryMs: number;
  /** Called when a revision is rejected (its diagnostics, rendered) or applied again after one was. */
  readonly revisions?: (text: string) => void;
  /** ANSI colours in rendered diagnostics. */
  readonly color?: boolean;
  /** Read the dashboard's and `trellis stat`'s traffic from this Prometheus (which scrapes the sidecars with the config at `<controlUrl>/v1/prometheus/config`). */
  readonly prometheus?: string;
  readonly logLevel?: string;
}

/**
 * How often sidecars report their traffic, and the width of the reconciler's stat buckets:
 * short, so a weight change shows on the dashboard within seconds (a demo mesh is small; a
 * production reconciler keeps 10 s buckets).
 */
export const UP_STATS_INTERVAL_MS = 2000;

export interface StartedInstance {
  readonly service: string;
  readonly meshed: boolean;
  readonly inbound: number;
  readonly outbound: number | null;
  readonly admin: number | null;
  readonly app: number;
}

export interface RunningMesh {
  readonly controlUrl: string;
  /** The dashboard page the reconciler serves. */
  readonly dashboardUrl: string;
  readonly instances: readonly StartedInstance[];
  /** Entry services and the services each calls. */
  readonly traffic: ReadonlyArray<{ readonly from: string; readonly to: readonly string[] }>;
  /** Calls the traffic includes that access policy forbids (each should get 403). */
  readonly forbidden: readonly ForbiddenCall[];
  stop(): Promise<void>;
}

/** A call from an entry service that its destination's access rules refuse. */
export interface ForbiddenCall {
  readonly from: string;
  readonly to: string;
  readonly method: string;
  readonly path: string;
}

const PROBE_METHODS = ['DELETE', 'POST', 'PUT', 'GET'] as const;
const PROBE_PATHS = ['/admin', '/'] as const;
/** At most this many forbidden calls join the traffic, to keep the tally short. */
const MAX_FORBIDDEN = 2;

/** Calls entries may route to but that the destination's inbound access rules deny. */
export function findForbiddenCalls(traffic: ReadonlyArray<{ from: string; to: readonly string[] }>, configs: ReadonlyMap<string, ProxyConfig>): ForbiddenCall[] {
  const found: ForbiddenCall[] = [];
  for (const { from, to } of traffic) {
    for (const dest of to) {
      const inbound = configs.get(dest)?.resources.find((r) => r.name === 'inbound')?.body as InboundBody | undefined;
      if (!inbound || inbound.mtls.mode === 'off') continue;
      const caller = spiffeId(inbound.trustDomain, from);
      outer: for (const method of PROBE_METHODS) {
        for (const path of PROBE_PATHS) {
          if (!decideAccess(inbound.access, caller, method, path).allowed) {
            found.push({ from, to: dest, method, path });
            break outer;
          }
        }
      }
      if (found.length >= MAX_FORBIDDEN) return found;
    }
  }
  return found;
}

/** Services a config may call (its route resources). */
function callees(config: ProxyConfig): string[] {
  return config.resources.filter((r) => r.name.startsWith('route/')).map((r) => r.name.slice('route/'.length));
}

export async function up(options: UpOptions): Promise<RunningMesh> {
  const log: Logger = createLogger({ component: 'up' }, { level: options.logLevel ?? 'warn' });
  const compiled = await compileDir(options.dir);
  if (!compiled.mesh || !compiled.plan) {
    const errors = compiled.diagnostics.filter((d) => d.severity === 'error').length;
    throw new Error(`${options.dir} does not compile (${errors} errors); run trellis validate ${options.dir}`);
  }
  const cleanups: Array<() => Promise<void>> = [];
  const stop = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  };
  try {
    const token = randomBytes(24).toString('hex');
    const metrics = new ReconcilerMetrics();
    // The reconciler's log stays quiet (a JSON line in the middle of the tally helps no one):
    // rejected revisions are reported below, readable, from its status.
    const reconcilerLog = createLogger({ component: 'reconciler' }, { level: options.logLevel ?? 'fatal' });
    const reconciler = new Reconciler({ source: new FolderSource({ dir: options.dir }), log: reconcilerLog, metrics });
    // A CA for this run only: its key lives in memory and dies with the process.
    const ca = await MeshCertificateAuthority.generate('trellis up');
    const certificates = new CertificateIssuer({ ca, ttlMs: DEFAULT_CERT_TTL_MS, reconciler, metrics, log: log.child({ component: 'ca' }) });
    const stats = new MeshStats({ bucketMs: UP_STATS_INTERVAL_MS });
    const instances: StartedInstance[] = [];
    // Every sidecar's admin listener, named as its control stream names it (`<service>-<index>`).
    const scrapeTargets = () => {
      const seen = new Map<string, number>();
      return instances.flatMap((i) => {
        const n = seen.get(i.service) ?? 0;
        seen.set(i.service, n + 1);
        return i.admin === null ? [] : [{ service: i.service, node: `${i.service}-${n}`, address: `127.0.0.1:${i.admin}` }];
      });
    };
    const prometheus = options.prometheus ? new PrometheusStats(options.prometheus) : undefined;
    if (prometheus) cleanups.push(() => prometheus.close());
    const server = new ReconcilerServer({ reconciler, metrics, token, certificates, stats, scrapeTargets, ...(prometheus ? { prometheus } : {}) });
    const address = await server.listen('127.0.0.1', options.controlPort);
    cleanups.push(() => server.close());
    await reconciler.start();
    cleanups.push(() => reconciler.stop());
    // The first revision compiled before any sidecar asks the CA (it needs the trust domain).
    await reconciler.idle();
    const controlUrl = `http://127.0.0.1:${address.port}`;

    const sidecars = new Map<string, Sidecar[]>();
    for (const svc of compiled.plan.services.values()) {
      for (const [i, ep] of svc.endpoints.static.entries()) {
        const instance = `${svc.name}-${i}`;
        if (!svc.meshed) {
          // Unmeshed: the demo app itself listens where callers connect.
          const port = ep.port ?? svc.cluster.ports[0]!.targetPort;
          const app = await startDemoApp(svc.name, instance, ep.address, port, svc.cluster.ports[0]!.protocol);
          cleanups.push(() => new Promise((r) => app.close(() => r())));
          instances.push({ service: svc.name, meshed: false, inbound: port, outbound: null, admin: null, app: port });
          continue;
        }
        const app = await startDemoApp(svc.name, instance, '127.0.0.1', 0, svc.cluster.ports[0]!.protocol);
        cleanups.push(() => new Promise((r) => app.close(() => r())));
        const appPort = (app.address() as AddressInfo).port;
        const sidecar = new Sidecar({
          ...DEFAULT_SIDECAR_OPTIONS,
          service: svc.name,
          outbound: { host: '127.0.0.1', port: 0 },
          inbound: { host: ep.address, port: ep.port! },
          admin: { host: '127.0.0.1', port: 0 },
          app: { host: '127.0.0.1', port: appPort },
          drainTimeoutMs: 1000,
          control: { url: controlUrl, token, node: instance },
          statsIntervalMs: UP_STATS_INTERVAL_MS,
          logger: log.child({ component: 'sidecar', service: svc.name, instance }),
        });
        const ports = await sidecar.start();
        cleanups.push(() => sidecar.stop());
        sidecars.set(svc.name, [...(sidecars.get(svc.name) ?? []), sidecar]);
        instances.push({ service: svc.name, meshed: true, inbound: ports.inbound.port, outbound: ports.outbound.port, admin: ports.admin.port, app: appPort });
      }
    }

    // Entry services: meshed services no other service may call (the frontend, say).
    const called = new Set<string>();
    for (const [name, config] of compiled.mesh.configs) for (const c of callees(config)) if (c !== name) called.add(c);
    let entries = [...compiled.mesh.configs.keys()].filter((n) => !called.has(n) && sidecars.has(n));
    if (entries.length === 0) entries = [...sidecars.keys()].slice(0, 1);
    const traffic = entries.map((from) => ({ from, to: callees(compiled.mesh!.configs.get(from)!) }));
    // A TCP service is usually called from deeper in (checkout writes to the audit log):
    // every meshed service that may connect to one does, so the demo shows it too.
    const protocolOf = (service: string): PortProtocol => compiled.plan!.services.get(service)?.cluster.ports[0]?.protocol ?? 'http';
    for (const from of sidecars.keys()) {
      if (entries.includes(from)) continue;
      const tcp = callees(compiled.mesh.configs.get(from)!).filter((c) => c !== from && protocolOf(c) === 'tcp');
      if (tcp.length > 0) traffic.push({ from, to: tcp });
    }
    const forbidden = findForbiddenCalls(traffic, compiled.mesh.configs);

    // Bounded: certificates come from the in-process CA within milliseconds.
    const all = [...sidecars.values()].flat();
    for (const deadline = Date.now() + 10_000; Date.now() < deadline && !all.every((s) => s.ready); ) await new Promise((r) => setTimeout(r, 20));

    const stopTraffic = startTraffic(traffic, forbidden, sidecars, instances, options, (from, to) => {
      const port = compiled.plan!.services.get(to)?.cluster.ports[0];
      const routes = compiled.mesh!.configs.get(from)?.resources.find((r) => r.name === `route/${to}`)?.body as RouteBody | undefined;
      return { protocol: port?.protocol ?? 'http', authority: `${hostOfServiceKey(to)}:${port?.port ?? 80}`, grpcPath: demoGrpcPath(routes?.rules ?? []) };
    });
    cleanups.push(stopTraffic);
    const stopWatching = watchRevisions(reconciler, options);
    cleanups.push(stopWatching);
    return { controlUrl, dashboardUrl: `${controlUrl}/dashboard`, instances, traffic, forbidden, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Sends `rate` requests per second from each entry to each service it may call, through
 * the entry's sidecar, and reports which backend service answered, as shares.
 */
function startTraffic(
  traffic: ReadonlyArray<{ from: string; to: readonly string[] }>,
  forbidden: readonly ForbiddenCall[],
  sidecars: ReadonlyMap<string, Sidecar[]>,
  instances: readonly StartedInstance[],
  options: UpOptions,
  describe: (from: string, to: string) => { protocol: PortProtocol; authority: string; grpcPath: string },
): () => Promise<void> {
  const agent = new Agent({ connections: 16, keepAliveTimeout: 5000 });
  /** One h2c connection per calling sidecar for gRPC calls: the sidecar spreads its calls. */
  const sessions = new Map<number, ClientHttp2Session>();
  const sessionFor = (port: number) => {
    let s = sessions.get(port);
    if (!s || s.closed || s.destroyed) sessions.set(port, (s = grpcSession(port)));
    return s;
  };
  /** Per call: who answered how often, how long each call took (ms), how many failed (5xx or no answer). */
  const tallies = new Map<string, { who: Map<string, number>; ms: number[]; failed: number; forbidden: boolean }>();
  const tally = (key: string, forbidden: boolean) => {
    let t = tallies.get(key);
    if (!t) tallies.set(key, (t = { who: new Map(), ms: [], failed: 0, forbidden }));
    return t;
  };
  let stopped = false;
  const outboundOf = (service: string) => instances.find((i) => i.service === service && i.outbound !== null)!.outbound!;
  const calls = [
    ...traffic.flatMap(({ from, to }) => to.map((dest) => ({ from, to: dest, method: 'GET', path: '/', forbidden: false, ...describe(from, dest) }))).map((c) => ({ ...c, key: `${c.from} → ${c.to}${c.protocol === 'grpc' || c.protocol === 'tcp' ? ` (${c.protocol})` : ''}` })),
    ...forbidden.map((f) => ({ ...f, key: `${f.from} → ${f.to} ${f.method} ${f.path} (forbidden)`, forbidden: true, ...describe(f.from, f.to), protocol: 'http' as PortProtocol })),
  ];
  const record = (key: string, refused: boolean, started: number, r: DemoResult) => {
    if (stopped) return;
    const t = tally(key, refused);
    t.who.set(r.who, (t.who.get(r.who) ?? 0) + 1);
    if (r.who !== 'no answer') t.ms.push(performance.now() - started);
    if (!r.ok && r.failed) t.failed++;
  };
  const tick = setInterval(() => {
    for (const { from, to: dest, method, path, key, forbidden: refused, protocol, authority, grpcPath } of calls) {
      if (!sidecars.has(from)) continue;
      const started = performance.now();
      if (protocol === 'grpc') {
        void grpcCall(sessionFor(outboundOf(from)), authority, grpcPath, 5000).then((r) => record(key, refused, started, r));
        continue;
      }
      if (protocol === 'tcp') {
        void tcpCall(outboundOf(from), authority, 5000).then((r) => record(key, refused, started, r));
        continue;
      }
      void request(`http://127.0.0.1:${outboundOf(from)}${path}`, { method, headers: { host: dest }, dispatcher: agent, headersTimeout: 5000, bodyTimeout: 5000 })
        .then(async (res) => {
          const who = res.statusCode === 200 ? ((await res.body.json()) as { service: string }).service : `${res.statusCode} ${String(res.headers['x-trellis-error'] ?? '')}`.trim();
          if (res.statusCode !== 200) await res.body.dump();
          const t = tally(key, refused);
          t.who.set(who, (t.who.get(who) ?? 0) + 1);
          t.ms.push(performance.now() - started);
          if (res.statusCode >= 500) t.failed++;
        })
        .catch(() => {
          if (stopped) return;
          const t = tally(key, refused);
          t.who.set('no answer', (t.who.get('no answer') ?? 0) + 1);
          t.failed++;
        });
    }
  }, Math.max(10, Math.round(1000 / options.rate)));
  const report = setInterval(() => {
    if (stopped || tallies.size === 0) return;
    const parts: string[] = [];
    for (const [key, t] of [...tallies].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const total = [...t.who.values()].reduce((a, b) => a + b, 0);
      const shares = [...t.who].sort((a, b) => b[1] - a[1]).map(([who, n]) => `${who} ${Math.round((100 * n) / total)}%`).join(' · ');
      const sorted = t.ms.sort((a, b) => a - b);
      const p99 = sorted.length === 0 ? '-' : formatLatency(sorted[Math.max(0, Math.ceil(0.99 * sorted.length) - 1)]! / 1000);
      // A refused call is the expected answer there: its success rate would say nothing.
      const success = (total - t.failed) / total;
      const health = t.forbidden ? `p99 ${p99}` : `success ${(success * 100).toFixed(success === 1 ? 0 : 1)}%, p99 ${p99}`;
      parts.push(`${key}: ${shares}  (${health})`);
    }
    tallies.clear();
    options.report(parts.join('\n'));
  }, options.reportEveryMs);
  return async () => {
    stopped = true;
    clearInterval(tick);
    clearInterval(report);
    for (const s of sessions.values()) s.close();
    await agent.close();
  };
}

/**
 * Reports each revision the reconciler rejects, with its diagnostics rendered as `trellis
 * validate` prints them (the folder compiled again: the reconciler keeps only the messages),
 * each revision applied after the first, and the folder's read errors (the reconciler's own
 * log is quiet under `trellis up`).
 */
function watchRevisions(reconciler: Reconciler, options: UpOptions): () => Promise<void> {
  let last = reconciler.status().attempted;
  let failing = last !== null && !last.ok;
  let sourceError: string | null = null;
  let checking: Promise<void> | undefined;
  const check = async () => {
    const status = reconciler.status();
    // The folder cannot be read (removed, unreadable): the mesh keeps its last revision.
    if (status.source.error !== sourceError) {
      sourceError = status.source.error;
      const at = new Date().toISOString().slice(11, 19);
      options.revisions?.(sourceError === null ? `[${at}] ${escapeForTerminal(options.dir)} can be read again` : `[${at}] cannot read ${escapeForTerminal(options.dir)}: ${escapeForTerminal(sourceError)}; the mesh stays on the last good revision`);
    }
    const a = status.attempted;
    if (!a || (last && a.revision === last.revision && a.at === last.at)) {
      // Undone by hand: the folder holds the applied revision again, which the reconciler does not attempt twice.
      if (failing && status.applied && status.source.revision === status.applied.revision) {
        failing = false;
        options.revisions?.(`[${new Date().toISOString().slice(11, 19)}] back to ${escapeForTerminal(status.applied.description)}, the revision the mesh runs`);
      }
      return;
    }
    last = a;
    const at = a.at.slice(11, 19);
    if (!a.ok) {
      failing = true;
      const again = await compileDir(options.dir);
      const errors = again.diagnostics.filter((d) => d.severity === 'error');
      const text = errors.length > 0 ? renderDiagnostics(errors, { pathPrefix: options.dir, ...(options.color ? { color: true } : {}) }) : a.diagnostics.filter((d) => d.severity === 'error').map((d) => `${d.file ?? ''}${d.line ? `:${d.line}:${d.col}` : ''}: error ${d.code}: ${d.message}`).join('\n');
      options.revisions?.(`[${at}] REJECTED ${escapeForTerminal(a.description)}: the mesh stays on the last good revision\n${text.trimEnd()}`);
    } else {
      options.revisions?.(`[${at}] applied ${escapeForTerminal(a.description)}: the mesh now runs it${failing ? ' (the rejected revision never ran)' : ''}`);
      failing = false;
    }
  };
  const timer = setInterval(() => {
    checking ??= check().finally(() => (checking = undefined));
  }, 250);
  return async () => {
    clearInterval(timer);
    await checking;
  };
}
