/**
 * The bare proxy of the proxy benchmark (bench/proxy.ts): what a proxy on the sidecar's
 * runtime costs with no features at all — node:http in, an undici Pool out (keep-alive),
 * headers passed as they are, bodies streamed. Plain JavaScript, run with the sidecar's V8
 * settings, so "Trellis ÷ bare" is the price of the feature set alone.
 *
 * Usage: node bench/proxy-bare.js --upstream http://127.0.0.1:PORT [--port 0]
 *
 * Prints one JSON line `{"type":"listening","port":N}` on stdout once bound. Exits on
 * SIGTERM or SIGINT, and when its stdin closes.
 */
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';

const { values } = parseArgs({ options: { upstream: { type: 'string' }, port: { type: 'string', default: '0' } } });
if (!values.upstream) {
  process.stderr.write('usage: node bench/proxy-bare.js --upstream http://127.0.0.1:PORT [--port 0]\n');
  process.exit(2);
}
const pool = new Pool(values.upstream, { connections: 128, pipelining: 1 });

const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const headers = { ...req.headers };
  delete headers.connection;
  delete headers['keep-alive'];
  pool.request({ method: req.method, path: req.url, headers, body: req.method === 'GET' || req.method === 'HEAD' ? undefined : req }).then(
    (r) => {
      const out = { ...r.headers };
      delete out.connection;
      delete out['keep-alive'];
      delete out['transfer-encoding'];
      res.writeHead(r.statusCode, out);
      r.body.pipe(res);
    },
    () => {
      res.writeHead(502);
      res.end();
    },
  );
});

function stop() {
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
process.stdin.on('end', stop).on('close', stop).resume();

server.listen(Number(values.port), '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ type: 'listening', port: server.address().port })}\n`));
