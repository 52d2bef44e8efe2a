#!/bin/sh
':' //; d=$(dirname "$(readlink -f "$0")"); for n in "$d/../node_modules/node/bin/node" "$d/../../node/bin/node"; do [ -x "$n" ] && exec "$n" "$0" "$@"; done; exec node "$0" "$@"
// Entry point of the `trellis` command. The line above is for the shell that runs this file
// as `trellis`: it starts the Node 24 that `npm ci` installed into node_modules (or `node`
// from PATH), in this same process. To JavaScript it is a string and a comment.
//
// Trellis needs Node.js 24 (it runs its TypeScript sources natively); `node bin/trellis.js`
// with an older Node hands over to the one in node_modules (a second process, then).
//
// `trellis sidecar` runs the sidecar's bundle (scripts/build-sidecar.ts): plain JavaScript
// with only the sidecar's code, started in place of this process (process.execve, same pid)
// with its V8 settings (v8-flags.js). A bundle older than any source file is rebuilt first when
// esbuild is installed; without esbuild, a stale bundle is not used and the sources run.
// Every other command starts again the same way, from the sources, with settings of its own.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import nodeModule from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI_V8_FLAGS, SIDECAR_V8_FLAGS } from './v8-flags.js';

const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  const local = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(local)) {
    process.stderr.write(`trellis needs Node.js 24 or later (this is ${process.version}); run \`npm ci\` in the Trellis folder to install it\n`);
    process.exit(2);
  }
  const child = spawnSync(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (child.signal) process.kill(process.pid, child.signal);
  process.exit(child.status ?? 1);
}

// Node's module compile cache: the TypeScript sources, stripped and compiled, are kept on
// disk (by content, under the system's temp folder or NODE_COMPILE_CACHE), so a command
// starts in about 90 ms instead of 250–350 ms and 20 MB smaller once it has run before.
// Through the environment, the process this one becomes (below) and its worker threads and
// children use it too. Where the folder cannot be written, nothing is cached and all works.
const cache = nodeModule.enableCompileCache();
if (cache.directory && !process.env.NODE_COMPILE_CACHE) process.env.NODE_COMPILE_CACHE = cache.directory;

/** `flags` not already given to this process (by name), to add to its own. */
function missingFlags(flags) {
  const given = new Set(process.execArgv.map((f) => f.split('=')[0]));
  return flags.filter((f) => !given.has(f.split('=')[0]));
}

const root = fileURLToPath(new URL('..', import.meta.url));

/** Newest modification time of the TypeScript sources under `dir` (recursive), in ms. */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

/** The sidecar's bundle, rebuilt when a source is newer; undefined when it cannot be had. */
function sidecarBundle() {
  const bundle = join(root, 'dist', 'sidecar', 'trellis-sidecar.mjs');
  const built = statSync(bundle, { throwIfNoEntry: false })?.mtimeMs;
  const sources = Math.max(newest(join(root, 'src')), statSync(join(root, 'package.json')).mtimeMs);
  if (built !== undefined && built >= sources) return bundle;
  // In a process of its own, waited for: this one is about to become the sidecar (execve) and
  // must not leave a child behind (esbuild runs a service process of its own).
  const build = join(root, 'scripts', 'build-sidecar.ts');
  if (!existsSync(build)) return undefined;
  const r = spawnSync(process.execPath, [build], { stdio: ['ignore', 'ignore', 'inherit'] });
  return r.status === 0 ? bundle : undefined;
}

if (process.argv[2] === 'sidecar' && typeof process.execve === 'function') {
  const bundle = sidecarBundle();
  if (bundle) process.execve(process.execPath, [process.execPath, ...process.execArgv, ...missingFlags(SIDECAR_V8_FLAGS), bundle, ...process.argv.slice(2)], process.env);
} else if (typeof process.execve === 'function') {
  // Node takes V8's heap settings only at start: this process starts again as itself with
  // them (same pid, about 20 ms), unless it was given them already.
  const missing = missingFlags(CLI_V8_FLAGS);
  try {
    if (missing.length > 0) process.execve(process.execPath, [process.execPath, ...process.execArgv, ...missing, fileURLToPath(import.meta.url), ...process.argv.slice(2)], process.env);
  } catch {
    // The settings are an optimisation: where the process cannot start again, it goes on without them.
  }
}
// A reader that stops early (`trellis compile --stdout | head`) closes the pipe: the command
// ends quietly, as command-line tools do, instead of failing on the write (EPIPE).
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(process.exitCode ?? 0);
  });
}
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
