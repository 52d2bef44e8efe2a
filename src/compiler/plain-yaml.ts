/**
 * A fast reader for the plain YAML that spec files are written in: block mappings and
 * sequences, single-line scalars (plain, single- or double-quoted without escapes), and
 * one-line flow sequences of scalars such as `codes: [502, 503]`. It reads a file in one
 * pass, several times faster than js-yaml and twenty times faster than the positional
 * parser, and keeps the offsets of every scalar and key, so a diagnostic on such a file
 * needs no second parse.
 *
 * It is a fast path, not a YAML parser: anything outside that subset (anchors, aliases,
 * tags, block scalars, multi-line scalars, flow mappings, escapes, tabs, duplicate keys,
 * directives, keys that are not plain names) makes it decline the whole file, and the
 * loader then reads the file with js-yaml and, for positions, with the `yaml` package.
 * What it does read, it reads exactly as they do: property tests hold its values to
 * js-yaml's (YAML 1.2 core schema) and its spans to the `yaml` package's node ranges.
 */

/** YAML 1.2 core schema integers (as the `yaml` package reads them; not `0b101`, not `1_000`). */
export const CORE_INT = /^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$/;
/** YAML 1.2 core schema floats, including `.inf` and `.nan` spellings. */
export const CORE_FLOAT = /^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/;
/** YAML 1.2 core schema booleans. */
export const CORE_BOOL = /^(?:true|True|TRUE|false|False|FALSE)$/;

/** Whether a plain scalar's text means null in the YAML 1.2 core schema. */
export function isCoreNull(text: string): boolean {
  return text === '' || text === '~' || text === 'null' || text === 'Null' || text === 'NULL';
}

/** The value of a core-schema integer's text (one matching CORE_INT). */
export function coreInt(text: string): number {
  return text.startsWith('0o') ? parseInt(text.slice(2), 8) : text.startsWith('0x') ? parseInt(text.slice(2), 16) : Number(text);
}

/** The value of a core-schema float's text (one matching CORE_FLOAT). */
export function coreFloat(text: string): number {
  const lower = text.toLowerCase();
  if (lower.endsWith('.inf')) return text.startsWith('-') ? -Infinity : Infinity;
  if (lower === '.nan') return NaN;
  return Number(text);
}

/** A plain scalar's value in the YAML 1.2 core schema. */
export function coreScalar(text: string): unknown {
  // Most scalars are names, words and paths: a first character that starts no null,
  // boolean or number (a letter other than n, t, f in either case, or "/") settles it
  // without trying the patterns.
  const first = text.charCodeAt(0);
  const lower = first | 0x20; // an ASCII letter in lower case; only letters land in a–z this way
  if (first === 47 || (lower >= 97 && lower <= 122 && lower !== 102 && lower !== 110 && lower !== 116)) return text;
  if (isCoreNull(text)) return null;
  if (CORE_BOOL.test(text)) return text[0] === 't' || text[0] === 'T';
  if (CORE_INT.test(text)) return coreInt(text);
  if (CORE_FLOAT.test(text)) return coreFloat(text);
  return text;
}

/** What a node record holds (the low two bits of its first number). */
const SCALAR = 0;
const MAPPING = 1;
const SEQUENCE = 2;
/** A key with nothing after it: null, with no span of its own here. */
const EMPTY = 3;

/** Texts this long or longer are left to the other readers: a record's first number holds start + 1 shifted by two bits. */
const MAX_TEXT = 1 << 28;

/**
 * One document read by the fast path: its value and a compact record of where its nodes
 * are. `nodes` holds one record per node in document order (a mapping's key right before
 * its value), most of them scalars, so records are as short as their kind allows:
 * - first, `(start + 1) << 2 | kind` for every kind (start -1: unknown);
 * - then, except for an empty value, the end offset (-1: unknown);
 * - then, for a mapping or sequence, the index of the record after its subtree (its
 *   children's records start right after its own three numbers).
 * A scalar takes two numbers, an empty value one, a collection three. Offsets are those of
 * the `yaml` package's `range[0]` and `range[1]`; an empty value has none, nor has a block
 * collection whose last value is empty, and asking for those goes to the positional parse.
 */
export interface PlainDocument {
  readonly value: Record<string, unknown> | unknown[];
  readonly nodes: Int32Array;
}

/**
 * Characters the YAML readers treat specially or refuse (controls, NEL, line and paragraph
 * separators, byte order marks, non-characters, lone surrogates): such a file is read by
 * the careful path, which says what is wrong with it.
 */
const UNUSUAL_CHARACTERS = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * UNUSUAL_CHARACTERS and tabs, as one scan that a text without surrogates (almost every
 * spec file) passes: the surrogate pairs are looked at only in a text that has some.
 */
const UNUSUAL_OR_TAB = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]/;
const SURROGATE = /[\ud800-\udfff]/;

/** Thrown inside the reader when the text leaves the subset; never escapes it. */
class Decline {}
const DECLINE = new Decline();

/** Strings up to this long are shared (see `shared`); longer ones are rarely repeated. */
const SHARED_MAX_LENGTH = 48;

/** Distinct strings `shared` keeps; beyond this, new strings are returned as they are. */
const SHARED_MAX_COUNT = 1 << 16;

/** Copies of the strings seen so far, by content. */
const SHARED_STRINGS = new Map<string, string>();

/**
 * One copy of a short string for every spec value that spells it. Spec files repeat the
 * same few thousand values (kinds, ports' names, addresses, service names in references);
 * a copy per occurrence was half the memory of the parsed documents, and every copy had to
 * be moved by the garbage collector as it survived. The kept copy is flat (interned as a
 * property name), never a slice that would hold on to its file's text. Bounded.
 */
function shared(text: string): string {
  if (text.length > SHARED_MAX_LENGTH) return text;
  const seen = SHARED_STRINGS.get(text);
  if (seen !== undefined) return seen;
  if (SHARED_STRINGS.size >= SHARED_MAX_COUNT) return text;
  const flat = Object.keys({ [text]: 0 })[0]!;
  SHARED_STRINGS.set(flat, flat);
  return flat;
}

/**
 * The items of a list that `push` built, in an array of just their number: `push` grows an
 * empty array to room for 17 items (and a longer one by half again), and most spec lists
 * hold one to three: kept for the compile's whole life, the room to spare made lists the
 * largest part of the parsed documents' memory.
 */
function exactly(list: unknown[]): unknown[] {
  return list.slice();
}

/** A plain scalar's value, its string shared. */
function scalarValue(text: string): unknown {
  const value = coreScalar(text);
  return typeof value === 'string' ? shared(value) : value;
}

/** Keys the fast path takes: plain names, never read as anything but a string. */
const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_.\-/]*$/;

/**
 * Keys already found to be plain names, each mapped to one copy of itself that has served as
 * a property name: spec files repeat a few hundred field names, and storing a property under
 * a string the engine has already interned skips hashing a fresh slice of the text against
 * its string table twice per key (the duplicate check and the store). Bounded.
 */
const PLAIN_KEYS_SEEN = new Map<string, string>();

/** Characters that may not begin a plain scalar here (YAML indicators, and `-`/`?`/`:` kept simple). */
const NOT_PLAIN_START = new Set(['-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', "'", '"', '%', '@', '`']);

/** A line with content: `start` is its first non-space character, `indent` that character's column. */
interface Line {
  indent: number;
  start: number;
  end: number;
}

/**
 * Where readers write node records, reused from file to file (reading is synchronous, one
 * file at a time) and grown as needed; each document keeps a copy of its own records.
 */
let scratch = new Int32Array(1 << 16);

class Reader {
  readonly text: string;
  /** Offset of the next unread line. */
  next = 0;
  /**
   * The file's node records so far (see PlainDocument), `count` numbers long; the current
   * document's start at `base`, and the record indexes written (`at`, the next-record
   * index) count from there.
   */
  nodes: Int32Array = scratch;
  count = 0;
  base = 0;
  /**
   * Where the `yaml` package ends the last value read (its `range[2]`): after the line break
   * of the value's line, comment included; -1 after an empty value. A block collection ends
   * where its last value does.
   */
  lastEnd = -1;
  /** The line `peek` found last, and the value of `next` it was found for (-1: none yet). */
  peekedAt = -1;
  peeked: Line | undefined;

  constructor(text: string) {
    this.text = text;
  }

  /**
   * The next line with content (blank and comment-only lines skipped), without consuming
   * it; undefined at the end of the text. Document markers come back as lines too.
   */
  peek(): Line | undefined {
    // Each line is looked at several times (by the collection that reads it and by those
    // that end at it); one Line object per line, not per look.
    if (this.peekedAt === this.next) return this.peeked;
    const text = this.text;
    let at = this.next;
    let line: Line | undefined;
    while (at < text.length) {
      let end = text.indexOf('\n', at);
      if (end < 0) end = text.length;
      let i = at;
      while (i < end && text.charCodeAt(i) === 32) i++;
      if (i < end && text.charCodeAt(i) !== 35 /* # */) {
        line = { indent: i - at, start: i, end };
        break;
      }
      this.next = end + 1;
      at = end + 1;
    }
    this.peekedAt = this.next;
    this.peeked = line;
    return line;
  }

  /** Whether a line is a document marker (`---` or `...` at the margin). */
  isMarker(line: Line): boolean {
    if (line.indent !== 0) return false;
    const t = this.text;
    const s = line.start;
    const three = t.startsWith('---', s) ? '---' : t.startsWith('...', s) ? '...' : '';
    if (!three) return false;
    const after = s + 3;
    if (after < line.end && t.charCodeAt(after) !== 32) return false;
    // `--- value` and `...` are outside the subset; `---` alone (or with a comment) starts a document.
    if (three === '...' || this.restIsComment(after, line.end) === false) throw DECLINE;
    return true;
  }

  /** Whether [from, end) is only spaces and maybe a comment. */
  restIsComment(from: number, end: number): boolean {
    const t = this.text;
    let i = from;
    while (i < end && t.charCodeAt(i) === 32) i++;
    if (i === end) return true;
    return t.charCodeAt(i) === 35 && (i === from ? from > 0 && t.charCodeAt(from - 1) === 32 : true);
  }

  /** Room for `n` more numbers in the records. */
  reserve(n: number): void {
    if (this.count + n > this.nodes.length) {
      const grown = new Int32Array(this.nodes.length * 2);
      grown.set(this.nodes);
      this.nodes = scratch = grown;
    }
  }

  /** Records a scalar spanning [start, end). */
  scalar(start: number, end: number): void {
    this.reserve(2);
    const i = this.count;
    this.nodes[i] = ((start + 1) << 2) | SCALAR;
    this.nodes[i + 1] = end;
    this.count = i + 2;
  }

  /** Records an empty value. */
  empty(): void {
    this.reserve(1);
    this.nodes[this.count++] = EMPTY;
  }

  /** Records the start of a mapping or sequence; returns its record's index, for `close`. */
  open(start: number, kind: typeof MAPPING | typeof SEQUENCE): number {
    this.reserve(3);
    const i = this.count;
    this.nodes[i] = ((start + 1) << 2) | kind;
    this.nodes[i + 1] = -1;
    this.nodes[i + 2] = 0;
    this.count = i + 3;
    return i - this.base;
  }

  /** Ends the collection opened at `at`: its subtree's records are all written. */
  close(at: number): void {
    this.nodes[this.base + at + 2] = this.count - this.base;
  }

  /**
   * Closes a block collection: it ends where its last value ends. The `yaml` package counts
   * comment lines right after a collection into the collection's `range[2]` by rules of
   * indentation, so the end of a collection followed by a comment line is left unknown to
   * its parent (the positional parse answers for the parent, should anyone ask).
   */
  closeBlock(at: number): void {
    this.nodes[this.base + at + 1] = this.lastEnd;
    this.close(at);
    if (this.lastEnd >= 0) {
      const next = this.peek();
      const until = next ? next.start - next.indent : this.text.length;
      // Only the blank and comment lines in between are looked at (an indexOf to the end of
      // the text, once per collection, made files of many small mappings quadratic).
      for (let i = this.lastEnd; i < until; i++) {
        if (this.text.charCodeAt(i) === 35) {
          this.lastEnd = -1;
          break;
        }
      }
    }
  }

  /** Notes that a value written on the line ending at `lineEnd` was read. */
  endOfLine(lineEnd: number): void {
    this.lastEnd = lineEnd < this.text.length ? lineEnd + 1 : lineEnd;
  }

  /** A block collection whose first line is `line` (indentation `line.indent`). */
  block(line: Line): Record<string, unknown> | unknown[] {
    const t = this.text;
    if (t.charCodeAt(line.start) === 45 /* - */ && (line.start + 1 === line.end || t.charCodeAt(line.start + 1) === 32)) return this.sequence(line.indent);
    return this.mapping(line);
  }

  /** A block mapping whose keys sit at `first.indent`; `first` may begin mid-line (`- key: v`). */
  mapping(first: Line): Record<string, unknown> {
    const t = this.text;
    const indent = first.indent;
    const out: Record<string, unknown> = {};
    const self = this.open(first.start, MAPPING);
    let line: Line | undefined = first;
    while (line && line.indent === indent && !this.isMarker(line)) {
      // The key: a plain name up to ":" followed by a space or the line's end.
      let colon = line.start;
      while (colon < line.end) {
        const c = t.charCodeAt(colon);
        if (c === 58 /* : */ && (colon + 1 === line.end || t.charCodeAt(colon + 1) === 32)) break;
        if (c === 35 && colon > line.start && t.charCodeAt(colon - 1) === 32) throw DECLINE;
        colon++;
      }
      if (colon >= line.end) throw DECLINE;
      let keyEnd = colon;
      while (keyEnd > line.start && t.charCodeAt(keyEnd - 1) === 32) keyEnd--;
      const text = t.slice(line.start, keyEnd);
      let key = PLAIN_KEYS_SEEN.get(text);
      if (key === undefined) {
        if (text.length > 1000 || !PLAIN_KEY.test(text) || text === '__proto__' || CORE_BOOL.test(text) || isCoreNull(text) || CORE_INT.test(text) || CORE_FLOAT.test(text)) throw DECLINE;
        key = text;
        if (PLAIN_KEYS_SEEN.size < 4096) PLAIN_KEYS_SEEN.set(key, Object.keys({ [key]: 0 })[0]!);
      }
      if (Object.hasOwn(out, key)) throw DECLINE; // duplicates are reported by the careful path
      this.scalar(line.start, keyEnd);
      let v = colon + 1;
      while (v < line.end && t.charCodeAt(v) === 32) v++;
      if (v === line.end || (t.charCodeAt(v) === 35 && v > colon + 1)) {
        // Nothing after the key on its line: a nested block, or an empty value.
        this.next = line.end + 1;
        const nested = this.peek();
        if (nested && !this.isMarker(nested) && nested.indent > indent) out[key] = this.block(nested);
        else if (nested && nested.indent === indent && this.isSequenceLine(nested)) out[key] = this.sequence(indent);
        else {
          this.empty();
          this.lastEnd = -1;
          out[key] = null;
        }
      } else {
        out[key] = this.inline(v, line.end);
        this.endOfLine(line.end);
        this.next = line.end + 1;
        const after = this.peek();
        // A more indented line after an inline value continues a multi-line scalar (or is an error).
        if (after && after.indent > indent) throw DECLINE;
      }
      line = this.peek();
      if (line && line.indent > indent) throw DECLINE;
    }
    this.closeBlock(self);
    return out;
  }

  isSequenceLine(line: Line): boolean {
    const t = this.text;
    return t.charCodeAt(line.start) === 45 && (line.start + 1 === line.end || t.charCodeAt(line.start + 1) === 32);
  }

  /** A block sequence whose `-` indicators sit at column `indent`. */
  sequence(indent: number): unknown[] {
    const t = this.text;
    const out: unknown[] = [];
    let line = this.peek();
    const self = this.open(line ? line.start : -1, SEQUENCE);
    while (line && line.indent === indent && this.isSequenceLine(line)) {
      let v = line.start + 1;
      while (v < line.end && t.charCodeAt(v) === 32) v++;
      if (v === line.end || t.charCodeAt(v) === 35) throw DECLINE; // `-` alone: nested or empty item
      const c = t.charCodeAt(v);
      if (c === 45 && (v + 1 === line.end || t.charCodeAt(v + 1) === 32)) throw DECLINE; // `- - x`
      if (this.startsKey(v, line.end)) {
        // A compact mapping: `- key: value`, its further keys below at the same column.
        const column = v - (line.start - line.indent);
        out.push(this.mapping({ indent: column, start: v, end: line.end }));
      } else {
        out.push(this.inline(v, line.end));
        this.endOfLine(line.end);
        this.next = line.end + 1;
        const after = this.peek();
        if (after && after.indent > indent) throw DECLINE;
      }
      line = this.peek();
      if (line && line.indent > indent) throw DECLINE;
    }
    this.closeBlock(self);
    return exactly(out);
  }

  /** Whether the text at `from` is a mapping key (`name:` then a space or the line's end). */
  startsKey(from: number, end: number): boolean {
    const t = this.text;
    const c = t.charCodeAt(from);
    if (c === 34 || c === 39 || c === 91 || c === 123) return false; // quoted or flow: a value (a key there declines later)
    for (let i = from; i < end; i++) {
      const d = t.charCodeAt(i);
      if (d === 58 && (i + 1 === end || t.charCodeAt(i + 1) === 32)) return true;
      if (d === 35 && t.charCodeAt(i - 1) === 32) return false;
    }
    return false;
  }

  /** A value that starts at `from` and ends on its line: a scalar or a one-line flow sequence. */
  inline(from: number, end: number): unknown {
    const t = this.text;
    const c = t.charCodeAt(from);
    if (c === 34 || c === 39) {
      const { value, after } = this.quoted(from, end);
      this.scalar(from, after);
      if (!this.restIsComment(after, end)) throw DECLINE;
      return value;
    }
    if (c === 91 /* [ */) return this.flowSequence(from, end);
    if (c === 123 /* { */) {
      // Only the empty mapping `{}`.
      if (t.charCodeAt(from + 1) !== 125 || !this.restIsComment(from + 2, end)) throw DECLINE;
      const self = this.open(from, MAPPING);
      this.nodes[this.base + self + 1] = from + 2;
      this.close(self);
      return {};
    }
    if (NOT_PLAIN_START.has(t[from]!)) {
      // `-5` and `-x` are plain; other indicators are outside the subset.
      if (!(c === 45 && from + 1 < end && t.charCodeAt(from + 1) !== 32)) throw DECLINE;
    }
    let stop = from;
    while (stop < end) {
      const d = t.charCodeAt(stop);
      if (d === 35 && t.charCodeAt(stop - 1) === 32) break;
      if (d === 58 && (stop + 1 === end || t.charCodeAt(stop + 1) === 32)) throw DECLINE; // a mapping where a scalar was expected
      stop++;
    }
    let last = stop;
    while (last > from && t.charCodeAt(last - 1) === 32) last--;
    this.scalar(from, last);
    return scalarValue(t.slice(from, last));
  }

  /** A single-line quoted scalar at `from`: its value and the offset after its closing quote. */
  quoted(from: number, end: number): { value: string; after: number } {
    const t = this.text;
    const q = t.charCodeAt(from);
    if (q === 34) {
      const close = t.indexOf('"', from + 1);
      if (close < 0 || close >= end) throw DECLINE;
      const value = t.slice(from + 1, close);
      if (value.includes('\\')) throw DECLINE; // escapes go to the careful readers
      return { value: shared(value), after: close + 1 };
    }
    let value = '';
    let i = from + 1;
    for (;;) {
      const close = t.indexOf("'", i);
      if (close < 0 || close >= end) throw DECLINE;
      value += t.slice(i, close);
      if (t.charCodeAt(close + 1) === 39 && close + 1 < end) {
        value += "'";
        i = close + 2;
        continue;
      }
      return { value: shared(value), after: close + 1 };
    }
  }

  /** `[a, "b", 3]` on one line: scalars only. */
  flowSequence(from: number, end: number): unknown[] {
    const t = this.text;
    const out: unknown[] = [];
    const self = this.open(from, SEQUENCE);
    let i = from + 1;
    const skip = () => {
      while (i < end && t.charCodeAt(i) === 32) i++;
    };
    skip();
    if (t.charCodeAt(i) === 93 /* ] */) {
      i++;
    } else {
      for (;;) {
        skip();
        if (i >= end) throw DECLINE;
        const c = t.charCodeAt(i);
        if (c === 34 || c === 39) {
          const { value, after } = this.quoted(i, end);
          this.scalar(i, after);
          out.push(value);
          i = after;
        } else {
          if (NOT_PLAIN_START.has(t[i]!) && !(c === 45 && i + 1 < end && t.charCodeAt(i + 1) !== 32 && t.charCodeAt(i + 1) !== 44 && t.charCodeAt(i + 1) !== 93)) throw DECLINE;
          const s = i;
          while (i < end) {
            const d = t.charCodeAt(i);
            if (d === 44 || d === 93) break;
            if (d === 91 || d === 123 || d === 125 || d === 58 || d === 35 || d === 63) throw DECLINE;
            i++;
          }
          let last = i;
          while (last > s && t.charCodeAt(last - 1) === 32) last--;
          if (last === s) throw DECLINE; // an empty entry
          this.scalar(s, last);
          out.push(scalarValue(t.slice(s, last)));
        }
        skip();
        const d = t.charCodeAt(i);
        if (d === 44) {
          i++;
          continue;
        }
        if (d === 93) {
          i++;
          break;
        }
        throw DECLINE;
      }
    }
    if (!this.restIsComment(i, end)) throw DECLINE;
    this.nodes[this.base + self + 1] = i;
    this.close(self);
    return exactly(out);
  }
}

/**
 * The non-empty documents of a file, or undefined when the file leaves the fast path's
 * subset (see the module comment); the caller then reads it with the general parsers.
 */
export function parsePlainYaml(text: string): PlainDocument[] | undefined {
  // Tabs, carriage returns and a byte order mark each change how YAML reads a line; rare in specs.
  if (text.length >= MAX_TEXT || UNUSUAL_OR_TAB.test(text) || (SURROGATE.test(text) && UNUSUAL_CHARACTERS.test(text))) return undefined;
  const reader = new Reader(text);
  const values: Array<Record<string, unknown> | unknown[]> = [];
  const bounds: number[] = [];
  try {
    for (;;) {
      const line = reader.peek();
      if (!line) break;
      if (reader.text.charCodeAt(line.start) === 37 /* % */ && line.indent === 0) return undefined; // directives
      if (reader.isMarker(line)) {
        reader.next = line.end + 1;
        continue;
      }
      reader.base = reader.count;
      const value = reader.block(line);
      const after = reader.peek();
      if (after && !reader.isMarker(after)) return undefined;
      values.push(value);
      bounds.push(reader.base, reader.count);
    }
  } catch (err) {
    if (err === DECLINE) return undefined;
    throw err;
  }
  // One copy of the records per file, which its documents view: a buffer per document
  // cost more to allocate than the copying.
  const records = reader.nodes.slice(0, reader.count);
  return values.map((value, k) => ({ value, nodes: records.subarray(bounds[2 * k]!, bounds[2 * k + 1]!) }));
}

/** Start offset of the node whose record is at `at` (-1: none). */
function startOf(nodes: Int32Array, at: number): number {
  return (nodes[at]! >> 2) - 1;
}

/** End offset of the node whose record is at `at` (-1: none). */
function endOf(nodes: Int32Array, at: number): number {
  return (nodes[at]! & 3) === EMPTY ? -1 : nodes[at + 1]!;
}

/** Index of the record after the subtree of the node whose record is at `at`. */
function after(nodes: Int32Array, at: number): number {
  const kind = nodes[at]! & 3;
  return kind === SCALAR ? at + 2 : kind === EMPTY ? at + 1 : nodes[at + 2]!;
}

/** Mappings with more pairs than this get an index by key, built on first lookup. */
const INDEXED_MAPPING_PAIRS = 16;

/** Key indexes of large mappings, by document and the mapping's record. */
const pairIndexes = new WeakMap<PlainDocument, Map<number, Map<string, number>>>();

/**
 * The record of the key `want` in the mapping whose record is at `at`, or -1. Small mappings
 * are scanned; a large one is indexed once, so that a file with tens of thousands of unknown
 * fields in one mapping costs a lookup per diagnostic, not a scan.
 */
function pairAt(text: string, doc: PlainDocument, at: number, want: string): number {
  const nodes = doc.nodes;
  const end = nodes[at + 2]!;
  let indexes = pairIndexes.get(doc);
  let index = indexes?.get(at);
  if (!index) {
    let pairs = 0;
    // A pair is its key's record (a scalar's two numbers), then its value's.
    let pair = at + 3;
    for (; pair < end && pairs < INDEXED_MAPPING_PAIRS; pair = after(nodes, pair + 2), pairs++) {
      const start = startOf(nodes, pair);
      if (nodes[pair + 1]! - start === want.length && text.startsWith(want, start)) return pair;
    }
    if (pair >= end) return -1;
    // A large mapping: index it, for this lookup and the ones that follow.
    index = new Map();
    for (let pair = at + 3; pair < end; pair = after(nodes, pair + 2)) index.set(text.slice(startOf(nodes, pair), nodes[pair + 1]!), pair);
    if (!indexes) pairIndexes.set(doc, (indexes = new Map()));
    indexes.set(at, index);
  }
  return index.get(want) ?? -1;
}

/**
 * The span `[start, end)` of the node at `path` in a fast-path document of `text`, as the
 * loader's `locate` defines it (deepest existing node; with `key`, the mapping key of the
 * last mapping step), or undefined when that node has no span here (an empty value, or a
 * block collection that ends in one): the caller then asks the positional parse. Walks the node records only,
 * so later stages may do what they like with the document's value.
 */
export function locatePlain(text: string, doc: PlainDocument, path: ReadonlyArray<string | number>, key: boolean): [number, number] | undefined {
  const nodes = doc.nodes;
  let at = 0;
  let keyAt = -1;
  for (const segment of path) {
    const kind = nodes[at]! & 3;
    if (kind === SEQUENCE) {
      if (typeof segment !== 'number') break;
      const end = nodes[at + 2]!;
      let child = at + 3;
      for (let i = 0; i < segment && child < end; i++) child = after(nodes, child);
      if (child >= end) break;
      keyAt = -1;
      at = child;
    } else if (kind === MAPPING) {
      const pair = pairAt(text, doc, at, String(segment));
      if (pair < 0) break;
      keyAt = pair;
      at = pair + 2;
    } else break;
  }
  const target = key && keyAt >= 0 ? keyAt : at;
  const start = startOf(nodes, target);
  const end = endOf(nodes, target);
  return start < 0 || end < 0 ? undefined : [start, end];
}
