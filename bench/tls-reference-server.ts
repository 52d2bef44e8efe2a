/**
 * The yardstick for the sidecar's handshake rate (bench/mtls.ts): a bare `tls.createServer`
 * with the same certificate, trust bundle and TLS settings as a sidecar's inbound port
 * (TLS 1.3 only, client certificate requested and verified), that answers each connection's
 * first request with a fixed body and `Connection: close`. No HTTP parser, no proxying, no
 * identity or access checks: what is left is the handshake and Node's TLS socket, so the
 * sidecar's rate divided by this one is what the sidecar adds around a handshake.
 *
 * Usage: node bench/tls-reference-server.ts --cert F --key F --ca F [--bytes 100]
 *
 * Prints `{"type":"listening","port":N}` on stdout once bound to 127.0.0.1 (port 0). Exits on
 * SIGTERM or SIGINT, and when its stdin closes, so it never outlives the bench.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer, type TLSSocket } from 'node:tls';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { cert: { type: 'string' }, key: { type: 'string' }, ca: { type: 'string' }, bytes: { type: 'string', default: '100' } } });
if (!values.cert || !values.key || !values.ca) {
  process.stderr.write('usage: node bench/tls-reference-server.ts --cert F --key F --ca F [--bytes 100]\n');
  process.exit(2);
}
const body = 'x'.repeat(Number(values.bytes));
const response = Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`, 'latin1');
const END_OF_HEAD = Buffer.from('\r\n\r\n');

const server = createServer(
  {
    cert: readFileSync(values.cert, 'utf8'),
    key: readFileSync(values.key, 'utf8'),
    ca: readFileSync(values.ca, 'utf8'),
    minVersion: 'TLSv1.3',
    requestCert: true,
    rejectUnauthorized: true,
  },
  (socket: TLSSocket) => {
    socket.setNoDelay(true);
    let head: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.indexOf(END_OF_HEAD) >= 0) socket.end(response);
    });
    socket.on('error', () => socket.destroy());
  },
);
server.on('tlsClientError', (_err, socket) => socket.destroy());

function stop(): void {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
process.stdin.on('end', stop).on('close', stop).resume();

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ type: 'listening', port: (server.address() as AddressInfo).port })}\n`);
});
