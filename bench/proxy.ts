/**
 * Proxy benchmark: the Trellis sidecar next to nginx and @fastify/http-proxy, on loopback,
 * in one session. Each target sits between the same load generator and the same upstream:
 * nginx answering a fixed 100-byte body when nginx is installed (much faster than any proxy
 * in front of it, so the proxy is what is measured), else bench/proxy-upstream.ts (node:http):
 *
 *   direct    load → upstream
 *   trellis   load → Trellis sidecar outbound listener (`trellis sidecar`: one process) → upstream
 *   bare      load → bench/proxy-bare.js (node:http + undici Pool, no features, the sidecar's
 *             runtime and V8 settings) → upstream: what the features cost
 *   nginx     load → nginx (1 worker, upstream keep-alive, access log off) → upstream
 *   fastify   load → fastify + @fastify/http-proxy (one process) → upstream
 *
 * Trellis runs as a `client` service whose config sends `Host: upstream` to an unmeshed
 * `upstream` Service (`sidecar: false`, static endpoint on the upstream's port), so one
 * sidecar is in the path, as one nginx and one fastify are.
 *
 * Per target: saturation throughput (wrk, or autocannon when wrk is not on PATH, with
 * `--connections` for `--duration` s after a `--warmup` s warm-up), then latency at a fixed
 * `--rate` (bench/fixed-rate-load.ts, open loop, µs resolution, `--rate-duration` s after a
 * 2 s warm-up). From /proc: the proxy's CPU time during the fixed-rate window (vCPU per
 * 1 000 req/s), its peak resident memory under load (largest VmRSS sampled), and how busy
 * each core was during saturation. With two or more cores and `taskset`, proxies run on
 * core 0 and the upstream and load generators on core 1.
 *
 * HTTP/2 and gRPC unary rows follow (bench/protocols.ts, with h2load when installed).
 *
 * Usage: node bench/proxy.ts [--only direct,trellis,bare,nginx,fastify,protocols] [--connections 50]
 *          [--upstream nginx|node]
 *          [--warmup 2] [--duration 8] [--rate 1000] [--rate-duration 10] [--no-pin]
 *          [--profile DIR] [--deadline 300] [--trellis-node-flags=--max-semi-space-size=2]
 *   --profile   then run the sidecar once more under saturation with `--cpu-prof`, write the
 *               profile under DIR and print where its CPU goes (not part of the table)
 *   --deadline  seconds after which everything is killed and the bench fails
 *   --trellis-node-flags  Node flags for the sidecar process (space-separated; write it with
 *               `=` since the value starts with `--`), to try runtime settings
 *
 * Installs nothing: nginx and wrk are used when on PATH, and skipped (saying so) otherwise.
 * Prints Markdown to stdout; progress goes to stderr.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { compileFiles } from '../src/compiler/compile.ts';
import { SourceFile } from '../src/diagnostics/source-file.ts';
import type { MtlsMode } from '../src/spec/types.ts';
import type { FixedRateResult } from './fixed-rate-load.ts';
import { allProcessCpu, coreBusy, coreTicks, cpuSeconds, foreignCpu, memory, processTree } from './proc-stats.ts';
import { onPath, ProcessGroups, type Child } from './process-group.ts';
import { benchProtocols } from './protocols.ts';
import { renderSidecarProfile, summarizeSidecarProfile, type TimedCpuProfile } from './summarize-sidecar-profile.ts';
import { SIDECAR_V8_FLAGS } from '../bin/v8-flags.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
/** Core for the proxy under test; the upstream and load generators share the other one. */
export const PROXY_CORE = 0;
export const LOAD_CORE = 1;
/** Host header every request carries: the Trellis sidecar routes on it, the others ignore it. */
export const SERVICE = 'upstream';
export const BODY_BYTES = 100;
/** The sidecar's targets (docs/sidecar-runtime.md); the bench prints each as met or missed. */
const TARGETS = { vsNginx: 0.6, vsBare: 0.8, addedP99Ms: 1, vcpuPer1k: 0.12, rssMb: 50, idleRssMb: 30 } as const;

type TargetName = 'direct' | 'trellis' | 'bare' | 'nginx' | 'fastify';
const ALL_TARGETS: readonly TargetName[] = ['direct', 'trellis', 'bare', 'nginx', 'fastify'];

export interface Options {
  /** Targets of the HTTP/1.1 table, and `protocols` for the HTTP/2 and gRPC rows (bench/protocols.ts). */
  readonly only: ReadonlyArray<TargetName | 'protocols'>;
  readonly connections: number;
  readonly warmupS: number;
  readonly durationS: number;
  readonly rate: number;
  readonly rateDurationS: number;
  readonly pin: boolean;
  readonly profileDir: string | undefined;
  readonly deadlineS: number;
  /** Extra Node flags for the Trellis sidecar (e.g. GC settings to try). */
  readonly trellisNodeFlags: readonly string[];
  /** What answers behind the proxies: nginx with a fixed body (fast), or bench/proxy-upstream.ts. */
  readonly upstream: 'nginx' | 'node';
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      only: { type: 'string', default: [...ALL_TARGETS, 'protocols'].join(',') },
      connections: { type: 'string', default: '50' },
      warmup: { type: 'string', default: '2' },
      duration: { type: 'string', default: '8' },
      rate: { type: 'string', default: '1000' },
      'rate-duration': { type: 'string', default: '10' },
      'no-pin': { type: 'boolean', default: false },
      profile: { type: 'string' },
      deadline: { type: 'string', default: '300' },
      'trellis-node-flags': { type: 'string', default: '' },
      upstream: { type: 'string', default: onPath('nginx') ? 'nginx' : 'node' },
    },
  });
  const positive = (text: string, what: string, max: number) => {
    const n = Number(text);
    if (!(n > 0 && n <= max)) throw new Error(`${what} must be a number in (0, ${max}], got "${text}"`);
    return n;
  };
  const only = values.only.split(',').map((s) => s.trim());
  for (const t of only) if (!ALL_TARGETS.includes(t as TargetName) && t !== 'protocols') throw new Error(`--only: unknown target "${t}" (use ${ALL_TARGETS.join(', ')}, protocols)`);
  return {
    only: only as Array<TargetName | 'protocols'>,
    connections: Math.round(positive(values.connections, '--connections', 1000)),
    warmupS: positive(values.warmup, '--warmup', 60),
    durationS: positive(values.duration, '--duration', 120),
    rate: positive(values.rate, '--rate', 50_000),
    rateDurationS: positive(values['rate-duration'], '--rate-duration', 120),
    pin: !values['no-pin'],
    profileDir: values.profile,
    deadlineS: positive(values.deadline, '--deadline', 3600),
    trellisNodeFlags: values['trellis-node-flags'].split(/\s+/).filter((f) => f !== ''),
    upstream: values.upstream === 'nginx' || values.upstream === 'node' ? values.upstream : (() => { throw new Error(`--upstream must be nginx or node, got "${values.upstream}"`); })(),
  };
}

/** The load settings a measurement needs (shared with bench/mtls.ts). */
export type LoadOptions = Pick<Options, 'connections' | 'warmupS' | 'durationS' | 'rate' | 'rateDurationS'>;

export const log = (s: string) => process.stderr.write(`${s}\n`);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A free loopback port (for nginx, which cannot report a port it picked itself). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** One GET through `port`; resolves with status and body length. */
function probe(port: number, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: SERVICE }, agent: false, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('probe timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Waits until `port` answers a probe with 200 and the upstream's body (bounded). */
export async function waitHealthy(port: number, name: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    try {
      const r = await probe(port);
      if (r.status === 200 && r.body.length === BODY_BYTES) return;
      last = `status ${r.status}, ${r.body.length} bytes: ${r.body.slice(0, 200)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`${name} did not proxy a probe within ${timeoutMs} ms (last: ${last})`);
}

// ─── The proxies ────────────────────────────────────────────────────────────────────────

export interface Running {
  /** Port the load generator calls. */
  readonly port: number;
  /** Processes whose CPU and memory count as the proxy's (all of nginx's, one for the others). */
  readonly pids: readonly number[];
  readonly child: Child | undefined;
  /** Further processes of the target (a chain's other sidecars), stopped with it. */
  readonly others?: readonly Child[];
  /** Counters of the target's own (monotonic), read at the start and end of the fixed-rate window. */
  readonly counters?: () => Promise<Readonly<Record<string, number>>>;
  /** The Trellis sidecar's admin port, for its own CPU metric. */
  readonly adminPort?: number;
}

/** Trust domain of every benchmark mesh (and of the certificates bench:mtls makes). */
export const BENCH_TRUST_DOMAIN = 'bench.local';

/**
 * A benchmark mesh: a meshed `client` calling `upstream`. Without `inboundPort`, `upstream`
 * is unmeshed and reached on the upstream's own port (one sidecar in the path); with it,
 * `upstream` is meshed and reached on that sidecar inbound port (two sidecars, `mode`
 * between them).
 */
export function benchSpec(upstreamPort: number, chain?: { readonly mode: MtlsMode; readonly inboundPort: number }): string {
  return `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata:
  name: bench
spec:
  trustDomain: ${BENCH_TRUST_DOMAIN}
  mtls: { mode: "${chain?.mode ?? 'off'}" }
  access: { default: allow }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata:
  name: client
spec:
  ports: [{ name: http, port: 80, targetPort: 8080 }]
  endpoints:
    static: [{ address: 127.0.0.1, port: 15006 }]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata:
  name: ${SERVICE}
spec:
${chain ? '' : '  sidecar: false\n'}  ports: [{ name: http, port: 80, targetPort: ${upstreamPort} }]
  endpoints:
    static: [{ address: 127.0.0.1, port: ${chain?.inboundPort ?? upstreamPort} }]
`;
}

/** Compiles `spec` and writes the configs of `services` as `<prefix><service>.json` in `dir`; returns the files by service. */
export async function writeBenchConfigs(dir: string, spec: string, services: readonly string[], prefix = ''): Promise<Record<string, string>> {
  const result = compileFiles([new SourceFile('mesh.yaml', spec)]);
  const files: Record<string, string> = {};
  for (const service of services) {
    const config = result.mesh?.configs.get(service);
    if (!config) throw new Error(`the bench spec did not compile:\n${result.diagnostics.map((d) => `${d.code} ${d.message}`).join('\n')}`);
    files[service] = join(dir, `${prefix}${service}.json`);
    await writeFile(files[service], JSON.stringify(config));
  }
  return files;
}

export async function startTrellis(groups: ProcessGroups, configFile: string, nodeFlags: readonly string[] = []): Promise<Running> {
  const args = [
    ...nodeFlags,
    join(ROOT, 'bin/trellis.js'),
    'sidecar',
    '--config', configFile,
    '--outbound', '127.0.0.1:0',
    '--inbound', '127.0.0.1:0',
    '--admin', '127.0.0.1:0',
    // Nothing calls the inbound side here; the app address is never used.
    '--app', '127.0.0.1:9',
    '--drain-timeout', '2s',
  ];
  const child = groups.start('trellis sidecar', process.execPath, args, PROXY_CORE);
  const listening = await child.waitForJson<{ outbound: number; admin: number }>((v) => v.type === 'listening', 15_000);
  await waitHealthy(listening.outbound, 'trellis sidecar');
  // `trellis sidecar` is one process (bin/trellis.js replaces itself with the sidecar); its tree is counted all the same.
  return { port: listening.outbound, pids: processTree(child.pid), child, adminPort: listening.admin };
}

/**
 * nginx with one worker, no access log and `server` as its http block's content, its files in
 * `dir/name`, on `core`; `purpose` heads the written config.
 */
export async function startNginxWith(groups: ProcessGroups, dir: string, name: string, core: number, purpose: string, server: string): Promise<Child> {
  const prefix = join(dir, name);
  await rm(prefix, { recursive: true, force: true });
  await mkdir(join(prefix, 'logs'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  await writeFile(
    conf,
    `# Written by bench/proxy.ts: ${purpose}.
daemon off;
master_process on;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
${server}
}
`,
  );
  return groups.start(name, 'nginx', ['-p', prefix, '-c', conf, '-e', 'stderr'], core);
}

async function startNginx(groups: ProcessGroups, dir: string, upstreamPort: number): Promise<Running> {
  const port = await freePort();
  const child = await startNginxWith(
    groups,
    dir,
    'nginx',
    PROXY_CORE,
    'one worker, upstream keep-alive, no access log',
    `  upstream backend {
    server 127.0.0.1:${upstreamPort};
    keepalive 128;
  }
  server {
    listen 127.0.0.1:${port};
    keepalive_requests 100000;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }`,
  );
  await waitHealthy(port, 'nginx');
  return { port, pids: processTree(child.pid), child };
}

/** A Node proxy script of bench/ (run with `flags`) that prints its port as `{"type":"listening"}`. */
async function startNodeProxy(groups: ProcessGroups, name: string, script: string, upstreamPort: number, flags: readonly string[] = []): Promise<Running> {
  const child = groups.start(name, process.execPath, [...flags, here(script), '--upstream', `http://127.0.0.1:${upstreamPort}`], PROXY_CORE);
  const { port } = await child.waitForJson<{ port: number }>((v) => v.type === 'listening', 15_000);
  await waitHealthy(port, name);
  return { port, pids: [child.pid], child };
}

/** The upstream: nginx answering a fixed body on the load core (1 worker, keep-alive, no log). */
async function startNginxUpstream(groups: ProcessGroups, dir: string): Promise<number> {
  const port = await freePort();
  await startNginxWith(
    groups,
    dir,
    'nginx-upstream',
    LOAD_CORE,
    `the upstream, a fixed ${BODY_BYTES}-byte body`,
    `  server {
    listen 127.0.0.1:${port};
    keepalive_requests 1000000;
    location / {
      default_type text/plain;
      return 200 "${'x'.repeat(BODY_BYTES)}";
    }
  }`,
  );
  return port;
}

// ─── Load ───────────────────────────────────────────────────────────────────────────────

export interface Saturation {
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly requests: number;
  readonly errors: number;
}

export type LoadTool = { readonly kind: 'wrk' } | { readonly kind: 'autocannon'; readonly script: string };

export function findLoadTool(): LoadTool | undefined {
  if (onPath('wrk')) return { kind: 'wrk' };
  try {
    return { kind: 'autocannon', script: fileURLToPath(import.meta.resolve('autocannon')) };
  } catch {
    return undefined;
  }
}

/** `2.50ms` / `812.00us` / `1.20s` → milliseconds. */
function wrkDuration(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!m) return NaN;
  const scale = { us: 0.001, ms: 1, s: 1000, m: 60_000 }[m[2] as 'us' | 'ms' | 's' | 'm'];
  return Number(m[1]) * scale;
}

export function parseWrk(out: string): Saturation {
  const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
  const pct = (p: string) => wrkDuration(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out)?.[1] ?? '');
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50Ms: pct('50'),
    p99Ms: pct('99'),
    requests: num(/(\d+) requests in/),
    errors: socketErrors + (Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0)),
  };
}

/** Closed-loop load at `connections` for `seconds`, on the load core. */
export async function saturate(groups: ProcessGroups, tool: LoadTool, port: number, connections: number, seconds: number): Promise<Saturation> {
  const url = `http://127.0.0.1:${port}/`;
  const child =
    tool.kind === 'wrk'
      ? groups.start('wrk', 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '--timeout', '5s', '-H', `Host: ${SERVICE}`, url], LOAD_CORE)
      : groups.start('autocannon', process.execPath, [tool.script, '-j', '-c', String(connections), '-d', String(seconds), '-H', `host=${SERVICE}`, url], LOAD_CORE);
  const timer = setTimeout(() => void groups.stop(child), (seconds + 10) * 1000);
  const code = await child.exited;
  clearTimeout(timer);
  if (code !== 0) throw new Error(`${child.name} failed (${code}): ${child.stderrTail()}`);
  if (tool.kind === 'wrk') return parseWrk(child.stdout());
  const r = JSON.parse(child.stdout()) as { requests: { average: number; total: number }; latency: { p50: number; p99: number }; non2xx: number; errors: number; timeouts: number };
  return { rps: r.requests.average, p50Ms: r.latency.p50, p99Ms: r.latency.p99, requests: r.requests.total, errors: r.non2xx + r.errors + r.timeouts };
}

/** Samples the largest summed VmRSS of `pids` until stopped. */
export function rssSampler(pids: readonly number[]): { stop(): number; anon(): number } {
  let max = 0;
  let maxAnon = 0;
  const sample = () => {
    let sum = 0;
    let anon = 0;
    for (const pid of pids) {
      const m = memory(pid);
      sum += m.rss;
      anon += m.anon;
    }
    max = Math.max(max, sum);
    maxAnon = Math.max(maxAnon, anon);
  };
  sample();
  const timer = setInterval(sample, 200);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return max;
    },
    /** Largest summed RssAnon seen (the processes' own memory, without shared file pages). */
    anon: () => maxAnon,
  };
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
/** User + system CPU seconds of `pids`, summed. */
export const cpuOf = (pids: readonly number[]) => pids.reduce((s, pid) => s + cpuSeconds(pid), 0);

/**
 * The sidecar's own process CPU counter from its admin /metrics
 * (`trellis_process_cpu_seconds_total`; older sidecars exported
 * `trellis_process_process_cpu_seconds_total`, which is accepted too).
 */
async function trellisCpuMetric(adminPort: number): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: adminPort, path: '/metrics', agent: false, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('metrics timed out')));
    req.on('error', reject);
    req.end();
  });
  return Number(/^trellis_process_(?:process_)?cpu_seconds_total (\S+)/m.exec(text)?.[1] ?? NaN);
}

export interface FixedRate extends FixedRateResult {
  /** Proxy CPU during the measured window, in cores (vCPU). */
  readonly proxyVcpu: number;
  /** The same per process, in the order of `Running.pids` (empty for direct). */
  readonly perProcessVcpu: readonly number[];
  /** How much each of `Running.counters` grew during the measured window. */
  readonly counterDeltas: Readonly<Record<string, number>>;
  /** The same from the sidecar's own metric (Trellis only). */
  readonly metricVcpu?: number;
}

/**
 * Latency at `o.rate` req/s through `port` (bench/fixed-rate-load.ts on the load core, 2 s
 * warm-up then `o.rateDurationS` s), with the CPU the `running` processes used during the
 * measured window only.
 */
export async function fixedRate(groups: ProcessGroups, o: LoadOptions, running: Running | undefined, port: number): Promise<FixedRate> {
  const child = groups.start(
    'fixed-rate load',
    process.execPath,
    [here('./fixed-rate-load.ts'), '--target', `127.0.0.1:${port}`, '--host', SERVICE, '--rate', String(o.rate), '--warmup', '2', '--duration', String(o.rateDurationS)],
    LOAD_CORE,
  );
  await child.waitForJson((v) => v.type === 'measure-start', 15_000);
  const t0 = performance.now();
  const pids = running?.pids ?? [];
  const each0 = pids.map(cpuSeconds);
  const metric0 = running?.adminPort ? await trellisCpuMetric(running.adminPort) : NaN;
  const counters0 = (await running?.counters?.()) ?? {};
  await child.waitForJson((v) => v.type === 'measure-end', (o.rateDurationS + 10) * 1000);
  const seconds = (performance.now() - t0) / 1000;
  const each1 = pids.map(cpuSeconds);
  const metric1 = running?.adminPort ? await trellisCpuMetric(running.adminPort) : NaN;
  const counters1 = (await running?.counters?.()) ?? {};
  const result = await child.waitForJson<FixedRateResult>((v) => v.type === 'result', 10_000);
  await child.exited;
  return {
    ...result,
    proxyVcpu: (sum(each1) - sum(each0)) / seconds,
    perProcessVcpu: each1.map((c, i) => (c - each0[i]!) / seconds),
    counterDeltas: Object.fromEntries(Object.entries(counters1).map(([k, v]) => [k, v - (counters0[k] ?? 0)])),
    metricVcpu: running?.adminPort ? (metric1 - metric0) / seconds : undefined,
  };
}

// ─── One target ─────────────────────────────────────────────────────────────────────────

export interface TargetResult {
  /** The row's name (a TargetName here; bench/mtls.ts names its chains). */
  readonly name: string;
  readonly skipped?: string;
  readonly failed?: string;
  readonly saturation?: Saturation;
  /** Proxy CPU during saturation, in cores, and each core's busy fraction. */
  readonly saturationVcpu?: number;
  readonly cores?: readonly number[];
  readonly fixed?: FixedRate;
  /** Largest VmRSS (summed over the proxy's processes) sampled under load, bytes. */
  readonly rssUnderLoad?: number;
  /** Largest RssAnon (summed) under load: memory of the proxy's own, without the shared pages of its executable. */
  readonly anonUnderLoad?: number;
  /** VmRSS (summed) after start, before any load, bytes. */
  readonly idleRss?: number;
  /** VmHWM at the end (summed), bytes. */
  readonly peakRss?: number;
  /** CPU that processes not started by this bench used while the target was measured, in cores. */
  readonly foreignVcpu?: number;
}

/**
 * One row: starts the target with `start` (undefined = direct to the upstream), warms up,
 * measures saturation then fixed-rate latency, CPU and RSS of `Running.pids`, and stops
 * the target again. Never throws: a failure becomes the row's `failed`.
 */
export async function benchTarget(name: string, start: () => Promise<Running | undefined>, groups: ProcessGroups, tool: LoadTool, o: LoadOptions, upstreamPort: number): Promise<TargetResult> {
  log(`\n${name}: starting`);
  let running: Running | undefined;
  try {
    running = await start();
    const port = running?.port ?? upstreamPort;
    const pids = running?.pids ?? [];
    await sleep(1000);
    const idleRss = pids.reduce((sum, pid) => sum + memory(pid).rss, 0);
    log(`${name}: warm-up ${o.warmupS}s at ${o.connections} connections`);
    await saturate(groups, tool, port, o.connections, o.warmupS);
    const rss = rssSampler(pids);
    const foreign0 = allProcessCpu();
    const measureStart = performance.now();
    const ticks0 = coreTicks();
    const cpu0 = cpuOf(pids);
    const t0 = performance.now();
    log(`${name}: saturation ${o.durationS}s at ${o.connections} connections`);
    const saturation = await saturate(groups, tool, port, o.connections, o.durationS);
    const seconds = (performance.now() - t0) / 1000;
    const saturationVcpu = (cpuOf(pids) - cpu0) / seconds;
    const cores = coreBusy(ticks0, coreTicks());
    log(`${name}: ${saturation.rps.toFixed(0)} req/s; fixed rate ${o.rate} req/s for 2s + ${o.rateDurationS}s`);
    const fixed = await fixedRate(groups, o, running, port);
    const rssUnderLoad = rss.stop();
    const anonUnderLoad = rss.anon();
    const peakRss = pids.reduce((s, pid) => s + memory(pid).hwm, 0);
    const foreignVcpu = foreignCpu(foreign0, allProcessCpu(), new Set(processTree(process.pid))) / ((performance.now() - measureStart) / 1000);
    log(`${name}: p50 ${(fixed.latencyUs.p50 / 1000).toFixed(3)} ms, p99 ${(fixed.latencyUs.p99 / 1000).toFixed(3)} ms, ${fixed.proxyVcpu.toFixed(3)} vCPU`);
    if (foreignVcpu > 0.05) log(`${name}: warning: other processes used ${foreignVcpu.toFixed(2)} vCPU meanwhile`);
    return { name, saturation, saturationVcpu, cores, fixed, rssUnderLoad, anonUnderLoad, idleRss, peakRss, foreignVcpu };
  } catch (err) {
    log(`${name}: FAILED: ${(err as Error).message}`);
    return { name, failed: (err as Error).message.split('\n')[0] };
  } finally {
    for (const child of [running?.child, ...(running?.others ?? [])]) if (child) await groups.stop(child);
  }
}

// ─── Report ─────────────────────────────────────────────────────────────────────────────

function version(cmd: string, args: readonly string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0]!.trim();
}

async function packageVersion(name: string): Promise<string> {
  try {
    const text = await readFile(join(ROOT, 'node_modules', name, 'package.json'), 'utf8');
    return (JSON.parse(text) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

function renderReport(results: readonly TargetResult[], o: Options, tool: LoadTool, pinned: boolean, machine: string, background: readonly number[]): string {
  const by = new Map(results.map((r) => [r.name, r]));
  const direct = by.get('direct')?.fixed;
  const f = (n: number | undefined, digits: number) => (n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(digits));
  const ms = (us: number | undefined) => f(us === undefined ? undefined : us / 1000, 3);
  const mb = (b: number | undefined) => f(b === undefined ? undefined : b / 1024 / 1024, 1);
  const lines: string[] = [];
  const loadName = tool.kind === 'wrk' ? `wrk (${version('wrk', ['--version']).replace(/ Copyright.*/, '')}), 1 thread` : 'autocannon (wrk not on PATH)';
  lines.push(
    `## Proxy benchmark`,
    '',
    `Command: \`${['node', 'bench/proxy.ts', ...process.argv.slice(2)].join(' ')}\` (\`npm run bench:proxy\`)`,
    '',
    machine,
    '',
    `Background load before the bench (1 s, nothing of ours running): ${background.map((b, i) => `core ${i} ${(100 * b).toFixed(0)}%`).join(', ')}` +
      (background.some((b) => b > 0.1) ? ' — **the machine was not idle; other processes compete with the run and add latency outliers.**' : '.'),
    '',
    `Saturation: ${loadName}, ${o.connections} connections, ${o.durationS} s after a ${o.warmupS} s warm-up. ` +
      `Fixed rate: bench/fixed-rate-load.ts, ${o.rate} req/s open loop over 16 keep-alive connections, ${o.rateDurationS} s after 2 s of warm-up, latency in µs from when each request was due. ` +
      `Upstream: ${o.upstream === 'nginx' ? `nginx answering a fixed ${BODY_BYTES}-byte body` : `bench/proxy-upstream.ts (node:http, ${BODY_BYTES}-byte body; nginx not installed, so every proxy is capped by it)`}. ` +
      (pinned ? `Pinned with taskset: proxy on core ${PROXY_CORE}; upstream and load generators on core ${LOAD_CORE}.` : 'Not pinned (no taskset, fewer than 2 cores, or --no-pin).'),
    '',
    `| target | req/s at saturation | proxy vCPU at saturation | core ${PROXY_CORE} / ${LOAD_CORE} busy | p50 @${o.rate}/s (ms) | p99 @${o.rate}/s (ms) | added p50 (ms) | added p99 (ms) | vCPU per 1 000 req/s | idle RSS (MB) | RSS under load (MB) | peak RSS (MB) | errors | other processes' vCPU |`,
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  );
  for (const r of results) {
    if (r.skipped || r.failed) {
      lines.push(`| ${r.name} | ${r.skipped ? `skipped: ${r.skipped}` : `failed: ${r.failed}`} | | | | | | | | | | | | |`);
      continue;
    }
    const fx = r.fixed!;
    const isDirect = r.name === 'direct';
    const per1k = isDirect ? undefined : fx.proxyVcpu / (fx.achievedRps / 1000);
    const cores = r.cores ? `${f(100 * r.cores[PROXY_CORE]!, 0)}% / ${f(100 * r.cores[LOAD_CORE]!, 0)}%` : '—';
    const errors = r.saturation!.errors + fx.errors + fx.non2xx;
    lines.push(
      `| ${r.name} | ${f(r.saturation!.rps, 0)} | ${isDirect ? '—' : f(r.saturationVcpu, 2)} | ${cores} | ${ms(fx.latencyUs.p50)} | ${ms(fx.latencyUs.p99)} | ${isDirect || !direct ? '—' : ms(fx.latencyUs.p50 - direct.latencyUs.p50)} | ${isDirect || !direct ? '—' : ms(fx.latencyUs.p99 - direct.latencyUs.p99)} | ${f(per1k, 3)} | ${isDirect ? '—' : mb(r.idleRss)} | ${isDirect ? '—' : mb(r.rssUnderLoad)} | ${isDirect ? '—' : mb(r.peakRss)} | ${errors} | ${f(r.foreignVcpu, 2)}${(r.foreignVcpu ?? 0) > 0.05 ? ' ⚠' : ''} |`,
    );
  }
  lines.push(
    '',
    'nginx CPU and memory are its master and worker summed. "vCPU per 1 000 req/s" is the proxy\'s user + system CPU time during the fixed-rate window, per second, per 1 000 req/s achieved. ' +
      'A proxy whose core was not near 100% busy at saturation was held back by the upstream or load generator (the other core), so its throughput is a lower bound. ' +
      '"Other processes\' vCPU" is CPU used by processes this bench did not start while the target was measured; ⚠ marks rows another workload disturbed (rerun when the machine is quiet).',
  );

  const t = by.get('trellis');
  const ok = (pass: boolean | undefined) => (pass === undefined ? '—' : pass ? 'met' : '**missed**');
  const rows: Array<[string, string, string, boolean | undefined]> = [];
  const tr = t?.saturation?.rps;
  const vs = (other: TargetName, target: number) => {
    const x = by.get(other)?.saturation?.rps;
    const ratio = tr !== undefined && x !== undefined ? tr / x : undefined;
    const why = by.get(other)?.skipped ?? by.get(other)?.failed;
    rows.push([`Trellis req/s ÷ ${other} req/s`, ratio === undefined ? `— (${why ?? 'not run'})` : f(ratio, 2), `≥ ${target}`, ratio === undefined ? undefined : ratio >= target]);
  };
  vs('nginx', TARGETS.vsNginx);
  vs('bare', TARGETS.vsBare);
  const addedP99 = t?.fixed && direct ? (t.fixed.latencyUs.p99 - direct.latencyUs.p99) / 1000 : undefined;
  rows.push(['Trellis added p99 at ' + o.rate + ' req/s (ms)', f(addedP99, 3), `≤ ${TARGETS.addedP99Ms}`, addedP99 === undefined ? undefined : addedP99 <= TARGETS.addedP99Ms]);
  const per1k = t?.fixed ? t.fixed.proxyVcpu / (t.fixed.achievedRps / 1000) : undefined;
  const metricPer1k = t?.fixed?.metricVcpu !== undefined ? t.fixed.metricVcpu / (t.fixed.achievedRps / 1000) : undefined;
  rows.push([`Trellis vCPU per 1 000 req/s`, `${f(per1k, 3)}${metricPer1k !== undefined ? ` (its own metric: ${f(metricPer1k, 3)})` : ''}`, `≤ ${TARGETS.vcpuPer1k}`, per1k === undefined ? undefined : per1k <= TARGETS.vcpuPer1k]);
  const rss = t?.rssUnderLoad !== undefined ? t.rssUnderLoad / 1024 / 1024 : undefined;
  rows.push(['Trellis RSS under load (MB)', f(rss, 1), `≤ ${TARGETS.rssMb}`, rss === undefined ? undefined : rss <= TARGETS.rssMb]);
  const anon = t?.anonUnderLoad !== undefined ? t.anonUnderLoad / 1024 / 1024 : undefined;
  rows.push(["Trellis private memory under load (RssAnon, MB): what each more sidecar adds, the executable's shared pages left out", f(anon, 1), '—', undefined]);
  const idle = t?.idleRss !== undefined ? t.idleRss / 1024 / 1024 : undefined;
  rows.push(['Trellis idle RSS (MB)', f(idle, 1), `≤ ${TARGETS.idleRssMb}`, idle === undefined ? undefined : idle <= TARGETS.idleRssMb]);
  lines.push('', '| Trellis sidecar | measured | target | |', '|---|--:|--:|---|');
  for (const [what, value, target, pass] of rows) lines.push(`| ${what} | ${value} | ${target} | ${ok(pass)} |`);
  return lines.join('\n') + '\n';
}

/** One line naming the CPU, memory, kernel, Node and the load tools' versions. */
export async function machineInfo(tool: LoadTool): Promise<string> {
  const cpu = cpus();
  const parts = [
    `Machine: ${cpu.length} × ${cpu[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Linux ${release()}.`,
    `Node ${process.version}; undici ${await packageVersion('undici')} (Trellis), fastify ${await packageVersion('fastify')}, @fastify/http-proxy ${await packageVersion('@fastify/http-proxy')}` +
      `${onPath('nginx') ? `; ${version('nginx', ['-v'])}` : ''}${tool.kind === 'autocannon' ? `; autocannon ${await packageVersion('autocannon')}` : ''}.`,
  ];
  return parts.join(' ');
}

// ─── Main ───────────────────────────────────────────────────────────────────────────────

async function profileSidecar(groups: ProcessGroups, tool: LoadTool, o: Options, configFile: string, dir: string): Promise<string> {
  const before = new Set(await readdir(dir).catch(() => []));
  log(`\nprofile: trellis sidecar with --cpu-prof, ${o.warmupS}s + ${o.durationS}s at ${o.connections} connections`);
  const running = await startTrellis(groups, configFile, [...o.trellisNodeFlags, '--cpu-prof', '--cpu-prof-dir', dir]);
  let requests = 0;
  const window = { fromUs: 0, toUs: 0 };
  const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);
  try {
    await saturate(groups, tool, running.port, o.connections, o.warmupS);
    window.fromUs = monotonicUs();
    const sat = await saturate(groups, tool, running.port, o.connections, o.durationS);
    window.toUs = monotonicUs();
    requests = sat.requests;
    log(`profile: ${sat.rps.toFixed(0)} req/s under the profiler`);
  } finally {
    // A clean exit is what makes V8 write the profile.
    await groups.stop(running.child!, 15_000);
  }
  const file = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile') && !before.has(f)).sort().at(-1);
  if (!file) throw new Error(`no .cpuprofile appeared in ${dir}`);
  const profile = JSON.parse(await readFile(join(dir, file), 'utf8')) as TimedCpuProfile;
  // Only the measured saturation run counts: startup (module loading, config validation) and warm-up stay out.
  const inside = window.fromUs >= profile.startTime && window.toUs <= profile.endTime;
  const summary = inside ? summarizeSidecarProfile(profile, requests, window) : summarizeSidecarProfile(profile);
  const scope = inside ? `the ${o.durationS} s saturation run only` : 'whole process lifetime (the run could not be located in the profile)';
  return `### Where the sidecar's CPU goes under saturation (${join(dir, file)}; ${scope})\n\n${renderSidecarProfile(summary)}`;
}

/** What a proxy benchmark run has once it is set up (see `runBench`). */
export interface BenchEnv {
  readonly groups: ProcessGroups;
  readonly tool: LoadTool;
  /** A work folder, removed when the run ends (also on a signal or the deadline). */
  readonly dir: string;
  /** How busy each core was in the second before the run, 0..1. */
  readonly background: readonly number[];
  /** The shared 100-byte upstream, on the load core. */
  readonly upstreamPort: number;
}

/**
 * Runs one benchmark: process groups (pinned when the machine allows), a deadline that
 * kills everything, the load generator, a warning when the machine is already busy, a work
 * folder and the upstream; `body` measures, and everything is stopped and removed after it.
 * Resolves with `body`'s exit code (1 without a load generator).
 */
export async function runBench(name: string, o: { readonly pin: boolean; readonly deadlineS: number; readonly upstream?: 'nginx' | 'node' }, body: (env: BenchEnv) => Promise<number>): Promise<number> {
  const groups = new ProcessGroups(o.pin && cpus().length >= 2);
  const deadline = setTimeout(() => {
    log(`\n${name}: deadline of ${o.deadlineS}s reached; killing everything`);
    groups.killAll();
    process.exit(1);
  }, o.deadlineS * 1000);
  deadline.unref();
  const tool = findLoadTool();
  if (!tool) {
    clearTimeout(deadline);
    log(`${name}: no load generator: install wrk (apt-get install wrk) or the autocannon devDependency`);
    return 1;
  }
  const idle0 = coreTicks();
  await sleep(1000);
  const background = coreBusy(idle0, coreTicks());
  if (background.some((b) => b > 0.1)) log(`warning: the machine is busy before the bench starts (${background.map((b) => `${(100 * b).toFixed(0)}%`).join(' / ')} per core); results will be noisy`);
  const dir = await mkdtemp(join(tmpdir(), 'trellis-bench-'));
  // On SIGINT/SIGTERM and the deadline the process exits without reaching `finally`.
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  process.once('exit', removeDir);
  try {
    log(`load generator: ${tool.kind}; pinning: ${groups.pinning ? `proxies on core ${PROXY_CORE}, upstream + load on core ${LOAD_CORE}` : 'off'}; work dir ${dir}`);
    let upstreamPort: number;
    if ((o.upstream ?? (onPath('nginx') ? 'nginx' : 'node')) === 'nginx') {
      log('upstream: nginx answering a fixed body');
      upstreamPort = await startNginxUpstream(groups, dir);
    } else {
      const upstream = groups.start('upstream', process.execPath, [here('./proxy-upstream.ts'), '--bytes', String(BODY_BYTES)], LOAD_CORE);
      upstreamPort = (await upstream.waitForJson<{ port: number }>((v) => v.type === 'listening', 10_000)).port;
    }
    await waitHealthy(upstreamPort, 'upstream');
    return await body({ groups, tool, dir, background, upstreamPort });
  } finally {
    await groups.stopAll();
    await rm(dir, { recursive: true, force: true });
    process.off('exit', removeDir);
    clearTimeout(deadline);
  }
}

async function main(): Promise<number> {
  const o = parseOptions();
  return runBench('bench/proxy.ts', o, async ({ groups, tool, dir, background, upstreamPort }) => {
    const configFile = (await writeBenchConfigs(dir, benchSpec(upstreamPort), ['client'])).client!;

    const starters: Record<TargetName, () => Promise<Running | undefined> | string> = {
      direct: () => Promise.resolve(undefined),
      trellis: () => startTrellis(groups, configFile, o.trellisNodeFlags),
      nginx: () => (onPath('nginx') ? startNginx(groups, dir, upstreamPort) : 'no nginx binary on PATH (apt-get install nginx to include it)'),
      bare: () => startNodeProxy(groups, 'bare proxy', './proxy-bare.js', upstreamPort, SIDECAR_V8_FLAGS), // the sidecar's V8 settings
      fastify: () => {
        try {
          import.meta.resolve('@fastify/http-proxy');
          import.meta.resolve('fastify');
        } catch {
          return 'fastify and @fastify/http-proxy are not installed (npm install --save-dev fastify @fastify/http-proxy)';
        }
        return startNodeProxy(groups, 'fastify', './proxy-fastify.ts', upstreamPort);
      },
    };
    // Latency is reported as added over direct, so direct always runs.
    const order = ALL_TARGETS.filter((t) => t === 'direct' || o.only.includes(t));
    const results: TargetResult[] = [];
    for (const name of order) {
      const started = starters[name]();
      if (typeof started === 'string') {
        log(`\n${name}: skipped: ${started}`);
        results.push({ name, skipped: started });
        continue;
      }
      results.push(await benchTarget(name, () => started, groups, tool, o, upstreamPort));
    }

    const report = renderReport(results, o, tool, groups.pinning, await machineInfo(tool), background);
    process.stdout.write(`${report}`);
    if (o.only.includes('protocols')) process.stdout.write(await benchProtocols(groups, dir, { warmupS: o.warmupS, durationS: o.durationS, trellisNodeFlags: o.trellisNodeFlags, upstreamPort }));
    if (o.profileDir) {
      await mkdir(o.profileDir, { recursive: true });
      process.stdout.write(`\n${await profileSidecar(groups, tool, o, configFile, o.profileDir)}`);
    }
    return results.some((r) => r.failed) ? 1 : 0;
  });
}

if (import.meta.main) {
  try {
    process.exitCode = await main();
  } catch (err) {
    log(`bench/proxy.ts: ${(err as Error).message}`);
    process.exitCode = 1;
  }
}
