#!/usr/bin/env node
// Entry point of the `trellis` command. Trellis needs Node.js 24 (it runs its TypeScript
// sources natively); machines that ship an older Node get the Node 24 that `npm ci`
// installed into node_modules, so `npx trellis` and direct runs behave the same.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

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
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
