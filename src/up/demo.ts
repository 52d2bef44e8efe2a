/**
 * The demo apps and demo calls of `trellis up`, one of each per protocol a service port
 * may speak: every app answers with its service and instance, so the tally can say which
 * backend answered.
 *
 * - HTTP app: HTTP/1.1 and h2c on one port (the first bytes tell them apart), a JSON body;
 *   a gRPC call (content-type application/grpc) gets the same JSON as one gRPC message and
 *   `grpc-status: 0` in the trailers (messages are JSON, not protobuf: gRPC's framing does
 *   not care, and the demo needs no generated code).
 * - TCP app: answers each line with a JSON line.
 * - Calls: HTTP/1.1 GET; a gRPC unary call over one h2c connection per caller; a TCP
 *   connection through `CONNECT` that sends one line and reads one back.
 */
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect as h2connect, createServer as createH2Server, type ClientHttp2Session, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import type { CompiledRule, PortProtocol } from '../config/types.ts';
import { sniffPlaintext } from '../sidecar/h2-server.ts';
import { isGrpc, isGrpcServerFailure } from '../sidecar/grpc.ts';

/** What a demo app says of itself. */
export interface DemoAnswer {
  readonly service: string;
  readonly instance: string;
}

/** One gRPC message: a compression flag (0), the length, the bytes. */
export function grpcFrame(payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** The first message of a gRPC body, or undefined when it is not whole. */
export function firstGrpcMessage(body: Buffer): Buffer | undefined {
  if (body.length < 5) return undefined;
  const length = body.readUInt32BE(1);
  return body.length < 5 + length ? undefined : body.subarray(5, 5 + length);
}

/** A demo app for `protocol` on host:port (0 for any); resolves once listening. */
export async function startDemoApp(service: string, instance: string, host: string, port: number, protocol: PortProtocol): Promise<Server> {
  const answer = (extra: Record<string, unknown>) => JSON.stringify({ service, instance, ...extra });
  let server: Server;
  if (protocol === 'tcp') {
    server = createNetServer((socket: Socket) => {
      socket.on('error', () => socket.destroy());
      let pending = '';
      socket.on('data', (chunk: Buffer) => {
        pending += chunk.toString('utf8');
        for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          socket.write(`${answer({ line: line.slice(0, 200) })}\n`);
        }
      });
    });
  } else {
    const onRequest = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => {
      const grpc = isGrpc(req.headers);
      req.resume();
      req.on('end', () => {
        const body = answer({ method: req.method, path: req.url, caller: req.headers['x-forwarded-for'] ?? null });
        if (grpc) {
          (res as ServerResponse).writeHead(200, { 'content-type': 'application/grpc', 'x-demo-service': service });
          res.addTrailers({ 'grpc-status': '0' });
          res.end(grpcFrame(Buffer.from(body)));
          return;
        }
        (res as ServerResponse).writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-demo-service': service });
        res.end(body);
      });
    };
    const h1 = createHttpServer(onRequest);
    const h2 = createH2Server(onRequest);
    server = createNetServer({ pauseOnConnect: true }, (socket: Socket) => {
      socket.on('error', () => socket.destroy());
      sniffPlaintext(socket, (s) => h1.emit('connection', s), (s) => h2.emit('connection', s));
    });
    server.on('close', () => h1.closeAllConnections());
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

/**
 * A gRPC path the routes of a service match, for the demo call: the first GRPCRoute rule's
 * exact path, or its pattern's service with a method `Call`; `/trellis.demo.Demo/Call` when
 * the service has no GRPCRoute.
 */
export function demoGrpcPath(rules: readonly CompiledRule[]): string {
  for (const rule of rules) {
    if (rule.kind !== 'GRPCRoute') continue;
    const { type, value } = rule.match.path;
    if (type === 'Exact') return value;
    if (type === 'RegularExpression') {
      const path = value.replace('[^/]+', 'Call').replaceAll('\\.', '.');
      if (/^\/[\w.]+\/\w+$/.test(path)) return path;
    }
  }
  return '/trellis.demo.Demo/Call';
}

export type DemoResult = { readonly ok: true; readonly who: string } | { readonly ok: false; readonly who: string; readonly failed: boolean };

/** One gRPC unary call over `session` (h2c to a sidecar's outbound port). */
export function grpcCall(session: ClientHttp2Session, authority: string, path: string, timeoutMs: number): Promise<DemoResult> {
  return new Promise((resolve) => {
    const stream = session.request({ ':method': 'POST', ':path': path, ':authority': authority, 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': `${timeoutMs}m` });
    const chunks: Buffer[] = [];
    let headers: Record<string, unknown> = {};
    let trailers: Record<string, unknown> = {};
    stream.on('response', (h) => (headers = h));
    stream.on('trailers', (t) => (trailers = t));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => resolve({ ok: false, who: 'no answer', failed: true }));
    stream.on('end', () => {
      const status = Number(trailers['grpc-status'] ?? headers['grpc-status'] ?? 2);
      const message = firstGrpcMessage(Buffer.concat(chunks));
      if (status === 0 && message) {
        try {
          resolve({ ok: true, who: (JSON.parse(message.toString('utf8')) as DemoAnswer).service });
          return;
        } catch {
          // fall through: an answer that is not the demo's
        }
      }
      const code = String(trailers['x-trellis-error'] ?? headers['x-trellis-error'] ?? '');
      resolve({ ok: false, who: `grpc ${status} ${code}`.trim(), failed: isGrpcServerFailure(status) });
    });
    stream.end(grpcFrame(Buffer.from('{}')));
  });
}

/** An h2c connection to a sidecar's outbound port, for gRPC demo calls. */
export function grpcSession(port: number): ClientHttp2Session {
  const session = h2connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  return session;
}

/** One TCP exchange through a sidecar: `CONNECT authority`, a line out, a line back. */
export function tcpCall(port: number, authority: string, timeoutMs: number): Promise<DemoResult> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: DemoResult, socket?: Socket) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket?.destroy();
      resolve(r);
    };
    const req = httpRequest({ host: '127.0.0.1', port, method: 'CONNECT', path: authority, agent: false });
    const timer = setTimeout(() => {
      req.destroy();
      finish({ ok: false, who: 'no answer', failed: true });
    }, timeoutMs);
    req.on('error', () => finish({ ok: false, who: 'no answer', failed: true }));
    req.on('connect', (res, socket: Socket) => {
      if (res.statusCode !== 200) return finish({ ok: false, who: `${res.statusCode} ${String(res.headers['x-trellis-error'] ?? '')}`.trim(), failed: (res.statusCode ?? 0) >= 500 }, socket);
      let got = '';
      socket.on('error', () => finish({ ok: false, who: 'no answer', failed: true }, socket));
      socket.on('data', (c: Buffer) => {
        got += c.toString('utf8');
        const nl = got.indexOf('\n');
        if (nl < 0) return;
        try {
          finish({ ok: true, who: (JSON.parse(got.slice(0, nl)) as DemoAnswer).service }, socket);
        } catch {
          finish({ ok: false, who: 'bad answer', failed: true }, socket);
        }
      });
      socket.write('order placed\n');
    });
    req.end();
  });
}
