/**
 * Where a compile's time goes, from a V8 `.cpuprofile` (`node --cpu-prof`): time per
 * compiler stage (inclusive, by the innermost stage entry point on each sample's stack)
 * and the functions with the most self time, each tagged with the library or source file
 * it lives in.
 *
 * Usage: node bench/summarize-cpu-profile.ts FILE.cpuprofile [--top N]
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

/** The parts of V8's CPU profile format (Chrome DevTools protocol `Profiler.Profile`) read here. */
export interface CpuProfile {
  readonly nodes: ReadonlyArray<{
    readonly id: number;
    readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
    readonly children?: readonly number[];
  }>;
  /** Node id of each sample, in time order. */
  readonly samples: readonly number[];
  /** Microseconds between consecutive samples (`timeDeltas[i]` precedes `samples[i]`). */
  readonly timeDeltas: readonly number[];
}

export interface CpuProfileSummary {
  /** Sampled time, in ms. */
  readonly totalMs: number;
  /** Inclusive time per stage, largest first; samples outside every stage are grouped by what they are. */
  readonly stages: ReadonlyArray<{ readonly stage: string; readonly ms: number }>;
  /** Self time per function, largest first. `where` is `file:line` (1-based), `group` its library or part. */
  readonly functions: ReadonlyArray<{ readonly name: string; readonly where: string; readonly group: string; readonly ms: number }>;
}

/**
 * Stage entry points, by function name and the file that defines it. The innermost one on a
 * sample's stack names the stage, so `prettyJson` called from anywhere counts as serialization.
 */
const STAGE_ENTRIES: ReadonlyArray<{ readonly fn: string; readonly file: string; readonly stage: string }> = [
  { fn: 'readSpecDir', file: '/src/compiler/load.ts', stage: 'load: read files' },
  { fn: 'parseSpecFiles', file: '/src/compiler/load.ts', stage: 'load: YAML parse + toJS' },
  { fn: 'validateDocuments', file: '/src/compiler/validate.ts', stage: 'validate: ajv' },
  { fn: 'resolveSpec', file: '/src/compiler/resolve.ts', stage: 'resolve' },
  { fn: 'checkSpec', file: '/src/compiler/check.ts', stage: 'check' },
  { fn: 'emitMesh', file: '/src/compiler/emit.ts', stage: 'emit (canonical JSON + sha256)' },
  { fn: 'prettyJson', file: '/src/config/canonical.ts', stage: 'serialize: prettyJson' },
  { fn: 'compileFiles', file: '/src/compiler/compile.ts', stage: 'compileFiles: other (sorting, diagnostics)' },
];

/** Which library or part of Trellis a frame belongs to, from its script URL. */
function groupOf(name: string, url: string): string {
  if (/^\(.*\)$/.test(name)) return name; // (garbage collector), (program), (idle), (root)
  const lib = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (lib) return lib[1]!;
  const src = /\/((?:src|bench)\/.*)$/.exec(url);
  if (src) return src[1]!;
  if (url.startsWith('node:')) return 'node internals';
  // ajv compiles schemas to functions with `new Function`: they have no script URL.
  if (url === '' && /^validate\d*$/.test(name)) return 'ajv (generated validators)';
  return url === '' ? 'native / eval' : url;
}

function shortUrl(url: string): string {
  const m = /\/((?:src|bench|node_modules)\/.*)$/.exec(url);
  return m ? m[1]! : url;
}

export function summarizeCpuProfile(profile: CpuProfile): CpuProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // Self time per node: the interval after each sample belongs to that sample's node.
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const us = profile.timeDeltas[i + 1] ?? 0;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + us);
  }

  const stageOfNode = new Map<number, string>();
  const stageOf = (id: number): string => {
    const known = stageOfNode.get(id);
    if (known !== undefined) return known;
    const frame = byId.get(id)!.callFrame;
    const entry = STAGE_ENTRIES.find((e) => e.fn === frame.functionName && frame.url.endsWith(e.file));
    const up = parent.get(id);
    let stage: string;
    if (entry) stage = entry.stage;
    else if (up === undefined) stage = 'outside the compile: startup, module loading';
    else stage = stageOf(up);
    if (frame.functionName === '(garbage collector)') stage = 'garbage collector (any stage)';
    else if (frame.functionName === '(idle)') stage = 'idle (waiting for I/O)';
    else if (frame.functionName === '(program)') stage = 'V8/native, unattributed';
    stageOfNode.set(id, stage);
    return stage;
  };

  const stages = new Map<string, number>();
  const functions = new Map<string, { name: string; where: string; group: string; us: number }>();
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    totalUs += us;
    const stage = stageOf(id);
    stages.set(stage, (stages.get(stage) ?? 0) + us);
    const f = byId.get(id)!.callFrame;
    const name = f.functionName || '(anonymous)';
    const where = f.url ? `${shortUrl(f.url)}:${f.lineNumber + 1}` : '';
    const key = `${name}|${where}`;
    const entry = functions.get(key) ?? { name, where, group: groupOf(f.functionName, f.url), us: 0 };
    entry.us += us;
    functions.set(key, entry);
  }
  return {
    totalMs: totalUs / 1000,
    stages: [...stages].map(([stage, us]) => ({ stage, ms: us / 1000 })).sort((a, b) => b.ms - a.ms),
    functions: [...functions.values()].map(({ us, ...f }) => ({ ...f, ms: us / 1000 })).sort((a, b) => b.ms - a.ms),
  };
}

/** Markdown: the stage table, then the `top` functions by self time. */
export function renderCpuProfileSummary(summary: CpuProfileSummary, top = 25): string {
  const pct = (ms: number) => `${((100 * ms) / summary.totalMs).toFixed(1)}%`;
  const lines = [`Sampled ${summary.totalMs.toFixed(0)} ms.`, '', '| stage | ms | share |', '|---|--:|--:|'];
  for (const s of summary.stages) lines.push(`| ${s.stage} | ${s.ms.toFixed(0)} | ${pct(s.ms)} |`);
  lines.push('', '| self ms | share | function | where | group |', '|--:|--:|---|---|---|');
  for (const f of summary.functions.slice(0, top)) lines.push(`| ${f.ms.toFixed(1)} | ${pct(f.ms)} | \`${f.name}\` | ${f.where} | ${f.group} |`);
  return lines.join('\n') + '\n';
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({ options: { top: { type: 'string', default: '25' } }, allowPositionals: true });
  if (positionals.length !== 1) {
    process.stderr.write('usage: node bench/summarize-cpu-profile.ts FILE.cpuprofile [--top N]\n');
    process.exit(2);
  }
  const profile = JSON.parse(await readFile(positionals[0]!, 'utf8')) as CpuProfile;
  process.stdout.write(renderCpuProfileSummary(summarizeCpuProfile(profile), Number(values.top)));
}
