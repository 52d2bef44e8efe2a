/**
 * New-connection load for the mTLS benchmark (bench/mtls.ts): `--parallel` loops, each
 * opening a fresh connection, sending one `GET / HTTP/1.1` with `Connection: close`,
 * reading the whole response and closing, then starting over. With `--cert/--key/--ca`
 * every connection is a full TLS 1.3 handshake with a client certificate: a fresh socket
 * with no `session`, so nothing is resumed (as a sidecar never resumes). With `--plain` the
 * same loop runs over bare TCP, to tell the TLS work from the per-connection HTTP work.
 *
 * The server must present `--expect-identity` (a SPIFFE ID in its URI SAN), checked the
 * way the sidecar's connector checks it; a mismatch counts as an error.
 *
 * Usage: node bench/handshake-load.ts --target 127.0.0.1:PORT (--plain | --cert F --key F --ca F
 *          --expect-identity ID) [--host upstream] [--parallel 4] [--warmup 1] [--duration 5]
 *          [--max 200000]
 *
 * Stdout, one JSON object per line: `{"type":"measure-start"}`, `{"type":"measure-end"}`,
 * then `{"type":"result", ...}` (connections completed in the measured window, per second,
 * and connect → first response byte times in ms). Bounded: at most `--max` connections,
 * and the process exits by itself within warmup + duration + 5 s.
 */
import { readFileSync } from 'node:fs';
import { connect as connectTcp, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { connect as connectTls, type PeerCertificate } from 'node:tls';
import { parseArgs } from 'node:util';
import { responseEnd } from './fixed-rate-load.ts';
import { spiffeIdOfAltNames } from '../src/identity/spiffe.ts';

export interface HandshakeLoadResult {
  readonly type: 'result';
  /** Connections that completed (handshake, request, full 2xx response) in the measured window. */
  readonly completed: number;
  /** `completed` per second of the measured window. */
  readonly perSecond: number;
  /** Connections that failed in the measured window (refused, reset, bad identity, non-2xx). */
  readonly errors: number;
  /** Time from starting to connect until the secure (or TCP) connection was up, ms. */
  readonly connectMs: { readonly p50: number; readonly p99: number };
  /** Time from starting to connect until the response was complete, ms. */
  readonly totalMs: { readonly p50: number; readonly p99: number };
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

interface TlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly expected: string;
}

/** One connection, one request; resolves with its two times, rejects on any failure. */
function oneConnection(host: string, port: number, request: Buffer, tls: TlsFiles | undefined): Promise<{ connectMs: number; totalMs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let connectMs = NaN;
    let buf: Buffer = Buffer.alloc(0);
    let socket: Socket;
    const onUp = () => {
      connectMs = performance.now() - t0;
      socket.write(request);
    };
    if (tls) {
      socket = connectTls({
        host,
        port,
        cert: tls.cert,
        key: tls.key,
        ca: tls.ca,
        minVersion: 'TLSv1.3',
        rejectUnauthorized: true,
        // The identity is a URI SAN, not a host name (as in src/sidecar/mesh-connector.ts).
        checkServerIdentity: (_h: string, cert: PeerCertificate) => {
          const got = spiffeIdOfAltNames(cert.subjectaltname);
          return got === tls.expected ? undefined : new Error(`server presented ${got ?? 'no SPIFFE ID'}, expected ${tls.expected}`);
        },
      });
      socket.once('secureConnect', onUp);
    } else {
      socket = connectTcp({ host, port, noDelay: true });
      socket.once('connect', onUp);
    }
    socket.setNoDelay(true);
    let settled = false;
    const settle = (err: Error | undefined) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (err) reject(err);
      else resolve({ connectMs, totalMs: performance.now() - t0 });
    };
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const r = responseEnd(buf);
      if (!r) return;
      settle(r.status >= 200 && r.status < 300 ? undefined : new Error(`status ${r.status}`));
    });
    socket.once('error', (err) => settle(err));
    socket.once('close', () => settle(new Error('closed before a complete response')));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      host: { type: 'string', default: 'upstream' },
      plain: { type: 'boolean', default: false },
      cert: { type: 'string' },
      key: { type: 'string' },
      ca: { type: 'string' },
      'expect-identity': { type: 'string' },
      parallel: { type: 'string', default: '4' },
      warmup: { type: 'string', default: '1' },
      duration: { type: 'string', default: '5' },
      max: { type: 'string', default: '200000' },
    },
  });
  const m = /^(.+):(\d+)$/.exec(values.target ?? '');
  const tlsGiven = values.cert !== undefined && values.key !== undefined && values.ca !== undefined && values['expect-identity'] !== undefined;
  if (!m || values.plain === tlsGiven) {
    process.stderr.write('usage: node bench/handshake-load.ts --target HOST:PORT (--plain | --cert F --key F --ca F --expect-identity ID) [--parallel 4] [--warmup 1] [--duration 5]\n');
    process.exit(2);
  }
  const [address, port] = [m[1]!, Number(m[2])];
  const tls: TlsFiles | undefined = tlsGiven
    ? { cert: readFileSync(values.cert!, 'utf8'), key: readFileSync(values.key!, 'utf8'), ca: readFileSync(values.ca!, 'utf8'), expected: values['expect-identity']! }
    : undefined;
  const parallel = Number(values.parallel);
  const warmupMs = Number(values.warmup) * 1000;
  const durationMs = Number(values.duration) * 1000;
  const max = Number(values.max);
  const request = Buffer.from(`GET / HTTP/1.1\r\nHost: ${values.host}\r\nUser-Agent: trellis-bench\r\nConnection: close\r\n\r\n`, 'latin1');

  setTimeout(() => {
    process.stderr.write('handshake-load: hard deadline reached\n');
    process.exit(1);
  }, warmupMs + durationMs + 5000).unref();

  const start = performance.now();
  const measureStart = start + warmupMs;
  const end = measureStart + durationMs;
  let begun = 0;
  let started = false;
  let errors = 0;
  let lastError = '';
  const connectTimes: number[] = [];
  const totalTimes: number[] = [];
  const loop = async () => {
    while (begun < max) {
      const now = performance.now();
      if (now >= end) return;
      if (!started && now >= measureStart) {
        started = true;
        process.stdout.write('{"type":"measure-start"}\n');
      }
      begun++;
      // Only connections begun inside the window count, so the window's rate is not inflated by warm-up.
      const measured = now >= measureStart;
      try {
        const t = await oneConnection(address, port, request, tls);
        if (measured && performance.now() <= end) {
          connectTimes.push(t.connectMs);
          totalTimes.push(t.totalMs);
        }
      } catch (err) {
        if (measured) errors++;
        lastError = (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, loop));
  process.stdout.write('{"type":"measure-end"}\n');
  if (errors > 0) process.stderr.write(`handshake-load: ${errors} errors, last: ${lastError}\n`);
  const seconds = (Math.min(performance.now(), end) - measureStart) / 1000;
  connectTimes.sort((a, b) => a - b);
  totalTimes.sort((a, b) => a - b);
  const result: HandshakeLoadResult = {
    type: 'result',
    completed: totalTimes.length,
    perSecond: seconds > 0 ? totalTimes.length / seconds : NaN,
    errors,
    connectMs: { p50: percentile(connectTimes, 50), p99: percentile(connectTimes, 99) },
    totalMs: { p50: percentile(totalTimes, 50), p99: percentile(totalTimes, 99) },
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

if (import.meta.main) await main();
