/**
 * Route matching: the one implementation of "which compiled rule takes this request",
 * used by the sidecar for every request, and by `trellis explain` and traffic tests.
 * Rules arrive in precedence order (the compiler sorted them), so the first match wins.
 * Regular expressions run on V8's linear-time engine (see spec/regex.ts).
 */
import type { CompiledBackend, CompiledMatch, CompiledRule, RouteBody } from './types.ts';
import { compileMatchRegex } from '../spec/regex.ts';

/** What routing looks at in a request. */
export interface RequestFacts {
  /** Service port the caller named. */
  readonly port: number;
  readonly method: string;
  /** Path without the query string, as sent. */
  readonly path: string;
  /** Header values by lower-case name (Node's IncomingMessage.headers shape). */
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** Query string without the leading `?` ('' when none). */
  readonly query: string;
}

type Test = (facts: RequestFacts, query: () => URLSearchParams) => boolean;

/** One condition of a match, with words for explaining a miss. */
interface Condition {
  readonly test: Test;
  /** What the condition asks for: `method GET`, `path prefix /api`, `header x-canary = "1"`. */
  readonly wants: string;
}

/**
 * Gateway API's PathPrefix, element-wise: `/a` matches `/a`, `/a/`, `/a/b`, not `/ab`; a
 * trailing `/` in the prefix is ignored. The one definition of the rule, for routing, access
 * decisions and the compiler's shadowing check.
 */
export function prefixTest(prefix: string): (path: string) => boolean {
  if (prefix === '/') return () => true;
  const base = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  const withSlash = `${base}/`;
  return (path) => path === base || path.startsWith(withSlash);
}

function headerValue(facts: RequestFacts, name: string): string | undefined {
  const v = facts.headers[name];
  return Array.isArray(v) ? v.join(',') : (v as string | undefined);
}

function valueTest(type: 'Exact' | 'RegularExpression', value: string): (actual: string | undefined | null) => boolean {
  if (type === 'Exact') return (actual) => actual === value;
  const re = compileMatchRegex(value);
  return (actual) => actual !== undefined && actual !== null && re.test(actual);
}

/** The conditions of one match, cheapest first; all must hold. */
function conditionsOf(m: CompiledMatch): Condition[] {
  const out: Condition[] = [];
  const port = m.port;
  if (port !== null) out.push({ test: (f) => f.port === port, wants: `port ${port}` });
  if (m.method !== null) {
    const method = m.method;
    out.push({ test: (f) => f.method === method, wants: `method ${method}` });
  }
  if (m.path.type === 'Exact') {
    const value = m.path.value;
    out.push({ test: (f) => f.path === value, wants: `path exactly ${value}` });
  } else if (m.path.type === 'PathPrefix') {
    if (m.path.value !== '/') {
      const t = prefixTest(m.path.value);
      out.push({ test: (f) => t(f.path), wants: `path prefix ${m.path.value}` });
    }
  } else {
    const re = compileMatchRegex(m.path.value);
    out.push({ test: (f) => re.test(f.path), wants: `path matching the regular expression "${m.path.value}"` });
  }
  for (const h of m.headers) {
    const t = valueTest(h.type, h.value);
    out.push({ test: (f) => t(headerValue(f, h.name)), wants: `header ${h.name} ${h.type === 'Exact' ? '=' : '~'} "${h.value}"` });
  }
  for (const q of m.queryParams) {
    const t = valueTest(q.type, q.value);
    out.push({ test: (_, query) => t(query().get(q.name)), wants: `query ${q.name} ${q.type === 'Exact' ? '=' : '~'} "${q.value}"` });
  }
  return out;
}

/** Folds conditions into one predicate (no array walk for the common one-condition case). */
function predicateOf(conditions: readonly Condition[]): Test {
  if (conditions.length === 0) return () => true;
  if (conditions.length === 1) return conditions[0]!.test;
  const tests = conditions.map((c) => c.test);
  return (f, q) => {
    for (const t of tests) if (!t(f, q)) return false;
    return true;
  };
}

/** Why each rule before the chosen one did not take a request, and which one did. */
export interface RouteTrace {
  /** Index of the rule that matched, or -1. */
  readonly matched: number;
  /** For every rule up to the matched one (or all, without a match): the first condition it failed, or null for the match. */
  readonly rules: ReadonlyArray<{ readonly rule: CompiledRule; readonly failed: string | null }>;
}

/** A route table ready to match: predicates built once per config, not per request. */
export class RouteTable {
  readonly service: string;
  readonly ports: readonly number[];
  readonly rules: readonly CompiledRule[];
  readonly #conditions: ReadonlyArray<readonly Condition[]>;
  readonly #tests: readonly Test[];

  /** @throws SyntaxError when a regex cannot run in linear time (the compiler rejects such configs first). */
  constructor(body: RouteBody) {
    this.service = body.service;
    this.ports = body.ports;
    this.rules = body.rules;
    this.#conditions = body.rules.map((r) => conditionsOf(r.match));
    this.#tests = this.#conditions.map(predicateOf);
  }

  /** The first rule that matches, or undefined (Gateway API: 404). */
  match(facts: RequestFacts): CompiledRule | undefined {
    let parsed: URLSearchParams | undefined;
    const query = () => (parsed ??= new URLSearchParams(facts.query));
    for (let i = 0; i < this.#tests.length; i++) if (this.#tests[i]!(facts, query)) return this.rules[i];
    return undefined;
  }

  /** The same decision as `match`, with the reason each earlier rule was passed over. */
  trace(facts: RequestFacts): RouteTrace {
    let parsed: URLSearchParams | undefined;
    const query = () => (parsed ??= new URLSearchParams(facts.query));
    const rules: Array<{ rule: CompiledRule; failed: string | null }> = [];
    for (let i = 0; i < this.rules.length; i++) {
      const failed = this.#conditions[i]!.find((c) => !c.test(facts, query));
      rules.push({ rule: this.rules[i]!, failed: failed ? failed.wants : null });
      if (!failed) return { matched: i, rules };
    }
    return { matched: -1, rules };
  }
}

/**
 * Picks a backend by weight: each gets weight/total of requests; weight 0 never.
 * Undefined when the rule has no backend with positive weight.
 */
export function pickBackend(backends: readonly CompiledBackend[], random: () => number): CompiledBackend | undefined {
  if (backends.length === 1) return backends[0]!.weight > 0 ? backends[0] : undefined;
  let total = 0;
  for (const b of backends) total += b.weight;
  if (total <= 0) return undefined;
  let x = random() * total;
  for (const b of backends) {
    if (b.weight <= 0) continue;
    if (x < b.weight) return b;
    x -= b.weight;
  }
  return backends.findLast((b) => b.weight > 0);
}
