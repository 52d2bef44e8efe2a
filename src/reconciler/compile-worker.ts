/**
 * The reconciler's compile worker (a node:worker_threads entry point): an incremental
 * compiler answering compile requests, so that compiling a large spec never holds up the
 * thread that serves health checks, sidecar streams and certificates. See
 * compile-protocol.ts for the messages and compile-client.ts for the reconciler's side.
 */
import { parentPort } from 'node:worker_threads';
import { createIncrementalCompiler } from '../compiler/incremental.ts';
import { serveCompiles } from './compile-protocol.ts';

if (!parentPort) throw new Error('compile-worker.ts runs as a worker thread (see compile-client.ts)');
const compiler = createIncrementalCompiler();
serveCompiles(parentPort, (files) => compiler.compile(files));
