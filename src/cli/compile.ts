/** `trellis compile [DIR] --out OUTDIR | --stdout`: write one proxy config per meshed service plus index.json. */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { prettyJson } from '../config/canonical.ts';
import { compileDir } from '../compiler/compile.ts';
import { meshIndex, type MeshIndex } from '../compiler/emit.ts';
import { diagnosticsJson, printDiagnostics, type OutputFormat } from './diagnostics-output.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { EXIT, type CliIo } from './io.ts';

/** Writes a file so that readers see the old content or the new, never a half-written one. */
export async function writeFileAtomic(path: string, content: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, content);
  await rename(tmp, path);
}

/** Config files written at once by `--out`. */
const WRITES_IN_FLIGHT = 16;

async function previousIndex(outDir: string): Promise<MeshIndex | undefined> {
  try {
    return JSON.parse(await readFile(join(outDir, 'index.json'), 'utf8')) as MeshIndex;
  } catch {
    return undefined;
  }
}

export async function runCompile(dir: string, opts: { out?: string; stdout?: boolean; format: OutputFormat; verbose?: boolean }, io: CliIo): Promise<number> {
  if (!opts.out && !opts.stdout) {
    io.stderr.write('trellis compile: say where configs go: --out OUTDIR or --stdout\n');
    return EXIT.usage;
  }
  const result = await compileDir(dir);
  if (opts.format === 'json' && !result.mesh) io.stdout.write(JSON.stringify({ valid: false, ...diagnosticsJson(result.diagnostics, dir) }, null, 2) + '\n');
  else if (result.diagnostics.length > 0 || !result.mesh) printDiagnostics(io, result.diagnostics, dir, opts.verbose === true);
  if (!result.mesh) return EXIT.failed;

  const index = meshIndex(result.mesh);
  if (opts.stdout) {
    io.stdout.write(prettyJson({ index, configs: Object.fromEntries(result.mesh.configs) }));
    return EXIT.ok;
  }
  const outDir = opts.out!;
  await mkdir(outDir, { recursive: true });
  const before = await previousIndex(outDir);
  // A service outside namespace `default` (key `ns/name`) is written to `ns/name.json`.
  const folders = new Set<string>();
  for (const name of result.mesh.configs.keys()) folders.add(dirname(join(outDir, `${name}.json`)));
  for (const folder of folders) await mkdir(folder, { recursive: true });
  // Several files at a time: one after the other, a 10 000-service mesh took seconds of
  // round trips to the file system's thread pool. A config is serialized just before it is
  // written, so only the files in flight are held as text.
  const configs = result.mesh.configs.entries();
  const writer = async () => {
    for (let next = configs.next(); !next.done; next = configs.next()) {
      const [name, config] = next.value;
      await writeFileAtomic(join(outDir, `${name}.json`), prettyJson(config));
    }
  };
  await Promise.all(Array.from({ length: WRITES_IN_FLIGHT }, writer));
  // Remove configs of services that left the mesh, but only files an earlier compile wrote.
  for (const [name, entry] of Object.entries(before?.services ?? {})) {
    if (!result.mesh.configs.has(name) && /^([a-z0-9-]+\/)?[a-z0-9-]+\.json$/.test(entry.file)) await rm(join(outDir, entry.file), { force: true });
  }
  await writeFileAtomic(join(outDir, 'index.json'), prettyJson(index));
  io.stderr.write(`wrote ${result.mesh.configs.size} sidecar configs and index.json to ${escapeForTerminal(outDir)} (mesh version ${result.mesh.version.slice(0, 12)})\n`);
  return EXIT.ok;
}
