/**
 * Bundles the dashboard page's script (page/app.js with cytoscape and uPlot, from node_modules) into one
 * file with esbuild, so the page needs nothing from the network. Run by `npm run
 * build:dashboard` (and `prepare`, so `npm ci` leaves it built); the reconciler builds it on
 * first request when the file is missing and esbuild is installed (a development checkout).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PAGE_DIR = fileURLToPath(new URL('./page/', import.meta.url));
/** The bundle (not in git: made from page/app.js and the locked cytoscape). */
export const BUNDLE = fileURLToPath(new URL('./page/dist/app.js', import.meta.url));
/** The libraries' stylesheets the script imports (uPlot's), which esbuild writes beside it. */
export const BUNDLE_CSS = fileURLToPath(new URL('./page/dist/app.css', import.meta.url));

/** Builds the bundle; throws when esbuild is not installed (a production install) or the build fails. */
export async function buildDashboard(): Promise<string> {
  const esbuild = await import('esbuild');
  mkdirSync(dirname(BUNDLE), { recursive: true });
  await esbuild.build({
    entryPoints: [fileURLToPath(new URL('./page/app.js', import.meta.url))],
    bundle: true,
    minify: true,
    format: 'iife',
    target: 'es2022',
    outfile: BUNDLE,
    logLevel: 'warning',
    legalComments: 'linked',
  });
  return BUNDLE;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  // As `prepare` it also runs on installs without devDependencies: no esbuild, no bundle, no failure.
  const esbuildThere = await import('esbuild').then(() => true, () => false);
  if (!esbuildThere) process.stdout.write('dashboard bundle not built: esbuild is not installed (a production install); the page needs src/dashboard/page/dist/app.js\n');
  else process.stdout.write(`dashboard bundle: ${await buildDashboard()}${existsSync(BUNDLE) ? '' : ' (missing!)'}\n`);
}
