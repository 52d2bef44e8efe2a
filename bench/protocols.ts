/**
 * The HTTP/2 and gRPC rows of bench/proxy.ts: h2load (Debian's nghttp2-client) saturates,
 * over h2c with prior knowledge, the same upstream directly and through the Trellis
 * sidecar, and for gRPC through nginx's `grpc_pass` as the peer proxy:
 *
 * - HTTP/2: nginx answering a fixed body over h2c; the sidecar calls it as an unmeshed
 *   `appProtocol: http2` service.
 * - gRPC unary: bench/grpc-upstream.ts answering one fixed message and `grpc-status: 0`
 *   in the trailers; the sidecar calls it as an unmeshed `appProtocol: grpc` service, so
 *   every call takes the gRPC path (deadline, trailers, status metric).
 *
 * h2load runs with few connections and many streams on each (`-c`, `-m`): the multiplexed
 * shape of gRPC clients. The sidecar and nginx run on the proxy core, upstreams and h2load
 * on the other. Rows report requests per second, mean time per request, the proxy's peak
 * RSS, and the ratios to direct and to nginx.
 */
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { onPath, type Child, type ProcessGroups } from './process-group.ts';
import { grpcFrame } from '../src/up/demo.ts';
import { processTree } from './proc-stats.ts';
import { here, LOAD_CORE, log, PROXY_CORE, rssSampler, sleep, startNginxWith, startTrellis, writeBenchConfigs, freePort, BODY_BYTES, SERVICE } from './proxy.ts';

export interface ProtocolOptions {
  readonly warmupS: number;
  readonly durationS: number;
  readonly trellisNodeFlags: readonly string[];
  /** The HTTP/1.1 upstream every bench mesh has (the sidecar's health probe goes there). */
  readonly upstreamPort: number;
}

/** h2load clients, and streams in flight on each. */
const CLIENTS = 4;
const STREAMS = 32;

interface H2Result {
  readonly rps: number;
  readonly meanMs: number;
  readonly succeeded: number;
  readonly failed: number;
}

interface Row {
  readonly protocol: 'HTTP/2' | 'gRPC unary';
  readonly target: string;
  readonly result?: H2Result;
  readonly rssMb?: number;
  readonly note?: string;
}

/** Reads h2load's summary: req/s, mean time per request, requests succeeded and failed. */
export function parseH2load(out: string): H2Result {
  const rps = Number(/finished in [\d.]+s, ([\d.]+) req\/s/.exec(out)?.[1] ?? Number.NaN);
  const req = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const time = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(out);
  const unit = time?.[2] === 'us' ? 0.001 : time?.[2] === 's' ? 1000 : 1;
  if (!Number.isFinite(rps) || !req) throw new Error(`cannot read h2load's output:\n${out.slice(-2000)}`);
  return { rps, meanMs: Number(time?.[1] ?? Number.NaN) * unit, succeeded: Number(req[1]), failed: Number(req[2]) + Number(req[3]) + Number(req[4]) };
}

async function waitListening(port: number, name: string): Promise<void> {
  for (const until = Date.now() + 10_000; Date.now() < until; await sleep(100)) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
  }
  throw new Error(`${name} did not listen on ${port}`);
}

async function h2load(groups: ProcessGroups, port: number, authority: string, o: ProtocolOptions, grpcBody?: string): Promise<H2Result> {
  const args = ['-c', String(CLIENTS), '-m', String(STREAMS), '-t', '1', '-D', String(o.durationS), '--warm-up-time', String(o.warmupS), '-H', `:authority: ${authority}`];
  if (grpcBody) args.push('-d', grpcBody, '-H', 'content-type: application/grpc', '-H', 'te: trailers');
  args.push(`http://127.0.0.1:${port}/${grpcBody ? 'bench.Echo/Call' : ''}`);
  const child = groups.start('h2load', 'h2load', args, LOAD_CORE);
  const code = await child.exited;
  if (code !== 0) throw new Error(`h2load exited ${code}: ${child.stderrTail()}`);
  return parseH2load(child.stdout());
}

/** One measured row: `pids` are the proxy's (none for direct), sampled for RSS during the load. */
async function measure(groups: ProcessGroups, protocol: Row['protocol'], target: string, port: number, authority: string, pids: readonly number[], o: ProtocolOptions, grpcBody?: string): Promise<Row> {
  log(`\n${protocol} ${target}: h2load -c ${CLIENTS} -m ${STREAMS} for ${o.durationS}s`);
  const rss = pids.length > 0 ? rssSampler(pids) : undefined;
  try {
    const result = await h2load(groups, port, authority, o, grpcBody);
    const rssMb = rss ? rss.stop() / 2 ** 20 : undefined;
    log(`  ${result.rps.toFixed(0)} req/s, mean ${result.meanMs.toFixed(2)} ms, ${result.failed} failed${rssMb ? `, RSS ${rssMb.toFixed(0)} MB` : ''}`);
    return { protocol, target, result, ...(rssMb === undefined ? {} : { rssMb }) };
  } catch (err) {
    rss?.stop();
    return { protocol, target, note: `failed: ${(err as Error).message.split('\n')[0]}` };
  }
}

function spec(upstreamPort: number, h2cPort: number, grpcPort: number): string {
  const service = (name: string, port: number, protocol: string, targetPort: number) => `---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec:
  sidecar: false
  ports: [{ port: ${port}, targetPort: ${targetPort}, appProtocol: ${protocol} }]
  endpoints: { static: [{ address: 127.0.0.1 }] }
`;
  return `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: bench }
spec: { trustDomain: bench.local, mtls: { mode: "off" }, access: { default: allow } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: client }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 15006 }] } }
${service(SERVICE, 80, 'http', upstreamPort)}${service('web', 80, 'http2', h2cPort)}${service('echo', 50051, 'grpc', grpcPort)}`;
}

/** Runs the HTTP/2 and gRPC rows; returns their Markdown section. */
export async function benchProtocols(groups: ProcessGroups, dir: string, o: ProtocolOptions): Promise<string> {
  if (!onPath('h2load')) return '\n### HTTP/2 and gRPC\n\nSkipped: no h2load on PATH (apt-get install nghttp2-client).\n';
  const h2cPort = await freePort();
  await startNginxWith(groups, dir, 'nginx-h2c-upstream', LOAD_CORE, `the HTTP/2 upstream, a fixed ${BODY_BYTES}-byte body over h2c`, `  server {
    listen 127.0.0.1:${h2cPort} http2;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 1024;
    location / { return 200 "${'a'.repeat(BODY_BYTES)}"; }
  }`);
  await waitListening(h2cPort, 'nginx h2c upstream');
  const grpcUpstream: Child = groups.start('grpc upstream', process.execPath, [here('./grpc-upstream.ts'), '--bytes', String(BODY_BYTES)], LOAD_CORE);
  const grpcPort = (await grpcUpstream.waitForJson<{ port: number }>((v) => v.type === 'listening', 10_000)).port;
  const grpcBody = join(dir, 'grpc-request.bin');
  await writeFile(grpcBody, grpcFrame(Buffer.alloc(BODY_BYTES, 0x62)));

  const configFile = (await writeBenchConfigs(dir, spec(o.upstreamPort, h2cPort, grpcPort), ['client'], 'protocols-')).client!;
  const trellis = await startTrellis(groups, configFile, o.trellisNodeFlags);
  const nginxGrpcPort = await freePort();
  const nginx = await startNginxWith(groups, dir, 'nginx-grpc', PROXY_CORE, 'the peer gRPC proxy: one worker, grpc_pass with upstream keep-alive', `  upstream grpc_backend {
    server 127.0.0.1:${grpcPort};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${nginxGrpcPort} http2;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 1024;
    location / { grpc_pass grpc://grpc_backend; }
  }`);
  await waitListening(nginxGrpcPort, 'nginx grpc_pass');

  const rows: Row[] = [];
  rows.push(await measure(groups, 'HTTP/2', 'direct', h2cPort, 'web', [], o));
  rows.push(await measure(groups, 'HTTP/2', 'trellis', trellis.port, 'web:80', trellis.pids, o));
  rows.push(await measure(groups, 'gRPC unary', 'direct', grpcPort, 'echo:50051', [], o, grpcBody));
  rows.push(await measure(groups, 'gRPC unary', 'trellis', trellis.port, 'echo:50051', processTree(trellis.child!.pid), o, grpcBody));
  rows.push(await measure(groups, 'gRPC unary', 'nginx (grpc_pass)', nginxGrpcPort, 'echo:50051', processTree(nginx.pid), o, grpcBody));
  return render(rows);
}

function render(rows: readonly Row[]): string {
  const f = (n: number | undefined, digits = 0) => (n === undefined || !Number.isFinite(n) ? '—' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
  const find = (protocol: Row['protocol'], target: string) => rows.find((r) => r.protocol === protocol && r.target === target)?.result?.rps;
  const lines = [
    '',
    '### HTTP/2 and gRPC',
    '',
    `h2load, ${CLIENTS} connections × ${STREAMS} streams in flight each, over h2c; the sidecar calls the upstream as an unmeshed \`http2\` / \`grpc\` service.`,
    '',
    '| protocol | target | req/s | mean ms per request | failed | proxy peak RSS (MB) | ÷ direct | Trellis ÷ this |',
    '|---|---|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of rows) {
    const direct = find(r.protocol, 'direct');
    const trellis = find(r.protocol, 'trellis');
    const rps = r.result?.rps;
    const vsDirect = rps !== undefined && direct ? rps / direct : undefined;
    const trellisVs = r.target !== 'trellis' && r.target !== 'direct' && rps && trellis ? trellis / rps : undefined;
    lines.push(`| ${r.protocol} | ${r.target}${r.note ? ` (${r.note})` : ''} | ${f(rps)} | ${f(r.result?.meanMs, 2)} | ${f(r.result?.failed)} | ${f(r.rssMb)} | ${r.target === 'direct' ? '1' : f(vsDirect, 2)} | ${f(trellisVs, 2)} |`);
  }
  return `${lines.join('\n')}\n`;
}
