/**
 * The Node peer of the proxy benchmark (bench/proxy.ts): a minimal fastify server with
 * @fastify/http-proxy forwarding every path to one upstream, with the plugin's defaults
 * (undici pool with keep-alive), logging off.
 *
 * Usage: node bench/proxy-fastify.ts --upstream http://127.0.0.1:PORT [--port 0]
 *
 * Prints one JSON line `{"type":"listening","port":N}` on stdout once bound. Exits on
 * SIGTERM or SIGINT, and when its stdin closes.
 */
import proxy from '@fastify/http-proxy';
import Fastify from 'fastify';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { upstream: { type: 'string' }, port: { type: 'string', default: '0' } } });
if (!values.upstream) {
  process.stderr.write('usage: node bench/proxy-fastify.ts --upstream http://127.0.0.1:PORT [--port 0]\n');
  process.exit(2);
}

const app = Fastify({ logger: false });
await app.register(proxy, { upstream: values.upstream });

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  void app.close().then(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
process.stdin.on('end', stop).on('close', stop).resume();

await app.listen({ host: '127.0.0.1', port: Number(values.port) });
const address = app.server.address();
process.stdout.write(`${JSON.stringify({ type: 'listening', port: typeof address === 'object' && address ? address.port : 0 })}\n`);
