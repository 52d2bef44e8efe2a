/**
 * FolderSource on real folders watched by real chokidar. Where a test must show that
 * something was *not* emitted, it makes a later, visible change and checks that the next
 * revision is the only one: events are delivered in order.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { EMPTY_HOLD_MS, FolderSource, folderRevisionId } from '../../src/reconciler/folder-source.ts';
import type { Revision, SourceEvent } from '../../src/reconciler/source.ts';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const clean of cleanups.reverse()) await clean();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-folder-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function write(dir: string, files: Record<string, string>): void {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
}

function revisionOf(e: SourceEvent | undefined): Revision {
  assert.equal(e?.type, 'revision');
  return (e as Extract<SourceEvent, { type: 'revision' }>).revision;
}
const filesOf = (e: SourceEvent | undefined) => Object.fromEntries(revisionOf(e).files.map((f) => [f.path, f.text]));

/** A started FolderSource whose events are recorded; `waitFor` waits (bounded) for a matching event from index `since`. */
async function startSource(dir: string, debounceMs = 50) {
  const events: SourceEvent[] = [];
  const waiters = new Set<() => void>();
  // seenAt and the settle window read this clock: it must move (a frozen one never settles).
  const source = new FolderSource({ dir, debounceMs, now: () => 42_000 + performance.now() });
  cleanups.push(() => source.stop());
  await source.start((e) => {
    events.push(e);
    for (const w of waiters) w();
  });
  const waitFor = (match: (e: SourceEvent) => boolean, what: string, since = events.length, timeoutMs = 10_000) =>
    new Promise<SourceEvent>((resolve, reject) => {
      const check = () => {
        const found = events.slice(since).find(match);
        if (!found) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}; events: ${JSON.stringify(events)}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  return { source, events, waitFor };
}

const isRevision = (e: SourceEvent) => e.type === 'revision';

/** `promise`, or a failure after `ms`: every wait in these tests is bounded. */
function within<T>(promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A manual clock for a FolderSource: `now` and `schedule` as the source takes them. Timers
 * fire only in `advance`, in time order, so a test decides exactly when each read happens.
 * File events from the real watcher still schedule reads on it; they only add reads.
 */
function manualClock(start = 1_000_000) {
  let now = start;
  let timers: Array<{ at: number; seq: number; fn: () => void }> = [];
  let seq = 0;
  const scheduled = new Set<() => void>();
  return {
    now: () => now,
    schedule(fn: () => void, ms: number) {
      const timer = { at: now + ms, seq: seq++, fn };
      timers.push(timer);
      for (const w of scheduled) w();
      return () => {
        timers = timers.filter((t) => t !== timer);
      };
    },
    /** Moves the clock `ms` on, firing every timer that falls due (also ones scheduled meanwhile), in order. */
    advance(ms: number): void {
      const end = now + ms;
      for (;;) {
        const due = timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
        if (!due) break;
        timers = timers.filter((t) => t !== due);
        now = Math.max(now, due.at);
        due.fn();
      }
      now = end;
    },
    /** Resolves once a timer is waiting (bounded): the watcher's ready and the first read happen in real time. */
    whenScheduled(): Promise<void> {
      if (timers.length > 0) return Promise.resolve();
      return within(new Promise<void>((resolve) => {
        const w = () => (scheduled.delete(w), resolve());
        scheduled.add(w);
      }), 'a timer to be scheduled');
    },
  };
}

/** A FolderSource on a manual clock, started (its first read settled by advancing the clock). */
async function startOnClock(dir: string) {
  const clock = manualClock();
  const events: SourceEvent[] = [];
  const source = new FolderSource({ dir, now: clock.now, schedule: clock.schedule });
  cleanups.push(() => source.stop());
  let started = false;
  const starting = source.start((e) => events.push(e)).then(() => (started = true));
  while (!started) {
    await clock.whenScheduled();
    clock.advance(100);
    await new Promise((r) => setImmediate(r));
  }
  await starting;
  return { source, clock, events };
}

describe('FolderSource', () => {
  test('the first revision has the spec files, read as readSpecDir reads them', async () => {
    const dir = tempDir();
    write(dir, { 'b.yaml': 'b\n', 'a/x.yml': 'x\n', 'notes.md': 'no', '.git/config.yaml': 'hidden', '.hidden/y.yaml': 'hidden' });
    const { source, events } = await startSource(dir);
    assert.equal(events.length, 1);
    const revision = revisionOf(events[0]);
    assert.deepEqual(filesOf(events[0]), { 'a/x.yml': 'x\n', 'b.yaml': 'b\n' });
    assert.deepEqual(revision.files.map((f) => f.path), ['a/x.yml', 'b.yaml']);
    assert.equal(revision.id, folderRevisionId(revision.files));
    assert.equal(revision.description, `folder ${dir} (${revision.id.slice(0, 12)})`);
    assert.ok(revision.seenAt > 42_000 && revision.seenAt <= 42_000 + performance.now(), 'seen at the source\'s clock');
    assert.equal(source.description, `folder ${dir}`);
  });

  test('a burst of writes is seen once, with the last contents', async () => {
    const dir = tempDir();
    write(dir, { 'a.yaml': 'v: 0\n' });
    const { events, waitFor } = await startSource(dir);
    // Written synchronously: the burst cannot be interleaved with a read on a loaded machine
    // (a read between one write's truncation and its data would see an empty file).
    for (let i = 1; i <= 20; i++) writeFileSync(join(dir, 'a.yaml'), `v: ${i}\n`);
    const burst = await waitFor(isRevision, 'the burst', 1);
    assert.deepEqual(filesOf(burst), { 'a.yaml': 'v: 20\n' });
    write(dir, { 'b.yaml': 'b\n' });
    await waitFor((e) => isRevision(e) && 'b.yaml' in filesOf(e), 'the later change');
    assert.deepEqual(events.slice(1).map(filesOf), [{ 'a.yaml': 'v: 20\n' }, { 'a.yaml': 'v: 20\n', 'b.yaml': 'b\n' }]);
  });

  test('a rewrite that changes nothing emits nothing; hidden folders are ignored', async () => {
    const dir = tempDir();
    write(dir, { 'a.yaml': 'a\n' });
    const { source, events, waitFor } = await startSource(dir);
    write(dir, { 'a.yaml': 'a\n', '.git/HEAD.yaml': 'x', '.cache/z.yaml': 'z' });
    source.poke();
    await within(source.idle(), 'the poked read');
    assert.equal(events.length, 1, 'the re-read found the same files');
    write(dir, { 'c.yaml': 'c\n' });
    await waitFor(isRevision, 'the later change');
    assert.equal(events.length, 2, JSON.stringify(events));
    assert.deepEqual(filesOf(events[1]), { 'a.yaml': 'a\n', 'c.yaml': 'c\n' });
  });

  test('poke reads at once, without waiting for the debounce', async () => {
    const dir = tempDir();
    write(dir, { 'a.yaml': 'a\n' });
    const { source, events } = await startSource(dir, 3_600_000);
    write(dir, { 'a.yaml': 'changed\n' });
    source.poke();
    await within(source.idle(), 'the poked read');
    assert.deepEqual(filesOf(events[1]), { 'a.yaml': 'changed\n' });
  });

  test('a deleted file is a new revision', async () => {
    const dir = tempDir();
    write(dir, { 'a.yaml': 'a\n', 'b.yaml': 'b\n' });
    const { waitFor } = await startSource(dir);
    rmSync(join(dir, 'b.yaml'));
    assert.deepEqual(filesOf(await waitFor(isRevision, 'the deletion', 1)), { 'a.yaml': 'a\n' });
  });

  test('a missing folder is a transient error; its creation is seen', async () => {
    const dir = join(tempDir(), 'spec');
    const { events, waitFor } = await startSource(dir);
    assert.equal(events.length, 1);
    assert.equal(events[0]?.type === 'error' && events[0].kind, 'transient');
    assert.match(events[0]?.type === 'error' ? events[0].message : '', /does not exist \(TRL1010\)$/);
    write(dir, { 'a.yaml': 'a\n' });
    assert.deepEqual(filesOf(await waitFor(isRevision, 'the folder once created')), { 'a.yaml': 'a\n' });
    const since = events.length;
    write(dir, { 'a.yaml': 'edited\n' });
    assert.deepEqual(filesOf(await waitFor(isRevision, 'an edit in the created folder', since)), { 'a.yaml': 'edited\n' });
  });

  test('a file over the size limit is a permanent error and no revision; fixing it is seen', async () => {
    const dir = tempDir();
    write(dir, { 'a.yaml': 'a\n' });
    const { events, waitFor } = await startSource(dir);
    write(dir, { 'big.yaml': `x: "${'y'.repeat(1024 * 1024)}"\n` });
    const error = await waitFor((e) => e.type === 'error', 'the size error');
    assert.equal(error.type === 'error' && error.kind, 'permanent');
    assert.match(error.type === 'error' ? error.message : '', /^big\.yaml: file is \d+ bytes.*\(TRL1001\)$/);
    write(dir, { 'big.yaml': 'x: small\n' });
    assert.deepEqual(filesOf(await waitFor(isRevision, 'the fixed file')), { 'a.yaml': 'a\n', 'big.yaml': 'x: small\n' });
    assert.deepEqual(events.map((e) => e.type), ['revision', 'error', 'revision']);
  });

  test('a truncate-then-write never yields a revision with the empty file, however the reads fall', async () => {
    const dir = tempDir();
    write(dir, { 'a.yaml': 'v: 1\n', 'b.yaml': 'b\n' });
    const { source, clock, events } = await startOnClock(dir);
    assert.deepEqual(events.map(filesOf), [{ 'a.yaml': 'v: 1\n', 'b.yaml': 'b\n' }]);
    // The editor truncates; a read lands right then (a poke stands for the file event).
    writeFileSync(join(dir, 'a.yaml'), '');
    source.poke();
    clock.advance(0);
    // It pauses for less than the settle window, then writes.
    clock.advance(60);
    writeFileSync(join(dir, 'a.yaml'), 'v: 2\n');
    clock.advance(60);
    clock.advance(200);
    assert.deepEqual(events.slice(1).map(filesOf), [{ 'a.yaml': 'v: 2\n', 'b.yaml': 'b\n' }]);

    // A writer that pauses longer than the settle window (but under EMPTY_HOLD_MS): still no empty revision.
    writeFileSync(join(dir, 'a.yaml'), '');
    source.poke();
    for (let t = 0; t < EMPTY_HOLD_MS - 100; t += 50) clock.advance(50);
    writeFileSync(join(dir, 'a.yaml'), 'v: 3\n');
    source.poke();
    for (let t = 0; t < 500; t += 50) clock.advance(50);
    assert.deepEqual(events.slice(1).map(filesOf), [
      { 'a.yaml': 'v: 2\n', 'b.yaml': 'b\n' },
      { 'a.yaml': 'v: 3\n', 'b.yaml': 'b\n' },
    ]);
    assert.ok(events.every((e) => e.type !== 'revision' || e.revision.files.every((f) => f.text !== '')), 'no revision holds an empty file');

    // Emptied on purpose and left so: it counts once it held for EMPTY_HOLD_MS.
    writeFileSync(join(dir, 'a.yaml'), '');
    source.poke();
    clock.advance(0);
    clock.advance(EMPTY_HOLD_MS - 1);
    assert.equal(events.length, 3, 'not before the hold');
    clock.advance(1);
    assert.deepEqual(filesOf(events[3]), { 'a.yaml': '', 'b.yaml': 'b\n' });
  });

  test('a partial write does not form a revision until the file holds still for the settle window', async () => {
    const dir = tempDir();
    write(dir, { 'a.yaml': 'x: 1\n' });
    const { source, clock, events } = await startOnClock(dir);
    writeFileSync(join(dir, 'a.yaml'), 'x: 1\n---\n');
    source.poke();
    clock.advance(0);
    clock.advance(99);
    writeFileSync(join(dir, 'a.yaml'), 'x: 1\n---\ny: 2\n');
    clock.advance(1);
    clock.advance(99);
    assert.equal(events.length, 1, 'nothing while the file moves');
    clock.advance(1);
    assert.deepEqual(events.slice(1).map(filesOf), [{ 'a.yaml': 'x: 1\n---\ny: 2\n' }]);
  });

  test('two quick changes of one file both end up in a revision (chokidar drops a second change within 50 ms)', async () => {
    const dir = tempDir();
    write(dir, { 'a.yaml': 'v: 1\n' });
    // A debounce shorter than chokidar's 50 ms throttle, as the identity cluster test uses.
    const { waitFor } = await startSource(dir, 10);
    for (let round = 2; round <= 6; round += 2) {
      writeFileSync(join(dir, 'a.yaml'), `v: ${round}\n`);
      // The next change comes the moment the first one is out: within chokidar's throttle window.
      await waitFor((e) => isRevision(e) && filesOf(e)['a.yaml'] === `v: ${round}\n`, `v: ${round}`);
      writeFileSync(join(dir, 'a.yaml'), `v: ${round + 1}\n`);
      await waitFor((e) => isRevision(e) && filesOf(e)['a.yaml'] === `v: ${round + 1}\n`, `v: ${round + 1}, without a poke`, undefined, 5_000);
    }
  });

  test('nothing is emitted after stop', async () => {
    const dir = tempDir();
    write(dir, { 'a.yaml': 'a\n' });
    const { source, events } = await startSource(dir);
    await source.stop();
    write(dir, { 'a.yaml': 'changed\n' });
    source.poke();
    await within(source.idle(), 'the poked read');
    assert.equal(events.length, 1);
  });
});
