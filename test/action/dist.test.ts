/** The committed dist/index.js is what `npm run build:action` builds from the sources now. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { buildAction, OUTFILE } from '../../scripts/build-action.ts';

test('dist/index.js is not stale (run npm run build:action and commit it)', async () => {
  const built = await buildAction();
  const committed = readFileSync(OUTFILE);
  assert.ok(Buffer.from(built).equals(committed), `dist/index.js differs from a fresh build (${committed.length} vs ${built.length} bytes): run npm run build:action and commit dist/`);
});

test('the bundle is deterministic', async () => {
  const [a, b] = await Promise.all([buildAction(), buildAction()]);
  assert.ok(Buffer.from(a).equals(b));
});
