/**
 * Golden tests of the traffic diff: each folder under test/golden/diff/ holds a `base/` and a
 * `head/` spec and the expected text, markdown, JSON and size-limited comment.
 * `UPDATE_GOLDEN=1` rewrites the expected files; review them as diffs.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileDir } from '../../src/compiler/compile.ts';
import { diffMeshes } from '../../src/diff/diff-meshes.ts';
import { COMMENT_LIMIT, fitMarkdown, renderMarkdown } from '../../src/diff/render-markdown.ts';
import { renderJson } from '../../src/diff/render-json.ts';
import { renderText } from '../../src/diff/render-text.ts';
import { assertGolden } from '../helpers/golden.ts';

const CASES = fileURLToPath(new URL('../golden/diff/', import.meta.url));
/** Links as the Action makes them for github.com/acme/mesh with the spec under `mesh/`. */
const LINKS = { headBlobUrl: 'https://github.com/acme/mesh/blob/2222222222222222222222222222222222222222', baseBlobUrl: 'https://github.com/acme/mesh/blob/1111111111111111111111111111111111111111', pathPrefix: 'mesh', baseLabel: '1111111', headLabel: '2222222' };

describe('traffic diff golden cases', () => {
  const names = readdirSync(CASES).sort();
  test('every case named in the issue is here', () => {
    for (const name of ['access-change', 'canary-step', 'huge-change', 'invalid-head', 'new-route', 'removed-retry']) assert.ok(names.includes(name), name);
  });
  for (const name of names) {
    test(name, async () => {
      const dir = join(CASES, name);
      const set = diffMeshes(await compileDir(join(dir, 'base')), await compileDir(join(dir, 'head')));
      const full = renderMarkdown(set, LINKS);
      const comment = fitMarkdown(set, { ...LINKS, where: "this run's job summary" });
      assert.ok(comment.length <= COMMENT_LIMIT, `comment of ${comment.length} characters`);
      if (full.length > COMMENT_LIMIT) {
        // A case too large for a comment is about shortening; its full outputs (near a
        // megabyte) are not kept, only the shortened comment and the proof that it was cut.
        assert.match(comment, /Shortened to stay under GitHub's comment size limit/);
        assert.ok(renderText(set).length > COMMENT_LIMIT && renderJson(set).length > COMMENT_LIMIT);
      } else {
        assert.equal(comment, full, 'a diff that fits is commented whole');
        assertGolden(join(dir, 'diff.txt'), renderText(set));
        assertGolden(join(dir, 'diff.json'), renderJson(set));
        assertGolden(join(dir, 'diff.md'), full);
      }
      assertGolden(join(dir, 'comment.md'), comment);
    });
  }
});

test("the README's example comment is the canary-step golden comment, word for word", () => {
  const readme = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
  const golden = readFileSync(join(CASES, 'canary-step', 'diff.md'), 'utf8').trimEnd();
  const quoted = golden.split('\n').map((l) => (l === '' ? '>' : `> ${l}`)).join('\n');
  assert.ok(readme.includes(quoted), 'README.md: paste test/golden/diff/canary-step/diff.md again, quoted with "> "');
});
