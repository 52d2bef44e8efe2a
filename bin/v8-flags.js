// V8 settings the `trellis` command starts its processes with (bin/trellis.js), in one place
// for the benchmarks that run the same code the same way. Plain JavaScript: bin/trellis.js
// reads it before anything else is loaded.

/**
 * A sidecar process: young-generation semi-spaces of at most 4 MB (Node's default grows them
 * to 32 MB under load, which is most of a busy sidecar's growth in resident memory; see
 * docs/sidecar-runtime.md for the measurements).
 */
export const SIDECAR_V8_FLAGS = ['--max-semi-space-size=4'];

/**
 * Every other command (compile, reconcile, …): semi-spaces of at most 8 MB. At the same
 * speed, a cold compile of the 10 000-service benchmark spec then peaks about 110 MB lower
 * (under 300 MB), and the reconciler's young-generation collections, which stop its thread,
 * stay short (README, "Benchmarks").
 */
export const CLI_V8_FLAGS = ['--max-semi-space-size=8'];
