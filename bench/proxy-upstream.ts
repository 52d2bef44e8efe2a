/**
 * The upstream of the proxy benchmark (bench/proxy.ts): a minimal node:http server that
 * answers every request with the same small body, so the proxies in front of it, not the
 * upstream, are what differs between runs.
 *
 * Usage: node bench/proxy-upstream.ts [--port 0] [--bytes 100]
 *
 * Prints one JSON line `{"type":"listening","port":N}` on stdout once bound. Exits on
 * SIGTERM or SIGINT, and when its stdin closes, so it never outlives the bench that
 * started it.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' }, bytes: { type: 'string', default: '100' } } });
const body = Buffer.alloc(Number(values.bytes), 'x');
const headers = { 'content-type': 'text/plain', 'content-length': String(body.length) };

const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
  // Drain any request body so the connection stays usable; the benchmark sends none.
  req.resume();
  res.writeHead(200, headers);
  res.end(body);
});

function stop(): void {
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
process.stdin.on('end', stop).on('close', stop).resume();

server.listen(Number(values.port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ type: 'listening', port: (server.address() as AddressInfo).port })}\n`);
});
