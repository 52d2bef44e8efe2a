/** Entry point of the bundled action (dist/index.js): runs it, turning a crash into a failed step. */
import * as core from '@actions/core';
import { run } from './main.ts';

try {
  await run();
} catch (err) {
  core.setFailed(`Trellis diff failed: ${(err as Error).stack ?? String(err)}`);
}
