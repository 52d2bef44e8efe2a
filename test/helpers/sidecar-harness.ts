/**
 * Real parts for sidecar tests: upstream HTTP servers on port 0, configs compiled from
 * real specs, sidecars listening on port 0, and an HTTP client. Everything started is
 * registered for cleanup.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, request as undiciRequest } from 'undici';
import { pino } from 'pino';
import { makeProxyConfig, makeResource } from '../../src/config/resources.ts';
import type { ProxyConfig, ResourceBody } from '../../src/config/types.ts';
import type { Clock, Random } from '../../src/sidecar/clock.ts';
import { DEFAULT_SIDECAR_OPTIONS, Sidecar, type SidecarOptions } from '../../src/sidecar/sidecar.ts';
import { compileTexts } from './spec.ts';
import { credentialFor } from './identity.ts';

/** What an upstream saw of one request. */
export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

export interface Upstream {
  readonly port: number;
  readonly seen: SeenRequest[];
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string, seen: SeenRequest[]) => void;

const cleanups: Array<() => Promise<void>> = [];

/** Stops everything started through this harness (call from `after`). */
export async function cleanup(): Promise<void> {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
}

/** An HTTP server on 127.0.0.1:0 that records requests; by default answers 200 with its name. */
export async function startUpstream(name: string, handler?: Handler): Promise<Upstream> {
  const seen: SeenRequest[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (handler) handler(req, res, body, seen);
      else {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name });
        res.end(name);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  cleanups.push(close);
  return { port: (server.address() as AddressInfo).port, seen, close };
}

/** Ports `closedPort` handed out in this process, never handed out twice. */
const handedOut = new Set<number>();

/**
 * The kernel's ephemeral port range (Linux: /proc/sys/net/ipv4/ip_local_port_range), from
 * which listen(0) and outgoing connections take their ports.
 */
function ephemeralRange(): readonly [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low! > 0 && high! >= low!) return [low!, high!];
  } catch {
    // not Linux: the IANA range
  }
  return [49152, 65535];
}

/**
 * A port nothing listens on now, for a test to call (connect_failure) or to bind later
 * (a sidecar's inbound port named in a spec before the sidecar starts).
 *
 * It used to bind port 0, close, and return that port: a port from the ephemeral range,
 * which the next listen(0) of any server in the test (or any outgoing connection of any
 * process) could be given, so the "closed" port was sometimes open, or taken before the
 * test bound it. Now the port is drawn below the ephemeral range, where the kernel never
 * assigns ports on its own, checked free by binding it, and never handed out twice by one
 * process; what remains is another process choosing the same port explicitly.
 */
export async function closedPort(): Promise<number> {
  const [ephemeralLow] = ephemeralRange();
  const low = 10_000;
  const high = Math.min(ephemeralLow - 1, 32_767);
  for (let tries = 0; tries < 200; tries++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (handedOut.has(port)) continue;
    const s = createServer();
    const free = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!free) continue;
    await new Promise<void>((r) => s.close(() => r()));
    handedOut.add(port);
    return port;
  }
  throw new Error('no free port below the ephemeral range after 200 tries');
}

/**
 * A spec with a meshed caller `client` and unmeshed backends whose static endpoints are
 * the given ports, plus extra documents (routes, policies). Mesh access default: allow.
 */
export function backendsSpec(backends: Record<string, number[]>, extra = '', mesh = ''): Record<string, string> {
  const docs = [
    `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec:
  trustDomain: test.local
  access: { default: allow }
${mesh}`,
    `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: client }
spec:
  ports: [{ port: 80, targetPort: 9 }]
  endpoints: { static: [{ address: 127.0.0.1, port: 9 }] }`,
  ];
  for (const [name, ports] of Object.entries(backends)) {
    docs.push(`apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec:
  sidecar: false
  ports: [{ port: 80 }]
  endpoints:
    static:
${ports.map((p) => `      - { address: 127.0.0.1, port: ${p} }`).join('\n')}`);
  }
  return { 'spec.yaml': docs.join('\n---\n'), ...(extra ? { 'extra.yaml': extra } : {}) };
}

/** Compiles a spec and returns the config of one service; fails the test on any error. */
export function configOf(files: Record<string, string>, service: string): ProxyConfig {
  const result = compileTexts(files);
  const errors = result.diagnostics.filter((d) => d.severity === 'error');
  assert.deepEqual(errors.map((d) => `${d.code} ${d.message}`), [], 'test spec must compile');
  const config = result.mesh!.configs.get(service);
  assert.ok(config, `no config for ${service}`);
  return config;
}

/**
 * The same config with services renamed to other service keys (`{ api: 'b/api' }`):
 * resource names, every `service` field, the config's own service. Lets sidecar tests
 * use namespaced keys without depending on how the compiler spells them. Identities are
 * left as compiled. `edit` may change each body before it is hashed again.
 */
export function renameServices(config: ProxyConfig, keys: Record<string, string>, edit: (name: string, body: ResourceBody) => ResourceBody = (_n, b) => b): ProxyConfig {
  const rename = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(rename);
    if (typeof value !== 'object' || value === null) return value;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, k === 'service' && typeof v === 'string' ? (keys[v] ?? v) : rename(v)]));
  };
  const resources = config.resources.map((r) => {
    const slash = r.name.indexOf('/');
    const name = slash < 0 ? r.name : `${r.name.slice(0, slash)}/${keys[r.name.slice(slash + 1)] ?? r.name.slice(slash + 1)}`;
    return makeResource(name, edit(name, rename(r.body) as ResourceBody));
  });
  return makeProxyConfig(keys[config.service] ?? config.service, resources);
}

export interface RunningSidecar {
  readonly sidecar: Sidecar;
  readonly outbound: number;
  readonly inbound: number;
  readonly admin: number;
  /** Ports of the `tcpUpstreams` listeners, in their order. */
  readonly tcp: number[];
  stop(): Promise<void>;
}

/**
 * Starts an in-process sidecar on port 0 everywhere, with `config` applied (if given).
 * Unless it subscribes to a reconciler (whose CA then issues its certificate), it gets a
 * certificate from the test CA for `identity`, else `options.service`, else the config's
 * service; `identity: null` starts it without one.
 */
export async function startSidecar(config: ProxyConfig | undefined, options: Partial<SidecarOptions> & { clock?: Clock; random?: Random; identity?: string | null } = {}): Promise<RunningSidecar> {
  const sidecar = new Sidecar({
    ...DEFAULT_SIDECAR_OPTIONS,
    outbound: { host: '127.0.0.1', port: 0 },
    inbound: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    drainTimeoutMs: 2000,
    logger: pino({ level: 'silent' }),
    ...options,
  });
  if (config) {
    const applied = sidecar.store.apply(config, 'file');
    assert.ok(applied.ok, `config should apply: ${JSON.stringify(applied)}`);
  }
  const service = options.identity === undefined ? (options.service ?? config?.service) : options.identity;
  if (service && !options.control && !options.certificateFiles) {
    const offered = sidecar.identity.offer(await credentialFor(service));
    assert.ok(offered.ok, `test certificate should be accepted: ${JSON.stringify(offered)}`);
  }
  const addresses = await sidecar.start();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await sidecar.stop();
  };
  cleanups.push(stop);
  return { sidecar, outbound: addresses.outbound.port, inbound: addresses.inbound.port, admin: addresses.admin.port, tcp: addresses.tcp.map((a) => a.port), stop };
}

/** Keep-alive client used by all tests (closed by cleanup). */
const agent = new Agent({ keepAliveTimeout: 1000, connections: 64 });
cleanups.unshift(() => agent.close());

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** One HTTP request to 127.0.0.1:`port` with the given Host; never throws for HTTP statuses. */
export async function send(port: number, host: string, path = '/', init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  const r = await undiciRequest(`http://127.0.0.1:${port}${path}`, {
    method: (init.method ?? 'GET') as 'GET',
    headers: { host, ...init.headers },
    body: init.body,
    dispatcher: agent,
  });
  return { status: r.statusCode, headers: r.headers, body: await r.body.text() };
}

/**
 * A request through node:http with headers exactly as given (undici normalises some, such
 * as Connection) and an arbitrary request target (an absolute URI, say).
 */
export function rawSend(port: number, target: string, headers: Record<string, string>, method = 'GET', body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: target, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

export { seededRandom } from '../../src/sidecar/clock.ts';

/** Polls `check` every 10 ms until it returns true, failing after `timeoutMs`. */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The value of one sample of a Prometheus text exposition, or 0 when absent. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}
