/**
 * Golden tests: each example spec compiles to exactly the configs and diagnostics kept
 * under test/golden/examples/<example>/. `UPDATE_GOLDEN=1 npm test` rewrites them.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join, sep } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { prettyJson } from '../../src/config/canonical.ts';
import { compileDir } from '../../src/compiler/compile.ts';
import { meshIndex } from '../../src/compiler/emit.ts';
import { renderDiagnostics } from '../../src/diagnostics/render.ts';
import { assertGolden, UPDATING } from '../helpers/golden.ts';

const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));
const GOLDEN = fileURLToPath(new URL('../golden/examples/', import.meta.url));

describe('examples compile to their golden configs', () => {
  for (const name of readdirSync(EXAMPLES).sort()) {
    test(name, async () => {
      const result = await compileDir(join(EXAMPLES, name));
      const dir = join(GOLDEN, name);
      if (UPDATING) rmSync(dir, { recursive: true, force: true });
      assertGolden(join(dir, 'diagnostics.txt'), renderDiagnostics(result.diagnostics, { pathPrefix: `examples/${name}` }));
      assert.ok(result.mesh, `examples/${name} must compile`);
      assertGolden(join(dir, 'index.json'), prettyJson(meshIndex(result.mesh)));
      for (const [service, config] of result.mesh.configs) assertGolden(join(dir, `${service}.json`), prettyJson(config));
      if (!UPDATING) {
        // Services outside namespace `default` are kept as <namespace>/<name>.json.
        const expected = (readdirSync(dir, { recursive: true }) as string[]).map((f) => f.split(sep).join('/')).filter((f) => f.endsWith('.json') && f !== 'index.json').sort();
        assert.deepEqual(expected, [...result.mesh.configs.keys()].map((s) => `${s}.json`).sort(), 'no golden config left for a service that is gone');
      }
    });
  }

  // A golden folder whose example was renamed or removed would otherwise linger unchecked,
  // and reviewers would keep reading outputs nothing produces any more.
  test('every golden folder belongs to an example', () => {
    const stray = readdirSync(GOLDEN).filter((name) => !existsSync(join(EXAMPLES, name)));
    assert.deepEqual(stray, [], `golden folders without an example: remove ${stray.map((s) => `test/golden/examples/${s}`).join(', ')}`);
  });
});
