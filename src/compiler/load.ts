/**
 * Stage 1: load. Reads the spec root from disk (the only stage that does I/O) and parses
 * every YAML document with limits, into documents that remember their source nodes so
 * later stages can point diagnostics at them.
 */
import { readdirSync, readFileSync, statSync, type Dirent } from 'node:fs';
import { join, relative, sep } from 'node:path';
import jsYaml from 'js-yaml';
import * as YAML from 'yaml';
import { diagnostic, type Diagnostic, type Span } from '../diagnostics/diagnostic.ts';
import { SourceFile } from '../diagnostics/source-file.ts';
import { KIND_API_VERSIONS, type SpecKind } from '../spec/types.ts';
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
  const pending = [root];
  while (pending.length > 0) {
    const dir = pending.pop()!;
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      unreadable(dir, err);
      continue;
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const full = join(dir, entry.name);
      if (entry.isDirectory()) pending.push(full);
      else if (entry.isFile() && isSpecFileName(entry.name)) {
        const path = relative(root, full).split(sep).join('/');
        try {
          const size = statSync(full).size;
          if (size > limits.maxFileBytes) {
            diagnostics.push(
              diagnostic('TRL1001', `file is ${size} bytes; spec files may be at most ${limits.maxFileBytes} bytes`, undefined, { path, hint: 'split it into several files' }),
            );
            continue;
          }
          files.push(new SourceFile(path, readFileSync(full, 'utf8')));
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
 * Offset at which `[`/`{` nesting first exceeds `limit`, or -1. Counted before parsing:
 * the parser recurses, so a deep flow collection would cost seconds (or the stack)
 * before any limit could apply. Quotes and comments are skipped roughly; the count only
 * has to be an upper bound for real specs and exact for hostile ones, which nest plainly.
 */
function flowTooDeep(text: string, limit: number): number {
  let depth = 0;
  let quote = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote || c === '\n') quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || text[i - 1] === ' ' || text[i - 1] === '\n')) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl;
    } else if (c === '[' || c === '{') {
      if (++depth > limit) return i;
    } else if (c === ']' || c === '}') depth = Math.max(0, depth - 1);
  }
  return -1;
}

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
    const deep = flowTooDeep(file.text, limits.maxDepth);
    if (deep >= 0) {
      diagnostics.push(diagnostic('TRL1005', `YAML nests deeper than ${limits.maxDepth} levels`, spanOf(file, [deep, deep + 1]), { hint: 'flatten the structure; real specs nest a dozen levels at most' }));
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
      diagnostics.push(diagnostic('TRL1002', `YAML could not be parsed: ${(err as Error).message}`, spanOf(file, [0, 1])));
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
  const INT = /^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$/;
  const FLOAT = /^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/;
  const int = new jsYaml.Type('tag:yaml.org,2002:int', {
    kind: 'scalar',
    resolve: (s: unknown) => typeof s === 'string' && INT.test(s),
    construct: (s: string) => (s.startsWith('0o') ? parseInt(s.slice(2), 8) : s.startsWith('0x') ? parseInt(s.slice(2), 16) : Number(s)),
  });
  const float = new jsYaml.Type('tag:yaml.org,2002:float', {
    kind: 'scalar',
    resolve: (s: unknown) => typeof s === 'string' && FLOAT.test(s),
    construct: (s: string) => {
      const lower = s.toLowerCase();
      if (lower.endsWith('.inf')) return s.startsWith('-') ? -Infinity : Infinity;
      if (lower === '.nan') return NaN;
      return Number(s);
    },
  });
  const nul = new jsYaml.Type('tag:yaml.org,2002:null', {
    kind: 'scalar',
    resolve: (s: unknown) => s === null || s === '' || s === '~' || s === 'null' || s === 'Null' || s === 'NULL',
    construct: () => null,
  });
  const bool = new jsYaml.Type('tag:yaml.org,2002:bool', {
    kind: 'scalar',
    resolve: (s: unknown) => typeof s === 'string' && /^(?:true|True|TRUE|false|False|FALSE)$/.test(s),
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

/**
 * The positional parse of a file's non-empty documents (syntax trees with node ranges),
 * made on first need and cached per file: only files with diagnostics, or that the fast
 * path cannot read, ever pay for it.
 */
function yamlDocuments(file: SourceFile): YAML.Document.Parsed[] {
  let docs = documentCache.get(file);
  if (!docs) {
    const parsed = YAML.parseAllDocuments(file.text, { uniqueKeys: true, prettyErrors: false, strict: true });
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

/** Each repeated key of every mapping in a document, with the first occurrence. */
function duplicateKeys(root: unknown): Array<{ key: YAML.Scalar; first: YAML.Scalar }> {
  const out: Array<{ key: YAML.Scalar; first: YAML.Scalar }> = [];
  const stack = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (YAML.isMap(node)) {
      const seen = new Map<unknown, YAML.Scalar>();
      for (const pair of node.items) {
        if (YAML.isScalar(pair.key)) {
          const first = seen.get(pair.key.value);
          if (first) out.push({ key: pair.key, first });
          else seen.set(pair.key.value, pair.key);
        }
        stack.push(pair.value);
      }
    } else if (YAML.isSeq(node)) stack.push(...node.items);
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
  if (doc.errors.some((e) => e.code === 'DUPLICATE_KEY')) {
    ok = false;
    for (const { key, first: firstKey } of duplicateKeys(doc.contents)) {
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

/**
 * The span of the node at `path` in a document, or of its deepest existing ancestor when
 * the path runs off the tree (a missing required field points at the object that lacks it).
 * With `key: true` the span is the mapping key rather than its value (for unknown fields).
 */
export function locate(doc: { readonly file: SourceFile; readonly index: number }, path: DocPath, key = false): Span {
  const yamlDoc = yamlDocuments(doc.file)[doc.index];
  if (!yamlDoc) return spanOf(doc.file, [0, 1]);
  let node: unknown = yamlDoc.contents;
  let keyNode: unknown;
  for (const segment of path) {
    if (YAML.isMap(node)) {
      const pair = node.items.find((p) => YAML.isScalar(p.key) && String(p.key.value) === String(segment));
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
