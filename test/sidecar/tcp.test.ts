/**
 * TCP through real sidecars: a TCP echo server behind the sidecar of a `tcp` service, a
 * caller reaching it with HTTP CONNECT or through a local `--tcp-upstream` port, HTTP/2
 * CONNECT tunnels over mTLS between the sidecars, and the access policy decided on the
 * caller's verified identity.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { cleanup, metricValue, startSidecar, type RunningSidecar } from '../helpers/sidecar-harness.ts';
import { clientSpec, compileTexts } from '../helpers/spec.ts';

const servers: Server[] = [];
after(async () => {
  for (const s of servers) s.close();
  await cleanup();
});

interface Echo {
  readonly port: number;
  connections: number;
}

/** A TCP server that echoes every byte back and ends its side when the client ends its own. */
async function startEcho(): Promise<Echo> {
  const echo = { port: 0, connections: 0 };
  const server = createServer((socket) => {
    echo.connections++;
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  echo.port = (server.address() as AddressInfo).port;
  return echo;
}

interface TcpMesh {
  readonly client: RunningSidecar;
  readonly ledger: RunningSidecar;
  readonly echo: Echo;
}

/** A meshed `client` and the meshed tcp service `ledger` (port 7000) whose one instance is a sidecar in front of an echo server. */
async function tcpMesh(options: { extra?: string; mesh?: string; caller?: { config: string; identity: string } } = {}): Promise<TcpMesh> {
  const echo = await startEcho();
  const ledger = await startSidecar(undefined, { app: { host: '127.0.0.1', port: echo.port }, identity: 'ledger' });
  const spec = clientSpec(
    options.mesh ?? '  access: { default: allow }',
    `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ledger }
spec: { ports: [{ port: 7000, appProtocol: tcp }, { port: 80, name: http }], endpoints: { static: [{ address: 127.0.0.1, port: ${ledger.inbound} }] } }
`,
    ...(options.extra ? [options.extra] : []),
  );
  const result = compileTexts({ 'mesh.yaml': spec });
  assert.deepEqual(result.diagnostics.filter((d) => d.severity === 'error').map((d) => `${d.code} ${d.message}`), []);
  assert.ok(ledger.sidecar.store.apply(result.mesh!.configs.get('ledger')!, 'file').ok);
  const client = await startSidecar(result.mesh!.configs.get(options.caller?.config ?? 'client'), { ...(options.caller ? { identity: options.caller.identity } : {}), tcpUpstreams: [{ host: '127.0.0.1', port: 0, service: 'ledger', servicePort: 7000 }] });
  return { client, ledger, echo };
}

/** CONNECT `authority` through the sidecar's outbound port: the tunnel, or the refusal. */
function connectThrough(port: number, authority: string): Promise<{ ok: true; socket: Socket } | { ok: false; status: number; code: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: 'CONNECT', path: authority, agent: false });
    req.on('connect', (res, socket) => {
      if (res.statusCode === 200) resolve({ ok: true, socket });
      else {
        socket.destroy();
        resolve({ ok: false, status: res.statusCode ?? 0, code: res.headers['x-trellis-error'] as string | undefined });
      }
    });
    req.on('error', reject);
    req.end();
  });
}

/** Writes `text`, ends the write side, and reads everything until the other side ends. */
function exchange(socket: Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString()));
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
    socket.end(text);
  });
}

async function metrics(sc: RunningSidecar): Promise<string> {
  return (await fetch(`http://127.0.0.1:${sc.admin}/metrics`)).text();
}

describe('TCP through sidecars', () => {
  test('CONNECT to a tcp service: bytes echo through an mTLS tunnel between the sidecars; half-close passes through', async () => {
    const mesh = await tcpMesh();
    const t = await connectThrough(mesh.client.outbound, 'ledger:7000');
    assert.ok(t.ok);
    assert.equal(await exchange(t.socket, 'hello over tcp'), 'hello over tcp');
    assert.equal(mesh.echo.connections, 1);
    const callee = await metrics(mesh.ledger);
    assert.equal(metricValue(callee, 'trellis_inbound_connections_total', { transport: 'mtls' }), 1);
    assert.equal(metricValue(callee, 'trellis_tcp_connections_total', { reporter: 'inbound', source_workload: 'client', result: 'opened' }), 1);
    const caller = await metrics(mesh.client);
    assert.equal(metricValue(caller, 'trellis_tcp_connections_total', { reporter: 'outbound', destination_service: 'ledger', result: 'opened' }), 1);
    assert.equal(metricValue(caller, 'trellis_tcp_bytes_total', { reporter: 'outbound', direction: 'sent' }), 'hello over tcp'.length);
    assert.equal(metricValue(caller, 'trellis_tcp_bytes_total', { reporter: 'outbound', direction: 'received' }), 'hello over tcp'.length);
  });

  test('a local --tcp-upstream port carries the service port for clients that only dial an address; tunnels share one connection', async () => {
    const mesh = await tcpMesh();
    for (const word of ['one', 'two', 'three']) {
      const socket = netConnect({ host: '127.0.0.1', port: mesh.client.tcp[0]! });
      assert.equal(await exchange(socket, word), word);
    }
    assert.equal(mesh.echo.connections, 3);
    const callee = await metrics(mesh.ledger);
    // Three TCP connections, one HTTP/2 connection between the sidecars.
    assert.equal(metricValue(callee, 'trellis_inbound_connections_total', { transport: 'mtls' }), 1);
  });

  test("the destination's access policy decides on the caller's verified identity: a caller it does not admit is refused before the app", async () => {
    const policy = `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ledger-callers }
spec:
  targetRefs: [{ kind: Service, name: ledger }]
  rules:
    - from: [{ service: auditor }]
`;
    const auditor = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: auditor }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
`;
    // The compiler gives `client` no route to ledger at all...
    const narrowed = await tcpMesh({ extra: `${policy}---\n${auditor}` });
    const none = await connectThrough(narrowed.client.outbound, 'ledger:7000');
    assert.ok(!none.ok);
    assert.equal(none.code, 'unknown_service');
    // ...and a caller that has one anyway (the auditor's config) but proves to be `client`
    // by its certificate is refused by ledger's sidecar, before any byte reaches the app.
    const mesh = await tcpMesh({ extra: `${policy}---\n${auditor}`, caller: { config: 'auditor', identity: 'client' } });
    const t = await connectThrough(mesh.client.outbound, 'ledger:7000');
    assert.ok(!t.ok);
    assert.equal(t.status, 403);
    assert.equal(t.code, 'access_denied');
    assert.equal(mesh.echo.connections, 0);
    const callee = await metrics(mesh.ledger);
    assert.equal(metricValue(callee, 'trellis_tcp_connections_total', { reporter: 'inbound', source_workload: 'client', result: 'access_denied' }), 1);
  });

  test('an AccessPolicy rule that names methods or paths admits no connection, even for a caller it names', async () => {
    const policy = `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ledger-l7 }
spec:
  targetRefs: [{ kind: Service, name: ledger }]
  rules:
    - from: [{ service: client }]
      to: [{ methods: [CONNECT] }]
`;
    const mesh = await tcpMesh({ extra: policy });
    const t = await connectThrough(mesh.client.outbound, 'ledger:7000');
    assert.ok(!t.ok);
    assert.equal(t.code, 'access_denied');
    assert.equal(mesh.echo.connections, 0);
  });

  test('CONNECT to a port that is not tcp, or to an unknown service, is refused with its code', async () => {
    const mesh = await tcpMesh();
    const http = await connectThrough(mesh.client.outbound, 'ledger:80');
    assert.ok(!http.ok);
    assert.equal(http.status, 405);
    assert.equal(http.code, 'not_a_tcp_port');
    const unknown = await connectThrough(mesh.client.outbound, 'nowhere:7000');
    assert.ok(!unknown.ok);
    assert.equal(unknown.code, 'unknown_service');
  });

  test("TrafficPolicy: maxConnections bounds open connections (the next is refused overloaded); an idle connection is closed after idleTimeout", async () => {
    const policy = `apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: { name: ledger-limits }
spec:
  targetRefs: [{ kind: Service, name: ledger }]
  circuitBreaker: { maxConnections: 1 }
  connection: { idleTimeout: 300ms }
`;
    const mesh = await tcpMesh({ extra: policy });
    // The idle timer starts once the connection is open, so never before this.
    const openedAt = Date.now();
    const first = await connectThrough(mesh.client.outbound, 'ledger:7000');
    assert.ok(first.ok);
    const second = await connectThrough(mesh.client.outbound, 'ledger:7000');
    assert.ok(!second.ok);
    assert.equal(second.code, 'overloaded');
    // The first, left idle, is closed by the sidecar, and not before its idle timeout.
    await new Promise<void>((resolve) => first.socket.on('close', () => resolve()).resume());
    assert.ok(Date.now() - openedAt >= 290, `closed ${Date.now() - openedAt} ms after it opened; the idle timeout is 300 ms`);
    // Its slot is free again.
    const third = await connectThrough(mesh.client.outbound, 'ledger:7000');
    assert.ok(third.ok);
    assert.equal(await exchange(third.socket, 'again'), 'again');
  });
});

describe('--tcp-upstream', () => {
  test('parses [host:]port=service:port and refuses anything else with the form it wants', async () => {
    const { parseTcpUpstream } = await import('../../src/sidecar/tcp-upstream.ts');
    assert.deepEqual(parseTcpUpstream('15432=ledger:7000'), { host: '127.0.0.1', port: 15432, service: 'ledger', servicePort: 7000 });
    assert.deepEqual(parseTcpUpstream('127.0.0.2:0=shop/ledger:7000'), { host: '127.0.0.2', port: 0, service: 'shop/ledger', servicePort: 7000 });
    for (const bad of ['15432', 'ledger:7000', '15432=ledger', '15432=Ledger:7000', '70000=ledger:7000', '15432=ledger:0', ':1=ledger:7000']) {
      assert.match(parseTcpUpstream(bad) as string, /takes \[HOST:\]PORT=SERVICE:PORT/, bad);
    }
  });
});
