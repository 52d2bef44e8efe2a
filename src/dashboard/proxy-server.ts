/**
 * `trellis dashboard`: the dashboard page served from this machine, its data read from a
 * reconciler (GET /v1/dashboard and /v1/explain are passed through, nothing else), for a
 * reconciler whose own listener a browser cannot reach (a cluster, reached with kubectl
 * port-forward) or should not (its port also takes sidecar streams).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { sendJson } from '../http/json-server.ts';
import { serveAsset } from './assets.ts';

/** The reconciler's read-only paths the page uses; every other path is answered here or refused. */
const PASSED = new Set(['/v1/dashboard', '/v1/explain']);

export interface DashboardServer {
  readonly url: string;
  close(): Promise<void>;
}

export async function startDashboardServer(options: { reconciler: string; host: string; port: number }): Promise<DashboardServer> {
  const agent = new Agent({ keepAliveTimeout: 10_000, connections: 4 });
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    if (req.method !== 'GET') return sendJson(res, 405, { error: 'method_not_allowed' });
    if (url.pathname === '/') {
      res.writeHead(302, { location: '/dashboard' }).end();
      return;
    }
    if (serveAsset(url.pathname, res)) return;
    if (!PASSED.has(url.pathname)) return sendJson(res, 404, { error: 'not_found' });
    const upstream = new URL(url.pathname + url.search, options.reconciler);
    request(upstream, { dispatcher: agent, headersTimeout: 10_000, bodyTimeout: 10_000 }).then(
      async (r) => {
        const body = Buffer.from(await r.body.arrayBuffer());
        res.writeHead(r.statusCode, { 'content-type': String(r.headers['content-type'] ?? 'application/json'), 'content-length': body.length, 'cache-control': 'no-store' });
        res.end(body);
      },
      (err: Error) => sendJson(res, 502, { error: 'reconciler_unreachable', message: `cannot reach the reconciler at ${options.reconciler}: ${err.message}` }),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/dashboard`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await agent.close();
    },
  };
}
