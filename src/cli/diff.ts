/**
 * `trellis diff`: how traffic moves between two versions of a spec. Each side is a folder,
 * or a git revision of the spec folder (`--path`) in a repository (`--repo`), read without
 * a checkout. Exit 0 when no sidecar config would change, 1 when traffic changes or the head
 * does not compile, 2 for usage errors, unreadable revisions and a base that does not compile.
 */
import { changesTraffic } from '../diff/change-set.ts';
import { diffMeshes } from '../diff/diff-meshes.ts';
import { emptySide, isDirectory, loadSide, type SpecLocation } from '../diff/load-side.ts';
import { renderJson } from '../diff/render-json.ts';
import { renderMarkdown } from '../diff/render-markdown.ts';
import { renderText } from '../diff/render-text.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { printDiagnostics } from './diagnostics-output.ts';
import type { DiffFormat } from './flags.ts';
import { EXIT, type CliIo } from './io.ts';


/** Flags of `trellis diff`, as commander parses them. */
export interface DiffFlags {
  base: string;
  head: string;
  path?: string;
  repo?: string;
  format: DiffFormat;
}

/**
 * Where a `--base`/`--head` value points: an existing folder is a folder, unless `--repo`
 * or `--path` says revisions are meant; anything else is a git revision.
 */
function locate(value: string, flags: DiffFlags): SpecLocation {
  if (flags.repo === undefined && flags.path === undefined && isDirectory(value)) return { dir: value };
  return { repo: flags.repo ?? '.', path: flags.path ?? '.', rev: value };
}

/** Runs `trellis diff`; resolves to the exit code. Output goes to stdout, problems to stderr. */
export async function runDiff(flags: DiffFlags, io: CliIo): Promise<number> {
  const baseAt = locate(flags.base, flags);
  const headAt = locate(flags.head, flags);
  const [loadedBase, head] = await Promise.all([loadSide(baseAt), loadSide(headAt)]);
  // A base revision from before the spec folder existed is an empty mesh: everything is new.
  const base = 'absent' in loadedBase && loadedBase.absent ? { result: emptySide() } : loadedBase;
  for (const [name, side] of [['base', base], ['head', head]] as const) {
    if ('problem' in side) {
      io.stderr.write(`trellis diff: ${name}: ${escapeForTerminal(side.problem)}\n`);
      return EXIT.usage;
    }
  }
  if ('problem' in base || 'problem' in head) return EXIT.usage;
  const prefixOf = (at: SpecLocation) => ('dir' in at ? at.dir : at.path);
  if (!base.result.mesh) {
    io.stderr.write(`trellis diff: the base spec (${escapeForTerminal(flags.base)}) does not compile; fix it first, or compare against another base\n`);
    printDiagnostics(io, base.result.diagnostics, prefixOf(baseAt), false);
    return EXIT.usage;
  }
  const set = diffMeshes(base.result, head.result);
  const options = { pathPrefix: prefixOf(headAt) };
  const shortSha = (sha: string | undefined, value: string) => (sha ? sha.slice(0, 7) : value);
  const baseSha = 'sha' in base ? base.sha : undefined;
  if (flags.format === 'json') io.stdout.write(renderJson(set, options));
  else if (flags.format === 'markdown') io.stdout.write(renderMarkdown(set, { ...options, baseLabel: shortSha(baseSha, flags.base), headLabel: shortSha(head.sha, flags.head) }));
  else io.stdout.write(renderText(set, options));
  return changesTraffic(set) || !set.head.valid ? EXIT.failed : EXIT.ok;
}
