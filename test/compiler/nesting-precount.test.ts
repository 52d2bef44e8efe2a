/**
 * The nesting pre-count (load.ts nestingTooDeep) runs over every character of a spec before
 * parsing, so it is written for speed: character codes, and lines without brackets or block
 * scalar indicators skipped. Its answers decide TRL1005 diagnostics, so they must be those
 * of the plain reading below (the count as first written, one character at a time) on any
 * text whatever.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { nestingTooDeep } from '../../src/compiler/load.ts';

/** The reference: the same rules, read character by character with no shortcuts. */
function referenceCount(text: string, limit: number): number {
  const columns: number[] = [];
  let flow = 0;
  let quote = '';
  let scalarParent = -1;
  let lineStart = 0;
  while (lineStart <= text.length) {
    let lineEnd = text.indexOf('\n', lineStart);
    if (lineEnd < 0) lineEnd = text.length;
    let i = lineStart;
    while (i < lineEnd && text[i] === ' ') i++;
    const indent = i - lineStart;
    const blank = i === lineEnd || text[i] === '#' || text[i] === '\r';
    if (scalarParent >= 0 && (blank || indent > scalarParent)) {
      lineStart = lineEnd + 1;
      continue;
    }
    scalarParent = -1;
    if (flow === 0 && !quote && !blank) {
      if (indent === 0 && (text.startsWith('---', i) || text.startsWith('...', i))) columns.length = 0;
      else {
        while (columns.length > 0 && columns[columns.length - 1]! >= indent) columns.pop();
        columns.push(indent);
        while ((text[i] === '-' || text[i] === '?') && (i + 1 === lineEnd || text[i + 1] === ' ')) {
          i++;
          while (i < lineEnd && text[i] === ' ') i++;
          if (i < lineEnd) columns.push(i - lineStart);
          if (columns.length > limit) return i;
        }
        if (columns.length > limit) return i;
      }
    }
    let lastSignificant = '';
    for (; i < lineEnd; i++) {
      const c = text[i]!;
      if (quote) {
        if (c === quote) quote = '';
        continue;
      }
      if (c === '"' || c === "'") quote = c;
      else if (c === '#' && (i === lineStart || text[i - 1] === ' ' || text[i - 1] === '\t')) break;
      else if (c === '[' || c === '{') {
        if (++flow + columns.length > limit) return i;
      } else if (c === ']' || c === '}') flow = Math.max(0, flow - 1);
      if (c !== ' ' && c !== '\t' && c !== '\r') lastSignificant = c;
    }
    quote = '';
    if (flow === 0 && '|>-+0123456789'.includes(lastSignificant || ' ') && /(^|[\s:-])[|>][-+0-9]*$/.test(text.slice(lineStart, lineEnd).replace(/\s+#.*$/, '').trimEnd())) scalarParent = indent;
    lineStart = lineEnd + 1;
  }
  return -1;
}

/** Pieces that YAML nesting, quoting, comments and block scalars are made of. */
const PIECES = [' ', '  ', '\n', '\n  ', '\n    ', '- ', '-', '? ', ': ', 'key', 'a', '7', '#', ' #', '"', "'", '[', ']', '{', '}', '|', '>', '|-', '>+', '|2', '\t', '\r', '---', '...', 'x: |', 'y: >-', '[a, [b]]', '\u00a0'];
const LIMITS = [1, 2, 3, 5, 64];

test('the pre-count answers as the plain reading does, on random YAML-like texts', () => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...PIECES), { maxLength: 60 }), (pieces) => {
      const text = pieces.join('');
      for (const limit of LIMITS) assert.equal(nestingTooDeep(text, limit), referenceCount(text, limit), `${JSON.stringify(text)} limit ${limit}`);
    }),
    { numRuns: 20_000 },
  );
});

test('the pre-count answers as the plain reading does on the repo\'s spec files, and on them with a piece inserted', () => {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const texts: string[] = [];
  for (const dir of ['examples', 'test']) {
    for (const e of readdirSync(join(root, dir), { withFileTypes: true, recursive: true })) {
      if (e.isFile() && /\.ya?ml$/.test(e.name)) texts.push(readFileSync(join(e.parentPath, e.name), 'utf8'));
    }
  }
  assert.ok(texts.length > 50);
  let seed = 7;
  const next = (n: number) => (seed = (seed * 1103515245 + 12345) >>> 0) % n;
  for (const text of texts) {
    const variants = [text];
    for (let k = 0; k < 8; k++) {
      const at = next(text.length + 1);
      variants.push(text.slice(0, at) + PIECES[next(PIECES.length)]! + text.slice(at));
    }
    for (const v of variants) for (const limit of LIMITS) assert.equal(nestingTooDeep(v, limit), referenceCount(v, limit));
  }
});
