/**
 * Escaping for text meant for a terminal. Spec files, their names and command-line
 * arguments are input: printed raw, an ESC sequence could clear or retitle the reader's
 * terminal, a newline in a file name could forge a whole diagnostic line, and a bidi
 * override could make a line read differently from what it holds (CVE-2021-42574,
 * "Trojan Source"). Every text renderer (diagnostics, `trellis diff`, `trellis explain`,
 * `trellis test`) passes input-derived text through `escapeForTerminal`; the line breaks
 * and colours a renderer adds itself are added after escaping. JSON output needs none of
 * this (JSON.stringify escapes C0) and markdown has its own escaping (diff/markdown-escape.ts).
 */

/**
 * Characters a terminal acts on or that reorder what is shown: C0 controls (tab included;
 * see `keepTabs`), DEL, C1 controls, the bidi marks, embeddings, overrides and isolates
 * (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), and the line and paragraph
 * separators U+2028/U+2029, which some terminals and editors break lines on.
 */
const UNSAFE = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const UNSAFE_OR_TAB = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const NAMED: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const named = NAMED[c];
  if (named) return named;
  const code = c.charCodeAt(0);
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/**
 * `text` with every unsafe character written as a visible escape: `\n`, `\r`, `\t`,
 * `\x1b`, `\x9b`, `\u202e`. The result is one line, safe to print, and escaping it again
 * changes nothing (it holds no unsafe character). Backslashes are left alone, so text
 * without unsafe characters, such as a regex `\d+`, prints as written.
 * @param options.keepTabs keep tabs as they are (source excerpts, whose caret line mirrors
 *   them for alignment; a tab moves the cursor and nothing else).
 */
export function escapeForTerminal(text: string, options: { readonly keepTabs?: boolean } = {}): string {
  const pattern = options.keepTabs ? UNSAFE : UNSAFE_OR_TAB;
  pattern.lastIndex = 0;
  return pattern.test(text) ? text.replace(pattern, escapeChar) : text;
}
