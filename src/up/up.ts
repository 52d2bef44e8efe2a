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
 * the tally shows them refused with 403. Everything stops on `stop()`.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createLogger } from '../logger.ts';
import { Agent, request } from 'undici';
import { compileDir } from '../compiler/compile.ts';
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

export interface UpOptions {
  readonly dir: string;
  /** Reconciler listener port (0 for any). */
  readonly controlPort: number;
  /** Requests per second from each entry service to each service it may call. */
  readonly rate: number;
  /** Called with each tally line (every `reportEveryMs`). */
  readonly report: (line: string) => void;
  readonly reportEveryMs: number;
  readonly logLevel?: string;
}

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
  readonly instances: readonly StartedInstance[];
  /** Entry services and the services each calls. */
  readonly traffic: ReadonlyArray<{ readonly from: string; readonly to: readonly string[] }>;
  /** Calls the traffic includes that access policy forbids (each should get 403). */
  readonly forbidden: readonly ForbiddenCall[];
  stop(): Promise<void>;
}

/** A demo app: answers every request with its service and instance, as JSON. */
async function startDemoApp(service: string, instance: string, host: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    req.resume();
    const body = JSON.stringify({ service, instance, method: req.method, path: req.url, caller: req.headers['x-forwarded-for'] ?? null });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-demo-service': service });
    res.end(body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
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
    const reconciler = new Reconciler({ source: new FolderSource({ dir: options.dir }), log: log.child({ component: 'reconciler' }), metrics });
    // A CA for this run only: its key lives in memory and dies with the process.
    const ca = await MeshCertificateAuthority.generate('trellis up');
    const certificates = new CertificateIssuer({ ca, ttlMs: DEFAULT_CERT_TTL_MS, reconciler, metrics, log: log.child({ component: 'ca' }) });
    const server = new ReconcilerServer({ reconciler, metrics, token, certificates });
    const address = await server.listen('127.0.0.1', options.controlPort);
    cleanups.push(() => server.close());
    await reconciler.start();
    cleanups.push(() => reconciler.stop());
    const controlUrl = `http://127.0.0.1:${address.port}`;

    const instances: StartedInstance[] = [];
    const sidecars = new Map<string, Sidecar[]>();
    for (const svc of compiled.plan.services.values()) {
      for (const [i, ep] of svc.endpoints.static.entries()) {
        const instance = `${svc.name}-${i}`;
        if (!svc.meshed) {
          // Unmeshed: the demo app itself listens where callers connect.
          const port = ep.port ?? svc.cluster.ports[0]!.targetPort;
          const app = await startDemoApp(svc.name, instance, ep.address, port);
          cleanups.push(() => new Promise((r) => app.close(() => r())));
          instances.push({ service: svc.name, meshed: false, inbound: port, outbound: null, admin: null, app: port });
          continue;
        }
        const app = await startDemoApp(svc.name, instance, '127.0.0.1', 0);
        cleanups.push(() => new Promise((r) => (app.closeAllConnections(), app.close(() => r()))));
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
    const forbidden = findForbiddenCalls(traffic, compiled.mesh.configs);

    // Bounded: certificates come from the in-process CA within milliseconds.
    const all = [...sidecars.values()].flat();
    for (const deadline = Date.now() + 10_000; Date.now() < deadline && !all.every((s) => s.ready); ) await new Promise((r) => setTimeout(r, 20));

    const stopTraffic = startTraffic(traffic, forbidden, sidecars, instances, options);
    cleanups.push(stopTraffic);
    return { controlUrl, instances, traffic, forbidden, stop };
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
): () => Promise<void> {
  const agent = new Agent({ connections: 16, keepAliveTimeout: 5000 });
  const tallies = new Map<string, Map<string, number>>();
  let stopped = false;
  const outboundOf = (service: string) => instances.find((i) => i.service === service && i.outbound !== null)!.outbound!;
  const calls = [
    ...traffic.flatMap(({ from, to }) => to.map((dest) => ({ from, to: dest, method: 'GET', path: '/', key: `${from} → ${dest}` }))),
    ...forbidden.map((f) => ({ ...f, key: `${f.from} → ${f.to} ${f.method} ${f.path} (forbidden)` })),
  ];
  const tick = setInterval(() => {
    for (const { from, to: dest, method, path, key } of calls) {
      if (!sidecars.has(from)) continue;
      {
        void request(`http://127.0.0.1:${outboundOf(from)}${path}`, { method, headers: { host: dest }, dispatcher: agent, headersTimeout: 5000, bodyTimeout: 5000 })
          .then(async (res) => {
            const who = res.statusCode === 200 ? ((await res.body.json()) as { service: string }).service : `${res.statusCode} ${String(res.headers['x-trellis-error'] ?? '')}`.trim();
            if (res.statusCode !== 200) await res.body.dump();
            const t = tallies.get(key) ?? new Map<string, number>();
            t.set(who, (t.get(who) ?? 0) + 1);
            tallies.set(key, t);
          })
          .catch(() => undefined);
      }
    }
  }, Math.max(10, Math.round(1000 / options.rate)));
  const report = setInterval(() => {
    if (stopped || tallies.size === 0) return;
    const parts: string[] = [];
    for (const [key, t] of [...tallies].sort()) {
      const total = [...t.values()].reduce((a, b) => a + b, 0);
      parts.push(`${key}: ${[...t].sort((a, b) => b[1] - a[1]).map(([who, n]) => `${who} ${Math.round((100 * n) / total)}%`).join(' · ')}`);
    }
    tallies.clear();
    options.report(parts.join('\n'));
  }, options.reportEveryMs);
  return async () => {
    stopped = true;
    clearInterval(tick);
    clearInterval(report);
    await agent.close();
  };
}
