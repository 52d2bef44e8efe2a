/**
 * gRPC and HTTP/2 through real sidecars: @grpc/grpc-js clients and servers on loopback, a
 * calling sidecar and one sidecar per server instance, mTLS between them. The app speaks
 * h2c to its sidecar, sidecars speak HTTP/2 over mTLS (ALPN h2) to each other, and the
 * destination sidecar speaks h2c to the gRPC server.
 */
import assert from 'node:assert/strict';
import { connect as h2connect, type IncomingHttpHeaders } from 'node:http2';
import { after, describe, test } from 'node:test';
import { closeGrpc, echoClient, grpc, startEchoServer, unary, type EchoReply, type EchoServer } from '../helpers/grpc.ts';
import { cleanup, metricValue, send, startSidecar, type RunningSidecar } from '../helpers/sidecar-harness.ts';
import { clientSpec, compileTexts } from '../helpers/spec.ts';

after(async () => {
  await closeGrpc();
  await cleanup();
});

interface GrpcMesh {
  readonly client: RunningSidecar;
  readonly servers: EchoServer[];
  readonly instances: RunningSidecar[];
}

/**
 * A meshed `client` calling the gRPC service `echo` (port 50051, `appProtocol: grpc`),
 * whose instances are each a sidecar in front of an Echo server; `extra` more documents,
 * `mesh` the Mesh spec's extra lines.
 */
async function grpcMesh(instances: number, options: { mesh?: string; extra?: string; protocol?: string; failUnary?: Array<number | undefined> } = {}): Promise<GrpcMesh> {
  const servers: EchoServer[] = [];
  const sidecars: RunningSidecar[] = [];
  for (let i = 0; i < instances; i++) {
    const fail = options.failUnary?.[i];
    const server = await startEchoServer(`echo-${i}`, fail === undefined ? {} : { failUnary: fail });
    servers.push(server);
    sidecars.push(await startSidecar(undefined, { app: { host: '127.0.0.1', port: server.port }, identity: 'echo' }));
  }
  const echo = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: echo }
spec:
  ports: [{ port: 50051, appProtocol: ${options.protocol ?? 'grpc'} }]
  endpoints:
    static:
${sidecars.map((s) => `      - { address: 127.0.0.1, port: ${s.inbound} }`).join('\n')}
`;
  const docs = [echo, ...(options.extra ? [options.extra] : [])];
  const result = compileTexts({ 'mesh.yaml': clientSpec(options.mesh ?? '  access: { default: allow }', ...docs) });
  const errors = result.diagnostics.filter((d) => d.severity === 'error');
  assert.deepEqual(errors.map((d) => `${d.code} ${d.message}`), []);
  for (const s of sidecars) assert.ok(s.sidecar.store.apply(result.mesh!.configs.get('echo')!, 'file').ok);
  const client = await startSidecar(result.mesh!.configs.get('client'));
  return { client, servers, instances: sidecars };
}

async function metrics(sc: RunningSidecar): Promise<string> {
  return (await fetch(`http://127.0.0.1:${sc.admin}/metrics`)).text();
}

describe('gRPC through sidecars', () => {
  test('unary: h2c from the app, HTTP/2 over mTLS between sidecars, h2c to the server; the server learns the verified caller', async () => {
    const mesh = await grpcMesh(1);
    const client = echoClient(mesh.client.outbound, 'echo:50051');
    const r = await unary(client, { text: 'hello' });
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.reply.text, 'hello');
    assert.equal(r.reply.server, 'echo-0');
    assert.equal(r.reply.metadata['x-trellis-peer-identity'], 'spiffe://test.local/svc/client');
    const callee = await metrics(mesh.instances[0]!);
    assert.equal(metricValue(callee, 'trellis_inbound_connections_total', { transport: 'mtls' }), 1);
    assert.equal(metricValue(callee, 'trellis_grpc_responses_total', { reporter: 'inbound', grpc_status: '0' }), 1);
    const caller = await metrics(mesh.client);
    assert.equal(metricValue(caller, 'trellis_grpc_responses_total', { reporter: 'outbound', destination_service: 'echo', grpc_status: '0' }), 1);
  });

  test('server-streaming, client-streaming and bidirectional calls pass through whole and in order', async () => {
    const mesh = await grpcMesh(1);
    const client = echoClient(mesh.client.outbound, 'echo:50051');
    const streamed = await new Promise<string[]>((resolve, reject) => {
      const got: string[] = [];
      const call = client.serverStream({ text: 'n' });
      call.on('data', (r: EchoReply) => got.push(r.text));
      call.on('error', reject);
      call.on('end', () => resolve(got));
    });
    assert.deepEqual(streamed, ['n-0', 'n-1', 'n-2']);
    const joined = await new Promise<string>((resolve, reject) => {
      const call = client.clientStream((err, r) => (err ? reject(err) : resolve(r!.text)));
      for (const t of ['a', 'b', 'c']) call.write({ text: t });
      call.end();
    });
    assert.equal(joined, 'a+b+c');
    // Bidirectional: each reply comes back before the next message is sent, so nothing
    // waits for the whole request stream (no buffering on the way).
    const echoed = await new Promise<string[]>((resolve, reject) => {
      const call = client.bidi();
      const got: string[] = [];
      const words = ['x', 'y', 'z'];
      call.on('data', (r: EchoReply) => {
        got.push(r.text);
        if (got.length < words.length) call.write({ text: words[got.length]! });
        else call.end();
      });
      call.on('error', reject);
      call.on('end', () => resolve(got));
      call.write({ text: words[0]! });
    });
    assert.deepEqual(echoed, ['X', 'Y', 'Z']);
  });

  test('one client connection, two instances: requests are balanced per request, not per connection', async () => {
    const mesh = await grpcMesh(2, { mesh: '  access: { default: allow }\n  defaults: { trafficPolicy: { loadBalancer: { type: round-robin } } }' });
    const client = echoClient(mesh.client.outbound, 'echo:50051');
    for (let i = 0; i < 40; i++) assert.ok((await unary(client, { text: `${i}` })).ok);
    const a = mesh.servers[0]!.calls.get('unary') ?? 0;
    const b = mesh.servers[1]!.calls.get('unary') ?? 0;
    assert.equal(a + b, 40);
    // Round robin (the default) alternates: both get their share over one connection.
    assert.ok(a >= 15 && b >= 15, `split ${a}/${b}`);
  });

  test('the deadline travels: grpc-timeout reaches the server no larger than the caller set, and a slow call ends deadline-exceeded', async () => {
    const mesh = await grpcMesh(1);
    const client = echoClient(mesh.client.outbound, 'echo:50051');
    const ok = await unary(client, { text: 't' }, { deadline: Date.now() + 2000 });
    assert.ok(ok.ok);
    // grpc-js turns the grpc-timeout it receives into the call's deadline.
    const left = mesh.servers[0]!.lastDeadlineMs;
    assert.ok(left > 0 && left <= 2000, `the server's deadline was ${left} ms away`);
    const slow = await unary(client, { text: 's', delayMs: 1000 }, { deadline: Date.now() + 150 });
    assert.ok(!slow.ok);
    assert.equal(slow.code, grpc.status.DEADLINE_EXCEEDED);
  });

  test('errors the sidecar makes are gRPC statuses with the stable code in metadata', async () => {
    const mesh = await grpcMesh(1);
    const unknown = await unary(echoClient(mesh.client.outbound, 'nowhere:50051'), { text: 'x' });
    assert.ok(!unknown.ok);
    assert.equal(unknown.code, grpc.status.UNIMPLEMENTED);
    assert.equal(unknown.metadata['x-trellis-error'], 'unknown_service');
    await mesh.servers[0]!.close();
    const down = await unary(echoClient(mesh.client.outbound, 'echo:50051'), { text: 'x' });
    assert.ok(!down.ok);
    assert.equal(down.code, grpc.status.UNAVAILABLE);
    const m = await metrics(mesh.client);
    assert.equal(metricValue(m, 'trellis_grpc_responses_total', { reporter: 'outbound', destination_service: 'echo', grpc_status: String(grpc.status.UNAVAILABLE) }), 1);
  });

  test('a call that ends unavailable is retried on another instance (the implicit rule of a grpc service retries unavailable)', async () => {
    const mesh = await grpcMesh(2, {
      mesh: '  access: { default: allow }\n  defaults: { retry: { attempts: 2 }, trafficPolicy: { loadBalancer: { type: round-robin } } }',
      failUnary: [grpc.status.UNAVAILABLE, undefined],
    });
    const client = echoClient(mesh.client.outbound, 'echo:50051');
    for (let i = 0; i < 6; i++) {
      const r = await unary(client, { text: `${i}` });
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(r.reply.server, 'echo-1');
    }
    assert.ok((mesh.servers[0]!.calls.get('unary') ?? 0) >= 1, 'the failing instance was tried');
    const m = await metrics(mesh.client);
    assert.ok(metricValue(m, 'trellis_retries_total', { destination_service: 'echo', reason: 'grpc-14' }) >= 1);
    // A status the rule does not list is the answer: not retried.
    const notFound = await unary(client, { text: 'x', fail: grpc.status.NOT_FOUND });
    assert.ok(!notFound.ok);
    assert.equal(notFound.code, grpc.status.NOT_FOUND);
  });

  test('without retries configured, unavailable reaches the client', async () => {
    const mesh = await grpcMesh(1, { failUnary: [grpc.status.UNAVAILABLE] });
    const r = await unary(echoClient(mesh.client.outbound, 'echo:50051'), { text: 'x' });
    assert.ok(!r.ok);
    assert.equal(r.code, grpc.status.UNAVAILABLE);
    assert.match(r.details, /fails every call/);
    // HTTP 200 with grpc-status 14: the traffic report counts it as a failure all the same.
    const { readSample, reportBetween } = await import('../../src/sidecar/stats-report.ts');
    const report = reportBetween(undefined, await readSample(mesh.client.sidecar.metrics), { service: 'client', node: 'client-0', intervalMs: 10_000 });
    assert.deepEqual(report.grpcFailures, [{ reporter: 'outbound', source: 'client', destination: 'echo', route: 'default', count: 1 }]);
    assert.ok(report.requests.some((x) => x.destination === 'echo' && x.code === '200'));
  });

  test('an error status from the server passes through unchanged, Trailers-Only', async () => {
    const mesh = await grpcMesh(1);
    const r = await unary(echoClient(mesh.client.outbound, 'echo:50051'), { text: 'x', fail: grpc.status.NOT_FOUND });
    assert.ok(!r.ok);
    assert.equal(r.code, grpc.status.NOT_FOUND);
    assert.match(r.details, /asked to fail by echo-0/);
  });
});

describe('GRPCRoute through sidecars', () => {
  test('weights and a header match: one client connection spreads calls over two versions by weight; x-canary goes to v2', async () => {
    const versions = ['v1', 'v2'];
    const servers = new Map<string, EchoServer>();
    const instances = new Map<string, RunningSidecar>();
    for (const v of versions) {
      const server = await startEchoServer(`echo-${v}`);
      servers.set(v, server);
      instances.set(v, await startSidecar(undefined, { app: { host: '127.0.0.1', port: server.port }, identity: `echo-${v}` }));
    }
    const service = (name: string, port: number | undefined) => `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec: { ports: [{ port: 50051, appProtocol: grpc }], endpoints: { static: [${port === undefined ? '' : `{ address: 127.0.0.1, port: ${port} }`}] } }
`;
    const route = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: echo-split }
spec:
  parentRefs: [{ kind: Service, name: echo, port: 50051 }]
  rules:
    # Gateway API precedence: the same service, and more header matches, wins over the split.
    - matches: [{ method: { service: test.Echo }, headers: [{ name: x-canary, value: "1" }] }]
      backendRefs: [{ name: echo-v2, port: 50051 }]
    - matches: [{ method: { service: test.Echo } }]
      backendRefs:
        - { name: echo-v1, port: 50051, weight: 3 }
        - { name: echo-v2, port: 50051, weight: 1 }
`;
    const result = compileTexts({ 'mesh.yaml': clientSpec('  access: { default: allow }', service('echo', undefined), service('echo-v1', instances.get('v1')!.inbound), service('echo-v2', instances.get('v2')!.inbound), route) });
    assert.deepEqual(result.diagnostics.filter((d) => d.severity === 'error').map((d) => d.message), []);
    for (const v of versions) assert.ok(instances.get(v)!.sidecar.store.apply(result.mesh!.configs.get(`echo-${v}`)!, 'file').ok);
    const { seededRandom } = await import('../helpers/sidecar-harness.ts');
    const client = await startSidecar(result.mesh!.configs.get('client'), { random: seededRandom(7) });
    const echo = echoClient(client.outbound, 'echo:50051');
    const n = 200;
    for (let i = 0; i < n; i++) assert.ok((await unary(echo, { text: `${i}` })).ok);
    const v1 = servers.get('v1')!.calls.get('unary') ?? 0;
    const v2 = servers.get('v2')!.calls.get('unary') ?? 0;
    assert.equal(v1 + v2, n);
    // 3:1 by weight (150 expected); a binomial spread of 200 draws stays well within ±30.
    assert.ok(v1 >= 120 && v1 <= 180, `split ${v1}/${v2}`);
    const canary = new grpc.Metadata();
    canary.set('x-canary', '1');
    for (let i = 0; i < 5; i++) {
      const r = await unary(echo, { text: 'c' }, {}, canary);
      assert.ok(r.ok);
      assert.equal(r.reply.server, 'echo-v2');
    }
    const m = await metrics(client);
    assert.equal(metricValue(m, 'trellis_grpc_responses_total', { reporter: 'outbound', route: 'echo-split', grpc_status: '0' }), n + 5);
  });
});

describe('draining with HTTP/2', () => {
  test('a stopping sidecar sends GOAWAY: the call in flight finishes, the session takes no new calls', async () => {
    const mesh = await grpcMesh(1);
    const client = echoClient(mesh.client.outbound, 'echo:50051');
    assert.ok((await unary(client, { text: 'warm' })).ok);
    const slow = unary(client, { text: 'slow', delayMs: 300 });
    // The call is at the server before the sidecar is stopped.
    const { waitFor } = await import('../helpers/sidecar-harness.ts');
    await waitFor(() => (mesh.servers[0]!.calls.get('unary') ?? 0) === 2, 'the slow call to arrive');
    const stopped = mesh.instances[0]!.stop();
    const r = await slow;
    assert.ok(r.ok, `the call in flight should finish: ${JSON.stringify(r)}`);
    await stopped;
    const after = await unary(client, { text: 'later' });
    assert.ok(!after.ok);
    assert.equal(after.code, grpc.status.UNAVAILABLE);
  });
});

describe('HTTP/2 and HTTP/1.1 apps', () => {
  /** One request over a fresh h2c connection to `port`. */
  function h2Request(port: number, authority: string, path: string): Promise<{ headers: IncomingHttpHeaders; body: string }> {
    return new Promise((resolve, reject) => {
      const session = h2connect(`http://127.0.0.1:${port}`);
      session.on('error', reject);
      const req = session.request({ ':method': 'GET', ':path': path, ':authority': authority });
      let body = '';
      req.on('response', (headers) => {
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => {
          session.close();
          resolve({ headers, body });
        });
      });
      req.on('error', reject);
      req.end();
    });
  }

  test('an HTTP/1.1 app calls an http2 service: HTTP/2 between the sidecars, h2c to its server', async () => {
    const mesh = await grpcMesh(1, { protocol: 'http2' });
    // The gRPC server is an HTTP/2 server: a plain GET to it is answered by grpc-js itself.
    const r = await send(mesh.client.outbound, 'echo:50051', '/test.Echo/Unary');
    assert.notEqual(r.headers['x-trellis-error'], 'connect_failure');
    assert.ok(r.status < 500 || r.headers['x-trellis-error'] === undefined, `status ${r.status} ${JSON.stringify(r.headers)}`);
    const callee = await metrics(mesh.instances[0]!);
    assert.equal(metricValue(callee, 'trellis_requests_total', { reporter: 'inbound', source_workload: 'client' }), 1);
  });

  test('an HTTP/2 request whose body stalls gets 408 on its stream; the connection goes on serving', async () => {
    const { startUpstream } = await import('../helpers/sidecar-harness.ts');
    const app = await startUpstream('web');
    const spec = clientSpec(
      '  access: { default: allow }',
      `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: web }
spec: { sidecar: false, ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${app.port} }] } }
`,
    );
    const client = await startSidecar(compileTexts({ 'mesh.yaml': spec }).mesh!.configs.get('client'), { bodyTimeoutMs: 200 });
    const session = h2connect(`http://127.0.0.1:${client.outbound}`);
    try {
      const stalled = await new Promise<IncomingHttpHeaders>((resolve, reject) => {
        const req = session.request({ ':method': 'POST', ':path': '/upload', ':authority': 'web', 'content-length': '100' });
        req.on('response', resolve);
        req.on('error', reject);
        req.write('only part of it');
      });
      assert.equal(stalled[':status'], 408);
      assert.equal(stalled['x-trellis-error'], 'request_body_timeout');
      const next = await new Promise<IncomingHttpHeaders>((resolve, reject) => {
        const req = session.request({ ':method': 'GET', ':path': '/after', ':authority': 'web' });
        req.on('response', resolve);
        req.on('error', reject);
        req.resume();
        req.end();
      });
      assert.equal(next[':status'], 200);
    } finally {
      session.close();
    }
  });

  test('an h2c app calls an HTTP/1.1 service through its sidecar', async () => {
    const { startUpstream } = await import('../helpers/sidecar-harness.ts');
    const app = await startUpstream('web');
    const spec = clientSpec(
      '  access: { default: allow }',
      `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: web }
spec: { sidecar: false, ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${app.port} }] } }
`,
    );
    const result = compileTexts({ 'mesh.yaml': spec });
    const client = await startSidecar(result.mesh!.configs.get('client'));
    const r = await h2Request(client.outbound, 'web', '/page?q=1');
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.body, 'web');
    assert.equal(app.seen.at(-1)!.url, '/page?q=1');
    assert.equal(app.seen.at(-1)!.headers.host, 'web');
  });
});
