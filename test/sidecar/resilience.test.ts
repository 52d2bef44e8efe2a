/** Retries and their budget, timeouts, the circuit breaker, outlier detection, faults and malformed requests, end to end. */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, describe, test } from 'node:test';
import { ManualClock } from '../../src/sidecar/clock.ts';
import { backendsSpec, cleanup, closedPort, configOf, metricValue, send, startSidecar, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';

after(cleanup);

function apiRoute(rule: string): string {
  return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: api, port: 80 }]
${rule}`;
}

function policy(body: string): string {
  return `
---
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: { name: api }
spec:
  targetRefs: [{ kind: Service, name: api }]
${body}`;
}

/** An upstream that answers `failures` times with `status`, then 200. */
async function flaky(failures: number, status = 503) {
  return startUpstream('flaky', (_req, res, _body, seen) => {
    res.writeHead(seen.length <= failures ? status : 200);
    res.end(seen.length <= failures ? 'fail' : 'ok');
  });
}

async function metrics(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

describe('retries', () => {
  test('retry on a listed code until success, within attempts', async () => {
    const api = await flaky(2);
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }, apiRoute('      retry: { attempts: 2, codes: [503], backoff: 1ms }')), 'client'));
    const r = await send(sc.outbound, 'api', '/');
    assert.equal(r.status, 200);
    assert.equal(api.seen.length, 3);
    assert.equal(metricValue(await metrics(sc.admin), 'trellis_retries_total', { destination_service: 'api', reason: '503' }), 2);
  });

  test('attempts run out: the last failure is returned as is', async () => {
    const api = await flaky(10);
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }, apiRoute('      retry: { attempts: 1, codes: [503], backoff: 1ms }')), 'client'));
    const r = await send(sc.outbound, 'api', '/');
    assert.equal(r.status, 503);
    assert.equal(r.body, 'fail');
    assert.equal(api.seen.length, 2);
  });

  test('a POST is not retried on a status code, unless it carries an Idempotency-Key', async () => {
    const api = await flaky(1);
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }, apiRoute('      retry: { attempts: 2, codes: [503], backoff: 1ms }')), 'client'));
    assert.equal((await send(sc.outbound, 'api', '/', { method: 'POST', body: 'charge' })).status, 503);
    assert.equal(api.seen.length, 1);
    const api2 = await flaky(1);
    const sc2 = await startSidecar(configOf(backendsSpec({ api: [api2.port] }, apiRoute('      retry: { attempts: 2, codes: [503], backoff: 1ms }')), 'client'));
    const r = await send(sc2.outbound, 'api', '/', { method: 'POST', body: 'charge', headers: { 'idempotency-key': 'k1' } });
    assert.equal(r.status, 200);
    assert.deepEqual(api2.seen.map((s) => s.body), ['charge', 'charge'], 'the body is sent again in full');
  });

  test('a connect failure is retried on another endpoint, even for a POST', async () => {
    const api = await startUpstream('api');
    const dead = await closedPort();
    const spec = backendsSpec({ api: [dead, api.port] }, apiRoute('      retry: { attempts: 1, backoff: 1ms }') + policy('  loadBalancer: { type: round-robin }'));
    const sc = await startSidecar(configOf(spec, 'client'));
    for (let i = 0; i < 6; i++) assert.equal((await send(sc.outbound, 'api', '/', { method: 'POST', body: 'x' })).status, 200);
    assert.ok(metricValue(await metrics(sc.admin), 'trellis_retries_total', { reason: 'connect_failure' }) >= 1);
  });

  test('a retry goes to another endpoint than the one that just failed', async () => {
    // Issue 16: under least-request (two idle endpoints tie, and the first drawn wins) half
    // of the retries went back to the endpoint that had just answered 503.
    const good = await startUpstream('good');
    const bad = await startUpstream('bad', (_req, res) => {
      res.writeHead(503);
      res.end('down');
    });
    const spec = backendsSpec({ api: [bad.port, good.port] }, apiRoute('      retry: { attempts: 1, codes: [503], backoff: 1ms }') + policy('  loadBalancer: { type: least-request }\n  outlierDetection: { consecutive5xx: 1000, consecutiveGatewayErrors: 1000 }\n  retryBudget: { ratio: 1, minRetriesPerSecond: 1000, ttl: 10s }'));
    const sc = await startSidecar(configOf(spec, 'client'));
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) statuses.push((await send(sc.outbound, 'api', `/r/${i}`)).status);
    assert.deepEqual(statuses.filter((s) => s !== 200), [], 'every request that met the bad endpoint first was retried on the good one');
    assert.ok(bad.seen.length > 0, 'the bad endpoint was tried');
  });

  test('the retry budget caps retries: with no budget, nothing is retried', async () => {
    const api = await flaky(1000);
    const spec = backendsSpec({ api: [api.port] }, apiRoute('      retry: { attempts: 3, codes: [503], backoff: 1ms }') + policy('  retryBudget: { ratio: 0, minRetriesPerSecond: 0, ttl: 10s }'));
    const sc = await startSidecar(configOf(spec, 'client'));
    for (let i = 0; i < 5; i++) assert.equal((await send(sc.outbound, 'api', '/')).status, 503);
    assert.equal(api.seen.length, 5, 'each request was sent once');
    assert.equal(metricValue(await metrics(sc.admin), 'trellis_retries_denied_total', { destination_service: 'api' }), 5);
  });

  test('a budget of 20% lets about one retry through per five requests', async () => {
    const api = await flaky(1000);
    const spec = backendsSpec({ api: [api.port] }, apiRoute('      retry: { attempts: 3, codes: [503], backoff: 1ms }') + policy('  retryBudget: { ratio: 0.2, minRetriesPerSecond: 0, ttl: 10s }'));
    const sc = await startSidecar(configOf(spec, 'client'));
    for (let i = 0; i < 50; i++) await send(sc.outbound, 'api', '/');
    const retries = api.seen.length - 50;
    assert.ok(retries >= 5 && retries <= 10, `expected about 10 retries for 50 requests, got ${retries}`);
  });
});

describe('timeouts', () => {
  test('the request timeout answers 504 request_timeout', async () => {
    const api = await startUpstream('slow', () => undefined); // never answers
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }, apiRoute('      timeouts: { request: 150ms }\n      retry: { attempts: 0 }')), 'client'));
    const r = await send(sc.outbound, 'api', '/');
    assert.equal(r.status, 504);
    assert.equal(r.headers['x-trellis-error'], 'request_timeout');
  });

  test('a per-try timeout is retried when 504 is retryable, within the request timeout', async () => {
    const api = await startUpstream('api', (_req, res, _b, seen) => {
      if (seen.length === 1) return; // the first try hangs
      res.end('second');
    });
    const sc = await startSidecar(
      configOf(backendsSpec({ api: [api.port] }, apiRoute('      timeouts: { request: 5s, backendRequest: 100ms }\n      retry: { attempts: 1, codes: [504], backoff: 1ms }')), 'client'),
    );
    const r = await send(sc.outbound, 'api', '/');
    assert.equal(r.status, 200);
    assert.equal(r.body, 'second');
  });

  test('a client that never finishes its headers (slowloris) is cut off', async () => {
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'), { headerTimeoutMs: 300 });
    const socket = connect(sc.outbound, '127.0.0.1');
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.write('GET / HTTP/1.1\r\nHost: api\r\nX-Slow: ');
    const trickle = setInterval(() => socket.writable && socket.write('a'), 50);
    await closed;
    clearInterval(trickle);
    assert.match(received, /^HTTP\/1\.1 408/);
    assert.equal(api.seen.length, 0);
  });
});

describe('circuit breaker', () => {
  test('requests beyond maxRequests in flight get 503 overloaded at once', async () => {
    const held: Array<() => void> = [];
    let holding = true;
    const api = await startUpstream('api', (_req, res) => (holding ? held.push(() => res.end('done')) : res.end('done')));
    const spec = backendsSpec({ api: [api.port] }, apiRoute('      retry: { attempts: 0 }') + policy('  circuitBreaker: { maxRequests: 2, maxConnections: 2, maxPendingRequests: 10 }'));
    const sc = await startSidecar(configOf(spec, 'client'));
    const first = [send(sc.outbound, 'api', '/1'), send(sc.outbound, 'api', '/2')];
    await waitFor(() => held.length === 2, 'two requests held upstream');
    const third = await send(sc.outbound, 'api', '/3');
    assert.equal(third.status, 503);
    assert.equal(third.headers['x-trellis-error'], 'overloaded');
    assert.equal(third.headers['x-trellis-overloaded'], 'true');
    holding = false;
    held.forEach((release) => release());
    assert.deepEqual((await Promise.all(first)).map((r) => r.status), [200, 200]);
    assert.equal((await send(sc.outbound, 'api', '/4')).status, 200, 'the breaker closes once requests finish');
    assert.equal(metricValue(await metrics(sc.admin), 'trellis_circuit_breaker_rejections_total', { destination_service: 'api' }), 1);
  });
});

describe('outlier detection', () => {
  test('an endpoint failing in a row is ejected, then returns once its ejection ends', async () => {
    const bad = await startUpstream('bad', (_req, res) => {
      res.writeHead(500);
      res.end('bad');
    });
    const good = await startUpstream('good');
    const spec = backendsSpec(
      { api: [bad.port, good.port] },
      apiRoute('      retry: { attempts: 0 }') + policy('  loadBalancer: { type: round-robin }\n  outlierDetection: { consecutive5xx: 3, baseEjectionTime: 30s, maxEjectionPercent: 50 }'),
    );
    const clock = new ManualClock(1_000_000);
    const sc = await startSidecar(configOf(spec, 'client'), { clock });
    for (let i = 0; i < 6; i++) await send(sc.outbound, 'api', '/');
    assert.equal(bad.seen.length, 3, 'round-robin reached bad three times, then it was ejected');
    for (let i = 0; i < 10; i++) assert.equal((await send(sc.outbound, 'api', '/')).body, 'good');
    assert.equal(bad.seen.length, 3, 'no traffic while ejected');
    assert.equal(metricValue(await metrics(sc.admin), 'trellis_outlier_ejections_total', { destination_service: 'api' }), 1);
    clock.advance(30_001);
    for (let i = 0; i < 4; i++) await send(sc.outbound, 'api', '/');
    assert.ok(bad.seen.length > 3, 'bad gets traffic again after its ejection time');
  });

  test('the last healthy endpoint is never ejected', async () => {
    const bad = await startUpstream('bad', (_req, res) => {
      res.writeHead(500);
      res.end('bad');
    });
    const spec = backendsSpec({ api: [bad.port] }, apiRoute('      retry: { attempts: 0 }') + policy('  outlierDetection: { consecutive5xx: 1, maxEjectionPercent: 100 }'));
    const sc = await startSidecar(configOf(spec, 'client'));
    for (let i = 0; i < 5; i++) assert.equal((await send(sc.outbound, 'api', '/')).status, 500, 'answers from the backend, not no_endpoints');
  });
});

describe('fault injection and malformed requests', () => {
  test('an abort fault answers with its status and code; the backend is not called', async () => {
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }, policy('  faultInjection: { abort: { httpStatus: 418, percentage: 100 } }')), 'client'));
    const r = await send(sc.outbound, 'api', '/');
    assert.equal(r.status, 418);
    assert.equal(r.headers['x-trellis-error'], 'fault_abort');
    assert.equal(api.seen.length, 0);
  });

  async function raw(port: number, text: string): Promise<string> {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    await new Promise<void>((r) => socket.on('connect', () => r()));
    socket.write(text);
    await new Promise<void>((r) => socket.on('close', () => r()));
    return received;
  }

  test('conflicting Content-Length and Transfer-Encoding (request smuggling) get 400 and a closed connection', async () => {
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'));
    const out = await raw(sc.outbound, 'POST / HTTP/1.1\r\nHost: api\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api\r\n\r\n');
    assert.match(out, /^HTTP\/1\.1 400 /);
    assert.match(out, /x-trellis-error: bad_request/);
    assert.equal(api.seen.length, 0);
  });

  test('OPTIONS * (asterisk form) gets 400 bad_request, not a 502', async () => {
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'));
    const out = await raw(sc.outbound, 'OPTIONS * HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n');
    assert.match(out, /^HTTP\/1\.1 400 /);
    assert.match(out, /x-trellis-error: bad_request/);
    assert.equal(api.seen.length, 0);
  });

  test('oversized headers get 431', async () => {
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'));
    const out = await raw(sc.outbound, `GET / HTTP/1.1\r\nHost: api\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.match(out, /^HTTP\/1\.1 431 /);
    assert.match(out, /x-trellis-error: headers_too_large/);
  });
});
