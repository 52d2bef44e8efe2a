/**
 * A sidecar that leaks is found here, not in a fleet: 100 000 requests through a real
 * `trellis sidecar` process (loopback, bounded in count and time) must leave its open file
 * descriptors and its heap where they were after a warm-up. The mix has plain requests,
 * requests whose 503 is retried on the other endpoint, POSTs with bodies, and callers that
 * hang up before the answer (the abort paths), so each path of the forwarding core runs
 * thousands of times.
 *
 * Its own suite (npm run test:soak; .ci/run runs it): about half a minute on 2 cores.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { backendsSpec, configOf, metricValue } from '../helpers/sidecar-harness.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
const TOTAL = 100_000;
const WARMUP = 10_000;
const CONCURRENCY = 32;
/** Everything is stopped after this, whatever state it is in. */
const LIMIT_MS = 240_000;

const servers: Server[] = [];
let child: ChildProcess | undefined;
let dir: string | undefined;
after(async () => {
  child?.kill('SIGKILL');
  for (const s of servers) (s.closeAllConnections(), s.close());
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function upstream(): Promise<number> {
  let n = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      n++;
      if (req.url === '/flaky' && n % 2 === 0) {
        res.writeHead(503);
        return res.end();
      }
      if (req.url === '/slow') return void setTimeout(() => res.end('late'), 50);
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

async function metrics(admin: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
}

/** The least heap in use over a few reads a moment apart (a read right after a burst counts garbage not yet collected). */
async function heapUsed(admin: number): Promise<number> {
  let least = Infinity;
  for (let i = 0; i < 8; i++) {
    least = Math.min(least, metricValue(await metrics(admin), 'trellis_nodejs_heap_size_used_bytes'));
    await new Promise((r) => setTimeout(r, 250));
  }
  return least;
}

test(`${TOTAL} requests through a sidecar leave its file descriptors and heap where they were after ${WARMUP}`, { timeout: LIMIT_MS }, async () => {
  const deadline = Date.now() + LIMIT_MS - 30_000;
  const [a, b] = [await upstream(), await upstream()];
  const route = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ group: "", kind: Service, name: api, port: 80 }]
  rules:
    - backendRefs: [{ name: api, port: 80 }]
      retry: { attempts: 1, codes: [503] }
`;
  dir = await mkdtemp(join(tmpdir(), 'trellis-soak-'));
  await writeFile(join(dir, 'client.json'), JSON.stringify(configOf(backendsSpec({ api: [a, b] }, route), 'client')));
  child = spawn(process.execPath, [BIN, 'sidecar', '--config', join(dir, 'client.json'), '--outbound', '0', '--inbound', '0', '--admin', '0', '--app', '127.0.0.1:9'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ports = await new Promise<{ outbound: number; admin: number }>((resolve, reject) => {
    let buffer = '';
    child!.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      for (const line of buffer.split('\n')) if (line.includes('"type":"listening"')) resolve(JSON.parse(line) as { outbound: number; admin: number });
    });
    child!.on('exit', (code) => reject(new Error(`sidecar exited with ${code}`)));
  });
  const pool = new Pool(`http://127.0.0.1:${ports.outbound}`, { connections: CONCURRENCY });
  const statuses = new Map<number, number>();
  let sent = 0;
  const one = async (i: number) => {
    const kind = i % 100;
    if (kind === 0) {
      // A caller that hangs up before the answer.
      const controller = new AbortController();
      const r = pool.request({ method: 'GET', path: '/slow', headers: { host: 'api' }, signal: controller.signal }).catch(() => undefined);
      setTimeout(() => controller.abort(), 5);
      await r;
      return;
    }
    const post = kind < 10;
    const r = await pool.request({ method: post ? 'POST' : 'GET', path: kind < 30 ? '/flaky' : '/', headers: { host: 'api', ...(post ? { 'idempotency-key': String(i) } : {}) }, body: post ? 'x'.repeat(256) : undefined });
    await r.body.dump();
    statuses.set(r.statusCode, (statuses.get(r.statusCode) ?? 0) + 1);
  };
  const run = async (until: number) => {
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (sent < until && Date.now() < deadline) await one(sent++);
      }),
    );
  };
  try {
    await run(WARMUP);
    const fd0 = fds(child.pid!);
    const heap0 = await heapUsed(ports.admin);
    await run(TOTAL);
    assert.equal(sent, TOTAL, `only ${sent} requests went out before the time limit`);
    const fd1 = fds(child.pid!);
    const heap1 = await heapUsed(ports.admin);
    process.stderr.write(`# after ${WARMUP}: ${fd0} fds, heap ${(heap0 / 1e6).toFixed(1)} MB; after ${TOTAL}: ${fd1} fds, heap ${(heap1 / 1e6).toFixed(1)} MB; statuses ${JSON.stringify(Object.fromEntries(statuses))}\n`);
    // A 503 stays one when its retry met the other upstream's 503 too, or the retry budget said no.
    assert.deepEqual([...statuses.keys()].filter((s) => s !== 200 && s !== 503), [], 'only the upstreams\' own answers came back');
    assert.ok(metricValue(await metrics(ports.admin), 'trellis_retries_total', { destination_service: 'api', reason: '503' }) > 1000, 'the retry path ran thousands of times');
    assert.ok(fd1 <= fd0 + 4, `file descriptors grew from ${fd0} to ${fd1}`);
    // A leak of 100 bytes per request would be 9 MB here.
    assert.ok(heap1 <= heap0 + 8e6, `heap in use grew from ${heap0} to ${heap1} bytes`);
  } finally {
    await pool.destroy();
  }
});
