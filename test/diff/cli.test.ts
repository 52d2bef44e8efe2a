/** `trellis diff` as users run it: the real command in a child process, on a real git repository. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createRepo, type TestRepo } from '../helpers/git.ts';

const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
const CASES = fileURLToPath(new URL('../golden/diff/', import.meta.url));

function trellis(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, NO_COLOR: '1' }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** A golden case's side as files under `mesh/`, deleting the other side's extra files. */
function specFiles(caseName: string, side: 'base' | 'head', other?: 'base' | 'head'): Record<string, string | null> {
  const files: Record<string, string | null> = {};
  if (other) for (const f of readdirSync(join(CASES, caseName, other))) files[`mesh/${f}`] = null;
  for (const f of readdirSync(join(CASES, caseName, side))) files[`mesh/${f}`] = readFileSync(join(CASES, caseName, side, f), 'utf8');
  return files;
}

describe('trellis diff on git revisions', () => {
  let repo: TestRepo;
  let base: string;
  let head: string;
  let broken: string;
  before(() => {
    repo = createRepo();
    base = repo.commit(specFiles('canary-step', 'base'), 'checkout canary at 5%');
    head = repo.commit(specFiles('canary-step', 'head', 'base'), 'checkout canary at 25%');
    broken = repo.commit(specFiles('invalid-head', 'head', 'head'), 'a typo');
    repo.forcePush(head); // the working tree is back at head: revisions are read from git, not from it
  });
  after(() => repo.remove());

  test('a canary step: exit 1, shares and timeouts before → after, the same as the golden text', async () => {
    const run = await trellis(['diff', '--base', base, '--head', head, '--path', 'mesh'], repo.work);
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stdout, readFileSync(join(CASES, 'canary-step', 'diff.txt'), 'utf8'));
  });

  test('--repo and refs such as HEAD~1 work from any folder; --format json carries the verdict', async () => {
    const run = await trellis(['diff', '--repo', repo.work, '--path', 'mesh', '--base', 'HEAD~1', '--head', 'HEAD', '--format', 'json'], CASES);
    assert.equal(run.code, 1, run.stderr);
    const json = JSON.parse(run.stdout);
    assert.equal(json.trafficChanged, true);
    assert.deepEqual(json.services[0].rules[0].shares, [{ backend: 'checkout', before: 95, after: 75 }, { backend: 'checkout-v2', before: 5, after: 25 }]);
  });

  test('the same revision on both sides: exit 0, no traffic change', async () => {
    const run = await trellis(['diff', '--base', head, '--head', 'HEAD', '--path', 'mesh'], repo.work);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, 'Trellis traffic diff: no traffic change\n');
  });

  test('a head that does not compile: exit 1 with its diagnostics at the spec path', async () => {
    const run = await trellis(['diff', '--base', base, '--head', broken, '--path', 'mesh', '--format', 'markdown'], repo.work);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stdout, /^### Trellis traffic diff: the head spec does not compile/);
    assert.match(run.stdout, /<code>mesh\/routes\.yaml&#58;12&#58;19<\/code> \*\*error TRL3003\*\*/);
  });

  test('a base that does not compile: exit 2, with its diagnostics', async () => {
    const run = await trellis(['diff', '--base', broken, '--head', head, '--path', 'mesh'], repo.work);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /the base spec \(.*\) does not compile/);
    assert.match(run.stderr, /mesh\/routes\.yaml:12:19: error TRL3003/);
  });

  test('an unknown revision, an unsafe one, a missing spec folder and a bad format: exit 2 with a clear message', async () => {
    const unknown = await trellis(['diff', '--base', 'no-such-branch', '--head', head, '--path', 'mesh'], repo.work);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /base: no commit "no-such-branch"/);
    const unsafe = await trellis(['diff', '--base', head, '--head', '--upload-pack=x', '--path', 'mesh'], repo.work);
    assert.equal(unsafe.code, 2);
    const folder = await trellis(['diff', '--base', base, '--head', head, '--path', 'nowhere'], repo.work);
    assert.equal(folder.code, 2);
    assert.match(folder.stderr, /nowhere is not a folder/);
    const format = await trellis(['diff', '--base', base, '--head', head, '--format', 'yaml'], repo.work);
    assert.equal(format.code, 2);
    assert.match(format.stderr, /use text, markdown or json/);
  });
});

describe('trellis diff when the base has no spec folder yet', () => {
  test('the commit that adds the spec is compared against an empty mesh: every service is new', async () => {
    const repo = createRepo();
    try {
      const before = repo.commit({ 'README.md': 'a mesh will live in mesh/\n' }, 'start');
      repo.commit(specFiles('canary-step', 'base'), 'add the mesh spec');
      const run = await trellis(['diff', '--base', before, '--head', 'HEAD', '--path', 'mesh', '--format', 'json'], repo.work);
      assert.equal(run.code, 1, run.stderr);
      const json = JSON.parse(run.stdout);
      assert.deepEqual(json.servicesAdded, ['cart', 'checkout', 'checkout-v2', 'payments', 'web']);
      const back = await trellis(['diff', '--base', 'HEAD', '--head', before, '--path', 'mesh'], repo.work);
      assert.equal(back.code, 2, 'a head without the spec folder is an error');
      assert.match(back.stderr, /head: commit [0-9a-f]+ has no folder mesh\//);
    } finally {
      repo.remove();
    }
  });
});

describe('trellis diff on folders', () => {
  test('two spec folders compare without git', async () => {
    const run = await trellis(['diff', '--base', join(CASES, 'access-change', 'base'), '--head', join(CASES, 'access-change', 'head')], CASES);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stdout, /\+ cart may now call payments/);
    assert.match(run.stdout, /- checkout-v2 may no longer call payments/);
  });

  test('a missing --head is a usage error', async () => {
    const run = await trellis(['diff', '--base', join(CASES, 'access-change', 'base')], CASES);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--head/);
  });
});
