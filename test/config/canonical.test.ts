/**
 * Canonical JSON: the same value gives the same bytes whatever order its keys were
 * inserted in, whether it goes the fast way (already canonical) or through a sorted copy.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { canonicalJson, isCanonical, sortKeys } from '../../src/config/canonical.ts';
import { versionOf } from '../../src/config/resources.ts';
import { compileDir, compileFiles } from '../../src/compiler/compile.ts';
import { meshIndex } from '../../src/compiler/emit.ts';
import { syntheticMesh } from '../../bench/synthetic-mesh.ts';

/** The same value with every object's keys inserted in reverse order. */
function reversed(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map(reversed);
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(value).reverse()) out[k] = reversed((value as Record<string, unknown>)[k]);
  return out;
}

describe('canonical JSON', () => {
  test('any insertion order gives the same bytes, and a value canonical as it is serializes to them', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const json = canonicalJson(value);
        assert.equal(canonicalJson(reversed(value)), json);
        assert.equal(JSON.stringify(sortKeys(value)), json);
        for (const v of [value, reversed(value), sortKeys(value)]) if (isCanonical(v)) assert.equal(JSON.stringify(v), json);
      }),
      { numRuns: 300 },
    );
  });

  test('a version over named versions does not depend on their order', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.record({ name: fc.string(), version: fc.stringMatching(/^[0-9a-f]{1,8}$/) }), { selector: (e) => e.name }), (entries) => {
        const byName = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        assert.equal(versionOf(entries), versionOf(byName));
        assert.equal(versionOf([...entries].reverse()), versionOf(byName));
      }),
      { numRuns: 200 },
    );
  });

  test('keys out of order, an undefined property or a non-finite number is not canonical as it is', () => {
    assert.equal(isCanonical({ a: 1, b: { c: [1, { d: 2, e: null }] } }), true);
    assert.equal(isCanonical({ b: 1, a: 2 }), false);
    assert.equal(isCanonical({ a: [{ y: 1, x: 2 }] }), false);
    // Integer-like keys are enumerated in numeric order, which is not their spelling's order:
    // such an object takes the copy, which writes them in the same (numeric) order.
    assert.equal(isCanonical({ 10: 1, 9: 2 }), false);
    assert.equal(canonicalJson({ a: 3, 10: 1, 9: 2 }), '{"9":2,"10":1,"a":3}');
    assert.equal(isCanonical({ a: undefined }), false);
    assert.equal(canonicalJson({ b: undefined, a: 1 }), '{"a":1}');
    assert.throws(() => canonicalJson({ a: Number.POSITIVE_INFINITY }), /cannot encode Infinity/);
  });

  test('the compiler builds every resource body, config and index canonical as it is, so emit hashes and --out writes them without a copy', async () => {
    const examples = fileURLToPath(new URL('../../examples/', import.meta.url));
    const results = [compileFiles(syntheticMesh(40, { seed: 3 }).files)];
    for (const name of readdirSync(examples)) results.push(await compileDir(examples + name));
    let bodies = 0;
    for (const result of results) {
      assert.ok(result.mesh, 'the spec compiles');
      assert.ok(isCanonical(meshIndex(result.mesh)), 'index.json is built with keys out of order');
      for (const config of result.mesh.configs.values()) {
        for (const r of config.resources) {
          bodies++;
          assert.ok(isCanonical(r.body), `${config.service}: resource ${r.name} is built with keys out of order: ${JSON.stringify(r.body).slice(0, 200)}`);
        }
        assert.ok(isCanonical(config), `${config.service}: the config is built with keys out of order`);
      }
    }
    assert.ok(bodies > 100);
  });
});
