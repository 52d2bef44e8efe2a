/**
 * normalizePath: the attacks it must defeat, one row each, and properties over generated
 * paths (fast-check) that hold for every input.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { normalizePath } from '../../src/config/normalize-path.ts';

/** [input, normalised path] */
const NORMALISED: ReadonlyArray<readonly [string, string]> = [
  // unchanged
  ['/', '/'],
  ['/admin', '/admin'],
  ['/api/v1/orders', '/api/v1/orders'],
  ['/api/', '/api/'], // trailing slash kept
  ['/Admin', '/Admin'], // case kept
  ['/a;b=c/d', '/a;b=c/d'],
  ['/files/a..b/c.', '/files/a..b/c.'], // dots inside a segment are not dot segments
  ['/.well-known/x', '/.well-known/x'],
  ['/...', '/...'],
  // dot segments
  ['/a/../admin', '/admin'],
  ['/public/../admin', '/admin'],
  ['/public/./x', '/public/x'],
  ['/..', '/'],
  ['/../../admin', '/admin'], // never above the root
  ['/.', '/'],
  ['/a/.', '/a/'],
  ['/a/b/..', '/a/'],
  ['/a/b/c/./../../g', '/a/g'], // RFC 3986 §5.2.4 example
  // repeated slashes
  ['//admin', '/admin'],
  ['///admin//x', '/admin/x'],
  ['/api//', '/api/'],
  ['/a//../b', '/b'], // slashes merged first, as Go's path.Clean does
  // percent-encoding
  ['/%61dmin', '/admin'],
  ['/%41%42', '/AB'],
  ['/public/%2e%2e/admin', '/admin'],
  ['/public/%2E%2E/admin', '/admin'],
  ['/public/.%2E/admin', '/admin'],
  ['/public/%2e./admin', '/admin'],
  ['/public/%2e/x', '/public/x'],
  ['/a%2d%5f%7e', '/a-_~'],
  ['/caf%c3%a9', '/caf%C3%A9'], // other encodings kept, hex upper-cased
  ['/a%20b', '/a%20b'],
  ['/%3Fq', '/%3Fq'],
  ['/100%25', '/100%25'], // a literal % stays encoded, so nothing is decoded twice
  ['/%252e%252e/admin', '/%252e%252e/admin'],
];

/** [input, words the reason must contain] */
const REFUSED: ReadonlyArray<readonly [string, RegExp]> = [
  ['', /start with/],
  ['admin', /start with/],
  ['*', /start with/],
  ['http://x/admin', /start with/],
  ['/public/..%2Fadmin', /%2F/],
  ['/public/..%2fadmin', /%2F/],
  ['/a%2F..%2F..%2Fadmin', /%2F/],
  ['/public/..%5Cadmin', /%5C/],
  ['/public\\..\\admin', /backslash/],
  ['\\admin', /start with/],
  ['/admin%00.html', /control/],
  ['/admin%0a', /control/],
  ['/admin%7F', /control/],
  ['/admin\u0000', /control/],
  ['/admin\r\nx: y', /control/],
  ['/admin\t', /control/],
  ['/adm\u00efn', /non-ASCII/],
  ['/%', /percent-encoding/],
  ['/%4', /percent-encoding/],
  ['/%zz', /percent-encoding/],
  ['/%%32%65', /percent-encoding/],
  ['/public/..;/admin', /path parameters/],
  ['/public/.;x/admin', /path parameters/],
  ['/public/%2e%2e;/admin', /path parameters/],
];

describe('normalizePath', () => {
  for (const [input, expected] of NORMALISED) {
    test(`${JSON.stringify(input)} → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(normalizePath(input), { ok: true, path: expected });
    });
  }
  for (const [input, reason] of REFUSED) {
    test(`${JSON.stringify(input)} is refused`, () => {
      const result = normalizePath(input);
      assert.equal(result.ok, false, `expected a refusal, got ${JSON.stringify(result)}`);
      if (!result.ok) assert.match(result.reason, reason);
    });
  }

  test('a path that needs no change comes back as the same string', () => {
    const raw = '/api/v1/orders/1234';
    const result = normalizePath(raw);
    assert.ok(result.ok);
    assert.equal(result.path, raw);
  });
});

/** Pieces that make up tricky but acceptable paths: separators, dots, encodings, letters. */
const ACCEPTED_PIECE = fc.constantFrom('/', '//', '.', '..', '%2e', '%2E', '%41', '%61', '%7e', '%c3', '%3B', '%25', ';', 'a', 'B', 'admin', 'x.y', '-', '~', '?', '#');
/** Pieces that get a path refused; rare, so that most generated paths get through. */
const REFUSED_PIECE = fc.constantFrom('%2f', '%5c', '%00', '%', '%g1', '\\', '\u00e9', '\u0007', '..;');
const PIECE = fc.oneof({ arbitrary: ACCEPTED_PIECE, weight: 30 }, { arbitrary: REFUSED_PIECE, weight: 1 });
/** Paths that start with `/`, with anything after. */
const PATH = fc.array(PIECE, { maxLength: 24 }).map((pieces) => `/${pieces.join('')}`);
/** Inputs of any shape, including ones without the leading `/`. */
const ANY = fc.oneof(PATH, fc.array(PIECE, { maxLength: 12 }).map((p) => p.join('')), fc.string());

describe('normalizePath properties', () => {
  test('the output starts with "/" and holds no "//", "/./", "/../", nor ends in "/." or "/.."', () => {
    fc.assert(
      fc.property(ANY, (input) => {
        const result = normalizePath(input);
        if (!result.ok) return;
        const p = result.path;
        assert.ok(p.startsWith('/'), p);
        assert.ok(!p.includes('//'), p);
        assert.ok(!p.includes('/./'), p);
        assert.ok(!p.includes('/../'), p);
        assert.ok(!p.endsWith('/..') && !p.endsWith('/.'), p);
      }),
      { numRuns: 5000 },
    );
  });

  test('it is idempotent: a normalised path normalises to itself', () => {
    fc.assert(
      fc.property(ANY, (input) => {
        const once = normalizePath(input);
        if (!once.ok) return;
        assert.deepEqual(normalizePath(once.path), once);
      }),
      { numRuns: 5000 },
    );
  });

  test('percent-encodings left in the output are upper-case and never of unreserved characters', () => {
    fc.assert(
      fc.property(PATH, (input) => {
        const result = normalizePath(input);
        if (!result.ok) return;
        for (const [, hex] of result.path.matchAll(/%(..)/g)) {
          assert.match(hex!, /^[0-9A-F]{2}$/);
          assert.doesNotMatch(String.fromCharCode(parseInt(hex!, 16)), /[A-Za-z0-9._~-]/);
        }
      }),
      { numRuns: 5000 },
    );
  });

  test('a WHATWG URL parser (as apps use) resolves the output to itself: no dot segment is left for the app to find', () => {
    // Kept to characters WHATWG does not re-encode in a path, so the comparison is exact.
    const urlSafe = fc
      .array(fc.constantFrom('/', '//', '.', '..', '%2e', '%2E', '%41', '%c3', '%25', ';', 'a', 'B', 'x.y', '~'), { maxLength: 24 })
      .map((pieces) => `/${pieces.join('')}`);
    fc.assert(
      fc.property(urlSafe, (input) => {
        const result = normalizePath(input);
        if (!result.ok) return;
        assert.equal(new URL(result.path, 'http://app.local').pathname, result.path);
      }),
      { numRuns: 5000 },
    );
  });

  test('a path without "%", "\\\\", "//" or "/." and with only printable ASCII is returned unchanged', () => {
    const plain = fc
      .array(fc.constantFrom('/', 'a', 'Z', '0', '-', '_', '~', ';', '=', 'x.y', '..', '.'), { maxLength: 24 })
      .map((pieces) => `/${pieces.join('')}`)
      .filter((p) => !p.includes('//') && !p.includes('/.'));
    fc.assert(
      fc.property(plain, (input) => {
        assert.deepEqual(normalizePath(input), { ok: true, path: input });
      }),
    );
  });
});
