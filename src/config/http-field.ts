/**
 * What may go into an HTTP header the proxy writes. One rule for the compiler (a spec
 * with a bad header modifier does not compile) and for the sidecar's config check (a
 * config with one is never applied), so neither can let through what the other refuses.
 *
 * A value with CR or LF would let a header modifier forge headers or split a message; Node
 * refuses such values when the request is sent, which turned every matching call into a
 * 502 and every response into an empty reply. The character set below is exactly what
 * Node's `http` module sends (`validateHeaderValue`, a test holds the two together): HTAB,
 * SP, visible ASCII and the obs-text bytes 0x80–0xFF of RFC 9110 §5.5; it refuses NUL and
 * every other control character, DEL, and any character above U+00FF.
 */

/** RFC 9110 §5.1 field name: a token of tchars, as the schema's httpHeaderName spells it. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** A character Node refuses in a header value (RFC 9110 field-value, obs-text included). */
const INVALID_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

/** Whether `name` is a valid HTTP field name (a non-empty token). */
export function isHttpFieldName(name: string): boolean {
  return TOKEN.test(name);
}

/** UTF-16 index of the first character that may not appear in an HTTP field value, or -1. */
export function invalidFieldValueIndex(value: string): number {
  const m = INVALID_VALUE_CHAR.exec(value);
  return m ? m.index : -1;
}

/** Whether `value` may be sent as an HTTP field value as is. */
export function isHttpFieldValue(value: string): boolean {
  return invalidFieldValueIndex(value) < 0;
}

/**
 * A character written so a reader can see it: `\r`, `\n`, `\t`, `\0`, or `U+XXXX` for any
 * other code point (messages name the offending character without printing it raw).
 */
export function describeChar(char: string): string {
  const named: Record<string, string> = { '\r': '\\r', '\n': '\\n', '\t': '\\t', '\0': '\\0' };
  return named[char] ?? `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
}

/**
 * What a path modifier (redirect `replaceFullPath`, rewrite `replacePrefixMatch`) may hold:
 * URL path characters and percent-escapes (RFC 3986 pchar and `/`). The value becomes the
 * request line (a rewrite; Node refuses spaces and controls there) or a redirect's
 * Location header, so CR or LF would split a message. The same pattern is in
 * schema/httproute.schema.json (a test holds the two together).
 */
export const PATH_MODIFIER_PATTERN = "^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})*$";
