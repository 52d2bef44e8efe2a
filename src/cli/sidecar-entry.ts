/**
 * Entry of the sidecar's bundle (scripts/build-sidecar.ts → dist/sidecar/trellis-sidecar.mjs),
 * which `trellis sidecar` runs: the CLI with only the sidecar's code in it, as plain
 * JavaScript, so a sidecar loads neither the compiler nor the TypeScript loader.
 */
import { main } from './main.ts';

process.exitCode = await main(process.argv.slice(2));
