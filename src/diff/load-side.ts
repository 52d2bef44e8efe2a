/**
 * Where one side of a diff comes from, and compiling it: a spec folder on disk, or a spec
 * folder as committed at a git revision (read from git's object store with
 * `readSpecAtRevision`: no checkout, nothing from the revision is written to disk or run).
 * The one place the diff touches the disk or git; the CLI and the Action share it.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { compileDir, compileFiles, type CompileResult } from '../compiler/compile.ts';
import { readSpecAtRevision } from '../reconciler/git-source.ts';

/** A spec folder (`dir`), or the folder `path` of the git repository at `repo` as of `rev`. */
export type SpecLocation = { readonly dir: string } | { readonly repo: string; readonly path: string; readonly rev: string };

/**
 * A compiled side, with the commit it was read at (revisions only); or why it could not be
 * read, with `absent` when the revision has no spec folder at all.
 */
export type LoadedSide = { readonly result: CompileResult; readonly sha?: string } | { readonly problem: string; readonly absent?: boolean };

/**
 * An empty mesh: what a base without a spec folder is compared as, so the pull request that
 * adds a spec shows every service as new instead of failing.
 */
export function emptySide(): CompileResult {
  return { diagnostics: [], mesh: { mesh: '', version: '', configs: new Map() } };
}

/** Whether `value` names an existing directory (the CLI reads such a `--base`/`--head` as a folder). */
export function isDirectory(value: string): boolean {
  return existsSync(value) && statSync(value).isDirectory();
}

/**
 * Reads and compiles one side the way the reconciler compiles a revision (TrafficTests
 * included: a failing one is an error, and such a revision is never pushed).
 */
export async function loadSide(location: SpecLocation): Promise<LoadedSide> {
  if ('dir' in location) {
    if (!isDirectory(location.dir)) return { problem: `${location.dir} is not a folder` };
    return { result: await compileDir(location.dir) };
  }
  const dir = location.path === '' || location.path === '.' ? location.repo : join(location.repo, location.path);
  if (!isDirectory(dir)) return { problem: `${dir} is not a folder in the working tree (the spec folder must exist there for git to find it)` };
  const read = await readSpecAtRevision(dir, location.rev);
  if ('problem' in read) return { problem: read.problem, ...(read.absent ? { absent: true } : {}) };
  return { result: compileFiles(read.files), sha: read.sha };
}
