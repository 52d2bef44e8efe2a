/**
 * One cold compile of a spec folder, measured, as `trellis compile --out` would do it minus
 * the file writes: `compileDir` (read, parse, validate, resolve, check, emit), then
 * `prettyJson` of every config and of index.json; then one-file changes compiled by the
 * incremental compiler (the reconciler's). Run once per fresh process by bench/compile.ts,
 * so nothing is warm and peak RSS belongs to this one spec.
 *
 * Usage: node bench/compile-once.ts SPEC_DIR
 *        node bench/compile-once.ts --reconciler SPEC_DIR
 * Prints one JSON line, a `CompileSample` (or with --reconciler a `ReconcilerSample`), to
 * stdout. Exits 1, with the rendered diagnostics on stderr, if the spec has errors.
 *
 * --reconciler runs a Reconciler (compile worker and all; the spec handed to it by an
 * in-memory source, so no git or folder reading is timed) and measures, on its thread, how
 * long the first revision takes to apply, how long a one-file change takes from the source
 * to the applied snapshot, and the longest event-loop stall meanwhile.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { prettyJson } from '../src/config/canonical.ts';
import { compileDir } from '../src/compiler/compile.ts';
import { meshIndex } from '../src/compiler/emit.ts';
import { createIncrementalCompiler } from '../src/compiler/incremental.ts';
import { readSpecDir } from '../src/compiler/load.ts';
import { renderDiagnostics } from '../src/diagnostics/render.ts';
import { SourceFile } from '../src/diagnostics/source-file.ts';
import type { Revision, Source, SourceEvent } from '../src/reconciler/source.ts';
import { syntheticMesh } from './synthetic-mesh.ts';

/** What one measured compile reports. Times in milliseconds, memory in KiB, sizes in bytes. */
export interface CompileSample {
  /** From process start to the first line of this script: node boot, type stripping, imports. */
  readonly startupMs: number;
  /** `compileDir(dir)`: read, parse, validate (precompiled validators), resolve, check, emit. */
  readonly compileMs: number;
  /** `prettyJson` of every config and index.json, after the compile. */
  readonly serializeMs: number;
  /** Peak RSS when the compile returned (`process.resourceUsage().maxRSS`). */
  readonly compileMaxRssKiB: number;
  /** Peak RSS of the whole run, serialization included. */
  readonly maxRssKiB: number;
  /** Spec documents the compiler kept (one Mesh, Services, routes, policies). */
  readonly documents: number;
  readonly configs: number;
  /** UTF-8 bytes of every serialized config plus index.json: what `--out` writes. */
  readonly outputBytes: number;
  readonly warnings: number;
  /** Median of ONE_FILE_EDITS one-file changes compiled by the incremental compiler (primed with the spec). */
  readonly incrementalMs: number;
  /** Median of compiles that add a new service's file, or remove it again (ONE_FILE_EDITS of each), by the same compiler. */
  readonly addRemoveMs: number;
}

/** What a --reconciler run reports. Times in milliseconds. */
export interface ReconcilerSample {
  /** From `start()` to the first revision applied: worker start, cold compile, results passed back. */
  readonly firstApplyMs: number;
  /** Median, over ONE_FILE_EDITS changes, of the time from the source emitting a revision that changes one file to the reconciler applying it. */
  readonly oneFileApplyMs: number;
  /** Longest event-loop stall of the reconciler's thread over the whole run (`monitorEventLoopDelay`, 10 ms resolution). */
  readonly maxStallMs: number;
  /** Its 99th percentile. */
  readonly p99StallMs: number;
  /** Longest stall while the one-file changes were compiled and applied (the first revision left out). */
  readonly maxStallOneFileMs: number;
  /** Median time from the source emitting a revision that adds a new service's file (or removes it again) to its being applied. */
  readonly addRemoveApplyMs: number;
}

/** One-file changes timed per run. */
const ONE_FILE_EDITS = 5;

/**
 * The spec with one file changed, the k-th time: a route's request timeout in a file in the
 * middle of the spec (a change that alters configs, as a pull request's would).
 */
function oneFileChange(files: readonly SourceFile[], k: number): SourceFile[] {
  const i = Math.floor(files.length / 2) + k;
  return files.map((f, j) => (j === i % files.length ? new SourceFile(f.path, f.text.replace(/request: (\d+)s/, (_, n: string) => `request: ${Number(n) + k + 1}s`)) : f));
}

/**
 * A new service's file (an app of another synthetic mesh, renamed): its Service, route and
 * policies, calling services of this mesh. Adding it and removing it are the structural
 * one-file changes a pull request makes.
 */
function newServiceFile(): SourceFile {
  const app = syntheticMesh(3, { seed: 8 }).files.find((f) => f.path.startsWith('services/'))!;
  return new SourceFile('services/new/app.yaml', app.text.replaceAll(/name: ([a-z]+-\d+)$/gm, 'name: $1-new'));
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Hands the reconciler revisions from memory: the bench times compiling and applying, not reading. */
class MemorySource implements Source {
  readonly description = 'memory (bench)';
  #onEvent: ((event: SourceEvent) => void) | undefined;
  readonly #first: Revision;
  constructor(first: Revision) {
    this.#first = first;
  }
  async start(onEvent: (event: SourceEvent) => void): Promise<void> {
    this.#onEvent = onEvent;
    onEvent({ type: 'revision', revision: this.#first });
  }
  emit(revision: Revision): void {
    this.#onEvent?.({ type: 'revision', revision });
  }
  poke(): void {}
  async stop(): Promise<void> {}
}

/** Polls `check` every millisecond; throws after `what` has not happened for 5 minutes. */
async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 300_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function measureReconciler(dir: string): Promise<void> {
  // Imported here, not above: a compile run loads only what `trellis compile` does, so its peak RSS is the CLI's.
  const { pino } = await import('pino');
  const { ReconcilerMetrics } = await import('../src/reconciler/metrics.ts');
  const { Reconciler } = await import('../src/reconciler/reconciler.ts');
  const { files } = readSpecDir(dir);
  const source = new MemorySource({ id: 'r0', files, description: 'bench', seenAt: Date.now() });
  const reconciler = new Reconciler({ source, log: pino({ level: 'silent' }), metrics: new ReconcilerMetrics() });
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const t0 = performance.now();
  await reconciler.start();
  await until(() => reconciler.applied !== null, 'the spec to apply');
  const firstApplyMs = performance.now() - t0;
  if (!reconciler.applied || reconciler.applied.revision.id !== 'r0') throw new Error('the spec did not apply');
  const changes = monitorEventLoopDelay({ resolution: 10 });
  changes.enable();
  const times: number[] = [];
  for (let k = 0; k < ONE_FILE_EDITS; k++) {
    const id = `r${k + 1}`;
    const changed = oneFileChange(files, k);
    const t1 = performance.now();
    source.emit({ id, files: changed, description: id, seenAt: Date.now() });
    // Only `applied` is polled: `status()` renders every diagnostic, which would stall this thread itself.
    await until(() => reconciler.applied?.revision.id === id, `revision ${id} to apply`);
    times.push(performance.now() - t1);
  }
  const structural: number[] = [];
  for (let k = 0; k < ONE_FILE_EDITS * 2; k++) {
    const id = `s${k}`;
    const t1 = performance.now();
    source.emit({ id, files: k % 2 === 0 ? [...files, newServiceFile()] : files, description: id, seenAt: Date.now() });
    await until(() => reconciler.applied?.revision.id === id, `revision ${id} to apply`);
    structural.push(performance.now() - t1);
  }
  delay.disable();
  changes.disable();
  await reconciler.stop();
  const sample: ReconcilerSample = { firstApplyMs, oneFileApplyMs: median(times), maxStallMs: delay.max / 1e6, p99StallMs: delay.percentile(99) / 1e6, maxStallOneFileMs: changes.max / 1e6, addRemoveApplyMs: median(structural) };
  process.stdout.write(JSON.stringify(sample) + '\n');
}
const startupMs = performance.now();
const reconcilerMode = process.argv[2] === '--reconciler';
const dir = reconcilerMode ? process.argv[3] : process.argv[2];
if (!dir) {
  process.stderr.write('usage: node bench/compile-once.ts [--reconciler] SPEC_DIR\n');
  process.exit(2);
}

if (reconcilerMode) await measureReconciler(dir);
else await measureCompile(dir);

async function measureCompile(dir: string): Promise<void> {
  const t0 = performance.now();
  const result = await compileDir(dir);
  const compileMs = performance.now() - t0;
  const compileMaxRssKiB = process.resourceUsage().maxRSS;

  if (!result.mesh || !result.spec) {
    process.stderr.write(renderDiagnostics(result.diagnostics, { pathPrefix: dir }));
    process.exitCode = 1;
    return;
  }
  const t1 = performance.now();
  let outputBytes = 0;
  // One string at a time, as `--out` writes file by file; none is kept.
  for (const config of result.mesh.configs.values()) outputBytes += Buffer.byteLength(prettyJson(config));
  outputBytes += Buffer.byteLength(prettyJson(meshIndex(result.mesh)));
  const serializeMs = performance.now() - t1;

  // The reconciler's way: an incremental compiler primed with the spec, then one-file changes.
  const { files } = readSpecDir(dir);
  const incremental = createIncrementalCompiler();
  incremental.compile(files);
  const times: number[] = [];
  for (let k = 0; k < ONE_FILE_EDITS; k++) {
    const changed = oneFileChange(files, k);
    const t2 = performance.now();
    const r = incremental.compile(changed);
    times.push(performance.now() - t2);
    if (!r.mesh) throw new Error('a one-file change broke the spec');
  }
  const addRemove: number[] = [];
  for (let k = 0; k < ONE_FILE_EDITS * 2; k++) {
    const revision = k % 2 === 0 ? [...files, newServiceFile()] : files;
    const t2 = performance.now();
    const r = incremental.compile(revision);
    addRemove.push(performance.now() - t2);
    if (!r.mesh) throw new Error('adding or removing a service file broke the spec');
  }

  const spec = result.spec;
  const sample: CompileSample = {
    startupMs,
    compileMs,
    serializeMs,
    compileMaxRssKiB,
    maxRssKiB: process.resourceUsage().maxRSS,
    documents: (spec.mesh ? 1 : 0) + spec.services.size + spec.routes.length + spec.trafficPolicies.length + spec.accessPolicies.length,
    configs: result.mesh.configs.size,
    outputBytes,
    warnings: result.diagnostics.filter((d) => d.severity === 'warning').length,
    incrementalMs: median(times),
    addRemoveMs: median(addRemove),
  };
  process.stdout.write(JSON.stringify(sample) + '\n');
}
