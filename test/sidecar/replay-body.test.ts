/** ReplayBody without sockets: sent while it arrives, replayed whole within the limit, never stuck. */
import assert from 'node:assert/strict';
import { PassThrough, type Readable } from 'node:stream';
import { test } from 'node:test';
import { ReplayBody } from '../../src/sidecar/replay-body.ts';

async function text(r: Readable): Promise<string> {
  let s = '';
  for await (const c of r) s += String(c);
  return s;
}

test('a second stream replays the whole body: what arrived before it, then the rest', async () => {
  const source = new PassThrough();
  const body = new ReplayBody(source, 1024);
  const first = body.stream();
  source.write('one,');
  const second = body.stream();
  source.end('two');
  assert.equal(await text(second), 'one,two');
  assert.ok(body.replayable);
  assert.equal(String(await body.complete()), 'one,two');
  // The first attempt's stream was ended when the second began; it saw only the start.
  assert.equal(await text(first), 'one,');
});

test('past the limit the body is no longer replayable, and the attempt in flight still gets all of it', async () => {
  const source = new PassThrough();
  const body = new ReplayBody(source, 8);
  const first = body.stream();
  const got = text(first);
  source.end('0123456789abcdef');
  assert.equal(await got, '0123456789abcdef');
  assert.equal(body.replayable, false);
  assert.equal(await body.complete(), undefined);
});

test('a source paused for an attempt that stopped reading resumes when that attempt ends', async () => {
  const source = new PassThrough();
  const body = new ReplayBody(source, 1 << 20);
  const first = body.stream();
  // Nobody reads `first`: after its buffer fills, the source is paused.
  const chunk = Buffer.alloc(64 * 1024, 1);
  for (let i = 0; i < 8; i++) source.write(chunk);
  await new Promise((r) => setImmediate(r));
  assert.equal(source.isPaused(), true, 'backpressure pauses the source');
  first.destroy();
  await new Promise((r) => setImmediate(r));
  assert.equal(source.isPaused(), false, 'the ended attempt releases it');
});
