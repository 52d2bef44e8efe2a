/**
 * The compiler: load → validate → resolve → check → emit. `compileFiles` is pure (files
 * in memory in, configs and diagnostics out); `compileDir` adds reading a spec folder.
 */
import { hasErrors, sortDiagnostics, sortDiagnosticsLike, type Diagnostic } from '../diagnostics/diagnostic.ts';
import { diagnostic } from '../diagnostics/diagnostic.ts';
import type { SourceFile } from '../diagnostics/source-file.ts';
import { checkIncrementally, checkSpec, type CheckState, type MeshPlan } from './check.ts';
import { emitIncrementally, emitMesh, type CompiledMesh, type EmitState } from './emit.ts';
import type { CompileMemo } from './memo.ts';
import { DEFAULT_LIMITS, parseSpecFiles, readSpecDir, type LoadLimits, type ParsedDocument } from './load.ts';
import { resolveIncrementally, resolveSpec, type ResolvedSpec, type ResolveState } from './resolve.ts';
import { validateDocuments, type ValidDocument } from './validate.ts';
import { runTrafficTests, type TrafficTestResult } from './traffic-tests.ts';

export interface CompileOptions {
  readonly limits?: LoadLimits;
  /** Run the spec's TrafficTests (default true); a failing one is an error. */
  readonly trafficTests?: boolean;
}

export interface CompileResult {
  /** Every problem found, in stable order (file, offset, code). */
  readonly diagnostics: readonly Diagnostic[];
  /** Present only when there are no errors: a spec with errors never yields configs. */
  readonly mesh?: CompiledMesh;
  /** The resolved spec and plan, for tools that explain or diff (present when stages ran). */
  readonly spec?: ResolvedSpec;
  readonly plan?: MeshPlan;
  /** Results of the spec's TrafficTests, when they ran. */
  readonly trafficTests?: readonly TrafficTestResult[];
}

/**
 * Appends in a loop: `push(...list)` passes every element as an argument, and a file
 * with a hundred thousand problems overflows the call stack that way.
 */
function append<T>(into: T[], list: readonly T[]): void {
  if (list.length < 1024) into.push(...list);
  else for (const x of list) into.push(x);
}

/**
 * What load and validate make of one file. Each file's documents are parsed and checked
 * against their schemas without looking at any other file, so the incremental compiler
 * keeps these per file, by content, across revisions.
 */
export interface FileStages {
  /** Documents that parsed and have a known kind, in file order. */
  readonly documents: readonly ParsedDocument[];
  readonly parseDiagnostics: readonly Diagnostic[];
  /** Documents that also passed their kind's schema. */
  readonly valid: readonly ValidDocument[];
  readonly validateDiagnostics: readonly Diagnostic[];
}

/** Load and validate of one file (pure). */
export function fileStages(file: SourceFile, limits: LoadLimits = DEFAULT_LIMITS): FileStages {
  const parsed = parseSpecFiles([file], limits);
  const validated = validateDocuments(parsed.documents);
  return { documents: parsed.documents, parseDiagnostics: parsed.diagnostics, valid: validated.valid, validateDiagnostics: validated.diagnostics };
}

/** Files sorted by path: later stages never see the order files were given in. */
export function sortedByPath(files: readonly SourceFile[]): SourceFile[] {
  return [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export function compileFiles(files: readonly SourceFile[], options: CompileOptions = {}): CompileResult {
  const limits = options.limits ?? DEFAULT_LIMITS;
  return compileStages(sortedByPath(files).map((f) => fileStages(f, limits)), options);
}

/** What the incremental compiler keeps from one compile to the next (see incremental.ts). */
export interface IncrementalMemo {
  readonly units: CompileMemo;
  /** The last resolve, check and emit, which the next compile patches when only documents' content changed. */
  resolve: ResolveState | undefined;
  check: CheckState | undefined;
  emit: EmitState | undefined;
  /** The last compile's diagnostics, sorted: the next sort starts from their order. */
  sorted: readonly Diagnostic[];
  /** Whether the last compile patched the one before (only documents' content changed) rather than checking the whole spec. */
  patched: boolean;
}

/**
 * The stages after validate, over every file's load and validate results (given in path
 * order): resolve, check, emit and traffic tests, which look across documents. With
 * `memo` (the incremental compiler's), the last compile is patched when only documents
 * changed, and units of check and emit whose inputs are unchanged are reused; the result
 * is the same.
 */
export function compileStages(stages: readonly FileStages[], options: CompileOptions = {}, memo?: IncrementalMemo): CompileResult {
  const diagnostics: Diagnostic[] = [];
  const sort = (list: readonly Diagnostic[]) => {
    if (!memo) return sortDiagnostics(list);
    const sorted = sortDiagnosticsLike(memo.sorted, list);
    memo.sorted = sorted;
    return sorted;
  };
  let documents = 0;
  for (const s of stages) {
    append(diagnostics, s.parseDiagnostics);
    documents += s.documents.length;
  }
  if (documents === 0 && diagnostics.length === 0) {
    diagnostics.push(diagnostic('TRL1011', 'no spec documents found: the folder holds no *.yaml or *.yml files with documents in them', undefined, {
      hint: 'point at a spec folder such as examples/shop',
    }));
    return { diagnostics };
  }
  const valid: ValidDocument[] = [];
  for (const s of stages) {
    append(diagnostics, s.validateDiagnostics);
    append(valid, s.valid);
  }
  let spec: ResolvedSpec;
  let plan: MeshPlan;
  let mesh: () => CompiledMesh;
  if (memo) {
    const resolved = resolveIncrementally(valid, memo.resolve);
    memo.resolve = resolved.state;
    append(diagnostics, resolved.diagnostics);
    const checked = checkIncrementally(resolved.state.spec, memo.units, memo.check, resolved.change, resolved.state.referrers);
    memo.check = checked.state;
    memo.patched = checked.delta !== undefined;
    append(diagnostics, checked.diagnostics);
    spec = resolved.state.spec;
    plan = checked.plan;
    mesh = () => {
      // After a revision with errors nothing was emitted (memo.emit is unset): emit whole, its units memoised.
      const emitted = emitIncrementally(checked.plan, memo, memo.emit, memo.emit && checked.delta, checked.state.dependents);
      memo.emit = emitted.state;
      return emitted.mesh;
    };
  } else {
    const resolved = resolveSpec(valid);
    append(diagnostics, resolved.diagnostics);
    const checked = checkSpec(resolved.spec);
    append(diagnostics, checked.diagnostics);
    spec = resolved.spec;
    plan = checked.plan;
    mesh = () => emitMesh(checked.plan);
  }
  if (hasErrors(diagnostics)) {
    // Nothing was emitted for this revision: the next one emits afresh.
    if (memo) memo.emit = undefined;
    return { diagnostics: sort(diagnostics), spec, plan };
  }
  const compiled: CompileResult = { diagnostics: [], mesh: mesh(), spec, plan };
  if (options.trafficTests !== false && spec.trafficTests.length > 0) {
    const tests = runTrafficTests(compiled);
    append(diagnostics, tests.diagnostics);
    if (hasErrors(tests.diagnostics)) return { diagnostics: sort(diagnostics), spec, plan, trafficTests: tests.results };
    return { ...compiled, diagnostics: sort(diagnostics), trafficTests: tests.results };
  }
  return { ...compiled, diagnostics: sort(diagnostics) };
}

/**
 * `compile(files)` for callers that must outlive a compiler bug (the reconciler): an
 * exception becomes a result with one TRL9001 diagnostic and no mesh, so the revision
 * counts as failed and the last applied one keeps being served. Diagnostics are data and
 * the compiler throws only on bugs, but one revision that trips a bug must not take the
 * control plane down with it. `onBug` gets the exception itself (its stack is for the log,
 * not for the diagnostic, which the status page shows to spec authors).
 */
export function compileGuarded(
  files: readonly SourceFile[],
  compile: (files: readonly SourceFile[]) => CompileResult = compileFiles,
  onBug?: (error: unknown) => void,
): CompileResult {
  try {
    return compile(files);
  } catch (error) {
    onBug?.(error);
    const what = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return {
      diagnostics: [
        diagnostic('TRL9001', `internal compiler error: ${what}`, undefined, {
          hint: 'this is a bug in Trellis, not a problem found in the spec; please report it with the revision. Nothing of this revision was applied',
        }),
      ],
    };
  }
}

export async function compileDir(dir: string, options: CompileOptions = {}): Promise<CompileResult> {
  const loaded = readSpecDir(dir, options.limits ?? DEFAULT_LIMITS);
  const result = compileFiles(loaded.files, options);
  if (loaded.diagnostics.length === 0) return result;
  const diagnostics = sortDiagnostics([...loaded.diagnostics, ...result.diagnostics.filter((d) => d.code !== 'TRL1011')]);
  return { ...result, diagnostics, mesh: hasErrors(diagnostics) ? undefined : result.mesh };
}
