/** Git and folder sources against real repositories and real files. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { FolderSource } from '../../src/reconciler/folder-source.ts';
import { checkBranch, checkRemoteUrl, checkSpecPath, GitSource, UnsafeGitArgumentError } from '../../src/reconciler/git-source.ts';
import type { Revision, Source, SourceEvent } from '../../src/reconciler/source.ts';
import { createRepo, type TestRepo } from '../helpers/git.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function temp(): string {
  const d = mkdtempSync(join(tmpdir(), 'trellis-src-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function repo(): TestRepo {
  const r = createRepo();
  cleanups.push(() => r.remove());
  return r;
}

/** Starts a source and collects its events. */
async function collect(source: Source): Promise<SourceEvent[]> {
  const events: SourceEvent[] = [];
  cleanups.push(() => source.stop());
  await source.start((e) => events.push(e));
  return events;
}

const revisions = (events: SourceEvent[]) => events.filter((e): e is { type: 'revision'; revision: Revision } => e.type === 'revision').map((e) => e.revision);

describe('git source', () => {
  test('reads the spec path at the head commit: yaml only, no hidden folders, no symlinks', async () => {
    const r = repo();
    symlinkSync('/etc/passwd', join(r.work, 'leak.yaml'));
    const sha = r.commit({ 'mesh/a.yaml': 'a: 1\n', 'mesh/sub/b.yml': 'b: 2\n', 'mesh/.hidden/c.yaml': 'c', 'mesh/readme.md': '#', 'other/d.yaml': 'd' }, 'Spec');
    const events = await collect(new GitSource({ url: r.url, branch: 'main', path: 'mesh/', cacheDir: join(temp(), 'cache'), intervalMs: 3_600_000 }));
    const [rev] = revisions(events);
    assert.equal(rev!.id, sha);
    assert.deepEqual(rev!.files.map((f) => [f.path, f.text]), [['a.yaml', 'a: 1\n'], ['sub/b.yml', 'b: 2\n']]);
    assert.match(rev!.description, /^[0-9a-f]{7,} Spec \(Test\)$/);
  });

  test('a push is seen on the interval; an unchanged fetch emits nothing', async () => {
    const r = repo();
    r.commit({ 'a.yaml': 'a: 1\n' }, 'One');
    const events = await collect(new GitSource({ url: r.url, branch: 'main', cacheDir: join(temp(), 'cache'), intervalMs: 50, jitter: 0 }));
    const second = r.commit({ 'a.yaml': 'a: 2\n' }, 'Two');
    await waitFor(() => revisions(events).some((x) => x.id === second), 'the interval fetch to see the push');
    const count = events.length;
    const before = Date.now();
    await waitFor(() => Date.now() - before > 300, 'a few more intervals'); // several fetches of an unchanged branch
    assert.equal(events.length, count, 'no event without a change');
  });

  test('an unreachable remote is a transient error; the source recovers when it returns', async () => {
    const r = repo();
    const first = r.commit({ 'a.yaml': 'a: 1\n' }, 'One');
    const source = new GitSource({ url: r.url, branch: 'main', cacheDir: join(temp(), 'cache'), intervalMs: 100 });
    const events = await collect(source);
    renameSync(r.bare, `${r.bare}.away`);
    source.poke();
    await waitFor(() => events.some((e) => e.type === 'error' && e.kind === 'transient'), 'a transient error');
    renameSync(`${r.bare}.away`, r.bare);
    const second = r.commit({ 'a.yaml': 'a: 2\n' }, 'Two');
    await waitFor(() => revisions(events).some((x) => x.id === second), 'recovery on the backed-off schedule, without a poke', 10_000);
    assert.equal(revisions(events)[0]!.id, first);
    const types = events.map((e) => e.type);
    assert.ok(types.lastIndexOf('recovered') > types.indexOf('error'), 'recovery is announced after the error');
  });

  test('a missing branch is a permanent error', async () => {
    const r = repo();
    r.commit({ 'a.yaml': 'a' }, 'One');
    const events = await collect(new GitSource({ url: r.url, branch: 'nope', cacheDir: join(temp(), 'cache'), intervalMs: 3_600_000 }));
    assert.deepEqual(events.map((e) => e.type === 'error' && e.kind), ['permanent']);
  });

  test('remotes, branches and paths that git could read as options are refused', () => {
    for (const url of ['--upload-pack=evil', '-oProxyCommand=x', 'ext::sh -c evil', 'fd::3', 'foo::bar', 'relative/path', '']) assert.throws(() => checkRemoteUrl(url), UnsafeGitArgumentError, url);
    for (const url of ['https://github.com/a/b.git', 'ssh://git@host/x', 'git@github.com:a/b.git', 'file:///tmp/x', '/srv/git/x']) assert.doesNotThrow(() => checkRemoteUrl(url), url);
    for (const b of ['-x', 'a..b', 'a/.hidden', 'x.lock', 'a//b', '/x', 'a b']) assert.throws(() => checkBranch(b), UnsafeGitArgumentError, b);
    for (const b of ['main', 'release/1.2', 'feature_x-1']) assert.doesNotThrow(() => checkBranch(b), b);
    for (const p of ['../x', '-x', '/abs', 'a/../../b']) assert.throws(() => checkSpecPath(p), UnsafeGitArgumentError, p);
    assert.equal(checkSpecPath('./mesh/'), 'mesh');
  });

  test('with allowed signers, only commits signed by an allowed key are applied', async () => {
    const keys = temp();
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ops', '-f', join(keys, 'ops')]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'other', '-f', join(keys, 'other')]);
    const pub = execFileSync('cat', [join(keys, 'ops.pub')], { encoding: 'utf8' }).trim();
    writeFileSync(join(keys, 'allowed'), `t@example.org ${pub}\n`);
    const r = repo();
    const signed = (key: string, file: string, message: string) => {
      writeFileSync(join(r.work, file), message);
      execFileSync('git', ['add', '-A'], { cwd: r.work });
      execFileSync('git', ['-c', 'gpg.format=ssh', '-c', `user.signingkey=${join(keys, key)}`, '-c', 'user.name=Test', '-c', 'user.email=t@example.org', 'commit', '-q', '-S', '-m', message], { cwd: r.work });
      execFileSync('git', ['push', '-q', 'origin', 'HEAD:main'], { cwd: r.work });
      return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: r.work, encoding: 'utf8' }).trim();
    };
    const good = signed('ops', 'a.yaml', 'a: 1\n');
    const source = new GitSource({ url: r.url, branch: 'main', cacheDir: join(temp(), 'cache'), intervalMs: 3_600_000, allowedSignersFile: join(keys, 'allowed') });
    const events = await collect(source);
    assert.deepEqual(revisions(events).map((x) => x.id), [good]);

    const other = signed('other', 'b.yaml', 'b: 1\n');
    source.poke();
    await waitFor(() => events.some((e) => e.type === 'unverified' && e.commit === other), 'a commit signed by an unknown key to be refused');
    const unsigned = r.commit({ 'c.yaml': 'c: 1\n' }, 'Unsigned');
    source.poke();
    await waitFor(() => events.some((e) => e.type === 'unverified' && e.commit === unsigned), 'an unsigned commit to be refused');
    assert.deepEqual(revisions(events).map((x) => x.id), [good], 'the last verified revision stays');
  });
});

describe('folder source', () => {
  test('a burst of writes is seen once; hidden folders and no-op rewrites emit nothing', async () => {
    const dir = temp();
    writeFileSync(join(dir, 'a.yaml'), 'a: 1\n');
    const events = await collect(new FolderSource({ dir, debounceMs: 50 }));
    assert.equal(revisions(events).length, 1);
    for (let i = 0; i < 10; i++) writeFileSync(join(dir, 'a.yaml'), `a: ${i}\n`);
    await waitFor(() => revisions(events).length === 2, 'one revision for the burst');
    assert.equal(revisions(events)[1]!.files[0]!.text, 'a: 9\n');
    mkdirSync(join(dir, '.git'));
    writeFileSync(join(dir, '.git', 'x.yaml'), 'x');
    writeFileSync(join(dir, 'a.yaml'), 'a: 9\n');
    writeFileSync(join(dir, 'b.yaml'), 'b: 1\n');
    await waitFor(() => revisions(events).length === 3, 'the new file');
    assert.deepEqual(revisions(events)[2]!.files.map((f) => f.path), ['a.yaml', 'b.yaml']);
  });
});
