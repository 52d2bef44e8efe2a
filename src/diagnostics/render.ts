import type { Diagnostic, Span } from './diagnostic.ts';
import { CODES } from './codes.ts';
import { escapeForTerminal } from './terminal-escape.ts';

/** How rendered paths and colours look. */
export interface RenderOptions {
  /** Prepended to each file's spec-relative path, so printed paths open from the user's cwd. */
  readonly pathPrefix?: string;
  /** ANSI colours; callers decide from the TTY and NO_COLOR. */
  readonly color?: boolean;
  /**
   * Diagnostics printed per file before an `… and N more` line (DIAGNOSTICS_PER_FILE by
   * default); the summary still counts every one. `Infinity` prints all.
   */
  readonly maxPerFile?: number;
}

/**
 * Diagnostics printed per file by default. A generated or pasted file can hold tens of
 * thousands of problems, and printing each with its excerpt buries the first ones (which
 * usually explain the rest) under megabytes of output; `--format json` still lists all.
 */
export const DIAGNOSTICS_PER_FILE = 50;

const ANSI = { red: '\x1b[31m', yellow: '\x1b[33m', cyan: '\x1b[36m', bold: '\x1b[1m', dim: '\x1b[2m', reset: '\x1b[0m' };

function paint(on: boolean | undefined, style: keyof typeof ANSI, text: string): string {
  return on ? `${ANSI[style]}${text}${ANSI.reset}` : text;
}

function joinPath(prefix: string | undefined, path: string): string {
  if (!prefix || prefix === '.') return path;
  return prefix.endsWith('/') ? prefix + path : `${prefix}/${path}`;
}

/**
 * `file:line:col` of a span's start, unescaped (for data such as `explain --format json`);
 * text renderers escape it with the rest of their line (a file name may hold a newline).
 */
export function formatLocation(span: Span, options: RenderOptions = {}): string {
  const { line, col } = span.file.position(span.start);
  return `${joinPath(options.pathPrefix, span.file.path)}:${line}:${col}`;
}

/**
 * Widest source excerpt printed, in columns. A minified or generated file may hold a line
 * of a megabyte, which printed whole (with a caret line as long) would bury the diagnostic
 * under megabytes of output; compilers cut such lines around the caret the same way.
 */
export const EXCERPT_WIDTH = 120;

/** Longest message, hint or note printed: they may quote a value of any length from the spec. */
export const MESSAGE_WIDTH = 300;

/** `text` cut to `max` columns in the middle, with an ellipsis, when longer. */
function shorten(text: string, max: number): string {
  if (text.length <= max) return text;
  const head = Math.ceil((max - 1) * 2 / 3);
  return `${text.slice(0, head)}…${text.slice(text.length - (max - 1 - head))}`;
}

/**
 * The source line of a span with a caret run under it (a one-line excerpt, tabs kept).
 * The line is escaped for the terminal, and the caret measured on the escaped text so it
 * stays under the characters it marks. A line wider than EXCERPT_WIDTH is cut around the
 * caret, each cut marked with an ellipsis: up to 40 columns before it, up to 60 marked.
 */
function excerpt(span: Span, options: RenderOptions): string[] {
  const start = span.file.position(span.start);
  const end = span.file.position(Math.max(span.start, span.end - 1));
  const raw = span.file.lineText(start.line);
  const show = (t: string) => escapeForTerminal(t, { keepTabs: true });
  const gutter = String(start.line);
  const pad = ' '.repeat(gutter.length);
  const marked = end.line === start.line ? raw.slice(start.col - 1, end.col) : raw.slice(start.col - 1);
  let before = show(raw.slice(0, start.col - 1));
  let mark = show(marked);
  let after = show(raw.slice(start.col - 1 + marked.length));
  // Columns as before escaping (a span may end on the line break, one caret past the
  // text), plus what escaping the marked characters added.
  const columns = end.line === start.line ? end.col - start.col + 1 : raw.length - start.col + 1;
  let width = Math.max(1, columns + mark.length - marked.length);
  if (before.length + Math.max(mark.length, width) + after.length > EXCERPT_WIDTH) {
    if (before.length > 40) before = `…${before.slice(before.length - 39)}`;
    if (mark.length > 60) mark = `${mark.slice(0, 59)}…`;
    width = Math.min(width, 60);
    const room = Math.max(0, EXCERPT_WIDTH - before.length - mark.length);
    if (after.length > room) after = room > 0 ? `${after.slice(0, room - 1)}…` : '';
  }
  const lead = before.replace(/[^\t]/g, ' ');
  return [
    ` ${paint(options.color, 'dim', `${gutter} |`)} ${before}${mark}${after}`,
    ` ${paint(options.color, 'dim', `${pad} |`)} ${lead}${paint(options.color, 'bold', '^'.repeat(width))}`,
  ];
}

/**
 * Renders one diagnostic like a compiler, for a terminal (input-derived text escaped):
 * `mesh/checkout.yaml:12:7: error TRL3003: …`, the source line with a caret, then hint and notes.
 */
export function renderDiagnostic(d: Diagnostic, options: RenderOptions = {}): string {
  const colour = d.severity === 'error' ? 'red' : d.severity === 'warning' ? 'yellow' : 'cyan';
  // Messages, hints and paths quote the spec and the disk: escaped, each stays one line.
  const where = d.span ? `${escapeForTerminal(formatLocation(d.span, options))}: ` : d.path !== undefined ? `${escapeForTerminal(joinPath(options.pathPrefix, d.path))}: ` : '';
  const text = (t: string) => shorten(escapeForTerminal(t), MESSAGE_WIDTH);
  const lines = [`${paint(options.color, 'bold', where)}${paint(options.color, colour, `${d.severity} ${d.code}`)}: ${text(d.message)}`];
  if (d.span) lines.push(...excerpt(d.span, options));
  if (d.hint) lines.push(`  ${paint(options.color, 'cyan', 'hint')}: ${text(d.hint)}`);
  for (const r of d.related ?? []) lines.push(`  note: ${escapeForTerminal(formatLocation(r.span, options))}: ${text(r.message)}`);
  return lines.join('\n');
}

/** `2 errors, 1 warning` — or `no problems`. */
export function summarize(diagnostics: readonly Diagnostic[]): string {
  const count = (s: string) => diagnostics.filter((d) => d.severity === s).length;
  const parts: string[] = [];
  for (const [sev, n] of [['error', count('error')], ['warning', count('warning')], ['info', count('info')]] as const) {
    if (n > 0) parts.push(`${n} ${sev}${n === 1 ? '' : 's'}`);
  }
  return parts.length === 0 ? 'no problems' : parts.join(', ');
}

/** The file a diagnostic is about, for grouping ('' for none). */
function fileOf(d: Diagnostic): string {
  return d.span?.file.path ?? d.path ?? '';
}

/**
 * Renders a whole list, blank-line separated, with the summary last. At most
 * `maxPerFile` diagnostics of one file are printed (in list order); the rest of that file's
 * are counted on one line after its last printed one: `path: … and N more in this file`.
 * Diagnostics of no file are never capped.
 */
export function renderDiagnostics(diagnostics: readonly Diagnostic[], options: RenderOptions = {}): string {
  const max = Math.max(1, options.maxPerFile ?? DIAGNOSTICS_PER_FILE);
  // First pass: each capped file's diagnostics beyond the first `max`.
  const seen = new Map<string, number>();
  const hidden = new Map<string, Diagnostic[]>();
  for (const d of diagnostics) {
    const file = fileOf(d);
    const n = (seen.get(file) ?? 0) + 1;
    seen.set(file, n);
    if (file === '' || n <= max) continue;
    const list = hidden.get(file);
    if (list) list.push(d);
    else hidden.set(file, [d]);
  }
  const printed = new Map<string, number>();
  const blocks: string[] = [];
  for (const d of diagnostics) {
    const file = fileOf(d);
    const n = (printed.get(file) ?? 0) + 1;
    printed.set(file, n);
    if (file !== '' && n > max) continue;
    blocks.push(renderDiagnostic(d, options));
    const more = n === max ? hidden.get(file) : undefined;
    if (more) blocks.push(`${escapeForTerminal(joinPath(options.pathPrefix, file))}: … and ${more.length} more in this file (${summarize(more)})`);
  }
  blocks.push(summarize(diagnostics));
  return blocks.join('\n\n') + '\n';
}

/** A diagnostic as plain data, for `--format json`, golden files and PR tooling. */
export interface DiagnosticJson {
  code: string;
  name: string;
  severity: string;
  message: string;
  file?: string;
  line?: number;
  col?: number;
  endLine?: number;
  endCol?: number;
  hint?: string;
  related?: Array<{ file: string; line: number; col: number; message: string }>;
}

export function diagnosticToJson(d: Diagnostic, options: RenderOptions = {}): DiagnosticJson {
  const out: DiagnosticJson = { code: d.code, name: CODES[d.code].name, severity: d.severity, message: d.message };
  if (d.span) {
    const s = d.span.file.position(d.span.start);
    const e = d.span.file.position(d.span.end);
    Object.assign(out, { file: joinPath(options.pathPrefix, d.span.file.path), line: s.line, col: s.col, endLine: e.line, endCol: e.col });
  }
  else if (d.path !== undefined) out.file = joinPath(options.pathPrefix, d.path);
  if (d.hint) out.hint = d.hint;
  if (d.related) {
    out.related = d.related.map((r) => {
      const p = r.span.file.position(r.span.start);
      return { file: joinPath(options.pathPrefix, r.span.file.path), line: p.line, col: p.col, message: r.message };
    });
  }
  return out;
}
