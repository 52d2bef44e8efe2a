/**
 * An open-loop, fixed-rate HTTP/1.1 load generator with microsecond latencies, for the
 * latency part of the proxy benchmark (bench/proxy.ts).
 *
 * Why not wrk or autocannon: wrk has no rate limit (wrk2 is not packaged), and autocannon's
 * `overallRate` sends each second's quota in a burst at the start of the second and
 * records latencies in whole milliseconds, which cannot resolve a sub-millisecond hop.
 *
 * How it works: `--connections` keep-alive sockets (raw node:net, one request in flight
 * per socket, no pipelining), a 1 ms tick that sends every request due by then
 * (`rate × elapsed`). A due request with no free socket waits in a queue, and its latency
 * counts from the tick that found it due, so a slow server cannot hide its queueing
 * (coordinated omission); lateness of the tick itself (the generator's own jitter) is not
 * counted. Latency ends when the last byte of the response has been read.
 *
 * Usage: node bench/fixed-rate-load.ts --target 127.0.0.1:PORT [--host HOST] [--path /]
 *          [--rate 1000] [--connections 16] [--warmup 2] [--duration 10]
 *
 * Stdout, one JSON object per line: `{"type":"measure-start"}` when the measured window
 * begins (after the warm-up), `{"type":"measure-end"}` when it ends, then
 * `{"type":"result", ...}` with latencies in microseconds. Bounded: it sends at most
 * rate × (warmup + duration) requests and exits by itself within warmup + duration + 5 s.
 */
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

export interface FixedRateResult {
  readonly type: 'result';
  readonly rate: number;
  /** Responses completed for requests scheduled in the measured window, per second of it. */
  readonly achievedRps: number;
  readonly measured: number;
  readonly errors: number;
  readonly non2xx: number;
  /** Measured requests that found no free connection and queued. */
  readonly queued: number;
  readonly latencyUs: { readonly p50: number; readonly p90: number; readonly p99: number; readonly p999: number; readonly max: number; readonly mean: number };
}

/** End offset and status of the first complete response in `buf`, or undefined if incomplete. */
export function responseEnd(buf: Buffer): { end: number; status: number } | undefined {
  const h = buf.indexOf('\r\n\r\n');
  if (h < 0) return undefined;
  const head = buf.toString('latin1', 0, h);
  const status = Number(head.slice(9, 12));
  const bodyStart = h + 4;
  const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
  if (length) {
    const end = bodyStart + Number(length[1]);
    return buf.length >= end ? { end, status } : undefined;
  }
  if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
    let pos = bodyStart;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', pos);
      if (lineEnd < 0) return undefined;
      const size = parseInt(buf.toString('latin1', pos, lineEnd), 16);
      if (size === 0) {
        // Last chunk: an empty line, or trailers then an empty line.
        if (buf.length < lineEnd + 4) return undefined;
        if (buf[lineEnd + 2] === 13 && buf[lineEnd + 3] === 10) return { end: lineEnd + 4, status };
        const t = buf.indexOf('\r\n\r\n', lineEnd + 2);
        return t < 0 ? undefined : { end: t + 4, status };
      }
      pos = lineEnd + 2 + size + 2;
      if (pos > buf.length) return undefined;
    }
  }
  // No framing: 1xx, 204 and 304 have no body (close-delimited bodies are not supported).
  return { end: bodyStart, status };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

interface Conn {
  socket: Socket;
  buf: Buffer;
  /** Due time of the request in flight (ms, performance.now()), or undefined when idle. */
  due: number | undefined;
  measured: boolean;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      host: { type: 'string' },
      path: { type: 'string', default: '/' },
      rate: { type: 'string', default: '1000' },
      connections: { type: 'string', default: '16' },
      warmup: { type: 'string', default: '2' },
      duration: { type: 'string', default: '10' },
    },
  });
  const m = /^(.+):(\d+)$/.exec(values.target ?? '');
  if (!m) {
    process.stderr.write('usage: node bench/fixed-rate-load.ts --target HOST:PORT [--host HOST] [--path /] [--rate 1000] [--connections 16] [--warmup 2] [--duration 10]\n');
    process.exit(2);
  }
  const [address, port] = [m[1]!, Number(m[2])];
  const rate = Number(values.rate);
  const connections = Number(values.connections);
  const warmupMs = Number(values.warmup) * 1000;
  const durationMs = Number(values.duration) * 1000;
  const request = Buffer.from(`GET ${values.path} HTTP/1.1\r\nHost: ${values.host ?? values.target}\r\nUser-Agent: trellis-bench\r\nAccept: */*\r\n\r\n`, 'latin1');

  // The hard stop: whatever happens, this process ends.
  setTimeout(() => {
    process.stderr.write('fixed-rate-load: hard deadline reached\n');
    process.exit(1);
  }, warmupMs + durationMs + 5000).unref();

  const latencies = new Float64Array(Math.ceil((rate * durationMs) / 1000) + 16);
  let measuredDone = 0;
  let errors = 0;
  let non2xx = 0;
  let queuedMeasured = 0;
  let inFlight = 0;
  const idle: Conn[] = [];
  const waiting: Array<{ due: number; measured: boolean }> = [];

  const send = (c: Conn, due: number, measured: boolean) => {
    c.due = due;
    c.measured = measured;
    inFlight++;
    c.socket.write(request);
  };
  const release = (c: Conn) => {
    const next = waiting.shift();
    if (next) send(c, next.due, next.measured);
    else idle.push(c);
  };
  const open = (): Promise<Conn> =>
    new Promise((resolve, reject) => {
      const socket = connect({ host: address, port, noDelay: true });
      const c: Conn = { socket, buf: Buffer.alloc(0), due: undefined, measured: false };
      socket.once('connect', () => resolve(c));
      socket.once('error', reject);
      socket.on('data', (chunk: Buffer) => {
        c.buf = c.buf.length === 0 ? chunk : Buffer.concat([c.buf, chunk]);
        for (;;) {
          const r = responseEnd(c.buf);
          if (!r || c.due === undefined) break;
          const now = performance.now();
          c.buf = c.buf.subarray(r.end);
          if (c.measured && measuredDone < latencies.length) latencies[measuredDone++] = (now - c.due) * 1000;
          if (r.status < 200 || r.status >= 300) non2xx++;
          c.due = undefined;
          inFlight--;
          release(c);
        }
      });
      socket.on('close', () => {
        const i = idle.indexOf(c);
        if (i >= 0) idle.splice(i, 1);
        if (c.due !== undefined) {
          errors++;
          inFlight--;
          c.due = undefined;
        }
        // Replace a connection the server closed while the run goes on.
        if (!finished) open().then(release, () => errors++);
      });
      socket.on('error', () => undefined);
    });

  let finished = false;
  for (let i = 0; i < connections; i++) idle.push(await open());

  const start = performance.now();
  const measureStart = start + warmupMs;
  const end = measureStart + durationMs;
  const total = Math.floor((rate * (warmupMs + durationMs)) / 1000);
  let scheduled = 0;
  let started = false;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      if (!started && now >= measureStart) {
        started = true;
        process.stdout.write('{"type":"measure-start"}\n');
      }
      const due = Math.min(total, Math.floor(((now - start) * rate) / 1000));
      while (scheduled < due) {
        scheduled++;
        const measured = now >= measureStart;
        const c = idle.shift();
        if (c) send(c, now, measured);
        else {
          waiting.push({ due: now, measured });
          if (measured) queuedMeasured++;
        }
      }
      if (now >= end || scheduled >= total) {
        process.stdout.write('{"type":"measure-end"}\n');
        resolve();
      } else setTimeout(tick, 1);
    };
    tick();
  });

  // Let the last requests finish (bounded), then report.
  const drainUntil = performance.now() + 2000;
  while ((inFlight > 0 || waiting.length > 0) && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 5));
  finished = true;
  errors += inFlight + waiting.length;

  const sorted = latencies.slice(0, measuredDone).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  const result: FixedRateResult = {
    type: 'result',
    rate,
    achievedRps: measuredDone / (durationMs / 1000),
    measured: measuredDone,
    errors,
    non2xx,
    queued: queuedMeasured,
    latencyUs: {
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      p999: percentile(sorted, 99.9),
      max: sorted.length ? sorted[sorted.length - 1]! : NaN,
      mean: sorted.length ? sum / sorted.length : NaN,
    },
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  for (const c of idle) c.socket.destroy();
  process.exit(0);
}

if (import.meta.main) await main();
