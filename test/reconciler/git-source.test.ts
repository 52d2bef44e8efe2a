/**
 * GitSource against real git: a bare remote made with `git init --bare`, a work clone that
 * commits and pushes, served over file://; real ssh keys for signatures; a real silent TCP
 * server to hold a fetch open while the source is stopped.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fetchDelayMs, GitSource, UnsafeGitArgumentError, type GitSourceOptions } from '../../src/reconciler/git-source.ts';
import type { Revision, SourceEvent } from '../../src/reconciler/source.ts';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const clean of cleanups.reverse()) await clean();
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const AUTHOR = { GIT_AUTHOR_NAME: 'Ana', GIT_AUTHOR_EMAIL: 'ana@example.org', GIT_COMMITTER_NAME: 'Ana', GIT_COMMITTER_EMAIL: 'ana@example.org' };

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...AUTHOR } }).trim();
}

/** A bare remote and a clone of it that commits and pushes to `main`. */
function createRemote() {
  const root = tempDir('trellis-git-source-');
  const bare = join(root, 'remote.git');
  const work = join(root, 'work');
  git(root, 'init', '--quiet', '--bare', '--initial-branch', 'main', bare);
  git(root, 'clone', '--quiet', bare, work);
  git(work, 'checkout', '--quiet', '-B', 'main');
  const write = (files: Record<string, string | null>) => {
    for (const [path, text] of Object.entries(files)) {
      const full = join(work, path);
      if (text === null) rmSync(full, { force: true });
      else {
        mkdirSync(dirname(full), { recursive: true });
        writeFileSync(full, text);
      }
    }
  };
  return {
    url: `file://${bare}`,
    bare,
    work,
    /** Writes (null deletes), commits (signed with `signingKey` when given), pushes; returns the sha. */
    commit(files: Record<string, string | null>, message: string, signingKey?: string): string {
      write(files);
      git(work, 'add', '-A');
      const sign = signingKey ? ['-c', 'gpg.format=ssh', '-c', `user.signingkey=${signingKey}`] : [];
      git(work, ...sign, 'commit', '--quiet', '--allow-empty', ...(signingKey ? ['-S'] : ['--no-gpg-sign']), '-m', message);
      git(work, 'push', '--quiet', 'origin', 'HEAD:main');
      return git(work, 'rev-parse', 'HEAD');
    },
    /** Moves main back to `sha` and force-pushes. */
    forcePush(sha: string): void {
      git(work, 'reset', '--quiet', '--hard', sha);
      git(work, 'push', '--quiet', '--force', 'origin', 'HEAD:main');
    },
  };
}

/** Records a source's events and waits on them, each wait bounded. */
function recorder() {
  const events: SourceEvent[] = [];
  const waiters = new Set<{ since: number; match: (e: SourceEvent) => boolean; resolve: (e: SourceEvent) => void }>();
  return {
    events,
    onEvent(event: SourceEvent) {
      events.push(event);
      for (const w of waiters) {
        if (events.length - 1 >= w.since && w.match(event)) {
          waiters.delete(w);
          w.resolve(event);
        }
      }
    },
    /** The first event from index `since` on that matches, waiting up to `timeoutMs` for it. */
    waitFor(match: (e: SourceEvent) => boolean, what: string, since = events.length, timeoutMs = 15_000): Promise<SourceEvent> {
      const found = events.slice(since).find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = { since, match, resolve: (e: SourceEvent) => (clearTimeout(timer), resolve(e)) };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`timed out waiting for ${what}; events: ${JSON.stringify(events.map(brief))}`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
  };
}

function brief(e: SourceEvent): unknown {
  return e.type === 'revision' ? { type: e.type, id: e.revision.id.slice(0, 12), files: e.revision.files.map((f) => f.path) } : e;
}

const isRevision = (id?: string) => (e: SourceEvent) => e.type === 'revision' && (id === undefined || e.revision.id === id);
function revisionOf(e: SourceEvent): Revision {
  assert.equal(e.type, 'revision');
  return (e as Extract<SourceEvent, { type: 'revision' }>).revision;
}
const filesOf = (r: Revision) => Object.fromEntries(r.files.map((f) => [f.path, f.text]));

/**
 * Puts a `git` first on PATH that records each run's command line and `GIT_CONFIG_*`
 * environment, then runs the real git: what `ps` would show, and what reached git. Sources
 * made after this call use it (the environment is read at construction); undone after the test.
 */
function gitSpy() {
  const dir = tempDir('trellis-git-spy-');
  const log = join(dir, 'runs.log');
  const real = execFileSync('sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim();
  writeFileSync(join(dir, 'git'), `#!/bin/sh\n{ printf 'argv:'; printf ' %s' "$@"; printf '\\n'; env | grep '^GIT_CONFIG' | tr '\\n' ' '; printf '\\n'; } >> '${log}'\nexec '${real}' "$@"\n`);
  chmodSync(join(dir, 'git'), 0o755);
  const saved = process.env.PATH;
  process.env.PATH = `${dir}:${saved}`;
  const restore = () => {
    process.env.PATH = saved;
  };
  cleanups.push(restore);
  const runs = () => {
    let text = '';
    try {
      text = readFileSync(log, 'utf8');
    } catch {
      return [];
    }
    const lines = text.split('\n');
    const out: Array<{ argv: string; env: string }> = [];
    for (let i = 0; i + 1 < lines.length; i += 2) {
      // Drop the `-c name=value` settings every run starts with; keep the command and its arguments.
      const words = lines[i]!.replace(/^argv: /, '').split(' ');
      while (words[0] === '-c') words.splice(0, 2);
      out.push({ argv: words.join(' '), env: lines[i + 1]! });
    }
    return out;
  };
  return { runs, fetches: () => runs().filter((r) => /^fetch /.test(r.argv)), restore };
}

/** A started GitSource with a fresh cache (unless given), stopped after the tests. */
async function startSource(options: Partial<GitSourceOptions> & { url: string }) {
  const rec = recorder();
  const source = new GitSource({ branch: 'main', cacheDir: join(tempDir('trellis-cache-'), 'cache'), intervalMs: 3_600_000, jitter: 0, ...options });
  cleanups.push(() => source.stop());
  await source.start((e) => rec.onEvent(e));
  return { source, ...rec };
}

describe('GitSource', () => {
  test('the first revision has the spec files at the head commit, by the spec folder rules', async () => {
    const remote = createRemote();
    remote.commit({ 'a.yaml': 'a: 1\n', 'mesh/b.yml': 'b: 1\n', 'notes.md': 'not spec', '.github/ci.yaml': 'hidden', 'mesh/.drafts/c.yaml': 'hidden' }, 'Seed');
    symlinkSync('a.yaml', join(remote.work, 'link.yaml'));
    // A submodule entry (mode 160000) named like a spec file: a commit, not a file.
    git(remote.work, 'update-index', '--add', '--cacheinfo', `160000,${git(remote.work, 'rev-parse', 'HEAD')},vendored.yaml`);
    const sha = remote.commit({}, 'Add a link and a submodule');
    const { events } = await startSource({ url: remote.url, now: () => 1234 });
    assert.equal(events.length, 1, JSON.stringify(events.map(brief)));
    const revision = revisionOf(events[0]!);
    assert.equal(revision.id, sha);
    assert.deepEqual(filesOf(revision), { 'a.yaml': 'a: 1\n', 'mesh/b.yml': 'b: 1\n' });
    assert.equal(revision.description, `${sha.slice(0, 7)} Add a link and a submodule (Ana)`);
    assert.equal(revision.seenAt, 1234);
  });

  test('a commit pushed while it runs is seen on poke; a fetch that finds nothing new emits nothing', async () => {
    const remote = createRemote();
    remote.commit({ 'a.yaml': 'a: 1\n' }, 'One');
    const { source, events, waitFor } = await startSource({ url: remote.url });
    source.poke();
    await source.idle();
    assert.equal(events.length, 1, 'an unchanged fetch emits nothing');
    const two = remote.commit({ 'a.yaml': 'a: 2\n', 'b.yaml': 'b: 1\n' }, 'Two');
    source.poke();
    source.poke(); // pokes during a fetch coalesce
    const revision = revisionOf(await waitFor(isRevision(two), 'the second commit'));
    assert.deepEqual(filesOf(revision), { 'a.yaml': 'a: 2\n', 'b.yaml': 'b: 1\n' });
    await source.idle();
    assert.deepEqual(events.map((e) => e.type), ['revision', 'revision']);
  });

  test('a file whose blob did not change is the same file object in the next revision (read from git once)', async () => {
    const remote = createRemote();
    remote.commit({ 'a.yaml': 'a: 1\n', 'b.yaml': 'b: 1\n', 'c.yaml': 'b: 1\n' }, 'One');
    const { source, events, waitFor } = await startSource({ url: remote.url });
    const first = revisionOf(events[0]!);
    const two = remote.commit({ 'a.yaml': 'a: 2\n' }, 'Two');
    source.poke();
    const second = revisionOf(await waitFor(isRevision(two), 'the second commit'));
    const byPath = (r: typeof first) => new Map(r.files.map((f) => [f.path, f]));
    const [before, after] = [byPath(first), byPath(second)];
    assert.equal(after.get('b.yaml'), before.get('b.yaml'));
    // Same content under another path: a file of its own.
    assert.notEqual(after.get('c.yaml'), after.get('b.yaml'));
    assert.equal(after.get('c.yaml')!.path, 'c.yaml');
    assert.notEqual(after.get('a.yaml'), before.get('a.yaml'));
    assert.deepEqual(filesOf(second), { 'a.yaml': 'a: 2\n', 'b.yaml': 'b: 1\n', 'c.yaml': 'b: 1\n' });
  });

  test('a commit pushed while it runs is seen on the interval', async () => {
    const remote = createRemote();
    remote.commit({ 'a.yaml': 'a: 1\n' }, 'One');
    const { waitFor } = await startSource({ url: remote.url, intervalMs: 50 });
    const two = remote.commit({ 'a.yaml': 'a: 2\n' }, 'Two');
    const revision = revisionOf(await waitFor(isRevision(two), 'the interval fetch to see the commit'));
    assert.deepEqual(filesOf(revision), { 'a.yaml': 'a: 2\n' });
  });

  test('path: only files under the spec folder, relative to it; a commit without the folder is a permanent error', async () => {
    const remote = createRemote();
    const sha = remote.commit({ 'root.yaml': 'r\n', 'mesh/a.yaml': 'a\n', 'mesh/deep/b.yaml': 'b\n', 'mesh-other/c.yaml': 'c\n', 'mesh/.hidden/d.yaml': 'd\n' }, 'Seed');
    const { source, events, waitFor } = await startSource({ url: remote.url, path: './mesh/' });
    assert.match(source.description, /\(mesh\/\)$/);
    const revision = revisionOf(events[0]!);
    assert.equal(revision.id, sha);
    assert.deepEqual(filesOf(revision), { 'a.yaml': 'a\n', 'deep/b.yaml': 'b\n' });
    const gone = remote.commit({ 'mesh/a.yaml': null, 'mesh/deep/b.yaml': null, 'mesh/.hidden/d.yaml': null }, 'Remove the mesh folder');
    source.poke();
    const error = await waitFor((e) => e.type === 'error', 'an error for the missing folder');
    assert.deepEqual(error, { type: 'error', kind: 'permanent', message: `commit ${gone.slice(0, 12)} has no folder mesh/` });
  });

  test('a rewritten history emits force-push, then the revision', async () => {
    const remote = createRemote();
    const one = remote.commit({ 'a.yaml': 'a: 1\n' }, 'One');
    const two = remote.commit({ 'a.yaml': 'a: 2\n' }, 'Two');
    const { source, events, waitFor } = await startSource({ url: remote.url });
    assert.equal(revisionOf(events[0]!).id, two);
    remote.forcePush(one);
    source.poke();
    await waitFor(isRevision(one), 'the revision after the force-push');
    assert.deepEqual(events.slice(1, 2), [{ type: 'force-push', from: two, to: one }]);
    assert.equal(revisionOf(events[2]!).id, one);
    // A fast-forward afterwards is no force-push.
    const three = remote.commit({ 'a.yaml': 'a: 3\n' }, 'Three');
    source.poke();
    await waitFor(isRevision(three), 'the fast-forward');
    assert.deepEqual(events.map((e) => e.type), ['revision', 'force-push', 'revision', 'revision']);
  });

  test('an unreachable remote is a transient error; the last revision stays and the source recovers', async () => {
    const remote = createRemote();
    const one = remote.commit({ 'a.yaml': 'a: 1\n' }, 'One');
    // A short interval: after a failure only the backoff timer fetches again (a poke does not).
    const { source, events, waitFor } = await startSource({ url: remote.url, intervalMs: 100 });
    renameSync(remote.bare, `${remote.bare}.away`);
    source.poke();
    const error = await waitFor((e) => e.type === 'error', 'a fetch error');
    assert.equal(error.type === 'error' && error.kind, 'transient');
    assert.match(error.type === 'error' ? error.message : '', /^fetch from file:\/\/.* failed: fatal: .*does not appear to be a git repository/);
    renameSync(`${remote.bare}.away`, remote.bare);
    const two = remote.commit({ 'a.yaml': 'a: 2\n' }, 'Two');
    await waitFor(isRevision(two), 'the revision once the remote is back');
    // Polling at 100 ms may have failed more than once before the remote came back.
    events.splice(1, events.filter((e) => e.type === 'error').length - 1);
    assert.deepEqual(events.map((e) => e.type), ['revision', 'error', 'recovered', 'revision']);
    assert.equal(revisionOf(events[0]!).id, one);
  });

  test('pokes (webhooks) do not cut a backoff short: however many arrive, no fetch until the backoff timer', async () => {
    const gone = join(tempDir('trellis-gone-'), 'remote.git');
    const { source, events } = await startSource({ url: `file://${gone}` });
    assert.deepEqual(events.map((e) => e.type), ['error'], 'the first fetch failed');
    for (let i = 0; i < 20; i++) source.poke();
    await source.idle();
    assert.deepEqual(events.map((e) => e.type), ['error'], 'no fetch was made for the pokes (each failed fetch is an error event)');
  });

  test('a burst of pokes is one fetch in flight and one after it, coalesced', async () => {
    const remote = createRemote();
    remote.commit({ 'a.yaml': 'a\n' }, 'One');
    const spy = gitSpy();
    const { source } = await startSource({ url: remote.url });
    const before = spy.fetches().length;
    for (let i = 0; i < 50; i++) source.poke();
    await source.idle();
    for (let i = 0; i < 50; i++) source.poke();
    await source.idle();
    spy.restore();
    assert.equal(spy.fetches().length - before, 4, `two bursts of 50 pokes: ${spy.fetches().length - before} fetches`);
  });

  test('credentials in an https URL reach the server with the fetch alone: not in the cache config, a command line, an event or the description', async () => {
    const seen: Array<string | undefined> = [];
    const server = createHttpServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const port = (server.address() as { port: number }).port;
    const spy = gitSpy();
    const cacheDir = join(tempDir('trellis-cache-'), 'cache');
    const url = `http://bot:s3cr%2Fet@127.0.0.1:${port}/acme/mesh.git`;
    const { source, events } = await startSource({ url, cacheDir });
    assert.ok(seen.length > 0, 'git called the server');
    assert.equal(seen[0], `Basic ${Buffer.from('bot:s3cr/et').toString('base64')}`, 'the credentials went to the server');
    const config = readFileSync(join(cacheDir, 'config'), 'utf8');
    assert.match(config, new RegExp(`url = http://127\\.0\\.0\\.1:${port}/acme/mesh\\.git`));
    assert.doesNotMatch(config, /s3cr|bot/);
    assert.ok(spy.runs().length > 2 && spy.runs().every((r) => !/s3cr|bot/.test(r.argv)), `no git command line names them: ${JSON.stringify(spy.runs().map((r) => r.argv))}`);
    assert.ok(spy.runs().filter((r) => /Authorization: Basic/.test(r.env)).every((r) => /^fetch /.test(r.argv)), 'only the fetch has them, in its environment');
    assert.doesNotMatch(JSON.stringify(events) + source.description, /s3cr|bot/);
    assert.equal(source.description, `git http://127.0.0.1:${port}/acme/mesh.git main`);
    spy.restore();
    // A cache written before (the URL with credentials as origin) is replaced by a clean one.
    await source.stop();
    const stale = join(tempDir('trellis-cache-'), 'cache');
    git(tempDir('trellis-x-'), 'init', '--quiet', '--bare', stale);
    git(stale, 'config', 'trellis.cache', 'true');
    git(stale, 'remote', 'add', 'origin', url);
    await startSource({ url, cacheDir: stale });
    assert.doesNotMatch(readFileSync(join(stale, 'config'), 'utf8'), /s3cr|bot/);
  });

  test('a token given as the user of an https URL is hidden too', () => {
    const source = new GitSource({ url: 'https://ghp_T0KEN@example.org/x.git', branch: 'main', cacheDir: '/nonexistent/cache', intervalMs: 1000 });
    assert.equal(source.description, 'git https://example.org/x.git main');
  });

  test('failed fetches back off exponentially up to 5 × the interval, with jitter', () => {
    assert.deepEqual([0, 1, 2, 3, 10].map((n) => fetchDelayMs(1000, n, 0, 0.5)), [1000, 2000, 4000, 5000, 5000]);
    assert.equal(fetchDelayMs(1000, 0, 0.2, 0), 800);
    assert.equal(fetchDelayMs(1000, 0, 0.2, 0.999_999), 1200);
    assert.equal(fetchDelayMs(1000, 2, 0.2, 0), 3200);
  });

  test('a missing branch is a permanent error, said once', async () => {
    const remote = createRemote();
    remote.commit({ 'a.yaml': 'a\n' }, 'One');
    const { source, events } = await startSource({ url: remote.url, branch: 'release' });
    source.poke();
    await source.idle();
    assert.deepEqual(events, [{ type: 'error', kind: 'permanent', message: `branch release does not exist on ${remote.url}` }]);
  });

  test('a spec file over the size limit makes the commit unusable, not partial', async () => {
    const remote = createRemote();
    const one = remote.commit({ 'a.yaml': 'a\n' }, 'One');
    const { source, events, waitFor } = await startSource({ url: remote.url });
    const big = remote.commit({ 'big.yaml': `x: "${'y'.repeat(1024 * 1024)}"\n` }, 'Big');
    source.poke();
    const error = await waitFor((e) => e.type === 'error', 'the size error');
    assert.equal(error.type === 'error' && error.kind, 'permanent');
    assert.match(error.type === 'error' ? error.message : '', new RegExp(`^commit ${big.slice(0, 12)}: big.yaml: file is \\d+ bytes`));
    assert.deepEqual(events.filter((e) => e.type === 'revision').map((e) => revisionOf(e).id), [one]);
  });

  test('the cache is reused for the same remote, and a folder that is not a Trellis cache is never touched', async () => {
    const remote = createRemote();
    const sha = remote.commit({ 'a.yaml': 'a\n' }, 'One');
    const cacheDir = join(tempDir('trellis-cache-'), 'cache');
    const first = await startSource({ url: remote.url, cacheDir });
    await first.source.stop();
    const again = await startSource({ url: remote.url, cacheDir });
    assert.equal(revisionOf(again.events[0]!).id, sha);
    await again.source.stop();

    const foreign = tempDir('trellis-foreign-');
    writeFileSync(join(foreign, 'precious.txt'), 'keep me');
    const refused = await startSource({ url: remote.url, cacheDir: foreign });
    assert.equal(refused.events.length, 1);
    assert.match(JSON.stringify(refused.events[0]), /"kind":"permanent".*is not empty and holds no git repository/);
    assert.deepEqual(readdirSync(foreign), ['precious.txt']);
  });

  test('inherited EDITOR, PAGER, GIT_DIR or GIT_SSH_COMMAND do not reach git (simple-git refused to run with EDITOR)', async () => {
    const remote = createRemote();
    const sha = remote.commit({ 'a.yaml': 'a\n' }, 'One');
    const saved = { ...process.env };
    Object.assign(process.env, { EDITOR: 'vi', PAGER: 'less', GIT_DIR: join(remote.bare, 'nope'), GIT_SSH_COMMAND: 'false' });
    try {
      const { events } = await startSource({ url: remote.url });
      assert.equal(revisionOf(events[0]!).id, sha);
    } finally {
      for (const name of ['EDITOR', 'PAGER', 'GIT_DIR', 'GIT_SSH_COMMAND']) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
    }
  });

  describe('refuses, at construction, what git could read as an option or a command', () => {
    const options = { branch: 'main', cacheDir: '/nonexistent/cache', intervalMs: 1000 };
    for (const url of ['--upload-pack=evil', 'ext::sh -c evil', '-oProxyCommand=x', 'fd::3', 'ssh://-oProxyCommand=evil/x', 'git@-oProxyCommand=evil:x', 'foo://host/x', 'relative/path', 'file:///tmp/a\nb']) {
      test(`url ${JSON.stringify(url)}`, () => {
        assert.throws(() => new GitSource({ ...options, url }), (err: unknown) => err instanceof UnsafeGitArgumentError && err.code === 'unsafe_git_argument' && err.message.startsWith(`refusing remote "${url}"`));
      });
    }
    for (const branch of ['-x', 'a..b', '', 'HEAD', 'a b', 'a/.b', 'x.lock', 'a//b', 'a~1', 'refs/heads/x^', '--all']) {
      test(`branch ${JSON.stringify(branch)}`, () => {
        assert.throws(() => new GitSource({ ...options, url: 'https://example.org/x.git', branch }), UnsafeGitArgumentError);
      });
    }
    for (const path of ['../x', '-x', '/etc', 'a/../b', ':(glob)*', 'a\\b']) {
      test(`path ${JSON.stringify(path)}`, () => {
        assert.throws(() => new GitSource({ ...options, url: 'https://example.org/x.git', path }), UnsafeGitArgumentError);
      });
    }
    test('and accepts the transports it allows', () => {
      for (const url of ['https://example.org/x.git', 'http://example.org/x', 'ssh://git@example.org:2222/x.git', 'git://example.org/x', 'file:///srv/x.git', 'git@github.com:org/x.git', '/srv/x.git']) {
        assert.doesNotThrow(() => new GitSource({ ...options, url, branch: 'release/v1.2', path: 'deploy/mesh' }), url);
      }
    });
    test('and hides credentials in its description', () => {
      assert.equal(new GitSource({ ...options, url: 'https://bot:s3cret@example.org/x.git' }).description, 'git https://example.org/x.git main');
      assert.equal(new GitSource({ ...options, url: 'ssh://git:s3cret@example.org/x.git' }).description, 'git ssh://git@example.org/x.git main');
    });
  });

  test('with allowed signers, only commits whose ssh signature verifies are applied', async () => {
    const keys = tempDir('trellis-keys-');
    const allowed = join(keys, 'allowed');
    const other = join(keys, 'other');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'allowed', '-f', allowed]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'other', '-f', other]);
    const signers = join(keys, 'allowed_signers');
    writeFileSync(signers, `ana@example.org ${execFileSync('cat', [`${allowed}.pub`], { encoding: 'utf8' })}`);

    const remote = createRemote();
    const good = remote.commit({ 'a.yaml': 'a: 1\n' }, 'Signed', allowed);
    const { source, events, waitFor } = await startSource({ url: remote.url, allowedSignersFile: signers });
    assert.equal(revisionOf(events[0]!).id, good);

    const unsigned = remote.commit({ 'a.yaml': 'a: 2\n' }, 'Unsigned');
    source.poke();
    assert.deepEqual(await waitFor((e) => e.type === 'unverified', 'the unsigned commit refused'), { type: 'unverified', commit: unsigned, reason: 'the commit is not signed' });

    const stranger = remote.commit({ 'a.yaml': 'a: 3\n' }, 'Signed by another key', other);
    source.poke();
    const refused = await waitFor((e) => e.type === 'unverified' && e.commit === stranger, 'the stranger commit refused');
    assert.match(refused.type === 'unverified' ? refused.reason : '', /^signed by a key that is not in .*allowed_signers \(SHA256:/);

    source.poke();
    await source.idle();
    assert.equal(events.filter((e) => e.type === 'unverified').length, 2, 'a refused head is reported once');

    const fixed = remote.commit({ 'a.yaml': 'a: 4\n' }, 'Signed again', allowed);
    source.poke();
    const revision = revisionOf(await waitFor(isRevision(fixed), 'the signed commit applied'));
    assert.deepEqual(filesOf(revision), { 'a.yaml': 'a: 4\n' });
    assert.deepEqual(events.map((e) => e.type), ['revision', 'unverified', 'unverified', 'revision']);
  });

  test('stop() kills a fetch that hangs, with the ssh process it started', async () => {
    // An ssh "server" that accepts and never speaks: ssh waits for its banner forever.
    const sockets = new Set<Socket>();
    const server: Server = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => {
      for (const s of sockets) s.destroy();
      server.close();
    });
    const port = (server.address() as { port: number }).port;
    const rec = recorder();
    const source = new GitSource({ url: `ssh://git@127.0.0.1:${port}/mesh.git`, branch: 'main', cacheDir: join(tempDir('trellis-cache-'), 'cache'), intervalMs: 3_600_000 });
    cleanups.push(() => source.stop());
    const started = source.start((e) => rec.onEvent(e));
    const fetchProcesses = () =>
      execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
        .split('\n')
        .filter((line) => line.includes(`-p ${port} `) || line.includes(`:${port}/`));
    const deadline = Date.now() + 15_000;
    while (!fetchProcesses().some((l) => /\bssh\b/.test(l))) {
      assert.ok(Date.now() < deadline, 'ssh never started');
      await new Promise((r) => setTimeout(r, 20));
    }
    await source.stop();
    await started;
    assert.deepEqual(fetchProcesses(), [], 'no git or ssh process is left');
    assert.deepEqual(rec.events, [], 'no event after stop');
  });
});
