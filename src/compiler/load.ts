/**
 * Stage 1: load. Reads the spec root from disk (the only stage that does I/O) and parses
 * every YAML document with limits, into documents that remember their source nodes so
 * later stages can point diagnostics at them.
 */
import { closeSync, fstatSync, openSync, readdirSync, readSync, statSync, type Dirent } from 'node:fs';
import { join, relative, sep } from 'node:path';
import jsYaml from 'js-yaml';
import * as YAML from 'yaml';
import { diagnostic, type Diagnostic, type Span } from '../diagnostics/diagnostic.ts';
import { SourceFile } from '../diagnostics/source-file.ts';
import { KIND_API_VERSIONS, type SpecKind } from '../spec/types.ts';
import { CORE_BOOL, CORE_FLOAT, CORE_INT, coreFloat, coreInt, isCoreNull, locatePlain, parsePlainYaml, type PlainDocument } from './plain-yaml.ts';
import { closest } from './suggest.ts';

/** Limits that keep hostile or broken YAML from costing more than a bad diagnostic. */
export interface LoadLimits {
  /** Largest spec file read, in bytes. Real spec files are a few KiB. */
  readonly maxFileBytes: number;
  /** Alias expansions per document; YAML "billion laughs" needs thousands. */
  readonly maxAliasCount: number;
  /** Deepest nesting of collections; real specs stay under 12. */
  readonly maxDepth: number;
}

export const DEFAULT_LIMITS: LoadLimits = { maxFileBytes: 1024 * 1024, maxAliasCount: 100, maxDepth: 64 };

/** One YAML document of the spec, parsed and checked for kind and apiVersion. */
export interface ParsedDocument {
  readonly file: SourceFile;
  /** 0-based position of the document among the file's non-empty documents. */
  readonly index: number;
  /** Plain data of the document (aliases expanded). */
  readonly value: Record<string, unknown>;
  readonly kind: SpecKind;
  readonly apiVersion: string;
}

export interface LoadResult {
  readonly files: SourceFile[];
  readonly diagnostics: Diagnostic[];
}

function isSpecFileName(name: string): boolean {
  return name.endsWith('.yaml') || name.endsWith('.yml');
}

/**
 * Reads every `*.yaml`/`*.yml` file under `root`, skipping hidden files and folders
 * (`.git`, `.github`, …) and symbolic links (a spec repo must not reach outside itself).
 * Files come back sorted by path, so later stages never see the disk's order.
 */
export function readSpecDir(root: string, limits: LoadLimits = DEFAULT_LIMITS): LoadResult {
  const files: SourceFile[] = [];
  const diagnostics: Diagnostic[] = [];
  // Synchronous reads on purpose: thousands of small files read one after another in a
  // tight loop cost a fraction of awaiting each (0.2 s against 4 s for 9 000 files), and
  // load is the one stage that touches the disk.
  let rootStat: ReturnType<typeof statSync> | NodeJS.ErrnoException;
  try {
    rootStat = statSync(root);
  } catch (err) {
    rootStat = err as NodeJS.ErrnoException;
  }
  if (rootStat instanceof Error || !rootStat?.isDirectory()) {
    const why = rootStat instanceof Error ? ((rootStat as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : rootStat.message) : 'is not a folder';
    diagnostics.push(diagnostic('TRL1010', `spec folder "${root}" ${why}`, undefined, { hint: 'name the folder that holds the mesh spec, such as examples/shop' }));
    return { files, diagnostics };
  }
  const unreadable = (full: string, err: unknown) =>
    diagnostics.push(diagnostic('TRL1010', `cannot read: ${(err as Error).message}`, undefined, { path: relative(root, full).split(sep).join('/') }));
  // Folders to read, each with its path relative to the root as shown to users (built up
  // name by name: path.relative for each of thousands of files cost more than reading them).
  const pending: Array<[dir: string, shown: string]> = [[root, '']];
  while (pending.length > 0) {
    const [dir, shownDir] = pending.pop()!;
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      unreadable(dir, err);
      continue;
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      // join() for the root's entries (the root may be written any way: "./spec/"); below
      // it, a folder's path is join()'s own output, to which a name adds exactly this.
      const full = shownDir === '' ? join(dir, entry.name) : dir + sep + entry.name;
      const path = shownDir === '' ? entry.name : `${shownDir}/${entry.name}`;
      if (entry.isDirectory()) pending.push([full, path]);
      else if (entry.isFile() && isSpecFileName(entry.name)) {
        try {
          const bytes = readSmallFile(full, limits.maxFileBytes);
          if (typeof bytes === 'number') {
            diagnostics.push(
              diagnostic('TRL1001', `file is ${bytes} bytes; spec files may be at most ${limits.maxFileBytes} bytes`, undefined, { path, hint: 'split it into several files' }),
            );
            continue;
          }
          const decoded = decodeSpecFile(path, bytes);
          if ('file' in decoded) files.push(decoded.file);
          else diagnostics.push(decoded.diagnostic);
        } catch (err) {
          unreadable(full, err);
        }
      }
    }
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files, diagnostics };
}

/**
 * A file's bytes, or its size when that is over `maxBytes` (nothing then is read). The size
 * comes from the open file (fstat), not from a stat of the path before reading: one path
 * lookup per file instead of two, which at 9 000 files was a tenth of reading them.
 */
function readSmallFile(path: string, maxBytes: number): Uint8Array | number {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size > maxBytes) return size;
    const bytes = Buffer.allocUnsafe(size);
    let filled = 0;
    // As readFileSync does: read the size found, less if the file shrank meanwhile.
    while (filled < size) {
      const n = readSync(fd, bytes, filled, size - filled, null);
      if (n === 0) break;
      filled += n;
    }
    return filled === size ? bytes : bytes.subarray(0, filled);
  } finally {
    closeSync(fd);
  }
}

/** TRL1012 for a file that is not text at all; `where` says where its first NUL is. */
function binaryFile(path: string, where: string): Diagnostic {
  return diagnostic('TRL1012', `file is binary, not YAML text: it holds a NUL byte (${where})`, undefined, { path, hint: 'only *.yaml and *.yml files are read; rename or move a file that is not a spec' });
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const LOSSY_UTF8 = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * Index of the first byte that does not start or continue a UTF-8 character as the
 * Encoding Standard reads it (no overlong forms, surrogates or code points past U+10FFFF),
 * or -1. Run only once the strict decoder has refused the bytes, to say where.
 */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    const need = b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : 0;
    if (need === 0) return i;
    const [lo, hi] = b === 0xe0 ? [0xa0, 0xbf] : b === 0xed ? [0x80, 0x9f] : b === 0xf0 ? [0x90, 0xbf] : b === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf];
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) return i;
    }
    i += need + 1;
  }
  return -1;
}

/**
 * A spec file's bytes as text, or the reason they are not UTF-8 text (TRL1012): YAML is
 * read as UTF-8, and decoding anything else silently (as Node's 'utf8' does, with U+FFFD)
 * would compile a value the author never wrote. UTF-16 files (byte order mark) and binary
 * files (NUL bytes) are named as such, without their bytes; for other invalid bytes the
 * diagnostic points at the first one. A UTF-8 byte order mark is kept in the text, as the
 * YAML parsers expect it.
 */
export function decodeSpecFile(path: string, bytes: Uint8Array): { file: SourceFile } | { diagnostic: Diagnostic } {
  const hint = 'save the file as UTF-8 text (editors offer it under "encoding"; iconv -t UTF-8 converts from the command line)';
  if (bytes.length >= 2 && ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff))) {
    const order = bytes[0] === 0xff ? 'little-endian' : 'big-endian';
    return { diagnostic: diagnostic('TRL1012', `file is UTF-16 (${order}, it starts with a UTF-16 byte order mark); spec files are read as UTF-8`, undefined, { path, hint }) };
  }
  const nul = bytes.indexOf(0);
  if (nul >= 0) {
    // ASCII text saved as UTF-16 without a byte order mark: every other byte is NUL.
    if (bytes.length >= 4 && ((bytes[0] === 0 && bytes[2] === 0 && bytes[1] !== 0) || (bytes[1] === 0 && bytes[3] === 0 && bytes[0] !== 0))) {
      const order = bytes[0] === 0 ? 'big-endian' : 'little-endian';
      return { diagnostic: diagnostic('TRL1012', `file looks like UTF-16 (${order}, without a byte order mark); spec files are read as UTF-8`, undefined, { path, hint }) };
    }
    return { diagnostic: binaryFile(path, `at byte ${nul}`) };
  }
  try {
    return { file: new SourceFile(path, STRICT_UTF8.decode(bytes)) };
  } catch {
    const bad = firstInvalidUtf8(bytes);
    const file = new SourceFile(path, LOSSY_UTF8.decode(bytes));
    const at = LOSSY_UTF8.decode(bytes.subarray(0, Math.max(0, bad))).length;
    const byte = `0x${bytes[bad]!.toString(16).padStart(2, '0')}`;
    return { diagnostic: diagnostic('TRL1012', `file is not valid UTF-8: byte ${byte} (at byte offset ${bad}) does not start or continue a character`, { file, start: at, end: at + 1 }, { hint }) };
  }
}

/**
 * Offset at which collection nesting first exceeds `limit`, or -1. Counted before parsing:
 * both parsers recurse, so a deeply nested file would cost seconds, or the stack ("Maximum
 * call stack size exceeded"), before any limit could apply.
 *
 * Block levels are counted from indentation (a stack of the columns of open block
 * collections, compact `- ` and `? ` indicators each opening one more) and flow levels
 * from `[`/`{`; a line's depth is the two together. Quotes and comments are skipped
 * roughly, and the lines of block scalars (`|`, `>`) are not counted. The count only has to
 * be close for real specs (a dozen levels against a limit of 64) and exact for hostile
 * ones, which nest plainly.
 */
export function nestingTooDeep(text: string, limit: number): number {
  // Character codes rather than one-character strings: this runs over every byte of the spec.
  const columns: number[] = [];
  let flow = 0;
  let quote = 0; // the open quote's code, or 0
  let scalarParent = -1; // indentation of the line that opened a block scalar, while inside it
  // Offset of the next character the per-character scan cares about (SCAN_SPECIAL), at or
  // after where the scan last looked: most lines have none and skip the scan.
  let special = -1;
  let lineStart = 0;
  while (lineStart <= text.length) {
    let lineEnd = text.indexOf('\n', lineStart);
    if (lineEnd < 0) lineEnd = text.length;
    let i = lineStart;
    while (i < lineEnd && text.charCodeAt(i) === 32) i++;
    const indent = i - lineStart;
    const first = text.charCodeAt(i);
    const blank = i === lineEnd || first === 35 /* # */ || first === 13; /* \r */
    if (scalarParent >= 0 && (blank || indent > scalarParent)) {
      lineStart = lineEnd + 1;
      continue;
    }
    scalarParent = -1;
    if (flow === 0 && quote === 0 && !blank) {
      if (indent === 0 && (text.startsWith('---', i) || text.startsWith('...', i))) columns.length = 0;
      else {
        while (columns.length > 0 && columns[columns.length - 1]! >= indent) columns.pop();
        columns.push(indent);
        // Compact collections: `- - x`, `- ? k`, `- k: v` open one level per indicator.
        for (let c = text.charCodeAt(i); (c === 45 /* - */ || c === 63) /* ? */ && (i + 1 === lineEnd || text.charCodeAt(i + 1) === 32); c = text.charCodeAt(i)) {
          i++;
          while (i < lineEnd && text.charCodeAt(i) === 32) i++;
          if (i < lineEnd) columns.push(i - lineStart);
          if (columns.length > limit) return i;
        }
        if (columns.length > limit) return i;
      }
    }
    if (special < i) {
      SCAN_SPECIAL.lastIndex = i;
      special = SCAN_SPECIAL.exec(text)?.index ?? text.length;
    }
    if (special >= lineEnd) {
      // Nothing on this line opens a quote, a comment, a flow collection or a block scalar.
      lineStart = lineEnd + 1;
      continue;
    }
    let lastSignificant = -1;
    let indicator = false; // a `|` or `>` anywhere on the line: only then can it open a block scalar
    for (; i < lineEnd; i++) {
      const c = text.charCodeAt(i);
      if (c === 124 || c === 62) indicator = true;
      if (quote !== 0) {
        if (c === quote) quote = 0;
        continue;
      }
      if (c === 34 || c === 39) quote = c;
      else if (c === 35 && (i === lineStart || text.charCodeAt(i - 1) === 32 || text.charCodeAt(i - 1) === 9)) break;
      else if (c === 91 || c === 123) {
        if (++flow + columns.length > limit) return i;
      } else if (c === 93 || c === 125) flow = Math.max(0, flow - 1);
      if (c !== 32 && c !== 9 && c !== 13) lastSignificant = c;
    }
    quote = 0; // the rough rule: a quote never spans lines here
    // `key: |`, `- >-`, `|2`: the lines that follow, more indented, are text.
    if (indicator && flow === 0 && BLOCK_SCALAR_LAST.has(lastSignificant) && /(^|[\s:-])[|>][-+0-9]*$/.test(text.slice(lineStart, lineEnd).replace(/\s+#.*$/, '').trimEnd())) scalarParent = indent;
    lineStart = lineEnd + 1;
  }
  return -1;
}

/**
 * The characters that make a line's per-character scan in nestingTooDeep matter: brackets
 * and block scalar indicators. Quotes and comments alone change nothing: they only hide
 * these characters, and end with the line.
 */
const SCAN_SPECIAL = /[[\]{}|>]/g;

/** Codes of the characters a block scalar's header can end in: `|`, `>`, `-`, `+` and digits. */
const BLOCK_SCALAR_LAST = new Set([...'|>-+0123456789'].map((c) => c.charCodeAt(0)));

/** Depth of the deepest collection in a parsed node, stopping early once over `limit`. */
function nodeDepth(root: unknown, limit: number): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (YAML.isMap(node) || YAML.isSeq(node)) {
      max = Math.max(max, depth);
      if (max > limit) return max;
      for (const item of node.items) {
        if (YAML.isPair(item)) stack.push([item.value, depth + 1]);
        else stack.push([item, depth + 1]);
      }
    }
  }
  return max;
}

function spanOf(file: SourceFile, range: readonly number[] | null | undefined): Span {
  const start = range?.[0] ?? 0;
  const end = range?.[1] ?? start;
  return { file, start, end: Math.max(end, start + 1) };
}

/** The whole document's span, for problems that belong to no one node. */
function documentSpan(file: SourceFile, doc: YAML.Document.Parsed): Span {
  return spanOf(file, doc.contents?.range ?? doc.range);
}

const KINDS = Object.keys(KIND_API_VERSIONS) as SpecKind[];

/**
 * Parses the files into documents. Pure: the same files give the same documents and
 * diagnostics. A document with any problem here is dropped (its diagnostics kept), so
 * later stages only see well-formed documents of known kinds.
 */
export function parseSpecFiles(files: readonly SourceFile[], limits: LoadLimits = DEFAULT_LIMITS): { documents: ParsedDocument[]; diagnostics: Diagnostic[] } {
  const documents: ParsedDocument[] = [];
  const diagnostics: Diagnostic[] = [];
  for (const file of files) {
    // Files from other readers than readSpecDir (git blobs) arrive decoded already; YAML
    // allows no NUL, and one means a binary or UTF-16 file: say so rather than echo it.
    const nul = file.text.indexOf('\0');
    if (nul >= 0) {
      diagnostics.push(binaryFile(file.path, `at character ${nul}`));
      continue;
    }
    const deep = nestingTooDeep(file.text, limits.maxDepth);
    if (deep >= 0) {
      diagnostics.push(diagnostic('TRL1005', `YAML nests deeper than ${limits.maxDepth} levels`, spanOf(file, [deep, deep + 1]), { hint: 'flatten the structure; real specs nest a dozen levels at most' }));
      continue;
    }
    const plain = parsePlainYaml(file.text);
    if (plain) {
      plainDocuments.set(file, plain);
      plain.forEach((doc, index) => {
        const classified = classify(file, index, doc.value, diagnostics);
        if (classified) documents.push(classified);
      });
      continue;
    }
    const values = parseWithFastPath(file.text);
    if (values) {
      values.forEach((value, index) => {
        const doc = classify(file, index, value, diagnostics);
        if (doc) documents.push(doc);
      });
      continue;
    }
    let docs: YAML.Document.Parsed[];
    try {
      docs = yamlDocuments(file);
    } catch (err) {
      // A stack overflow means nesting the pre-count missed (it is rough on purpose): say so.
      if (err instanceof RangeError) diagnostics.push(diagnostic('TRL1005', `YAML nests too deeply to parse (the limit is ${limits.maxDepth} levels)`, spanOf(file, [0, 1]), { hint: 'flatten the structure; real specs nest a dozen levels at most' }));
      else diagnostics.push(diagnostic('TRL1002', `YAML could not be parsed: ${(err as Error).message}`, spanOf(file, [0, 1])));
      continue;
    }
    docs.forEach((doc, index) => {
      const value = parseDocument(file, doc, limits, diagnostics);
      if (value === undefined) return;
      const classified = classify(file, index, value, diagnostics);
      if (classified) documents.push(classified);
    });
  }
  return { documents, diagnostics };
}

/**
 * YAML 1.2 core schema scalars for js-yaml, spelled exactly as the positional parser reads
 * them: js-yaml's own core schema also takes `0b101` and `1_000` as numbers, which YAML 1.2
 * reads as strings.
 */
const YAML_12_CORE = (() => {
  const int = new jsYaml.Type('tag:yaml.org,2002:int', {
    kind: 'scalar',
    resolve: (s: unknown) => typeof s === 'string' && CORE_INT.test(s),
    construct: coreInt,
  });
  const float = new jsYaml.Type('tag:yaml.org,2002:float', {
    kind: 'scalar',
    resolve: (s: unknown) => typeof s === 'string' && CORE_FLOAT.test(s),
    construct: coreFloat,
  });
  const nul = new jsYaml.Type('tag:yaml.org,2002:null', {
    kind: 'scalar',
    resolve: (s: unknown) => s === null || (typeof s === 'string' && isCoreNull(s)),
    construct: () => null,
  });
  const bool = new jsYaml.Type('tag:yaml.org,2002:bool', {
    kind: 'scalar',
    resolve: (s: unknown) => typeof s === 'string' && CORE_BOOL.test(s),
    construct: (s: string) => s[0] === 't' || s[0] === 'T',
  });
  return jsYaml.FAILSAFE_SCHEMA.extend({ implicit: [nul, bool, int, float] });
})();

/**
 * The fast path: js-yaml, about ten times faster than the positional parser, reads the
 * values of almost every spec file. It reads scalars as YAML 1.2's core schema does, like
 * the positional parser (see YAML_12_CORE); a property test holds the two to the same values. Returns the
 * non-empty documents' values, or undefined when the file needs the careful path: it
 * does not parse (the careful path then says exactly where and why), or it uses aliases
 * (js-yaml shares aliased nodes, and only the careful path bounds their expansion).
 */
export function parseWithFastPath(text: string): unknown[] | undefined {
  const values: unknown[] = [];
  try {
    jsYaml.loadAll(text, (v) => void (v !== null && v !== undefined && values.push(v)), { schema: YAML_12_CORE });
  } catch {
    return undefined;
  }
  return hasSharedNodes(values) ? undefined : values;
}

/** Whether any object or array is reachable twice (what an alias produces). */
function hasSharedNodes(root: unknown): boolean {
  const seen = new Set<object>();
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null) continue;
    if (seen.has(v)) return true;
    seen.add(v);
    if (Array.isArray(v)) for (const x of v) stack.push(x);
    else for (const k in v) stack.push((v as Record<string, unknown>)[k]);
  }
  return false;
}

const documentCache = new WeakMap<SourceFile, YAML.Document.Parsed[]>();

/** Files the plain reader took, with its documents (and their node positions). */
const plainDocuments = new WeakMap<SourceFile, PlainDocument[]>();

/**
 * The positional parse of a file's non-empty documents (syntax trees with node ranges),
 * made on first need and cached per file: only files with diagnostics, or that the fast
 * path cannot read, ever pay for it.
 */
function yamlDocuments(file: SourceFile): YAML.Document.Parsed[] {
  let docs = documentCache.get(file);
  if (!docs) {
    // uniqueKeys off: the parser's own check scans a mapping's earlier keys for each key
    // (quadratic in a mapping's size); duplicateKeys() finds the same keys in one pass.
    const parsed = YAML.parseAllDocuments(file.text, { uniqueKeys: false, prettyErrors: false, strict: true });
    const empty = (d: YAML.Document.Parsed) => d.contents === null || (YAML.isScalar(d.contents) && d.contents.value === null);
    docs = (Array.isArray(parsed) ? parsed : []).filter((d) => d.errors.length > 0 || d.warnings.length > 0 || !empty(d));
    documentCache.set(file, docs);
  }
  return docs;
}

/** Drops the parser's trailing "at line L, column C:" and source excerpt: we print our own. */
function plainMessage(message: string): string {
  return message.replace(/ at line \d+, column \d+:?[\s\S]*$/, '');
}

/**
 * Each repeated key of every mapping in a document, with the first occurrence. Keys are
 * equal as the parser's `uniqueKeys` check has them: scalars with the same value (so
 * `1` and `"1"` differ; NaN, unequal to itself, never repeats).
 */
function duplicateKeys(root: unknown): Array<{ key: YAML.Scalar; first: YAML.Scalar }> {
  const out: Array<{ key: YAML.Scalar; first: YAML.Scalar }> = [];
  const stack = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (YAML.isMap(node)) {
      const seen = new Map<unknown, YAML.Scalar>();
      for (const pair of node.items) {
        if (YAML.isScalar(pair.key) && !Number.isNaN(pair.key.value)) {
          const first = seen.get(pair.key.value);
          if (first) out.push({ key: pair.key, first });
          else seen.set(pair.key.value, pair.key);
        }
        stack.push(pair.value);
      }
    } else if (YAML.isSeq(node)) for (const item of node.items) stack.push(item);
  }
  return out.sort((a, b) => (a.key.range?.[0] ?? 0) - (b.key.range?.[0] ?? 0));
}

/** Alias nodes of a document, in source order. */
function aliases(root: unknown): YAML.Alias[] {
  const out: YAML.Alias[] = [];
  YAML.visit(root as YAML.Node, { Alias: (_, node) => void out.push(node) });
  return out.sort((a, b) => (a.range?.[0] ?? 0) - (b.range?.[0] ?? 0));
}

/** The careful path for one document: every YAML problem reported, aliases bounded. Undefined when the document has problems. */
function parseDocument(file: SourceFile, doc: YAML.Document.Parsed, limits: LoadLimits, out: Diagnostic[]): unknown {
  let ok = true;
  // One syntax error per document: after the first, the parser's errors mostly restate it.
  // Tabs first, since a tab in indentation makes the parser report confusing errors before it.
  const syntax = doc.errors.filter((e) => e.code !== 'DUPLICATE_KEY');
  const first = syntax.find((e) => e.code === 'TAB_AS_INDENT') ?? syntax[0];
  if (first) {
    ok = false;
    const hint = first.code === 'TAB_AS_INDENT' ? 'indent with spaces; YAML does not allow tabs there' : undefined;
    out.push(diagnostic('TRL1002', plainMessage(first.message), spanOf(file, first.pos), hint ? { hint } : {}));
  }
  const duplicates = duplicateKeys(doc.contents);
  if (duplicates.length > 0) {
    ok = false;
    for (const { key, first: firstKey } of duplicates) {
      out.push(
        diagnostic('TRL1003', `duplicate key "${String(key.value)}": each key may appear once in a mapping`, spanOf(file, key.range), {
          related: [{ span: spanOf(file, firstKey.range), message: 'first used here' }],
          hint: 'remove one of the two, or merge their values',
        }),
      );
    }
  }
  for (const w of doc.warnings) {
    ok = false;
    const hint = w.code === 'TAG_RESOLVE_FAILED' ? 'custom tags such as !env are not supported; write the value out' : 'Trellis treats YAML warnings as errors';
    out.push(diagnostic('TRL1006', plainMessage(w.message), spanOf(file, w.pos), { hint }));
  }
  if (!ok) return undefined;
  const contents = doc.contents;
  if (nodeDepth(contents, limits.maxDepth) > limits.maxDepth) {
    out.push(diagnostic('TRL1005', `YAML nests deeper than ${limits.maxDepth} levels`, documentSpan(file, doc)));
    return undefined;
  }
  const used = aliases(contents);
  const dangling = used.filter((a) => a.resolve(doc) === undefined);
  for (const a of dangling) {
    out.push(diagnostic('TRL1002', `alias *${a.source} refers to no anchor defined before it`, spanOf(file, a.range), { hint: `define &${a.source} earlier in the same document` }));
  }
  if (dangling.length > 0) return undefined;
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: limits.maxAliasCount });
  } catch (err) {
    out.push(
      diagnostic('TRL1004', `YAML aliases expand too much (alias limit ${limits.maxAliasCount}): ${plainMessage((err as Error).message)}`, spanOf(file, used[0]?.range ?? contents?.range), {
        hint: 'write the values out, or use fewer anchors; nested aliases multiply',
      }),
    );
    return undefined;
  }
  return value;
}

/** Checks that a document's value is a mapping of a known kind and apiVersion. */
function classify(file: SourceFile, index: number, value: unknown, out: Diagnostic[]): ParsedDocument | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    out.push(
      diagnostic('TRL1007', 'a spec document must be a mapping with apiVersion, kind, metadata and spec', locate({ file, index }, []), {
        hint: 'start each document with "apiVersion:" at the left margin; separate documents with ---',
      }),
    );
    return undefined;
  }
  const record = value as Record<string, unknown>;
  const kind = record.kind;
  const apiVersion = record.apiVersion;
  if (typeof kind !== 'string' || !(KINDS as string[]).includes(kind)) {
    const at = locate({ file, index }, ['kind']);
    const guess = typeof kind === 'string' ? closest(kind, KINDS) : undefined;
    const message = typeof kind === 'string' ? `unknown kind "${kind}"` : 'document has no kind';
    out.push(diagnostic('TRL1008', message, at, { hint: guess ? `did you mean "${guess}"? Known kinds: ${KINDS.join(', ')}` : `known kinds: ${KINDS.join(', ')}` }));
    return undefined;
  }
  const allowed = KIND_API_VERSIONS[kind as SpecKind];
  if (typeof apiVersion !== 'string' || !allowed.includes(apiVersion)) {
    const at = locate({ file, index }, ['apiVersion']);
    const message = typeof apiVersion === 'string' ? `kind ${kind} has no apiVersion "${apiVersion}"` : `kind ${kind} needs an apiVersion`;
    out.push(diagnostic('TRL1009', message, at, { hint: `use ${allowed.map((v) => `"${v}"`).join(' or ')}` }));
    return undefined;
  }
  return { file, index, value: record, kind: kind as SpecKind, apiVersion };
}

/** A path into a document: property names and array indexes. */
export type DocPath = ReadonlyArray<string | number>;

const pairIndexes = new WeakMap<YAML.YAMLMap, Map<string, YAML.Pair>>();

/**
 * A mapping's pairs by key text (the first pair of each, as a scan would find), built on
 * first need and cached with the parse: locating thousands of diagnostics in one large
 * mapping then costs a lookup each instead of a scan each.
 */
function pairByKey(map: YAML.YAMLMap): Map<string, YAML.Pair> {
  let index = pairIndexes.get(map);
  if (!index) {
    index = new Map();
    for (const p of map.items) {
      if (!YAML.isScalar(p.key)) continue;
      const k = String(p.key.value);
      if (!index.has(k)) index.set(k, p as YAML.Pair);
    }
    pairIndexes.set(map, index);
  }
  return index;
}

/**
 * The span of the node at `path` in a document, or of its deepest existing ancestor when
 * the path runs off the tree (a missing required field points at the object that lacks it).
 * With `key: true` the span is the mapping key rather than its value (for unknown fields).
 */
export function locate(doc: { readonly file: SourceFile; readonly index: number }, path: DocPath, key = false): Span {
  const plain = plainDocuments.get(doc.file)?.[doc.index];
  if (plain) {
    const range = locatePlain(doc.file.text, plain, path, key);
    if (range) return spanOf(doc.file, range);
  }
  const yamlDoc = yamlDocuments(doc.file)[doc.index];
  if (!yamlDoc) return spanOf(doc.file, [0, 1]);
  let node: unknown = yamlDoc.contents;
  let keyNode: unknown;
  for (const segment of path) {
    if (YAML.isMap(node)) {
      const pair = pairByKey(node).get(String(segment));
      if (!pair) break;
      keyNode = pair.key;
      if (pair.value === null) {
        node = pair.key;
        break;
      }
      node = pair.value;
    } else if (YAML.isSeq(node) && typeof segment === 'number' && segment < node.items.length) {
      keyNode = undefined;
      node = node.items[segment];
    } else break;
    if (YAML.isAlias(node)) break;
  }
  const target = key && keyNode ? keyNode : node;
  const range = (target as { range?: number[] } | null)?.range;
  return spanOf(doc.file, range ?? yamlDoc.range);
}
