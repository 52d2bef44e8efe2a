/**
 * Real gRPC for tests: an `Echo` service over @grpc/grpc-js with JSON messages (no
 * protobuf compiler needed; the wire is gRPC's own framing either way), its four call
 * shapes, servers on 127.0.0.1:0 and clients that dial a sidecar's outbound port with the
 * service named in `:authority`. Everything started is closed by `closeGrpc`.
 */
import * as grpc from '@grpc/grpc-js';

export interface EchoRequest {
  readonly text: string;
  /** Ask the server to answer with this gRPC status instead. */
  readonly fail?: number;
  /** Ask the server to wait this long (ms) before answering. */
  readonly delayMs?: number;
}
export interface EchoReply {
  readonly text: string;
  readonly server: string;
  /** The request metadata the server saw, for the headers tests ask about. */
  readonly metadata: Record<string, string>;
}

const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer) => JSON.parse(bytes.toString('utf8')) as never,
};

function method(name: string, requestStream: boolean, responseStream: boolean) {
  return { path: `/test.Echo/${name}`, requestStream, responseStream, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize };
}

export const ECHO_SERVICE = {
  unary: method('Unary', false, false),
  serverStream: method('ServerStream', false, true),
  clientStream: method('ClientStream', true, false),
  bidi: method('Bidi', true, true),
} satisfies grpc.ServiceDefinition;

export interface EchoClient extends grpc.Client {
  unary(req: EchoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<EchoReply>): grpc.ClientUnaryCall;
  serverStream(req: EchoRequest, metadata?: grpc.Metadata): grpc.ClientReadableStream<EchoReply>;
  clientStream(callback: grpc.requestCallback<EchoReply>): grpc.ClientWritableStream<EchoRequest>;
  bidi(): grpc.ClientDuplexStream<EchoRequest, EchoReply>;
}

const EchoClientConstructor = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo') as unknown as new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => EchoClient;

const closers: Array<() => Promise<void>> = [];

export async function closeGrpc(): Promise<void> {
  while (closers.length > 0) await closers.pop()!().catch(() => undefined);
}

function metadataOf(m: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m.getMap())) out[k] = String(v);
  return out;
}

function statusError(code: number, message: string): grpc.ServiceError {
  return Object.assign(new Error(message), { code, details: message, metadata: new grpc.Metadata() });
}

export interface EchoServer {
  readonly port: number;
  readonly name: string;
  /** Calls served, by method name. */
  readonly calls: Map<string, number>;
  /** Metadata of the last call. */
  last: Record<string, string> | undefined;
  /** Milliseconds left of the last unary call's deadline when it arrived (Infinity for none). */
  lastDeadlineMs: number;
  close(): Promise<void>;
}

/** An Echo server named `name` on 127.0.0.1:0; with `failUnary`, every unary call ends with that gRPC status. */
export async function startEchoServer(name: string, options: { failUnary?: number } = {}): Promise<EchoServer> {
  const server = new grpc.Server();
  const calls = new Map<string, number>();
  const state: EchoServer = { port: 0, name, calls, last: undefined, lastDeadlineMs: Infinity, close: async () => undefined };
  const count = (m: string, md: grpc.Metadata) => {
    calls.set(m, (calls.get(m) ?? 0) + 1);
    state.last = metadataOf(md);
  };
  server.addService(ECHO_SERVICE, {
    unary: (call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) => {
      count('unary', call.metadata);
      const deadline = call.getDeadline();
      state.lastDeadlineMs = (deadline instanceof Date ? deadline.getTime() : deadline) - Date.now();
      const answer = () => {
        if (options.failUnary !== undefined) callback(statusError(options.failUnary, `${name} fails every call`));
        else if (call.request.fail !== undefined) callback(statusError(call.request.fail, `asked to fail by ${name}`));
        else callback(null, { text: call.request.text, server: name, metadata: metadataOf(call.metadata) });
      };
      if (call.request.delayMs) setTimeout(answer, call.request.delayMs);
      else answer();
    },
    serverStream: (call: grpc.ServerWritableStream<EchoRequest, EchoReply>) => {
      count('serverStream', call.metadata);
      for (let i = 0; i < 3; i++) call.write({ text: `${call.request.text}-${i}`, server: name, metadata: {} });
      call.end();
    },
    clientStream: (call: grpc.ServerReadableStream<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) => {
      count('clientStream', call.metadata);
      const texts: string[] = [];
      call.on('data', (r: EchoRequest) => texts.push(r.text));
      call.on('end', () => callback(null, { text: texts.join('+'), server: name, metadata: {} }));
    },
    bidi: (call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) => {
      count('bidi', call.metadata);
      call.on('data', (r: EchoRequest) => call.write({ text: r.text.toUpperCase(), server: name, metadata: {} }));
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const close = () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())).then(() => server.forceShutdown());
  closers.push(close);
  return Object.assign(state, { port, close });
}

/** A client of the Echo service at `authority` (`echo:50051`) through the sidecar listening on `port`: one HTTP/2 connection. */
export function echoClient(port: number, authority: string): EchoClient {
  const client = new EchoClientConstructor(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': authority });
  closers.push(async () => client.close());
  return client;
}

/** One unary call: the reply, or the gRPC error (code, details, metadata). */
export function unary(client: EchoClient, req: EchoRequest, options: grpc.CallOptions = {}, metadata = new grpc.Metadata()): Promise<{ ok: true; reply: EchoReply } | { ok: false; code: number; details: string; metadata: Record<string, string> }> {
  return new Promise((resolve) => {
    client.unary(req, metadata, options, (err, reply) => {
      if (err) resolve({ ok: false, code: err.code, details: err.details, metadata: metadataOf(err.metadata) });
      else resolve({ ok: true, reply: reply! });
    });
  });
}

export { grpc };
