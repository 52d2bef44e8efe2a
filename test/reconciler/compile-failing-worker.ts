/**
 * A compile worker for tests (not a test file): the real protocol and the real incremental
 * compiler, made to fail on purpose for revisions holding certain files, as no real spec
 * may make the compiler fail (each that did is fixed with its own test):
 * - `crash.yaml`: the compiler throws (as the call-chain check once did);
 * - `die.yaml`: the worker thread exits mid-compile (as on running out of memory);
 * - `hang.yaml`: the compile never ends.
 */
import { parentPort } from 'node:worker_threads';
import { createIncrementalCompiler } from '../../src/compiler/incremental.ts';
import { serveCompiles } from '../../src/reconciler/compile-protocol.ts';

const compiler = createIncrementalCompiler();
serveCompiles(parentPort!, (files) => {
  if (files.some((f) => f.path === 'crash.yaml')) throw new RangeError('Maximum call stack size exceeded');
  if (files.some((f) => f.path === 'die.yaml')) process.exit(7);
  if (files.some((f) => f.path === 'hang.yaml')) for (;;);
  return compiler.compile(files);
});
