/**
 * Stage 2: validate. Checks each parsed document against the JSON Schema of its kind
 * (schema/*.schema.json, the same files editors use) and turns ajv's errors into
 * diagnostics that point at the offending YAML node.
 */
import type { ErrorObject } from 'ajv';
import { diagnostic, type Diagnostic } from '../diagnostics/diagnostic.ts';
import type { Code } from '../diagnostics/codes.ts';
import { formatDuration, parseDuration } from '../spec/duration.ts';
import type { SpecDocument } from '../spec/types.ts';
import { locate, type DocPath, type ParsedDocument } from './load.ts';
import { closest } from './suggest.ts';
// The kind schemas compiled to JavaScript ahead of time (scripts/build-validators.ts, with
// the `maxDuration` keyword): a process never compiles a schema, which cost 130–180 ms.
import { validators } from './validators.generated.js';

export { SCHEMAS } from './validators-schemas.ts';

/** A document that passed its schema, typed as its kind. */
export interface ValidDocument<D extends SpecDocument = SpecDocument> {
  readonly source: ParsedDocument;
  readonly doc: D;
}

/** `spec.rules[0].backendRefs[1]` — how paths are named in messages. */
export function formatPath(path: DocPath): string {
  let out = '';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : out === '' ? seg : `.${seg}`;
  return out || 'document';
}

function pointerToPath(pointer: string): Array<string | number> {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^(0|[1-9]\d*)$/.test(s) ? Number(s) : s));
}

/** Plain-words explanations of the patterns users meet most. */
const PATTERN_EXPLANATIONS: ReadonlyArray<[RegExp, string]> = [
  [/\(h\|m\|s\|ms\)/, 'a duration such as 500ms, 10s or 1m30s (whole numbers with h, m, s or ms, at most four parts)'],
  [/^\^\[a-z0-9\]\(\[-a-z0-9\]\*\[a-z0-9\]\)\?\$$/, 'a name of lower-case letters, digits and "-", starting and ending with a letter or digit'],
  [/^\^spiffe/, 'a SPIFFE ID such as spiffe://example.org/svc/checkout'],
  [/^\^\(\?:\[-A-Za-z0-9\/\._~/, 'a URL path of letters, digits, /-._~!$&\'()*+,;=:@ and %XX escapes (no spaces, control characters or raw non-ASCII)'],
  [/^\^\(\[a-z0-9\]/, 'a service name such as checkout, or namespace/name such as shop/checkout'],
  [/^\^\\\.\?\[A-Za-z_\]/, 'a gRPC service name such as shop.reviews.v1.Reviews (identifiers of letters, digits and "_" joined by dots)'],
  [/^\^\[A-Za-z_\]\[A-Za-z_0-9\]\*\$$/, 'a gRPC method name such as GetReviews (letters, digits and "_", not starting with a digit)'],
];

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Maps one ajv error to a diagnostic; undefined for errors that only restate others. */
function toDiagnostic(source: ParsedDocument, e: ErrorObject): Diagnostic | undefined {
  const path = pointerToPath(e.instancePath);
  const where = formatPath(path);
  const p = e.params as Record<string, unknown>;
  const schema = (e.parentSchema ?? {}) as { description?: string; properties?: Record<string, unknown> };
  let code: Code;
  let message: string;
  let hint: string | undefined;
  let at = locate(source, path);
  switch (e.keyword) {
    case 'required': {
      code = 'TRL2001';
      message = `${where} is missing required field "${String(p.missingProperty)}"`;
      // Point at the key that owns the incomplete mapping (`spec:`), not at its first field.
      if (path.length > 0 && typeof path[path.length - 1] === 'string') at = locate(source, path, true);
      break;
    }
    case 'uniqueItems': {
      code = 'TRL2007';
      const second = Math.max(Number(p.i), Number(p.j));
      message = `${where} lists ${JSON.stringify((e.data as unknown[])[second])} twice`;
      at = locate(source, [...path, second]);
      hint = 'remove the repeated entry';
      break;
    }
    case 'additionalProperties': {
      const field = String(p.additionalProperty);
      code = 'TRL2002';
      message = `unknown field "${field}" in ${where}`;
      at = locate(source, [...path, field], true);
      const known = Object.keys(schema.properties ?? {});
      const guess = closest(field, known);
      hint = guess ? `did you mean "${guess}"?` : known.length > 0 ? `fields allowed here: ${known.join(', ')}` : undefined;
      break;
    }
    case 'type': {
      code = 'TRL2003';
      message = `${where} must be ${String(p.type)}, not ${describeValue(e.data)}`;
      break;
    }
    case 'enum':
    case 'const': {
      code = 'TRL2004';
      const allowed = (e.keyword === 'enum' ? (p.allowedValues as unknown[]) : [p.allowedValue]).map((v) => JSON.stringify(v));
      message = `${where} may not be ${JSON.stringify(e.data)}`;
      const guess = typeof e.data === 'string' ? closest(e.data, allowed.map((a) => JSON.parse(a) as unknown).filter((a): a is string => typeof a === 'string')) : undefined;
      hint = guess ? `did you mean "${guess}"? Allowed: ${allowed.join(', ')}` : `allowed: ${allowed.join(', ')}`;
      break;
    }
    case 'pattern':
    case 'format': {
      code = 'TRL2005';
      const pattern = String(p.pattern ?? p.format);
      const explained = PATTERN_EXPLANATIONS.find(([re]) => re.test(pattern))?.[1];
      message = `${where} is ${JSON.stringify(e.data)}, which is not ${explained ?? `of the form ${pattern}`}`;
      break;
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
    case 'minLength':
    case 'maxLength':
    case 'minItems':
    case 'maxItems':
    case 'minProperties':
    case 'maxProperties': {
      code = 'TRL2006';
      const limit = Number(p.limit);
      const bound: Record<string, string> = {
        minimum: `must be at least ${limit}`,
        maximum: `must be at most ${limit}`,
        exclusiveMinimum: `must be more than ${limit}`,
        exclusiveMaximum: `must be less than ${limit}`,
        minLength: `must be at least ${limit} characters long`,
        maxLength: `may be at most ${limit} characters long`,
        minItems: `needs at least ${limit} item${limit === 1 ? '' : 's'}`,
        maxItems: `may hold at most ${limit} items`,
        minProperties: `needs at least ${limit} field${limit === 1 ? '' : 's'}`,
        maxProperties: `may hold at most ${limit} field${limit === 1 ? '' : 's'}`,
      };
      message = `${where} ${bound[e.keyword]!}${typeof e.data === 'number' ? `, not ${e.data}` : ''}`;
      if (schema.description) hint = schema.description.split(/(?<=\.)\s/)[0];
      break;
    }
    case 'maxDuration': {
      code = 'TRL2006';
      const max = parseDuration(String(e.schema))!;
      message = `${where} is ${String(e.data)}; a duration may be at most ${formatDuration(max)}`;
      hint = `Node timers cannot hold longer delays and no mesh setting needs more than a day; to wait without a limit, set a request timeout to 0s`;
      break;
    }
    case 'if':
      return undefined; // the failing `then` branch reports the real problem
    case 'anyOf': {
      // "At least one of these fields" (a GRPCRoute method match: service, method) is
      // written as branches that each require one field; say it that way.
      const branches = Array.isArray(e.schema) ? (e.schema as Array<{ required?: unknown }>) : [];
      const fields = branches.map((b) => (Array.isArray(b.required) && b.required.length === 1 ? String(b.required[0]) : undefined));
      if (fields.length > 1 && fields.every((f) => f !== undefined)) {
        code = 'TRL2001';
        message = `${where} needs at least one of ${fields.map((f) => `"${f}"`).join(', ')}`;
        if (path.length > 0 && typeof path[path.length - 1] === 'string') at = locate(source, path, true);
        break;
      }
      code = 'TRL2007';
      message = `${where} ${e.message ?? 'does not match the schema'}`;
      if (schema.description) hint = schema.description.split(/(?<=\.)\s/)[0];
      break;
    }
    default: {
      code = 'TRL2007';
      message = `${where} ${e.message ?? 'does not match the schema'}`;
      if (schema.description) hint = schema.description.split(/(?<=\.)\s/)[0];
    }
  }
  return diagnostic(code, message, at, hint ? { hint } : {});
}

/**
 * A test for errors raised inside a oneOf/anyOf branch, which are noise when the
 * combinator itself is reported: an error is noise when some other combinator error's
 * schemaPath is a proper path-prefix of its schemaPath and its instancePath starts with
 * that error's instancePath (as strings). Combinator errors are indexed by instancePath,
 * so each error costs one lookup per prefix of its own instancePath rather than a scan of
 * every error (which made a file with thousands of errors quadratic).
 */
function branchNoise(all: readonly ErrorObject[]): (e: ErrorObject) => boolean {
  const byInstance = new Map<string, ErrorObject[]>();
  for (const o of all) {
    if (o.keyword !== 'oneOf' && o.keyword !== 'anyOf') continue;
    const list = byInstance.get(o.instancePath);
    if (list) list.push(o);
    else byInstance.set(o.instancePath, [o]);
  }
  if (byInstance.size === 0) return () => false;
  return (e) => {
    for (let end = 0; end <= e.instancePath.length; end++) {
      const list = byInstance.get(e.instancePath.slice(0, end));
      if (list?.some((o) => o !== e && e.schemaPath.startsWith(o.schemaPath + '/'))) return true;
    }
    return false;
  };
}

/**
 * Validates documents against their kind's schema. Documents with schema errors are
 * dropped from the output (later stages may rely on every field's shape); the rest are
 * returned unchanged — defaults are applied later, where layering needs to know what
 * the user actually wrote.
 */
export function validateDocuments(documents: readonly ParsedDocument[]): { valid: ValidDocument[]; diagnostics: Diagnostic[] } {
  const valid: ValidDocument[] = [];
  const diagnostics: Diagnostic[] = [];
  for (const source of documents) {
    const fn = validators[source.kind];
    if (fn(source.value)) {
      valid.push({ source, doc: source.value as unknown as SpecDocument });
      continue;
    }
    const errors = fn.errors ?? [];
    const isBranchNoise = branchNoise(errors);
    const seen = new Set<string>();
    for (const e of errors) {
      if (isBranchNoise(e)) continue;
      const d = toDiagnostic(source, e);
      if (!d) continue;
      const key = `${d.code}|${d.message}`;
      if (seen.has(key)) continue;
      seen.add(key);
      diagnostics.push(d);
    }
  }
  return { valid, diagnostics };
}
