/**
 * Request bodies have a deadline on both ports: a caller dripping its body a byte at a
 * time gets 408 request_body_timeout, the request to the upstream is aborted at once, and
 * the sidecar's descriptors go back to where they were. Real sockets throughout: a raw TCP
 * client, a real upstream that records whether its request ended or was cut.
 */
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { backendsSpec, cleanup, configOf, metricValue, rawSend, startSidecar, waitFor } from '../helpers/sidecar-harness.ts';
import { clientApiSpec } from '../helpers/spec.ts';

after(cleanup);

const BODY_TIMEOUT_MS = 300;

/** An upstream that records, per request, whether its body ended or the request was cut off. */
async function recordingUpstream(): Promise<{ port: number; requests: Array<{ url: string; outcome: 'pending' | 'ended' | 'aborted' }>; close(): void }> {
  const requests: Array<{ url: string; outcome: 'pending' | 'ended' | 'aborted' }> = [];
  const server = createServer((req: IncomingMessage, res) => {
    const entry = { url: req.url ?? '', outcome: 'pending' as 'pending' | 'ended' | 'aborted' };
    requests.push(entry);
    req.on('data', () => undefined);
    req.on('end', () => {
      entry.outcome = 'ended';
      res.end('ok');
    });
    req.on('close', () => {
      if (entry.outcome === 'pending') entry.outcome = 'aborted';
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, requests, close: () => server.close() };
}

/**
 * Sends request headers promising `length` body bytes, then drips one byte every 50 ms
 * (far below any sane rate) until the connection closes. Resolves with what came back and
 * how long after the headers the answer took; gives up (resolving `timedOut`) after
 * `giveUpMs`, which no fixed sleep decides: the socket's events do.
 */
function drip(port: number, head: string, length: number, giveUpMs = 5000): Promise<{ received: string; ms: number; timedOut: boolean }> {
  return new Promise((resolve) => {
    const socket: Socket = connect(port, '127.0.0.1');
    let received = '';
    let answeredAt = 0;
    let sent = 0;
    const started = performance.now();
    let dripper: NodeJS.Timeout | undefined;
    const giveUp = setTimeout(() => finish(true), giveUpMs);
    const finish = (timedOut: boolean) => {
      clearTimeout(giveUp);
      clearInterval(dripper);
      socket.destroy();
      resolve({ received, ms: (answeredAt || performance.now()) - started, timedOut });
    };
    socket.on('connect', () => {
      socket.write(`${head}Content-Length: ${length}\r\n\r\n`);
      dripper = setInterval(() => {
        if (sent < length - 1 && socket.writable) socket.write('x', () => undefined), sent++;
      }, 50);
    });
    socket.on('data', (d) => {
      if (!answeredAt) answeredAt = performance.now();
      received += d.toString();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => finish(false));
  });
}

/**
 * Sockets open in this process (sidecar, upstream and client alike: all in-process).
 * Sockets only: libuv opens io_uring and epoll descriptors lazily and keeps them.
 */
function openDescriptors(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed while listing
    }
  }
  return n;
}

/** The admin metrics over a connection that closes after it, so it holds no descriptor afterwards. */
async function metrics(port: number): Promise<string> {
  return (await rawSend(port, '/metrics', { host: 'admin', connection: 'close' })).body;
}

describe('request body deadline', () => {
  for (const [what, length] of [
    ['a small body (held in memory for retries)', 100],
    ['a large body (streamed to the upstream)', 200_000],
  ] as const) {
    test(`outbound: ${what} dripped a byte at a time gets 408 within the bound, and the upstream request is aborted`, async () => {
      const upstream = await recordingUpstream();
      const sc = await startSidecar(configOf(backendsSpec({ api: [upstream.port] }), 'client'), { bodyTimeoutMs: BODY_TIMEOUT_MS });
      // The baseline holds the sidecar's pooled connection to the upstream (an idle pool keeps one).
      assert.equal((await rawSend(sc.outbound, '/warm', { host: 'api', connection: 'close' }, 'POST', 'warm')).status, 200);
      upstream.requests.length = 0;
      const baseline = openDescriptors();
      const r = await drip(sc.outbound, 'POST /upload HTTP/1.1\r\nHost: api\r\n', length);
      assert.equal(r.timedOut, false, `no answer and no close within 5 s: ${JSON.stringify(r.received)}`);
      assert.match(r.received, /^HTTP\/1\.1 408 /);
      assert.match(r.received, /x-trellis-error: request_body_timeout/);
      assert.ok(r.ms >= BODY_TIMEOUT_MS - 20 && r.ms < BODY_TIMEOUT_MS + 1500, `answered after ${Math.round(r.ms)} ms`);
      // A buffered body never reached the upstream; a streamed one was cut off, not left hanging.
      await waitFor(() => upstream.requests.every((q) => q.outcome === 'aborted'), 'the upstream request to be aborted', 2000);
      if (length > 64 * 1024) assert.equal(upstream.requests.length, 1, 'the streamed request reached the upstream');
      else assert.equal(upstream.requests.length, 0);
      const m = await metrics(sc.admin);
      assert.equal(metricValue(m, 'trellis_request_body_timeouts_total', { reporter: 'outbound' }), 1, m.split('\n').filter((l) => l.includes('408') || l.includes('body_timeouts')).join('\n'));
      assert.equal(metricValue(m, 'trellis_requests_total', { reporter: 'outbound', response_code: '408', response_flags: 'request_body_timeout' }), 1);
      await waitFor(() => openDescriptors() <= baseline, `sockets back to ${baseline} (now ${openDescriptors()})`, 3000);
    });
  }

  test('inbound: a peer dripping its body gets 408 within the bound and the app request is aborted', async () => {
    const app = await recordingUpstream();
    const sc = await startSidecar(configOf({ 'spec.yaml': clientApiSpec(9, '  mtls: { mode: "off" }\n  access: { default: allow }') }, 'api'), {
      identity: null,
      app: { host: '127.0.0.1', port: app.port },
      bodyTimeoutMs: BODY_TIMEOUT_MS,
    });
    assert.equal((await rawSend(sc.inbound, '/warm', { host: 'api:80', connection: 'close' }, 'POST', 'warm')).status, 200);
    app.requests.length = 0;
    const baseline = openDescriptors();
    const r = await drip(sc.inbound, 'POST /upload HTTP/1.1\r\nHost: api:80\r\n', 100);
    assert.equal(r.timedOut, false, `no answer and no close within 5 s: ${JSON.stringify(r.received)}`);
    assert.match(r.received, /^HTTP\/1\.1 408 /);
    assert.match(r.received, /x-trellis-error: request_body_timeout/);
    assert.ok(r.ms < BODY_TIMEOUT_MS + 1500, `answered after ${Math.round(r.ms)} ms`);
    await waitFor(() => app.requests.length === 1 && app.requests[0]!.outcome === 'aborted', 'the app request to be aborted', 2000);
    const m = await metrics(sc.admin);
    assert.equal(metricValue(m, 'trellis_request_body_timeouts_total', { reporter: 'inbound' }), 1);
    await waitFor(() => openDescriptors() <= baseline, `sockets back to ${baseline} (now ${openDescriptors()})`, 3000);
  });

  test('a body that arrives in time is not cut, however long the answer takes', async () => {
    const upstream = await recordingUpstream();
    const sc = await startSidecar(configOf(backendsSpec({ api: [upstream.port] }), 'client'), { bodyTimeoutMs: BODY_TIMEOUT_MS });
    const r = await new Promise<string>((resolve) => {
      const socket = connect(sc.outbound, '127.0.0.1');
      let received = '';
      socket.on('connect', () => socket.write('POST / HTTP/1.1\r\nHost: api\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello'));
      socket.on('data', (d) => (received += d.toString()));
      socket.on('close', () => resolve(received));
    });
    assert.match(r, /^HTTP\/1\.1 200 /);
    assert.equal(upstream.requests[0]!.outcome, 'ended');
  });
});
