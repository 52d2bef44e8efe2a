/**
 * Path normalisation for the inbound port: one canonical spelling of a request path, which
 * the sidecar both authorises (AccessPolicy paths) and forwards to the app, so the app
 * receives exactly the path that was checked. Envoy's `normalize_path` + `merge_slashes`,
 * with RFC 3986 as the reference; the rules are listed on `normalizePath` and in
 * docs/access.md.
 */

/** The outcome of `normalizePath`: the canonical path, or why the path is refused (for logs). */
export type NormalizedPath = { readonly ok: true; readonly path: string } | { readonly ok: false; readonly reason: string };

const SLASH = 0x2f;
const DOT = 0x2e;
const PERCENT = 0x25;
const BACKSLASH = 0x5c;
const SEMICOLON = 0x3b;
/** Highest printable ASCII character (`~`); 0x7f (DEL) and up are refused raw. */
const LAST_PRINTABLE = 0x7e;
/** Lowest printable ASCII character (space); everything below is a control character. */
const FIRST_PRINTABLE = 0x20;

const HEX_DIGITS = '0123456789ABCDEF';

/** Value of one hex digit, or -1. */
function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x41 && code <= 0x46) return code - 0x41 + 10;
  if (code >= 0x61 && code <= 0x66) return code - 0x61 + 10;
  return -1;
}

/** RFC 3986 §2.3 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
function isUnreserved(byte: number): boolean {
  return (
    (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39) || byte === 0x2d || byte === DOT || byte === 0x5f || byte === 0x7e
  );
}

function refuse(reason: string): NormalizedPath {
  return { ok: false, reason };
}

/** Why a raw character (not `%`) is refused, or null when it may appear in a path. */
function rawCharacterProblem(code: number): string | null {
  if (code < FIRST_PRINTABLE || code === 0x7f) return 'control character in the path';
  if (code > LAST_PRINTABLE) return 'non-ASCII character in the path (RFC 3986 wants it percent-encoded)';
  if (code === BACKSLASH) return 'backslash in the path';
  return null;
}

/**
 * Normalises the path of a request target (the part before `?`; the caller splits off the
 * query) into the one spelling that access decisions and the app both see. Rules, in order:
 *
 * 1. The path starts with `/` (origin form); anything else (`*`, `http://…`, '') is refused.
 * 2. Refused: raw control characters (below 0x20, and 0x7f), raw non-ASCII characters, raw
 *    backslashes; a `%` not followed by two hex digits; percent-encoded `/` (`%2F`), `\`
 *    (`%5C`) and control characters (`%00`–`%1F`, `%7F`). These are the spellings on which
 *    proxies and apps disagree about where segments end, so none is guessed at.
 * 3. Percent-encoded unreserved characters (RFC 3986 §2.3: letters, digits, `-._~`) are
 *    decoded (`%61` → `a`, `%2e` → `.`); every other percent-encoding is kept, its hex
 *    upper-cased (`%c3%a9` → `%C3%A9`). `%25` stays `%25`, so nothing is decoded twice.
 * 4. Runs of `/` become one (`//admin` → `/admin`); a trailing `/` is kept.
 * 5. Dot segments are removed as RFC 3986 §5.2.4 says, after decoding (so `%2e%2e` and
 *    `.%2E` count): `.` goes, `..` removes the segment before it and never climbs above the
 *    root (`/..` → `/`). A path ending in a dot segment ends in `/` (`/a/b/..` → `/a/`).
 * 6. A dot segment carrying path parameters (`..;x`, `.;x`) is refused: some servers drop
 *    the parameters and then climb (`/public/..;/admin` reaching `/admin`).
 *
 * Case is kept: HTTP paths are case-sensitive, and since AccessPolicies only grant, a case
 * variant of a granted path matches no grant and is denied.
 *
 * Pure. Runs on every inbound request, so a path with no `%`, `//` or `/.` (and nothing
 * refused) is returned as the same string after one scan, allocating only the result.
 */
export function normalizePath(raw: string): NormalizedPath {
  if (raw.charCodeAt(0) !== SLASH) return refuse('the path does not start with "/"');
  let previous = SLASH;
  for (let i = 1; i < raw.length; i++) {
    const code = raw.charCodeAt(i);
    if (code === PERCENT || (previous === SLASH && (code === SLASH || code === DOT))) return normalizeSlowly(raw);
    const problem = rawCharacterProblem(code);
    if (problem !== null) return refuse(problem);
    previous = code;
  }
  return { ok: true, path: raw };
}

/** Decodes, merges slashes and removes dot segments; `raw` starts with `/`. */
function normalizeSlowly(raw: string): NormalizedPath {
  // Step 1: one spelling per character (rules 2 and 3). After this, every `/` in `decoded`
  // is a real separator and every `.` a real dot.
  let decoded = '';
  let copiedUpTo = 0;
  for (let i = 0; i < raw.length; i++) {
    const code = raw.charCodeAt(i);
    if (code !== PERCENT) {
      const problem = rawCharacterProblem(code);
      if (problem !== null) return refuse(problem);
      continue;
    }
    const high = hexValue(raw.charCodeAt(i + 1));
    const low = hexValue(raw.charCodeAt(i + 2));
    if (high < 0 || low < 0) return refuse('invalid percent-encoding in the path');
    const byte = high * 16 + low;
    if (byte === SLASH) return refuse('percent-encoded "/" (%2F) in the path');
    if (byte === BACKSLASH) return refuse('percent-encoded "\\" (%5C) in the path');
    if (byte < FIRST_PRINTABLE || byte === 0x7f) return refuse('percent-encoded control character in the path');
    decoded += raw.slice(copiedUpTo, i) + (isUnreserved(byte) ? String.fromCharCode(byte) : `%${HEX_DIGITS[high]}${HEX_DIGITS[low]}`);
    copiedUpTo = i + 3;
    i += 2;
  }
  decoded += raw.slice(copiedUpTo);

  // Step 2: segments (rules 4 to 6). `decoded` starts with `/`, so segments[0] is ''.
  const segments = decoded.split('/');
  const kept: string[] = [];
  let trailingSlash = false;
  for (let s = 1; s < segments.length; s++) {
    const segment = segments[s]!;
    const last = s === segments.length - 1;
    if (segment === '' || segment === '.') {
      // Empty segments are merged slashes; a final one (or a final `.`) is a trailing `/`.
      trailingSlash = last;
    } else if (segment === '..') {
      kept.pop();
      trailingSlash = last;
    } else if (segment.charCodeAt(0) === DOT && (segment.charCodeAt(1) === SEMICOLON || (segment.charCodeAt(1) === DOT && segment.charCodeAt(2) === SEMICOLON))) {
      return refuse('dot segment with path parameters (such as "..;") in the path');
    } else {
      kept.push(segment);
      trailingSlash = false;
    }
  }
  if (kept.length === 0) return { ok: true, path: '/' };
  return { ok: true, path: `/${kept.join('/')}${trailingSlash ? '/' : ''}` };
}
