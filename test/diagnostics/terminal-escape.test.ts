/** escapeForTerminal: what it escapes, what it leaves alone, and that escaping twice changes nothing. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { escapeForTerminal } from '../../src/diagnostics/terminal-escape.ts';

const UNSAFE = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

test('control characters, DEL, C1 and bidi controls become visible escapes', () => {
  const table: Array<[string, string]> = [
    ['a\nb', 'a\\nb'],
    ['a\r\nb', 'a\\r\\nb'],
    ['a\tb', 'a\\tb'],
    ['\x1b[2J', '\\x1b[2J'],
    ['\0\x07\x7f', '\\x00\\x07\\x7f'],
    ['\x85\x9b', '\\x85\\x9b'],
    ['\u202eevil\u202c', '\\u202eevil\\u202c'],
    ['\u2066\u2067\u2068\u2069', '\\u2066\\u2067\\u2068\\u2069'],
    ['\u200e\u200f\u061c', '\\u200e\\u200f\\u061c'],
    ['\u2028\u2029', '\\u2028\\u2029'],
    ['plain /a/[0-9]+ \\d é € 日本', 'plain /a/[0-9]+ \\d é € 日本'],
  ];
  for (const [input, expected] of table) assert.equal(escapeForTerminal(input), expected, JSON.stringify(input));
  assert.equal(escapeForTerminal('a\tb\x1b', { keepTabs: true }), 'a\tb\\x1b');
});

test('property: the result holds no unsafe character and escaping it again changes nothing', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
      const once = escapeForTerminal(s);
      return !UNSAFE.test(once) && !once.includes('\t') && escapeForTerminal(once) === once;
    }),
    { numRuns: 2000 },
  );
});
