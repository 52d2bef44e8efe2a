/** Every code the sidecar answers with is documented in docs/sidecar.md, with its status. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { PROXY_ERRORS } from '../../src/sidecar/errors.ts';

test('each proxy error code has a row in the error table of docs/sidecar.md with its status', () => {
  const docs = readFileSync(new URL('../../docs/sidecar.md', import.meta.url), 'utf8');
  for (const [code, { status }] of Object.entries(PROXY_ERRORS)) {
    const row = docs.split('\n').find((l) => l.startsWith(`| \`${code}\` |`));
    assert.ok(row, `docs/sidecar.md has no row for ${code}`);
    if (code !== 'fault_abort') assert.ok(row.includes(`| ${status} |`), `the row of ${code} gives status ${status}`);
  }
});
