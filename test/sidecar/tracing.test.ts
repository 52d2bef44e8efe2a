/**
 * Traces from real sidecars to a real OTLP/HTTP receiver (a node:http server on port 0 that
 * keeps the JSON bodies POSTed to /v1/traces): the parent/child chain of a two-hop call
 * (the app's traceparent → the caller's CLIENT span → the callee's SERVER spans → the
 * callee's app), span attributes and status, B3 propagation, sampling, a collector that is
 * down, and, through `trellis sidecar` processes, the flag, the environment variable and a
 * module graph without the SDK when tracing is off.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { after, describe, test } from 'node:test';
import { pino, type Logger } from 'pino';
import { extractContext, injectContext, parseB3, parseTraceparent, SHUTDOWN_BOUND_MS } from '../../src/sidecar/tracing.ts';
import { tracesUrl } from '../../src/cli/sidecar.ts';
import { backendsSpec, cleanup, closedPort, configOf, send, startSidecar, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';
import { clientApiSpec, compileTexts } from '../helpers/spec.ts';
import { startTrellis, stopProcesses, tempDir } from '../helpers/processes.ts';

after(async () => {
  await cleanup();
  await stopProcesses();
});

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const APP_SPAN = '00f067aa0ba902b7';
const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CLIENT = 3;
const STATUS_ERROR = 2;

/** One span as the receiver got it, with its resource's service name and attributes as plain values. */
interface ReceivedSpan {
  readonly service: string;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string;
  readonly name: string;
  readonly kind: number;
  readonly status: { readonly code?: number; readonly message?: string };
  readonly attributes: Record<string, string | number | boolean>;
}

interface Receiver {
  readonly url: string;
  readonly spans: ReceivedSpan[];
  /** Requests of any kind it got. */
  requests: number;
}

type OtlpValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number };
type OtlpAttribute = { key: string; value: OtlpValue };

function plain(attributes: readonly OtlpAttribute[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const a of attributes ?? []) out[a.key] = a.value.stringValue ?? a.value.boolValue ?? a.value.doubleValue ?? Number(a.value.intValue);
  return out;
}

/** A logger whose JSON lines are kept. */
function capturedLog(): { lines: string[]; logger: Logger } {
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(chunk.toString()), done()) }));
  return { lines, logger };
}

/** An OTLP/HTTP receiver on 127.0.0.1:0 that decodes JSON export requests; with `refuse`, answers every export with that status instead. */
async function startReceiver(refuse?: number): Promise<Receiver> {
  const receiver: Receiver = { url: '', spans: [], requests: 0 };
  const server: Server = createServer((req, res) => {
    receiver.requests++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (refuse !== undefined || req.method !== 'POST' || req.url !== '/v1/traces' || !String(req.headers['content-type']).startsWith('application/json')) {
        res.writeHead(refuse ?? 415).end();
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        resourceSpans: Array<{ resource: { attributes: OtlpAttribute[] }; scopeSpans: Array<{ spans: Array<Omit<ReceivedSpan, 'service' | 'attributes'> & { attributes: OtlpAttribute[] }> }> }>;
      };
      for (const rs of body.resourceSpans) {
        const service = String(plain(rs.resource.attributes)['service.name']);
        for (const ss of rs.scopeSpans) for (const s of ss.spans) receiver.spans.push({ ...s, parentSpanId: s.parentSpanId ?? '', status: s.status ?? {}, service, attributes: plain(s.attributes) });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => new Promise<void>((r) => server.close(() => r())));
  return Object.assign(receiver, { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces` });
}

const RETRY_ROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api-retry }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: api, port: 80 }]
      retry: { attempts: 2, codes: [503], backoff: 1ms }
`;

describe('trace context in headers', () => {
  test('traceparent: version 00 exactly, ids not all zero; later versions by their first fields', () => {
    assert.deepEqual(parseTraceparent(`00-${TRACE_ID}-${APP_SPAN}-01`), { traceId: TRACE_ID, spanId: APP_SPAN, sampled: true });
    assert.deepEqual(parseTraceparent(`00-${TRACE_ID}-${APP_SPAN}-00`)?.sampled, false);
    assert.equal(parseTraceparent(`00-${TRACE_ID}-${APP_SPAN}-01-extra`), undefined);
    assert.equal(parseTraceparent(`ff-${TRACE_ID}-${APP_SPAN}-01`), undefined);
    assert.equal(parseTraceparent(`00-${'0'.repeat(32)}-${APP_SPAN}-01`), undefined);
    assert.equal(parseTraceparent(`00-${TRACE_ID}-${'0'.repeat(16)}-01`), undefined);
    assert.equal(parseTraceparent(`00-${TRACE_ID.toUpperCase()}-${APP_SPAN}-01`), undefined);
    assert.deepEqual(parseTraceparent(`01-${TRACE_ID}-${APP_SPAN}-01-more`)?.traceId, TRACE_ID);
  });

  test('B3, single and multiple headers; 64-bit trace ids padded; traceparent wins over B3', () => {
    assert.deepEqual(parseB3({ b3: `a3ce929d0e0e4736-${APP_SPAN}-1` }), { traceId: `0000000000000000a3ce929d0e0e4736`, spanId: APP_SPAN, sampled: true });
    assert.equal(parseB3({ b3: `${TRACE_ID}-${APP_SPAN}-0` })?.sampled, false);
    assert.equal(parseB3({ b3: '0' }), undefined);
    assert.deepEqual(parseB3({ 'x-b3-traceid': TRACE_ID, 'x-b3-spanid': APP_SPAN }), { traceId: TRACE_ID, spanId: APP_SPAN, sampled: true });
    assert.equal(parseB3({ 'x-b3-traceid': TRACE_ID, 'x-b3-spanid': APP_SPAN, 'x-b3-sampled': '0' })?.sampled, false);
    assert.equal(parseB3({ 'x-b3-traceid': TRACE_ID, 'x-b3-spanid': APP_SPAN, 'x-b3-sampled': '0', 'x-b3-flags': '1' })?.sampled, true, 'debug means sampled');
    assert.equal(parseB3({ 'x-b3-traceid': 'xyz', 'x-b3-spanid': APP_SPAN }), undefined);
    const other = 'b'.repeat(32);
    assert.equal(extractContext({ traceparent: `00-${TRACE_ID}-${APP_SPAN}-01`, 'x-b3-traceid': other, 'x-b3-spanid': APP_SPAN })?.traceId, TRACE_ID);
    assert.equal(extractContext({ traceparent: 'garbage', 'x-b3-traceid': other, 'x-b3-spanid': APP_SPAN })?.traceId, other);
  });

  test('injecting writes traceparent and keeps the B3 forms the request came with consistent', () => {
    const span = '1111111111111111';
    const headers: Record<string, string | string[]> = { 'x-b3-traceid': 'a3ce929d0e0e4736', 'x-b3-spanid': APP_SPAN, b3: `a3ce929d0e0e4736-${APP_SPAN}-1` };
    injectContext(headers, '0000000000000000a3ce929d0e0e4736', span, true, APP_SPAN, { multi: true, single: true, traceId: 'a3ce929d0e0e4736' });
    assert.deepEqual(headers, {
      traceparent: `00-0000000000000000a3ce929d0e0e4736-${span}-01`,
      'x-b3-traceid': 'a3ce929d0e0e4736',
      'x-b3-spanid': span,
      'x-b3-parentspanid': APP_SPAN,
      'x-b3-sampled': '1',
      b3: `a3ce929d0e0e4736-${span}-1-${APP_SPAN}`,
    });
    // B3 that disagreed with the traceparent the span continued takes the span's trace.
    const mixed: Record<string, string | string[]> = { 'x-b3-traceid': 'c'.repeat(16), 'x-b3-spanid': APP_SPAN, 'x-b3-parentspanid': 'dddddddddddddddd' };
    injectContext(mixed, TRACE_ID, span, false, undefined, { multi: true, single: false, traceId: 'c'.repeat(16) });
    assert.deepEqual(mixed, { traceparent: `00-${TRACE_ID}-${span}-00`, 'x-b3-traceid': TRACE_ID, 'x-b3-spanid': span, 'x-b3-sampled': '0' });
  });

  test('the collector URL from a base URL or a traces URL', () => {
    assert.equal(tracesUrl('http://127.0.0.1:4318'), 'http://127.0.0.1:4318/v1/traces');
    assert.equal(tracesUrl('http://collector:4318/otlp/'), 'http://collector:4318/otlp/v1/traces');
    assert.equal(tracesUrl('https://c.example/v1/traces'), 'https://c.example/v1/traces');
  });
});

describe('spans from sidecars', () => {
  test("two hops: the app's traceparent → the caller's CLIENT span → the callee's SERVER spans → the callee's app", async () => {
    const receiver = await startReceiver();
    const tracing = { url: receiver.url, sampleRatio: 1 };
    let calls = 0;
    const app = await startUpstream('app', (_req, res) => {
      calls++;
      res.writeHead(calls === 1 ? 503 : 200, { 'content-type': 'text/plain' });
      res.end(calls === 1 ? 'busy' : 'ok');
    });
    const api = await startSidecar(undefined, { service: 'api', app: { host: '127.0.0.1', port: app.port }, identity: null, tracing });
    const result = compileTexts({ 'mesh.yaml': clientApiSpec(api.inbound, undefined, RETRY_ROUTE) });
    assert.ok(result.mesh, JSON.stringify(result.diagnostics.map((d) => d.message)));
    assert.ok(api.sidecar.store.apply(result.mesh.configs.get('api'), 'file').ok);
    const { credentialFor } = await import('../helpers/identity.ts');
    assert.ok(api.sidecar.identity.offer(await credentialFor('api')).ok);
    const client = await startSidecar(result.mesh.configs.get('client'), { tracing });

    const r = await send(client.outbound, 'api', '/orders?id=7', { headers: { traceparent: `00-${TRACE_ID}-${APP_SPAN}-01`, tracestate: 'vendor=x' } });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'ok');
    // Stopping sends what is queued: no waiting on the export timer.
    await client.stop();
    await api.stop();
    await waitFor(() => receiver.spans.length >= 3, 'three spans at the receiver');
    assert.equal(receiver.spans.length, 3, JSON.stringify(receiver.spans));

    const clientSpan = receiver.spans.find((s) => s.kind === SPAN_KIND_CLIENT)!;
    assert.ok(clientSpan, 'a CLIENT span');
    assert.equal(clientSpan.service, 'client');
    assert.equal(clientSpan.traceId, TRACE_ID);
    assert.equal(clientSpan.parentSpanId, APP_SPAN, "the CLIENT span is a child of the app's span");
    assert.equal(clientSpan.name, 'GET api');
    assert.deepEqual(
      { ...clientSpan.attributes },
      {
        'http.request.method': 'GET',
        'url.path': '/orders',
        'http.response.status_code': 200,
        'trellis.route': 'api-retry',
        'trellis.source.workload': 'client',
        'trellis.destination.service': 'api',
        'trellis.response_flags': '-',
        'trellis.backend': `127.0.0.1:${api.inbound}`,
        'trellis.retries': 1,
      },
    );
    assert.notEqual(clientSpan.status.code, STATUS_ERROR);

    const serverSpans = receiver.spans.filter((s) => s.kind === SPAN_KIND_SERVER);
    assert.equal(serverSpans.length, 2, 'one SERVER span per attempt');
    for (const s of serverSpans) {
      assert.equal(s.service, 'api');
      assert.equal(s.traceId, TRACE_ID);
      assert.equal(s.parentSpanId, clientSpan.spanId, 'each attempt is a child of the CLIENT span');
      assert.equal(s.attributes['trellis.source.workload'], 'client', 'the verified caller');
      assert.equal(s.attributes['trellis.backend'], `127.0.0.1:${app.port}`);
      assert.equal(s.attributes['trellis.retries'], undefined, 'retries belong to CLIENT spans');
    }
    const [failed, served] = [serverSpans.find((s) => s.attributes['http.response.status_code'] === 503)!, serverSpans.find((s) => s.attributes['http.response.status_code'] === 200)!];
    assert.equal(failed.status.code, STATUS_ERROR, 'a 5xx is an error');
    assert.equal(failed.attributes['error.type'], '503');
    assert.notEqual(served.status.code, STATUS_ERROR);

    // The app sees the SERVER span as its parent, and the tracestate it was sent.
    assert.equal(app.seen.length, 2);
    assert.equal(app.seen[1]!.headers.traceparent, `00-${TRACE_ID}-${served.spanId}-01`);
    assert.equal(app.seen[1]!.headers.tracestate, 'vendor=x');
    assert.equal(app.seen[0]!.headers.traceparent, `00-${TRACE_ID}-${failed.spanId}-01`);
  });

  test('B3 in, B3 out: the span continues the B3 trace and the upstream gets consistent B3 and traceparent', async () => {
    const receiver = await startReceiver();
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'), { tracing: { url: receiver.url, sampleRatio: 1 } });
    const b3Trace = 'a3ce929d0e0e4736';
    const r = await send(sc.outbound, 'api', '/', { headers: { 'x-b3-traceid': b3Trace, 'x-b3-spanid': APP_SPAN, 'x-b3-sampled': '1' } });
    assert.equal(r.status, 200);
    await sc.stop();
    await waitFor(() => receiver.spans.length >= 1, 'a span');
    const [span] = receiver.spans;
    assert.equal(span!.traceId, `0000000000000000${b3Trace}`);
    assert.equal(span!.parentSpanId, APP_SPAN);
    const seen = api.seen[0]!.headers;
    assert.equal(seen['x-b3-traceid'], b3Trace, 'a 64-bit B3 trace id stays 64 bits');
    assert.equal(seen['x-b3-spanid'], span!.spanId);
    assert.equal(seen['x-b3-parentspanid'], APP_SPAN);
    assert.equal(seen['x-b3-sampled'], '1');
    assert.equal(seen.traceparent, `00-0000000000000000${b3Trace}-${span!.spanId}-01`);
  });

  test("sampling: new traces at the ratio (0 here), a caller's decision followed either way, its context passed on regardless", async () => {
    const receiver = await startReceiver();
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'), { tracing: { url: receiver.url, sampleRatio: 0 } });
    assert.equal((await send(sc.outbound, 'api', '/new')).status, 200);
    assert.equal((await send(sc.outbound, 'api', '/unsampled', { headers: { traceparent: `00-${TRACE_ID}-${APP_SPAN}-00` } })).status, 200);
    assert.equal((await send(sc.outbound, 'api', '/sampled', { headers: { traceparent: `00-${TRACE_ID}-${APP_SPAN}-01` } })).status, 200);
    await sc.stop();
    await waitFor(() => receiver.spans.length >= 1, 'a span');
    assert.deepEqual(
      receiver.spans.map((s) => s.attributes['url.path']),
      ['/sampled'],
    );
    const [fresh, unsampled] = api.seen.map((s) => String(s.headers.traceparent));
    assert.match(fresh!, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/, 'an unrecorded new trace still gets a traceparent, marked unsampled');
    assert.match(unsampled!, new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-00$`));
    assert.ok(!unsampled!.includes(APP_SPAN), 'a new span id for the hop, even unrecorded');
  });

  test('a proxy error (even a 4xx) is an error span with its code, and no backend', async () => {
    const receiver = await startReceiver();
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'), { tracing: { url: receiver.url, sampleRatio: 1 } });
    assert.equal((await send(sc.outbound, 'nowhere', '/')).status, 404);
    await sc.stop();
    await waitFor(() => receiver.spans.length >= 1, 'a span');
    const [span] = receiver.spans;
    assert.equal(span!.status.code, STATUS_ERROR);
    assert.equal(span!.attributes['trellis.response_flags'], 'unknown_service');
    assert.equal(span!.attributes['error.type'], 'unknown_service');
    assert.equal(span!.attributes['trellis.backend'], undefined, 'no backend was reached');
  });

  test('a collector that refuses spans costs traffic nothing and is logged once, not per batch', async () => {
    const { lines, logger } = capturedLog();
    const receiver = await startReceiver(400);
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'), { tracing: { url: receiver.url, sampleRatio: 1, exportIntervalMs: 10 }, logger });
    const failed = () => lines.filter((l) => l.includes('"type":"trace_export_failed"')).length;
    assert.equal((await send(sc.outbound, 'api', '/')).status, 200);
    await waitFor(() => failed() === 1, 'the export failure logged');
    // Each further span is its own batch: wait for its export before the next request.
    for (let i = 0; i < 3; i++) {
      const before = receiver.requests;
      assert.equal((await send(sc.outbound, 'api', '/')).status, 200);
      await waitFor(() => receiver.requests > before, `export ${i + 2} refused`);
    }
    await sc.stop();
    assert.equal(failed(), 1);
  });

  test('a collector that is down: traffic flows, and stopping waits for the last spans only within its bound', async () => {
    const { lines, logger } = capturedLog();
    const down = await closedPort();
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'), { tracing: { url: `http://127.0.0.1:${down}/v1/traces`, sampleRatio: 1 }, logger });
    for (let i = 0; i < 20; i++) assert.equal((await send(sc.outbound, 'api', '/')).status, 200);
    const started = performance.now();
    await sc.stop();
    const took = performance.now() - started;
    // The exporter retries a refused connection with backoff for up to 10 s; stop does not wait for that.
    assert.ok(took >= SHUTDOWN_BOUND_MS - 50 && took < SHUTDOWN_BOUND_MS + 1000, `stop took ${Math.round(took)} ms`);
    assert.ok(lines.some((l) => l.includes('"type":"trace_export_abandoned"')));
  });
});

describe('trellis sidecar processes', () => {
  /**
   * A module hook for `--import`: appends every resolved module URL to $TRELLIS_TEST_MODULE_LOG;
   * with $TRELLIS_TEST_HIDE_SDK set, resolving the trace SDK fails as in an install without it.
   */
  function moduleLogger(dir: string): string {
    const hook = join(dir, 'log-modules.mjs');
    writeFileSync(
      hook,
      `import { registerHooks } from 'node:module';
import { appendFileSync } from 'node:fs';
const out = process.env.TRELLIS_TEST_MODULE_LOG;
registerHooks({
  resolve(specifier, context, next) {
    if (process.env.TRELLIS_TEST_HIDE_SDK && specifier === '@opentelemetry/sdk-trace') throw Object.assign(new Error("Cannot find package '@opentelemetry/sdk-trace'"), { code: 'ERR_MODULE_NOT_FOUND' });
    const r = next(specifier, context);
    appendFileSync(out, r.url + '\\n');
    return r;
  },
});
`,
    );
    return pathToFileURL(hook).href;
  }

  test('without --otlp-endpoint no OpenTelemetry SDK is loaded and nothing is sent; with it (or OTEL_EXPORTER_OTLP_ENDPOINT) spans arrive, flushed on SIGTERM', async () => {
    const dir = tempDir();
    const hook = moduleLogger(dir);
    const receiver = await startReceiver();
    const api = await startUpstream('api');
    const configFile = join(dir, 'client.json');
    writeFileSync(configFile, JSON.stringify(configOf(backendsSpec({ api: [api.port] }), 'client')));
    const listen = ['--outbound', '127.0.0.1:0', '--inbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'];
    const noOtelEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '' };

    let output = '';
    async function run(name: string, flags: string[], env: Record<string, string>): Promise<string[]> {
      const log = join(dir, `${name}.modules`);
      writeFileSync(log, '');
      const proc = await startTrellis(['sidecar', '--config', configFile, ...listen, ...flags], { ...noOtelEnv, ...env, NODE_OPTIONS: `--import=${hook}`, TRELLIS_TEST_MODULE_LOG: log });
      assert.equal((await send(proc.listening.outbound!, 'api', `/${name}`)).status, 200);
      proc.child.kill('SIGTERM');
      assert.equal(await proc.exited, 0, proc.output());
      output = proc.output();
      return readFileSync(log, 'utf8').split('\n').filter((u) => u.includes('/node_modules/@opentelemetry/'));
    }

    const untraced = await run('untraced', [], {});
    const packages = (urls: string[]) => [...new Set(urls.map((u) => /\/node_modules\/(@opentelemetry\/[^/]+)\//.exec(u)![1]!))].sort();
    // prom-client requires @opentelemetry/api (for exemplars) whatever Trellis does: seeing
    // it shows the hook sees the bundle's require() calls too.
    assert.deepEqual(packages(untraced), ['@opentelemetry/api'], 'only the API, through prom-client');
    assert.equal(receiver.requests, 0);

    const flagged = await run('flagged', ['--otlp-endpoint', receiver.url.replace('/v1/traces', ''), '--trace-sample-ratio', '1'], {});
    assert.ok(packages(flagged).includes('@opentelemetry/sdk-trace') && packages(flagged).includes('@opentelemetry/exporter-trace-otlp-http'), packages(flagged).join(' '));
    await waitFor(() => receiver.spans.some((s) => s.attributes['url.path'] === '/flagged'), 'the span of the --otlp-endpoint sidecar');

    await run('from-env', [], { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url.replace('/v1/traces', '') });
    await waitFor(() => receiver.spans.some((s) => s.attributes['url.path'] === '/from-env'), 'the span of the OTEL_EXPORTER_OTLP_ENDPOINT sidecar');
    const span = receiver.spans.find((s) => s.attributes['url.path'] === '/from-env')!;
    assert.equal(span.service, 'client');
    assert.equal(span.kind, SPAN_KIND_CLIENT);
    assert.equal(receiver.spans.some((s) => s.attributes['url.path'] === '/untraced'), false);

    // Tracing configured, the SDK missing: the sidecar says so and serves untraced.
    await run('no-sdk', ['--otlp-endpoint', receiver.url], { TRELLIS_TEST_HIDE_SDK: '1' });
    assert.match(output, /"type":"tracing_unavailable"/);
    assert.equal(receiver.spans.some((s) => s.attributes['url.path'] === '/no-sdk'), false);
  });

  test('a sample ratio outside 0..1 or an endpoint that is not an http URL is a usage error', async () => {
    const { runSidecar } = await import('../../src/cli/sidecar.ts');
    const run = async (flags: Record<string, string>, env: Record<string, string> = {}) => {
      let err = '';
      const io = { stdout: { write: () => true }, stderr: { write: (s: string) => ((err += s), true) }, env } as unknown as Parameters<typeof runSidecar>[1];
      const code = await runSidecar({ app: { host: '127.0.0.1' }, outbound: { host: '127.0.0.1', port: 0 }, inbound: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, drainTimeout: 0, headerTimeout: 1000, bodyTimeout: 0, ...flags }, io);
      return { code, err };
    };
    for (const ratio of ['1.5', '-0.1', 'half', '']) {
      const r = await run({ traceSampleRatio: ratio });
      assert.equal(r.code, 2, ratio);
      assert.match(r.err, /--trace-sample-ratio takes a number from 0 to 1/);
    }
    assert.match((await run({ otlpEndpoint: 'collector:4318' })).err, /--otlp-endpoint takes an http\(s\) URL/);
    assert.match((await run({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://c:4317' })).err, /OTEL_EXPORTER_OTLP_ENDPOINT takes an http\(s\) URL/);
  });
});
