/**
 * Stage 1: load. Reads the spec root from disk (the only stage that does I/O) and parses
 * every YAML document with limits, into documents that remember their source nodes so
 * later stages can point diagnostics at them.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
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
  /** 0-based position of the document within its file. */
  readonly index: number;
  readonly yaml: YAML.Document.Parsed;
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
export async function readSpecDir(root: string, limits: LoadLimits = DEFAULT_LIMITS): Promise<LoadResult> {
  const files: SourceFile[] = [];
  const diagnostics: Diagnostic[] = [];
  const rootStat = await stat(root).catch(() => undefined);
  if (!rootStat?.isDirectory()) {
    const file = new SourceFile(root, '');
    diagnostics.push(diagnostic('TRL1010', `cannot read spec folder "${root}": not a directory`, { file, start: 0, end: 0 }));
    return { files, diagnostics };
  }
  const pending = [root];
  while (pending.length > 0) {
    const dir = pending.pop()!;
    const entries = await readdir(dir, { withFileTypes: true });
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const full = join(dir, entry.name);
      if (entry.isDirectory()) pending.push(full);
      else if (entry.isFile() && isSpecFileName(entry.name)) {
        const path = relative(root, full).split(sep).join('/');
        const size = (await stat(full)).size;
        if (size > limits.maxFileBytes) {
          const file = new SourceFile(path, '');
          diagnostics.push(
            diagnostic('TRL1001', `file is ${size} bytes; spec files may be at most ${limits.maxFileBytes} bytes`, { file, start: 0, end: 0 }, { hint: 'split it into several files' }),
          );
          continue;
        }
        try {
          files.push(new SourceFile(path, await readFile(full, 'utf8')));
        } catch (err) {
          const file = new SourceFile(path, '');
          diagnostics.push(diagnostic('TRL1010', `cannot read file: ${(err as Error).message}`, { file, start: 0, end: 0 }));
        }
      }
    }
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files, diagnostics };
}

/**
 * Deepest `[`/`{` nesting in the text, counted before parsing: the parser recurses, so a
 * deep flow collection would cost seconds (or the stack) before any limit could apply.
 * Quotes and comments are skipped roughly; the count only has to be an upper bound for
 * real specs and exact for hostile ones, which nest brackets plainly.
 */
function flowDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let quote = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = '';
      else if (c === '\n') quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || text[i - 1] === ' ' || text[i - 1] === '\n')) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl;
    } else if (c === '[' || c === '{') max = Math.max(max, ++depth);
    else if (c === ']' || c === '}') depth = Math.max(0, depth - 1);
  }
  return max;
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

const YAML_CODES: Readonly<Record<string, 'TRL1003' | 'TRL1002'>> = { DUPLICATE_KEY: 'TRL1003' };

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
    if (flowDepth(file.text) > limits.maxDepth) {
      diagnostics.push(diagnostic('TRL1005', `YAML nests deeper than ${limits.maxDepth} levels`, spanOf(file, [0, 1])));
      continue;
    }
    let docs: YAML.Document.Parsed[];
    try {
      const parsed = YAML.parseAllDocuments(file.text, { uniqueKeys: true, prettyErrors: false, strict: true });
      docs = Array.isArray(parsed) ? parsed : [];
    } catch (err) {
      diagnostics.push(diagnostic('TRL1002', `YAML could not be parsed: ${(err as Error).message}`, spanOf(file, [0, 1])));
      continue;
    }
    docs.forEach((doc, index) => {
      const doc1 = parseDocument(file, doc, index, limits, diagnostics);
      if (doc1) documents.push(doc1);
    });
  }
  return { documents, diagnostics };
}

function parseDocument(file: SourceFile, doc: YAML.Document.Parsed, index: number, limits: LoadLimits, out: Diagnostic[]): ParsedDocument | undefined {
  let ok = true;
  for (const e of doc.errors) {
    ok = false;
    const code = YAML_CODES[e.code] ?? 'TRL1002';
    const message = e.message.replace(/ at line \d+, column \d+:?[\s\S]*$/, '');
    out.push(diagnostic(code, code === 'TRL1003' ? 'duplicate key: each key may appear once in a mapping' : message, spanOf(file, e.pos)));
  }
  for (const w of doc.warnings) {
    ok = false;
    out.push(diagnostic('TRL1006', w.message.replace(/ at line \d+, column \d+:?[\s\S]*$/, ''), spanOf(file, w.pos), { hint: 'Trellis treats YAML warnings as errors' }));
  }
  if (!ok) return undefined;
  const contents = doc.contents;
  if (contents === null || (YAML.isScalar(contents) && contents.value === null)) return undefined; // empty document
  if (nodeDepth(contents, limits.maxDepth) > limits.maxDepth) {
    out.push(diagnostic('TRL1005', `YAML nests deeper than ${limits.maxDepth} levels`, documentSpan(file, doc)));
    return undefined;
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: limits.maxAliasCount });
  } catch (err) {
    out.push(
      diagnostic('TRL1004', `YAML aliases expand too much (more than ${limits.maxAliasCount} alias uses): ${(err as Error).message}`, documentSpan(file, doc), {
        hint: 'write the values out, or use fewer anchors',
      }),
    );
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    out.push(diagnostic('TRL1007', 'a spec document must be a mapping with apiVersion, kind, metadata and spec', documentSpan(file, doc)));
    return undefined;
  }
  const record = value as Record<string, unknown>;
  const kind = record.kind;
  const apiVersion = record.apiVersion;
  if (typeof kind !== 'string' || !(KINDS as string[]).includes(kind)) {
    const at = locate({ file, yaml: doc }, ['kind']);
    const guess = typeof kind === 'string' ? closest(kind, KINDS) : undefined;
    const message = typeof kind === 'string' ? `unknown kind "${kind}"` : 'document has no kind';
    out.push(diagnostic('TRL1008', message, at, { hint: guess ? `did you mean "${guess}"? Known kinds: ${KINDS.join(', ')}` : `known kinds: ${KINDS.join(', ')}` }));
    return undefined;
  }
  const allowed = KIND_API_VERSIONS[kind as SpecKind];
  if (typeof apiVersion !== 'string' || !allowed.includes(apiVersion)) {
    const at = locate({ file, yaml: doc }, ['apiVersion']);
    const message = typeof apiVersion === 'string' ? `kind ${kind} has no apiVersion "${apiVersion}"` : `kind ${kind} needs an apiVersion`;
    out.push(diagnostic('TRL1009', message, at, { hint: `use ${allowed.map((v) => `"${v}"`).join(' or ')}` }));
    return undefined;
  }
  return { file, index, yaml: doc, value: record, kind: kind as SpecKind, apiVersion };
}

/** A path into a document: property names and array indexes. */
export type DocPath = ReadonlyArray<string | number>;

/**
 * The span of the node at `path` in a document, or of its deepest existing ancestor when
 * the path runs off the tree (a missing required field points at the object that lacks it).
 * With `key: true` the span is the mapping key rather than its value (for unknown fields).
 */
export function locate(doc: { file: SourceFile; yaml: YAML.Document.Parsed }, path: DocPath, key = false): Span {
  let node: unknown = doc.yaml.contents;
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
  return spanOf(doc.file, range ?? doc.yaml.range);
}
