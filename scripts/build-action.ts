/**
 * Bundles the GitHub Action into dist/index.js (`npm run build:action`). The runner runs that
 * one file with its own Node 24 and no `npm ci`, so everything the action imports is inside.
 * The build is deterministic (same sources and lockfile → same bytes); a test rebuilds it in
 * memory and fails when the committed file is stale.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const OUTFILE = fileURLToPath(new URL('../dist/index.js', import.meta.url));

/** The bundle's bytes, built in memory. */
export async function buildAction(): Promise<Uint8Array> {
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: ['src/action/index.ts'],
    outfile: OUTFILE,
    write: false,
    bundle: true,
    platform: 'node',
    target: 'node24',
    format: 'esm',
    // Paths in the bundle's comments stay `node_modules/...` even where node_modules is a
    // symlink (git worktrees), so every checkout builds the same bytes.
    preserveSymlinks: true,
    legalComments: 'eof',
    charset: 'utf8',
    logLevel: 'warning',
    // Some bundled CommonJS packages call require() for Node built-ins; ESM has none.
    banner: { js: "import { createRequire as __trellisCreateRequire } from 'node:module';\nconst require = __trellisCreateRequire(import.meta.url);" },
  });
  return result.outputFiles[0]!.contents;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const bytes = await buildAction();
  mkdirSync(dirname(OUTFILE), { recursive: true });
  writeFileSync(OUTFILE, bytes);
  console.log(`wrote ${OUTFILE} (${bytes.length} bytes)`);
}
