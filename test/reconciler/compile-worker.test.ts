/**
 * The reconciler compiles in a worker thread: while a large revision compiles, the
 * serving thread keeps answering (its event loop never stalls for long); a compiler that
 * throws in the worker fails the revision with TRL9001 and the last good snapshot stays
 * served; a worker that dies or hangs is replaced, and the next revision applies. The
 * worker's answers (configs sent as changes, diagnostics by path) come out as a cold
 * compile's.
 *
 * Real parts throughout: git remotes, the reconciler with its HTTP server, worker threads
 * running the real compiler (test/reconciler/compile-failing-worker.ts makes it fail on
 * purpose for files named crash.yaml, die.yaml and hang.yaml).
 */
import assert from 'node:assert/strict';
import { Agent, get } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { canonicalJson } from '../../src/config/canonical.ts';
import { compileFiles, type CompileResult } from '../../src/compiler/compile.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';
import { diagnosticToJson } from '../../src/diagnostics/render.ts';
import { WorkerCompiler, type RevisionCompile } from '../../src/reconciler/compile-client.ts';
import { syntheticMesh } from '../../bench/synthetic-mesh.ts';
import { createRepo } from '../helpers/git.ts';
import { reconcilerStatus, startGitReconciler, stopReconcilers, trackRepo } from '../helpers/reconciler-harness.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

after(stopReconcilers);

const FAILING_WORKER = new URL('./compile-failing-worker.ts', import.meta.url);

/** Big enough that compiling it in the serving thread would stall it for about a second. */
const SERVICES = 1000;

/**
 * GET, by node:http (loaded already by the reconciler's server): the first `fetch` of a
 * process loads undici, which would stall this thread and be counted against the reconciler.
 */
function healthz(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}
const agent = new Agent({ keepAlive: true });
after(() => agent.destroy());

/** Longest stall the tests accept: generous for a shared 2-core machine; the figures are reported. */
const STALL_BOUND_MS = 200;

test(`the reconciler keeps answering /healthz while a ${SERVICES}-service revision compiles, and applies a one-file change`, async (t) => {
  const mesh = syntheticMesh(SERVICES, { seed: 4 });
  const repo = trackRepo(createRepo());
  repo.commit(Object.fromEntries(mesh.files.map((f) => [f.path, f.text])), 'A large mesh');

  const delay = monitorEventLoopDelay({ resolution: 5 });
  let slowestHealth = 0;
  let answered = 0;
  let polling = true;
  let url = '';
  /** Bumped around the test's own synchronous git commits, which stall this thread: health checks spanning one are not counted. */
  let committing = 0;
  const poll = (async () => {
    while (polling) {
      if (url) {
        const t0 = performance.now();
        const generation = committing;
        assert.equal(await healthz(`${url}/healthz`), 200);
        if (generation === committing) slowestHealth = Math.max(slowestHealth, performance.now() - t0);
        answered++;
      }
      await sleep(5);
    }
  })();
  delay.enable();
  const started = await startGitReconciler(repo);
  url = started.url;
  const t0 = performance.now();
  await waitFor(() => started.reconciler.applied !== null, 'the large revision to be applied', 60_000);
  const coldMs = performance.now() - t0;

  const coldStallMs = delay.max / 1e6;
  delay.disable();

  // One file changed: the worker parses that file only. (Committing runs git synchronously
  // in this thread, which is the reconciler's: not measured.)
  const changed = mesh.files[1]!;
  committing++;
  const rev = repo.commit({ [changed.path]: changed.text.replace('request: 2s', 'request: 3s') }, 'One timeout');
  committing++;
  delay.reset();
  delay.enable();
  const t1 = performance.now();
  started.reconciler.poke();
  await waitFor(() => started.reconciler.applied?.revision.id === rev, 'the one-file change to be applied', 30_000);
  const changeMs = performance.now() - t1;
  polling = false;
  await poll;
  delay.disable();

  const maxStallMs = Math.max(coldStallMs, delay.max / 1e6);
  t.diagnostic(`${SERVICES} services: applied ${coldMs.toFixed(0)} ms after start (git read, worker start, cold compile); one-file change applied ${changeMs.toFixed(0)} ms after the poke (git fetch and read included)`);
  t.diagnostic(`serving thread: longest event-loop stall ${coldStallMs.toFixed(1)} ms during the cold compile, ${(delay.max / 1e6).toFixed(1)} ms during the one-file change; slowest of ${answered} /healthz answers ${slowestHealth.toFixed(1)} ms`);
  assert.ok(answered > 10, `only ${answered} health checks ran during the compiles`);
  assert.ok(maxStallMs < STALL_BOUND_MS, `the serving thread stalled ${maxStallMs.toFixed(1)} ms`);
  assert.ok(slowestHealth < STALL_BOUND_MS, `a health check took ${slowestHealth.toFixed(1)} ms`);
  assert.equal(started.reconciler.applied!.mesh.configs.size, SERVICES);
});

const SMALL_MESH = syntheticMesh(6, { seed: 9 });
const SMALL_FILES = Object.fromEntries(SMALL_MESH.files.map((f) => [f.path, f.text]));

test('a compiler that throws in the worker fails the revision with TRL9001, the last snapshot stays; a worker that dies is replaced', async () => {
  const repo = trackRepo(createRepo());
  const good = repo.commit(SMALL_FILES, 'A small mesh');
  const { reconciler, url } = await startGitReconciler(repo, { compileWorker: FAILING_WORKER });
  await waitFor(() => reconciler.applied?.revision.id === good, 'the first revision to be applied', 15_000);
  const snapshot = (await reconcilerStatus(url)).snapshot!.version;

  for (const [file, message] of [
    ['crash.yaml', /internal compiler error: RangeError: Maximum call stack size exceeded/],
    ['die.yaml', /internal compiler error: the compile worker exited with code 7/],
  ] as const) {
    const bad = repo.commit({ [file]: '# the test worker fails on this file\n' }, `A revision with ${file}`);
    reconciler.poke();
    await waitFor(async () => (await reconcilerStatus(url)).attempted?.revision === bad, `the revision with ${file} to be attempted`, 15_000);
    const status = await reconcilerStatus(url);
    assert.equal(status.attempted!.ok, false);
    assert.deepEqual(status.attempted!.diagnostics.map((d) => d.code), ['TRL9001']);
    assert.match(status.attempted!.diagnostics[0]!.message, message);
    assert.equal(status.applied!.revision, good, 'the last good revision stays applied');
    assert.equal(status.snapshot!.version, snapshot, 'the last good snapshot stays served');
    repo.commit({ [file]: null }, `Without ${file}`);
  }

  // After the crash and the death, the next revision compiles (in a new worker) and applies.
  const fixed = repo.commit({ 'mesh.yaml': SMALL_FILES['mesh.yaml']!.replace('mode: strict', 'mode: permissive') }, 'A good change');
  reconciler.poke();
  await waitFor(() => reconciler.applied?.revision.id === fixed, 'the good revision after the failures to be applied', 15_000);
  const status = await reconcilerStatus(url);
  assert.equal(status.attempted!.ok, true);
  assert.notEqual(status.snapshot!.version, snapshot);
});

/** What the reconciler uses of a compile, as one string. */
function canonical(result: RevisionCompile | CompileResult): string {
  const inboundPort = 'inboundPort' in result ? result.inboundPort : (result as CompileResult).plan?.settings.inboundPort;
  return canonicalJson({
    diagnostics: result.diagnostics.map((d) => ({ ...diagnosticToJson(d), span: d.span ? [d.span.file.path, d.span.start, d.span.end] : null, related: d.related?.map((r) => [r.span.file.path, r.span.start, r.span.end]) ?? [] })),
    mesh: result.mesh ? { name: result.mesh.mesh, version: result.mesh.version, configs: [...result.mesh.configs] } : null,
    inboundPort: result.mesh ? inboundPort : null,
  });
}

test('the worker compiler gives what a cold compile gives, revision after revision; a hung compile is stopped and the next one runs', async () => {
  const compiler = new WorkerCompiler({ entry: FAILING_WORKER, timeoutMs: 1000 });
  try {
    let files = syntheticMesh(50, { seed: 3 }).files;
    const revisions: SourceFile[][] = [
      files,
      // One value changed, one service's file gone, a file with a schema error.
      (files = files.filter((_, i) => i !== 5).map((f, i) => (i === 2 ? new SourceFile(f.path, f.text.replace('request: 2s', 'request: 9s')) : f))),
      [...files, new SourceFile('broken.yaml', 'apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: broken }\nspec: { portz: [] }\n')],
      // Back to a good revision, with new services added.
      [...files, ...syntheticMesh(3, { seed: 8 }).files.filter((f) => f.path !== 'mesh.yaml').map((f) => new SourceFile(`more/${f.path}`, f.text))],
      files,
      // Only values changed (the compiler patches its last compile): a timeout, then a retry count.
      (files = files.map((f, i) => (i === 7 ? new SourceFile(f.path, f.text.replace('request: 2s', 'request: 40s')) : f))),
      (files = files.map((f, i) => (i === 9 ? new SourceFile(f.path, f.text.replace('attempts: 2', 'attempts: 4')) : f))),
    ];
    for (const [i, revision] of revisions.entries()) assert.equal(canonical(await compiler.compile(revision)), canonical(compileFiles(revision)), `revision ${i}`);

    const before = compiler.threadId;
    const hung = await compiler.compile([...files, new SourceFile('hang.yaml', '# never compiles\n')]);
    assert.deepEqual(hung.diagnostics.map((d) => d.code), ['TRL9001']);
    assert.match(hung.diagnostics[0]!.message, /took longer than 1 s; the compiler was stopped/);
    assert.equal(hung.mesh, undefined);
    assert.equal(canonical(await compiler.compile(files)), canonical(compileFiles(files)), 'the compile after the hung one');
    assert.notEqual(compiler.threadId, before, 'a new worker compiled it');
  } finally {
    await compiler.close();
  }
});
