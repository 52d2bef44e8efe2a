/**
 * The incremental compiler: the same results as `compileFiles`, byte for byte, for a
 * caller that compiles one revision after another (the reconciler's worker). What each
 * file makes in load and validate is kept by path and content, so a revision that changes
 * one file parses and validates that file only. A revision that only changes, adds or
 * removes documents is then patched into the last compile (resolve.ts
 * `resolveIncrementally`, check.ts `checkIncrementally`, emit.ts `emitIncrementally`):
 * only what those documents feed is worked out again. Anything further checks and emits
 * the whole spec, reusing each unit whose inputs are unchanged (memo.ts).
 *
 * Holds the last revision's state (about the memory of one compiled spec). A result's
 * `spec`, `plan` and `mesh` are that state: read them before the next compile, which
 * updates them in place. Not safe to share between concurrent callers (it is synchronous,
 * so there are none).
 */
import type { SourceFile } from '../diagnostics/source-file.ts';
import { compileStages, fileStages, sortedByPath, type CompileOptions, type CompileResult, type FileStages, type IncrementalMemo } from './compile.ts';
import { CompileMemo } from './memo.ts';
import { DEFAULT_LIMITS } from './load.ts';

export interface IncrementalCompiler {
  /** Compiles a whole revision: the result `compileFiles(files, options)` gives. */
  compile(files: readonly SourceFile[]): CompileResult;
  /** How the last compile went: files whose load and validate ran and files reused; units of later stages that ran and units reused. */
  readonly lastStats: { readonly parsedFiles: number; readonly reusedFiles: number; readonly unitsRan: number; readonly unitsReused: number; readonly patched: boolean };
}

export function createIncrementalCompiler(options: CompileOptions = {}): IncrementalCompiler {
  const limits = options.limits ?? DEFAULT_LIMITS;
  let cache = new Map<string, { readonly text: string; readonly stages: FileStages }>();
  /** The last revision's files, sorted by path, and what load and validate made of each. */
  let lastFiles: readonly SourceFile[] = [];
  let lastStages: readonly FileStages[] = [];
  let lastStats = { parsedFiles: 0, reusedFiles: 0, unitsRan: 0, unitsReused: 0, patched: false };
  let memo: IncrementalMemo = { units: new CompileMemo(), resolve: undefined, check: undefined, emit: undefined, sorted: [], patched: false };
  return {
    compile(files) {
      const stats = { parsedFiles: 0, reusedFiles: 0, unitsRan: 0, unitsReused: 0, patched: false };
      const sorted = sortedByPath(files);
      let stages: FileStages[];
      let next = cache;
      if (sorted.length === lastFiles.length && sorted.every((f, i) => f.path === lastFiles[i]!.path && (i === 0 || f.path !== sorted[i - 1]!.path))) {
        // The same paths as last time (the usual revision): each file against its own last
        // time, by place, and the cache patched where the text changed.
        stages = sorted.map((file, i) => {
          const earlier = lastFiles[i] === file || lastFiles[i]!.text === file.text ? lastStages[i] : undefined;
          if (earlier) {
            stats.reusedFiles++;
            return earlier;
          }
          stats.parsedFiles++;
          const made = fileStages(file, limits);
          next.set(file.path, { text: file.text, stages: made });
          return made;
        });
      } else {
        next = new Map();
        stages = sorted.map((file) => {
          const earlier = cache.get(file.path);
          // Two files of one path in one revision cannot come from a folder or a git tree; if a
          // caller passes them, each is compiled, as compileFiles would.
          if (earlier && earlier.text === file.text && !next.has(file.path)) {
            stats.reusedFiles++;
            next.set(file.path, earlier);
            return earlier.stages;
          }
          stats.parsedFiles++;
          const made = fileStages(file, limits);
          if (!next.has(file.path)) next.set(file.path, { text: file.text, stages: made });
          return made;
        });
      }
      lastFiles = sorted;
      lastStages = stages;
      cache = next;
      lastStats = stats;
      memo.patched = false;
      try {
        return compileStages(stages, options, memo);
      } catch (error) {
        // What the memo holds may be half updated: the next compile starts afresh.
        memo = { units: new CompileMemo(), resolve: undefined, check: undefined, emit: undefined, sorted: [], patched: false };
        throw error;
      } finally {
        stats.unitsRan = memo.units.ran;
        stats.unitsReused = memo.units.reused;
        stats.patched = memo.patched;
        memo.units.endCompile();
      }
    },
    get lastStats() {
      return lastStats;
    },
  };
}
