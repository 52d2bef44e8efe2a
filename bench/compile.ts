/**
 * Compiler benchmark: how long a cold `trellis compile` takes, and how much memory it needs,
 * as a spec repo grows; how long the incremental compiler takes for a one-file change; and,
 * in a reconciler (compile worker included), how long a one-file change takes to reach the
 * applied snapshot and the reconciler thread's longest event-loop stall meanwhile. For each
 * size it writes a synthetic repo (bench/synthetic-mesh.ts) to a temp folder, then runs
 * bench/compile-once.ts in a fresh process per run (with the CLI's V8 settings), so every run
 * is a cold compile (as the CLI is) and peak RSS belongs to one size; then as many reconciler runs per size
 * (`compile-once.ts --reconciler`). Reports medians, and for stalls the worst run.
 *
 * Usage: node bench/compile.ts [--sizes 100,1000,10000] [--runs 3] [--seed 1]
 *                              [--timeout 120] [--profile DIR]
 *   --timeout   seconds one run may take before it is killed and the bench fails
 *   --profile   also write a V8 CPU profile of each run under DIR/<size>/ (`--cpu-prof`)
 *               and print a summary of the first per size; profiling slows runs down
 *
 * Prints a Markdown table and the machine to stdout; progress goes to stderr.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import type { CompileSample, ReconcilerSample } from './compile-once.ts';
import { renderCpuProfileSummary, summarizeCpuProfile, type CpuProfile } from './summarize-cpu-profile.ts';
import { syntheticMesh } from './synthetic-mesh.ts';
import { CLI_V8_FLAGS } from '../bin/v8-flags.js';

const run = promisify(execFile);
const COMPILE_ONCE = fileURLToPath(new URL('./compile-once.ts', import.meta.url));

interface Options {
  readonly sizes: readonly number[];
  readonly runs: number;
  readonly seed: number;
  readonly timeoutMs: number;
  readonly profileDir: string | undefined;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '100,1000,10000' },
      runs: { type: 'string', default: '3' },
      seed: { type: 'string', default: '1' },
      timeout: { type: 'string', default: '120' },
      profile: { type: 'string' },
    },
  });
  const positive = (text: string, what: string) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${what} must be a positive integer, got "${text}"`);
    return n;
  };
  return {
    sizes: values.sizes.split(',').map((s) => positive(s.trim(), '--sizes')),
    runs: positive(values.runs, '--runs'),
    seed: positive(values.seed, '--seed'),
    timeoutMs: positive(values.timeout, '--timeout') * 1000,
    profileDir: values.profile,
  };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Median of each numeric field over the runs (fields independently, so not one run's row). */
function medianSample(samples: readonly CompileSample[]): CompileSample {
  const m = (key: keyof CompileSample) => median(samples.map((s) => s[key]));
  return {
    startupMs: m('startupMs'),
    compileMs: m('compileMs'),
    serializeMs: m('serializeMs'),
    compileMaxRssKiB: m('compileMaxRssKiB'),
    maxRssKiB: m('maxRssKiB'),
    documents: m('documents'),
    configs: m('configs'),
    outputBytes: m('outputBytes'),
    warnings: m('warnings'),
    incrementalMs: m('incrementalMs'),
    addRemoveMs: m('addRemoveMs'),
  };
}

/** One compile (or with `mode` the reconciler run) in a fresh process; throws with the child's stderr (its diagnostics) on failure. */
async function compileOnce<S = CompileSample>(dir: string, options: Options, profileDir: string | undefined, mode: string[] = []): Promise<S> {
  const flags = [...CLI_V8_FLAGS, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])];
  try {
    const { stdout } = await run(process.execPath, [...flags, COMPILE_ONCE, ...mode, dir], {
      timeout: options.timeoutMs,
      killSignal: 'SIGKILL',
      // The module compile cache the CLI uses (bin/trellis.js): only the first run compiles the sources.
      env: { ...process.env, NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE ?? join(tmpdir(), 'node-compile-cache') },
      maxBuffer: 64 * 1024 * 1024,
    });
    return JSON.parse(stdout) as S;
  } catch (err) {
    const e = err as { killed?: boolean; stderr?: string; message: string };
    if (e.killed) throw new Error(`compile of ${dir} took longer than ${options.timeoutMs / 1000}s and was killed`);
    throw new Error(`compile of ${dir} failed:\n${e.stderr || e.message}`);
  }
}

interface SizeResult {
  readonly services: number;
  readonly sample: CompileSample;
  readonly reconciler: ReconcilerSample;
  readonly profile?: string;
}

async function benchSize(services: number, options: Options): Promise<SizeResult> {
  const mesh = syntheticMesh(services, { seed: options.seed });
  const dir = await mkdtemp(join(tmpdir(), `trellis-bench-${services}-`));
  try {
    for (const file of mesh.files) {
      const path = join(dir, file.path);
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, file.text);
    }
    process.stderr.write(`${services} services: ${mesh.files.length} files, ${mesh.documents} documents, ${(mesh.bytes / 1e6).toFixed(1)} MB of YAML in ${dir}\n`);
    const profileDir = options.profileDir ? join(options.profileDir, String(services)) : undefined;
    const before = new Set(profileDir ? await readdir(profileDir).catch(() => []) : []);
    const samples: CompileSample[] = [];
    for (let r = 1; r <= options.runs; r++) {
      const sample = await compileOnce(dir, options, profileDir);
      if (sample.documents !== mesh.documents) throw new Error(`compiler kept ${sample.documents} documents of the ${mesh.documents} generated`);
      if (sample.configs !== services) throw new Error(`compiler emitted ${sample.configs} configs for ${services} services`);
      process.stderr.write(`  run ${r}/${options.runs}: compile ${sample.compileMs.toFixed(0)} ms, +serialize ${sample.serializeMs.toFixed(0)} ms, peak RSS ${(sample.maxRssKiB / 1024).toFixed(0)} MB, one-file incremental ${sample.incrementalMs.toFixed(0)} ms, a service file added or removed ${sample.addRemoveMs.toFixed(0)} ms\n`);
      samples.push(sample);
    }
    const reconcilerRuns: ReconcilerSample[] = [];
    for (let r = 1; r <= options.runs; r++) reconcilerRuns.push(await compileOnce<ReconcilerSample>(dir, options, undefined, ['--reconciler']));
    // Times: the median run's; stalls: the worst run's (the target is a bound on every stall).
    const med = (key: keyof ReconcilerSample) => median(reconcilerRuns.map((x) => x[key]));
    const worst = (key: keyof ReconcilerSample) => Math.max(...reconcilerRuns.map((x) => x[key]));
    const reconciler: ReconcilerSample = {
      firstApplyMs: med('firstApplyMs'),
      oneFileApplyMs: med('oneFileApplyMs'),
      addRemoveApplyMs: med('addRemoveApplyMs'),
      maxStallMs: worst('maxStallMs'),
      p99StallMs: worst('p99StallMs'),
      maxStallOneFileMs: worst('maxStallOneFileMs'),
    };
    process.stderr.write(`  reconciler: first revision applied in ${reconciler.firstApplyMs.toFixed(0)} ms, a one-file change in ${reconciler.oneFileApplyMs.toFixed(0)} ms, a service file added or removed in ${reconciler.addRemoveApplyMs.toFixed(0)} ms, longest stall ${reconciler.maxStallMs.toFixed(0)} ms (${reconciler.maxStallOneFileMs.toFixed(0)} ms after the first revision)\n`);
    let profile: string | undefined;
    if (profileDir) {
      const first = (await readdir(profileDir)).filter((f) => f.endsWith('.cpuprofile') && !before.has(f)).sort()[0];
      if (first) {
        const data = JSON.parse(await readFile(join(profileDir, first), 'utf8')) as CpuProfile;
        profile = `### CPU profile, ${services} services (${join(profileDir, first)})\n\n${renderCpuProfileSummary(summarizeCpuProfile(data))}`;
      }
    }
    return { services, sample: medianSample(samples), reconciler, profile };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function renderTable(results: readonly SizeResult[], runs: number): string {
  const mb = (kib: number) => (kib / 1024).toFixed(0);
  const lines = [
    `Median of ${runs} cold run${runs === 1 ? '' : 's'} per size; each run is a fresh process. Reconciler columns: ${runs} more runs per size, times from the median, stalls from the worst.`,
    '',
    '| services | documents | cold compile ms | +serialize ms | peak RSS MB (compile only) | one-file incremental ms | file added/removed ms | reconciler: first apply ms | reconciler: one-file change ms | reconciler: file added/removed ms | reconciler: longest stall ms (after the first revision) | warnings |',
    '|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const { services, sample: s, reconciler: r } of results) {
    lines.push(
      `| ${services} | ${s.documents} | ${s.compileMs.toFixed(0)} | ${s.serializeMs.toFixed(0)} | ${mb(s.maxRssKiB)} (${mb(s.compileMaxRssKiB)}) | ${s.incrementalMs.toFixed(0)} | ${s.addRemoveMs.toFixed(0)} | ${r.firstApplyMs.toFixed(0)} | ${r.oneFileApplyMs.toFixed(0)} | ${r.addRemoveApplyMs.toFixed(0)} | ${r.maxStallMs.toFixed(0)} (${r.maxStallOneFileMs.toFixed(0)}) | ${s.warnings} |`,
    );
  }
  lines.push(
    '',
    `- cold compile ms: \`compileDir(dir)\` (read, YAML parse, schema validation with the precompiled validators, resolve, check, emit with hashing); node boot and imports are not (median of the runs: ${median(results.map((r) => r.sample.startupMs)).toFixed(0)} ms, with the module compile cache the CLI uses).`,
    '- +serialize ms: `prettyJson` of every config and index.json on top (what `trellis compile --out` writes; file writes not timed).',
    '- one-file incremental ms: `createIncrementalCompiler()` primed with the spec, then one file changed (a route timeout): median of 5 such compiles. File added/removed: the same compiler given a new service\'s file (Service, route, policies calling into the mesh), then the spec without it: median of 10.',
    '- reconciler: a `Reconciler` with its compile worker, handed the spec from memory. First apply: from `start()` to the revision applied (worker start, cold compile, configs passed back). One-file change: from the source emitting a one-file change to it being applied (median of 5); file added/removed likewise (median of 10). Longest stall: the reconciler thread\'s longest event-loop delay in the worst run (`monitorEventLoopDelay`, 10 ms resolution), and in brackets after the first revision was applied.',
  );
  return lines.join('\n') + '\n';
}

function machine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return `Machine: ${cpu}, ${availableParallelism()} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version} (${process.platform}/${process.arch}).\n`;
}

try {
  const options = parseOptions();
  const results: SizeResult[] = [];
  for (const services of options.sizes) results.push(await benchSize(services, options));
  process.stdout.write(`${renderTable(results, options.runs)}\n${machine()}`);
  for (const r of results) if (r.profile) process.stdout.write(`\n${r.profile}`);
} catch (err) {
  process.stderr.write(`bench/compile: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
