/**
 * Bundles the sidecar into dist/sidecar/trellis-sidecar.mjs: src/cli/sidecar-entry.ts and
 * what `trellis sidecar` imports, as one JavaScript file. Every other command's module is
 * left out (a stub that says so), and so is OpenTelemetry, which a traced sidecar loads from
 * node_modules on demand. Built by `npm ci` (the prepare script), by scripts/build-image.sh,
 * and again by bin/trellis.js when a source file is newer than the bundle (see there).
 *
 * The bundle sits two folders below the package root, where src/cli/*.ts also sits, so the
 * paths they compute from import.meta.url (package.json) mean the same in both.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const SIDECAR_BUNDLE = join(ROOT, 'dist', 'sidecar', 'trellis-sidecar.mjs');

/** Other commands are imported lazily by src/cli/main.ts; in the sidecar's bundle they are stubs. */
const onlySidecarCommand: Plugin = {
  name: 'only-the-sidecar-command',
  setup(b) {
    b.onResolve({ filter: /^\.\/[\w-]+\.ts$/ }, (args) => {
      if (args.kind !== 'dynamic-import' || !args.importer.endsWith(join('src', 'cli', 'main.ts')) || args.path === './sidecar.ts') return undefined;
      return { path: args.path, namespace: 'not-in-sidecar-bundle' };
    });
    b.onLoad({ filter: /.*/, namespace: 'not-in-sidecar-bundle' }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is not part of the sidecar bundle: run this command through bin/trellis.js`)});`,
      loader: 'js',
    }));
  },
};

/** Builds the bundle and moves it into place in one rename, so concurrent builds never leave a half-written file. */
export async function buildSidecar(): Promise<string> {
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: ['src/cli/sidecar-entry.ts'],
    write: false,
    outfile: SIDECAR_BUNDLE,
    bundle: true,
    platform: 'node',
    target: 'node24',
    format: 'esm',
    external: ['@opentelemetry/*'],
    plugins: [onlySidecarCommand],
    legalComments: 'eof',
    charset: 'utf8',
    logLevel: 'error',
    banner: { js: "import { createRequire as __trellisCreateRequire } from 'node:module';\nconst require = __trellisCreateRequire(import.meta.url);" },
  });
  mkdirSync(dirname(SIDECAR_BUNDLE), { recursive: true });
  const temporary = `${SIDECAR_BUNDLE}.${process.pid}.tmp`;
  writeFileSync(temporary, result.outputFiles[0]!.contents);
  renameSync(temporary, SIDECAR_BUNDLE);
  return SIDECAR_BUNDLE;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildSidecar();
