/**
 * One cold compile of a spec folder, measured, as `trellis compile --out` would do it minus
 * the file writes: `compileDir` (read, parse, validate, resolve, check, emit), then
 * `prettyJson` of every config and of index.json. Run once per fresh process by
 * bench/compile.ts, so nothing is warm and peak RSS belongs to this one compile.
 *
 * Usage: node bench/compile-once.ts SPEC_DIR
 * Prints one JSON line, a `CompileSample`, to stdout. Exits 1, with the rendered
 * diagnostics on stderr, if the spec has errors.
 */
import { prettyJson } from '../src/config/canonical.ts';
import { compileDir } from '../src/compiler/compile.ts';
import { meshIndex } from '../src/compiler/emit.ts';
import { renderDiagnostics } from '../src/diagnostics/render.ts';

/** What one measured compile reports. Times in milliseconds, memory in KiB, sizes in bytes. */
export interface CompileSample {
  /** From process start to the first line of this script: node boot, type stripping, imports. */
  readonly startupMs: number;
  /** `compileDir(dir)`, including ajv's lazy schema compilation (a CLI pays it every run). */
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
}

const startupMs = performance.now();
const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: node bench/compile-once.ts SPEC_DIR\n');
  process.exit(2);
}

const t0 = performance.now();
const result = await compileDir(dir);
const compileMs = performance.now() - t0;
const compileMaxRssKiB = process.resourceUsage().maxRSS;

if (!result.mesh || !result.spec) {
  process.stderr.write(renderDiagnostics(result.diagnostics, { pathPrefix: dir }));
  process.exitCode = 1;
} else {
  const t1 = performance.now();
  let outputBytes = 0;
  // One string at a time, as `--out` writes file by file; none is kept.
  for (const config of result.mesh.configs.values()) outputBytes += Buffer.byteLength(prettyJson(config));
  outputBytes += Buffer.byteLength(prettyJson(meshIndex(result.mesh)));
  const serializeMs = performance.now() - t1;

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
  };
  process.stdout.write(JSON.stringify(sample) + '\n');
}
