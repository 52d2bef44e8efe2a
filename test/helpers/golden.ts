/**
 * Golden files: expected outputs kept beside the tests and reviewed as diffs.
 * `UPDATE_GOLDEN=1 npm test` rewrites them from the current output.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export const UPDATING = process.env.UPDATE_GOLDEN === '1';

/** Asserts `actual` equals the golden file at `path` (or rewrites it when updating). */
export function assertGolden(path: string, actual: string): void {
  if (UPDATING) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, actual);
    return;
  }
  assert.ok(existsSync(path), `golden file ${path} is missing; run UPDATE_GOLDEN=1 npm test to create it, then review it`);
  assert.equal(actual, readFileSync(path, 'utf8'), `output differs from ${path}; if the change is intended, run UPDATE_GOLDEN=1 npm test and review the diff`);
}
