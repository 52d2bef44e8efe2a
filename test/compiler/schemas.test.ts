/** The compiler imports its JSON Schemas (so bundles carry them); none of schema/ may be left out. */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SCHEMAS } from '../../src/compiler/validate.ts';

test('every schema/*.schema.json is imported by the validator', () => {
  const files = readdirSync(fileURLToPath(new URL('../../schema/', import.meta.url))).filter((f) => f.endsWith('.schema.json')).sort();
  assert.deepEqual(Object.keys(SCHEMAS).sort(), files);
});
