/**
 * The gRPC upstream of bench/protocols.ts: an h2c server that answers every call with one
 * fixed gRPC message and `grpc-status: 0` in the trailers, on Node's HTTP/2 core API (the
 * same wire as any gRPC server, without a gRPC library's own cost in the way).
 * Prints `{"type":"listening","port":N}`.
 */
import { constants, createServer, type ServerHttp2Stream } from 'node:http2';
import { parseArgs } from 'node:util';
import { grpcFrame } from '../src/up/demo.ts';

const { values } = parseArgs({ options: { bytes: { type: 'string', default: '100' } } });
const frame = grpcFrame(Buffer.alloc(Number(values.bytes), 0x61));

const server = createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on('stream', (stream: ServerHttp2Stream) => {
  stream.on('error', () => undefined);
  stream.resume();
  stream.once('end', () => {
    if (stream.closed) return;
    stream.respond({ [constants.HTTP2_HEADER_STATUS]: 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(frame);
  });
});
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ type: 'listening', port: typeof address === 'object' && address ? address.port : 0 })}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
