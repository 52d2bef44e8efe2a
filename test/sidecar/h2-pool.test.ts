/**
 * The HTTP/2 pool against a real h2c server: one session for many requests, a stream the
 * peer refuses unprocessed sent once more on a new session, GOAWAY honoured.
 */
import assert from 'node:assert/strict';
import { constants, createServer, type Http2Server, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { H2Pool } from '../../src/sidecar/h2-pool.ts';
import { connectPlain } from '../../src/sidecar/mesh-connector.ts';

const servers: Http2Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

/** An h2c server; `answer` decides per stream (by its index across the server's life). */
async function h2Server(answer: (stream: ServerHttp2Stream, index: number, session: ServerHttp2Session) => void): Promise<{ port: number; sessions: () => number; streams: () => number }> {
  const server = createServer();
  servers.push(server);
  let sessions = 0;
  let streams = 0;
  server.on('session', () => sessions++);
  server.on('stream', (stream, _headers) => {
    stream.on('error', () => undefined);
    answer(stream, streams++, stream.session as ServerHttp2Session);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, sessions: () => sessions, streams: () => streams };
}

function ok(stream: ServerHttp2Stream): void {
  stream.respond({ ':status': 200 });
  stream.end('ok');
}

const attempt = (body?: Buffer) => ({ method: 'POST', path: '/x', headers: { host: 'svc' }, body, timeoutMs: 2000, signal: new AbortController().signal });

async function text(pool: H2Pool, body?: Buffer): Promise<string> {
  const r = await pool.send(attempt(body));
  assert.ok(r.ok, `expected a response, got ${r.ok ? '' : `${r.failure}: ${r.error.message}`}`);
  let s = '';
  for await (const c of r.body) s += String(c);
  return s;
}

test('many requests share one session', async () => {
  const server = await h2Server((s) => ok(s));
  const pool = new H2Pool(`http://127.0.0.1:${server.port}`, () => connectPlain('127.0.0.1', server.port, 1000), 60_000);
  const all = await Promise.all(Array.from({ length: 20 }, () => text(pool)));
  assert.deepEqual(new Set(all), new Set(['ok']));
  assert.equal(server.sessions(), 1);
  await pool.close();
});

test('a stream refused unprocessed is sent again on a new session, with its body', async () => {
  const bodies: string[] = [];
  const server = await h2Server((stream, index) => {
    if (index === 0) {
      stream.close(constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    let b = '';
    stream.on('data', (c: Buffer) => (b += c));
    stream.on('end', () => {
      bodies.push(b);
      ok(stream);
    });
  });
  const pool = new H2Pool(`http://127.0.0.1:${server.port}`, () => connectPlain('127.0.0.1', server.port, 1000), 60_000);
  assert.equal(await text(pool, Buffer.from('payload')), 'ok');
  assert.deepEqual(bodies, ['payload']);
  assert.equal(server.streams(), 2);
  assert.equal(server.sessions(), 2, 'the refusing session is not used again');
  await pool.close();
});

test('after the peer sends GOAWAY, new requests go over a new session', async () => {
  const server = await h2Server((stream, index, session) => {
    ok(stream);
    if (index === 0) session.close();
  });
  const pool = new H2Pool(`http://127.0.0.1:${server.port}`, () => connectPlain('127.0.0.1', server.port, 1000), 60_000);
  assert.equal(await text(pool), 'ok');
  for (let i = 0; i < 5 && server.sessions() < 2; i++) assert.equal(await text(pool), 'ok');
  assert.equal(server.sessions(), 2);
  await pool.close();
});
