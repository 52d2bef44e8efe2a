/**
 * The diagnostic catalog, held to its promises: every code in src/diagnostics/codes.ts has
 * a fixture spec under test/fixtures/diagnostics/<code>/ that raises it (its rendering kept
 * as a golden file, expected.txt) and a section in docs/diagnostics.md.
 *
 * A fixture folder holds `spec/` (the spec compiled), `expected.txt` and, optionally,
 * `options.json` with at most three keys:
 *   - `limits`: load limits to compile with instead of the defaults (TRL1001 uses it);
 *   - `root`: the folder to compile, relative to the fixture, instead of `spec`
 *     (TRL1010 names one that does not exist);
 *   - `internalError`: compile through compileGuarded (as the reconciler does) with a
 *     compiler that throws an Error with this message. TRL9001 uses it: no spec may crash
 *     the real compiler (each such bug is fixed with its own regression test), so its
 *     fixture shows what a crash is turned into rather than a spec that causes one.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, sep } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileDir, compileGuarded } from '../../src/compiler/compile.ts';
import { readSpecDir, type LoadLimits } from '../../src/compiler/load.ts';
import { ALL_CODES, CODES, type Code } from '../../src/diagnostics/codes.ts';
import { renderDiagnostics } from '../../src/diagnostics/render.ts';
import { assertGolden } from '../helpers/golden.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/diagnostics/', import.meta.url));
const DOCS = fileURLToPath(new URL('../../docs/diagnostics.md', import.meta.url));

interface FixtureOptions {
  readonly limits?: LoadLimits;
  readonly root?: string;
  readonly internalError?: string;
}

function readOptions(dir: string): FixtureOptions {
  const path = join(dir, 'options.json');
  if (!existsSync(path)) return {};
  const raw = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  for (const key of Object.keys(raw)) assert.ok(key === 'limits' || key === 'root' || key === 'internalError', `${path}: unknown key "${key}" (only "limits", "root" and "internalError" are understood)`);
  if (raw.root !== undefined) assert.equal(typeof raw.root, 'string', `${path}: "root" must be a string`);
  if (raw.internalError !== undefined) assert.equal(typeof raw.internalError, 'string', `${path}: "internalError" must be a string`);
  if (raw.limits !== undefined) {
    const limits = raw.limits as Record<string, unknown>;
    for (const key of ['maxFileBytes', 'maxAliasCount', 'maxDepth']) assert.equal(typeof limits[key], 'number', `${path}: limits.${key} must be a number`);
  }
  return raw as FixtureOptions;
}

/** Compiles a fixture and renders its diagnostics as `trellis compile spec` would, without colour. */
async function runFixture(code: Code): Promise<{ codes: string[]; rendered: string }> {
  const dir = join(FIXTURES, code);
  const options = readOptions(dir);
  const root = join(dir, options.root ?? 'spec');
  const internalError = options.internalError;
  const result =
    internalError === undefined
      ? await compileDir(root, options.limits ? { limits: options.limits } : {})
      : compileGuarded(readSpecDir(root).files, () => {
          throw new Error(internalError);
        });
  // Diagnostics about the spec root itself (TRL1010) name the folder compiled; keep the
  // golden files free of this machine's absolute paths.
  const rendered = renderDiagnostics(result.diagnostics, { pathPrefix: 'spec', color: false }).replaceAll(dir + sep, '');
  return { codes: result.diagnostics.map((d) => d.code), rendered };
}

describe('diagnostic catalog fixtures', () => {
  for (const code of ALL_CODES) {
    test(`${code} ${CODES[code].name}`, async () => {
      const { codes, rendered } = await runFixture(code);
      assert.ok(codes.includes(code), `fixture ${code} should raise ${code}, but raised: ${codes.join(', ') || 'nothing'}\n${rendered}`);
      assertGolden(join(FIXTURES, code, 'expected.txt'), rendered);
    });
  }

  test('there is exactly one fixture folder per catalog code', () => {
    const folders = readdirSync(FIXTURES).filter((name) => !name.startsWith('.')).sort();
    const missing = ALL_CODES.filter((c) => !folders.includes(c));
    const stray = folders.filter((f) => !(f in CODES));
    assert.deepEqual({ missing, stray }, { missing: [], stray: [] });
    for (const folder of folders) {
      assert.ok(statSync(join(FIXTURES, folder)).isDirectory(), `${folder} should be a folder`);
      assert.ok(existsSync(join(FIXTURES, folder, 'spec')), `${folder}/spec/ is missing`);
    }
  });
});

describe('docs/diagnostics.md', () => {
  const text = readFileSync(DOCS, 'utf8');
  const lines = text.split('\n');

  /** Every heading that mentions a code, of any level, with its line. */
  const headings = lines.flatMap((line, i) => {
    const m = /^(#{1,6})\s+(TRL\d+)\b\s*(.*)$/.exec(line);
    return m ? [{ line: i + 1, level: m[1]!, code: m[2]!, rest: m[3]!.trim() }] : [];
  });

  test('has a "### TRLxxxx name" section for every code, in numeric order, and none for unknown codes', () => {
    const unknown = headings.filter((h) => !(h.code in CODES)).map((h) => `line ${h.line}: ${h.code}`);
    assert.deepEqual(unknown, [], 'sections for codes that are not in the catalog');
    for (const h of headings) {
      const name = CODES[h.code as Code].name;
      assert.equal(`${h.level} ${h.code} ${h.rest}`, `### ${h.code} ${name}`, `line ${h.line}: the heading should be "### ${h.code} ${name}"`);
    }
    assert.deepEqual(
      headings.map((h) => h.code),
      ALL_CODES,
      'one section per code, in numeric order',
    );
  });

  test('each section states the severity the catalog gives its code', () => {
    headings.forEach((h, i) => {
      const end = headings[i + 1]?.line ?? lines.length + 1;
      const body = lines.slice(h.line, end - 1).join('\n');
      const m = /\*\*Severity:\*\*\s*(\w+)/.exec(body);
      assert.ok(m, `${h.code}: the section should say "**Severity:** …"`);
      assert.equal(m[1], CODES[h.code as Code].severity, `${h.code}: severity in the docs differs from the catalog`);
    });
  });
});
