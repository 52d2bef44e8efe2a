/** The Action's checks on what it is given: event payloads, the pull-request input, the marker. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePullRequestInput, targetOf } from '../../src/action/pull-request.ts';
import { commentMarker } from '../../src/action/sticky-comment.ts';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);

test('targetOf takes the number and the base and head shas, and refuses anything else', () => {
  assert.deepEqual(targetOf({ number: 3, base: { sha: A }, head: { sha: B } }), { number: 3, baseSha: A, headSha: B });
  assert.match((targetOf(undefined) as { problem: string }).problem, /no pull request/);
  assert.match((targetOf({ number: 3, base: { sha: 'main' }, head: { sha: B } }) as { problem: string }).problem, /no valid base and head/);
  assert.match((targetOf({ number: -1, base: { sha: A }, head: { sha: B } }) as { problem: string }).problem, /no valid number/);
});

test('the pull-request input is a number or empty', () => {
  assert.equal(parsePullRequestInput(''), null);
  assert.equal(parsePullRequestInput(' 42 '), 42);
  for (const bad of ['0', '-1', '4.2', '42 && true', '1e3']) assert.ok(typeof parsePullRequestInput(bad) === 'object', bad);
});

test('the marker names the spec path and cannot end its HTML comment early', () => {
  assert.equal(commentMarker('mesh'), '<!-- trellis-diff path=mesh -->');
  assert.equal(commentMarker(''), '<!-- trellis-diff path=. -->');
  const odd = commentMarker('a-->b <x>');
  assert.equal(odd.indexOf('-->'), odd.length - 3);
  assert.doesNotMatch(odd.slice(4, -3), /--|[<>]/);
});
