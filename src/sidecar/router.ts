/**
 * Route matching: the one implementation of "which compiled rule takes this request",
 * used by the sidecar for every request and by offline tools that explain routing.
 * Rules arrive in precedence order (the compiler sorted them), so the first match wins.
 * Regular expressions run on V8's linear-time engine (see spec/regex.ts).
 */
import type { CompiledBackend, CompiledMatch, CompiledRule, RouteBody } from '../config/types.ts';
import { compileMatchRegex } from '../spec/regex.ts';
import type { Random } from './clock.ts';

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

/** Element-wise prefix: `/a` matches `/a`, `/a/`, `/a/b`, not `/ab`. A trailing `/` in the prefix is ignored. */
function prefixTest(prefix: string): (path: string) => boolean {
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

/** Compiles one match into a predicate; cheap checks first. */
function compileTest(m: CompiledMatch): Test {
  const tests: Test[] = [];
  if (m.method !== null) {
    const method = m.method;
    tests.push((f) => f.method === method);
  }
  if (m.path.type === 'Exact') {
    const value = m.path.value;
    tests.push((f) => f.path === value);
  } else if (m.path.type === 'PathPrefix') {
    if (m.path.value !== '/') {
      const t = prefixTest(m.path.value);
      tests.push((f) => t(f.path));
    }
  } else {
    const re = compileMatchRegex(m.path.value);
    tests.push((f) => re.test(f.path));
  }
  for (const h of m.headers) {
    const t = valueTest(h.type, h.value);
    tests.push((f) => t(headerValue(f, h.name)));
  }
  for (const q of m.queryParams) {
    const t = valueTest(q.type, q.value);
    tests.push((_, query) => t(query().get(q.name)));
  }
  const port = m.port;
  if (port !== null) tests.unshift((f) => f.port === port);
  if (tests.length === 0) return () => true;
  if (tests.length === 1) return tests[0]!;
  return (f, q) => {
    for (const t of tests) if (!t(f, q)) return false;
    return true;
  };
}

/** A route table ready to match: predicates built once per config, not per request. */
export class RouteTable {
  readonly service: string;
  readonly ports: readonly number[];
  readonly rules: readonly CompiledRule[];
  readonly #tests: readonly Test[];

  /** @throws SyntaxError when a regex cannot run in linear time (the compiler rejects such configs first). */
  constructor(body: RouteBody) {
    this.service = body.service;
    this.ports = body.ports;
    this.rules = body.rules;
    this.#tests = body.rules.map((r) => compileTest(r.match));
  }

  /** The first rule that matches, or undefined (Gateway API: 404). */
  match(facts: RequestFacts): CompiledRule | undefined {
    let parsed: URLSearchParams | undefined;
    const query = () => (parsed ??= new URLSearchParams(facts.query));
    for (let i = 0; i < this.#tests.length; i++) if (this.#tests[i]!(facts, query)) return this.rules[i];
    return undefined;
  }

  /** Index of the first matching rule, or -1; for tools that explain why earlier rules did not match. */
  matchIndex(facts: RequestFacts): number {
    const rule = this.match(facts);
    return rule ? this.rules.indexOf(rule) : -1;
  }
}

/**
 * Picks a backend by weight: each gets weight/total of requests; weight 0 never.
 * Undefined when the rule has no backend with positive weight.
 */
export function pickBackend(backends: readonly CompiledBackend[], random: Random): CompiledBackend | undefined {
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
