/**
 * Traffic tests: `TrafficTest` documents checked against the compiled mesh with the same
 * router and access decision a sidecar uses (through `explain`). A failing test is an
 * error diagnostic, so it fails `validate`, `compile` and a reconcile like any other error.
 */
import { diagnostic, type Diagnostic } from '../diagnostics/diagnostic.ts';
import { explain, grpcExplainRequest, type Explanation } from '../explain/explain.ts';
import { parseDuration, formatDuration } from '../spec/duration.ts';
import type { TrafficTestDocument } from '../spec/types.ts';
import type { CompileResult } from './compile.ts';
import { at, keyOf, nameKey, namespaceOf, type Located } from './resolve.ts';

/** The result of one traffic test. */
export interface TrafficTestResult {
  readonly name: string;
  readonly ok: boolean;
  /** One sentence per failed expectation. */
  readonly failures: readonly string[];
  readonly explanation: Explanation | null;
}

function outcomeOf(e: Explanation): 'routed' | 'redirect' | 'no-route' | 'denied' {
  if (!e.reachable.ok) return 'denied';
  if (!e.matched) return 'no-route';
  if (e.matched.redirect) return 'redirect';
  return e.clusters.some((c) => c.access && !c.access.allowed) ? 'denied' : 'routed';
}

function shares(e: Explanation): string {
  const list = e.matched?.backends.filter((b) => b.share > 0).map((b) => `${b.service} ${Math.round(b.share * 1000) / 10}%`) ?? [];
  return list.length > 0 ? list.join(', ') : 'no backend';
}

/** Where the matched rule is, for messages: ` (rule checkout/1/0 at routes/checkout.yaml:30:7)`. */
function ruleNote(e: Explanation): string {
  const rule = e.rules.find((r) => r.matched);
  return rule ? ` (rule ${rule.route === null ? 'default' : rule.id}${rule.at ? ` at ${rule.at}` : ''})` : '';
}

/** Runs every TrafficTest of a compiled spec; diagnostics point at the failed expectation. */
export function runTrafficTests(result: CompileResult): { results: TrafficTestResult[]; diagnostics: Diagnostic[] } {
  const diagnostics: Diagnostic[] = [];
  const results: TrafficTestResult[] = [];
  for (const test of result.spec?.trafficTests ?? []) {
    const r = runOne(result, test, diagnostics);
    results.push(r);
  }
  return { results, diagnostics };
}

function runOne(result: CompileResult, test: Located<TrafficTestDocument>, out: Diagnostic[]): TrafficTestResult {
  const name = keyOf(test.doc);
  const { request: written, expect: writtenExpect } = test.doc.spec;
  // Service names resolve in the test's namespace; from here on they are service keys.
  const ns = namespaceOf(test.doc);
  const request = { ...written, from: nameKey(ns, written.from), to: nameKey(ns, written.to) };
  const expect = {
    ...writtenExpect,
    ...(writtenExpect.backend !== undefined ? { backend: nameKey(ns, writtenExpect.backend) } : {}),
    ...(writtenExpect.share !== undefined ? { share: { ...writtenExpect.share, backend: nameKey(ns, writtenExpect.share.backend) } } : {}),
  };
  const plan = result.plan!;
  for (const field of ['from', 'to'] as const) {
    const svc = plan.services.get(request[field]);
    const problem = !svc ? `names no service "${request[field]}"` : field === 'from' && !svc.meshed ? `"${request.from}" runs no sidecar, so the mesh does not route its calls` : undefined;
    if (problem) {
      out.push(diagnostic('TRL5002', `traffic test "${name}": request.${field} ${problem}`, at(test, ['spec', 'request', field])));
      return { name, ok: false, failures: [problem], explanation: null };
    }
  }
  const grpc = request.grpc;
  if (grpc && (request.method !== undefined || request.path !== undefined)) {
    const field = request.method !== undefined ? 'method' : 'path';
    const problem = `request.grpc names the call, so request.${field} may not be given too`;
    out.push(diagnostic('TRL5002', `traffic test "${name}": ${problem}`, at(test, ['spec', 'request', field], true), { hint: 'a gRPC call is always POST /<service>/<method>; remove method and path' }));
    return { name, ok: false, failures: [problem], explanation: null };
  }
  const path = grpc ? `/${grpc.service}/${grpc.method}` : (request.path ?? '/');
  const q = path.indexOf('?');
  const headers = Object.fromEntries(Object.entries(request.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const e = explain(
    result,
    grpc
      ? grpcExplainRequest(request.from, request.to, grpc.service, grpc.method, headers, request.port)
      : { from: request.from, to: request.to, method: request.method ?? 'GET', path: q < 0 ? path : path.slice(0, q), query: q < 0 ? '' : path.slice(q + 1), headers, ...(request.port ? { port: request.port } : {}) },
    '',
  );
  const failures: Array<[string, string]> = [];
  const outcome = outcomeOf(e);
  if (expect.outcome !== undefined && expect.outcome !== outcome) failures.push(['outcome', `expected outcome ${expect.outcome}, got ${outcome}: ${e.outcome}${ruleNote(e)}`]);
  if (expect.backend !== undefined) {
    const reached = e.matched?.backends.filter((b) => b.share > 0) ?? [];
    if (reached.length !== 1 || reached[0]!.service !== expect.backend) failures.push(['backend', `expected every such request to go to ${expect.backend}, but it goes to ${shares(e)}${ruleNote(e)}`]);
  }
  if (expect.share !== undefined) {
    const got = 100 * (e.matched?.backends.filter((b) => b.service === expect.share!.backend).reduce((n, b) => n + b.share, 0) ?? 0);
    const min = expect.share.min ?? 0;
    const max = expect.share.max ?? 100;
    if (got < min - 1e-9 || got > max + 1e-9) failures.push(['share', `expected ${expect.share.backend} to get ${min}–${max}% of such requests, it gets ${Math.round(got * 10) / 10}% (${shares(e)})${ruleNote(e)}`]);
  }
  if (expect.timeout !== undefined) {
    const ms = e.matched?.timeouts.requestMs;
    const where = e.matched ? (e.matched.timeouts.request.at ?? 'built-in default') : '';
    if (ms === undefined) failures.push(['timeout', `expected a timeout, but no rule matches${ruleNote(e)}`]);
    else {
      const max = expect.timeout.max !== undefined ? parseDuration(expect.timeout.max)! : undefined;
      const min = expect.timeout.min !== undefined ? parseDuration(expect.timeout.min)! : undefined;
      const shown = ms === 0 ? 'disabled (0s)' : formatDuration(ms);
      if (max !== undefined && (ms === 0 || ms > max)) failures.push(['timeout', `expected a request timeout of at most ${expect.timeout.max}, it is ${shown} (${where})`]);
      if (min !== undefined && ms !== 0 && ms < min) failures.push(['timeout', `expected a request timeout of at least ${expect.timeout.min}, it is ${shown} (${where})`]);
    }
  }
  if (expect.retries !== undefined) {
    const attempts = e.matched?.retry.attempts ?? 0;
    if (attempts > expect.retries.max) failures.push(['retries', `expected at most ${expect.retries.max} retries, the rule allows ${attempts} (${e.matched?.retry.origin.at ?? 'built-in default'})`]);
  }
  for (const [field, message] of failures) {
    const call = grpc ? `--grpc ${grpc.service}/${grpc.method}` : `--method ${request.method ?? 'GET'} --path '${path}'`;
    out.push(diagnostic('TRL5001', `traffic test "${name}" failed: ${message}`, at(test, ['spec', 'expect', field], true), { hint: `trellis explain --from ${request.from} --to ${request.to} ${call} shows every step` }));
  }
  return { name, ok: failures.length === 0, failures: failures.map(([, m]) => m), explanation: e };
}
