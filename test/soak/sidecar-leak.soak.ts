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
import { readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Pool } from 'undici';
import { startTrellis, stopProcesses, tempDir } from '../helpers/processes.ts';
import { backendsSpec, configOf, metricValue } from '../helpers/sidecar-harness.ts';

const TOTAL = 100_000;
const WARMUP = 10_000;
const CONCURRENCY = 32;
/** Everything is stopped after this, whatever state it is in. */
const LIMIT_MS = 240_000;

const servers: Server[] = [];
after(async () => {
  await stopProcesses();
  for (const s of servers) (s.closeAllConnections(), s.close());
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

/**
 * The sidecar's heap in use after a full garbage collection, through its inspector (the
 * process runs with --inspect on a loopback port of its own): without the collection a
 * reading counts garbage not yet collected and moves by tens of MB between reads.
 */
async function heapAfterGc(inspectorUrl: string): Promise<number> {
  const ws = new WebSocket(inspectorUrl);
  await new Promise<void>((resolve, reject) => ((ws.onopen = () => resolve()), (ws.onerror = () => reject(new Error('inspector connection failed')))));
  let id = 0;
  const call = (method: string) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const mine = ++id;
      ws.addEventListener('message', function on(e: MessageEvent) {
        const m = JSON.parse(String(e.data)) as { id?: number; result?: Record<string, unknown> };
        if (m.id !== mine) return;
        ws.removeEventListener('message', on);
        resolve(m.result ?? {});
      });
      ws.send(JSON.stringify({ id: mine, method }));
    });
  try {
    await call('HeapProfiler.collectGarbage');
    return (await call('Runtime.getHeapUsage')).usedSize as number;
  } finally {
    ws.close();
  }
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
  const dir = tempDir();
  await writeFile(join(dir, 'client.json'), JSON.stringify(configOf(backendsSpec({ api: [a, b] }, route), 'client')));
  // NODE_OPTIONS reaches the sidecar through bin/trellis.js's execve; both processes open an inspector, and the last one named is the sidecar's.
  const sidecar = await startTrellis(['sidecar', '--config', join(dir, 'client.json'), '--outbound', '0', '--inbound', '0', '--admin', '0', '--app', '127.0.0.1:9'], { NODE_OPTIONS: '--inspect=127.0.0.1:0' });
  const child = sidecar.child;
  const ports = sidecar.listening as { outbound: number; admin: number };
  const inspector = () => [...sidecar.output().matchAll(/Debugger listening on (ws:\/\/\S+)/g)].at(-1)?.[1];
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
    const heap0 = await heapAfterGc(inspector()!);
    await run(TOTAL);
    assert.equal(sent, TOTAL, `only ${sent} requests went out before the time limit`);
    const fd1 = fds(child.pid!);
    const heap1 = await heapAfterGc(inspector()!);
    process.stderr.write(`# after ${WARMUP}: ${fd0} fds, heap ${(heap0 / 1e6).toFixed(1)} MB; after ${TOTAL}: ${fd1} fds, heap ${(heap1 / 1e6).toFixed(1)} MB; statuses ${JSON.stringify(Object.fromEntries(statuses))}\n`);
    // A 503 stays one when its retry met the other upstream's 503 too, or the retry budget said no.
    assert.deepEqual([...statuses.keys()].filter((s) => s !== 200 && s !== 503), [], 'only the upstreams\' own answers came back');
    assert.ok(metricValue(await metrics(ports.admin), 'trellis_retries_total', { destination_service: 'api', reason: '503' }) > 1000, 'the retry path ran thousands of times');
    assert.ok(fd1 <= fd0 + 4, `file descriptors grew from ${fd0} to ${fd1}`);
    // After a full collection the heap in use is steady to within a few hundred KB; a leak of 50 bytes per request would be 4.5 MB here.
    assert.ok(heap1 <= heap0 + 3e6, `heap in use grew from ${heap0} to ${heap1} bytes`);
  } finally {
    await pool.destroy();
  }
});
