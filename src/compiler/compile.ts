/**
 * The compiler: load → validate → resolve → check → emit. `compileFiles` is pure (files
 * in memory in, configs and diagnostics out); `compileDir` adds reading a spec folder.
 */
import { hasErrors, sortDiagnostics, type Diagnostic } from '../diagnostics/diagnostic.ts';
import { diagnostic } from '../diagnostics/diagnostic.ts';
import type { SourceFile } from '../diagnostics/source-file.ts';
import { checkSpec, type MeshPlan } from './check.ts';
import { emitMesh, type CompiledMesh } from './emit.ts';
import { DEFAULT_LIMITS, parseSpecFiles, readSpecDir, type LoadLimits } from './load.ts';
import { resolveSpec, type ResolvedSpec } from './resolve.ts';
import { validateDocuments } from './validate.ts';

export interface CompileOptions {
  readonly limits?: LoadLimits;
}

export interface CompileResult {
  /** Every problem found, in stable order (file, offset, code). */
  readonly diagnostics: readonly Diagnostic[];
  /** Present only when there are no errors: a spec with errors never yields configs. */
  readonly mesh?: CompiledMesh;
  /** The resolved spec and plan, for tools that explain or diff (present when stages ran). */
  readonly spec?: ResolvedSpec;
  readonly plan?: MeshPlan;
}

export function compileFiles(files: readonly SourceFile[], options: CompileOptions = {}): CompileResult {
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const parsed = parseSpecFiles(sorted, options.limits ?? DEFAULT_LIMITS);
  const diagnostics: Diagnostic[] = [...parsed.diagnostics];
  if (parsed.documents.length === 0 && parsed.diagnostics.length === 0) {
    diagnostics.push(diagnostic('TRL1011', 'no spec documents found: the folder holds no *.yaml or *.yml files with documents in them', undefined, {
      hint: 'point at a spec folder such as examples/shop',
    }));
    return { diagnostics };
  }
  const validated = validateDocuments(parsed.documents);
  diagnostics.push(...validated.diagnostics);
  const resolved = resolveSpec(validated.valid);
  diagnostics.push(...resolved.diagnostics);
  const checked = checkSpec(resolved.spec);
  diagnostics.push(...checked.diagnostics);
  const all = sortDiagnostics(diagnostics);
  if (hasErrors(all)) return { diagnostics: all, spec: resolved.spec, plan: checked.plan };
  return { diagnostics: all, mesh: emitMesh(checked.plan), spec: resolved.spec, plan: checked.plan };
}

export async function compileDir(dir: string, options: CompileOptions = {}): Promise<CompileResult> {
  const loaded = readSpecDir(dir, options.limits ?? DEFAULT_LIMITS);
  const result = compileFiles(loaded.files, options);
  if (loaded.diagnostics.length === 0) return result;
  const diagnostics = sortDiagnostics([...loaded.diagnostics, ...result.diagnostics.filter((d) => d.code !== 'TRL1011')]);
  return { ...result, diagnostics, mesh: hasErrors(diagnostics) ? undefined : result.mesh };
}
