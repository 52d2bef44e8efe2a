/**
 * Making user-controlled text safe inside GitHub-flavoured markdown: service names, header
 * values, paths and diagnostic messages come from the pull request, and must neither break
 * a table or a code fence nor mention people, link issues or inject HTML.
 */

/**
 * Characters that mean something to GFM, HTML or GitHub's autolinker, as numeric character
 * references (which GFM decodes in text, so the reader sees the character itself). `@`
 * (mentions), `#` (issue links) and `:` (emoji, URL schemes) are included, and `$` (GitHub math). Characters that matter
 * only at the start of a line (`-`, `+`, `=`, digits) are kept: escaped text never starts one.
 */
const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', '|': '&#124;', '\\': '&#92;', '`': '&#96;', '*': '&#42;', _: '&#95;',
  '[': '&#91;', ']': '&#93;', '(': '&#40;', ')': '&#41;', '!': '&#33;', '#': '&#35;', '@': '&#64;', '~': '&#126;', ':': '&#58;',
  $: '&#36;',
};

/** Text for a markdown paragraph or table cell: every special character escaped, line breaks as spaces. */
export function escapeMarkdown(text: string): string {
  return text.replace(/\r\n|\r|\n/g, ' ').replace(/[&<>"|\\`*_[\]()!#@~:$]/g, (c) => ESCAPES[c]!);
}

/**
 * A fenced code block that its content cannot close: the fence is one backtick longer than
 * the longest backtick run inside. Mentions and markdown do not act inside code blocks.
 */
export function codeBlock(content: string, language = ''): string {
  const longest = Math.max(0, ...[...content.matchAll(/`+/g)].map((m) => m[0].length));
  const fence = '`'.repeat(Math.max(3, longest + 1));
  return `${fence}${language}\n${content.endsWith('\n') ? content : content + '\n'}${fence}`;
}

/**
 * Text inside a double-quoted mermaid label: characters that end the label or the edge
 * (`"`, `|`), start markup (`<`, `>`, `` ` ``) or an entity (`#`, `&`) as mermaid entity codes.
 */
export function mermaidLabel(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/["<>#&|`]/g, (c) => `#${c.charCodeAt(0)};`);
}
