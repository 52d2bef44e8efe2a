/**
 * Call-chain checks at any depth: the compiler walks the call graph AccessPolicies declare
 * without recursion, so a chain as long as the mesh (10 000 hops in the benchmark mesh)
 * neither overflows the stack nor changes what a short chain reports.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { chainHead, TAIL_KEPT, worstChains } from '../../src/compiler/call-chains.ts';
import { compileTexts } from '../helpers/spec.ts';

/**
 * The reference: the recursive walk the checker used before (memoised, a service still on
 * the current path ends the chain with factor 1). Only for graphs shallow enough for the stack.
 */
function referenceWorst(calls: ReadonlyMap<string, readonly string[]>, hopFactor: (s: string) => number): (s: string) => { factor: number; chain: string[] } {
  const memo = new Map<string, { factor: number; chain: string[] }>();
  const visiting = new Set<string>();
  const worst = (service: string): { factor: number; chain: string[] } => {
    const known = memo.get(service);
    if (known) return known;
    if (visiting.has(service)) return { factor: 1, chain: [service] };
    visiting.add(service);
    let best = { factor: 1, chain: [service] };
    for (const target of calls.get(service) ?? []) {
      const next = worst(target);
      const factor = hopFactor(target) * next.factor;
      if (factor > best.factor) best = { factor, chain: [service, ...next.chain] };
    }
    visiting.delete(service);
    memo.set(service, best);
    return best;
  };
  return worst;
}

/** A mesh spec (one file): services s0…s(n-1), AccessPolicies naming `calls`, retries (attempts on 503) per service. */
function chainMesh(n: number, calls: ReadonlyMap<number, readonly number[]>, attempts: ReadonlyMap<number, number>): string {
  const name = (i: number) => `s${String(i).padStart(5, '0')}`;
  const docs = [`apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: m }
spec:
  trustDomain: m.local
  access: { default: deny }`];
  const callers = new Map<number, number[]>();
  for (const [from, targets] of calls) for (const t of targets) callers.set(t, [...(callers.get(t) ?? []), from]);
  for (let i = 0; i < n; i++) {
    docs.push(`apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name(i)} }
spec:
  ports: [{ port: 80 }]
  endpoints: { static: [{ address: 127.0.0.1, port: 16001 }] }`);
    const from = callers.get(i);
    if (from) {
      docs.push(`apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ${name(i)} }
spec:
  targetRefs: [{ kind: Service, name: ${name(i)} }]
  rules: [{ from: [${from.map((f) => `{ service: ${name(f)} }`).join(', ')}] }]`);
    }
    const a = attempts.get(i);
    if (a) {
      docs.push(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name(i)} }
spec:
  parentRefs: [{ kind: Service, name: ${name(i)} }]
  rules:
    - backendRefs: [{ name: ${name(i)}, port: 80 }]
      retry: { attempts: ${a}, codes: [503] }`);
    }
  }
  return docs.join('\n---\n') + '\n';
}

describe('call chains', () => {
  test('a 10 000-hop chain with a cycle compiles and reports its amplification (a per-hop recursion overflowed the stack)', () => {
    const n = 10_000;
    const calls = new Map<number, number[]>();
    for (let i = 0; i + 1 < n; i++) calls.set(i, [i + 1]);
    calls.get(n - 2)!.push(n / 2); // a cycle back into the middle of the chain
    calls.set(n - 1, [n / 2]);
    const attempts = new Map([
      [1, 1],
      [n / 2 + 1, 1],
      [n - 1, 2],
    ]);
    const result = compileTexts({ 'mesh.yaml': chainMesh(n, calls, attempts) });
    const chains = result.diagnostics.filter((d) => d.code === 'TRL4021');
    assert.equal(chains.length, 1);
    // A long chain is named by its ends and counted, not spelled out hop by hop.
    assert.equal(
      chains[0]!.message,
      'retries multiply along s00000 → s00001 → s00002 → s00003 → s00004 → … 9990 more … → s09995 → s09996 → s09997 → s09998 → s09999 (10000 services): one request from s00000 can become 12 requests at s09999 when everything fails',
    );
  });

  test('an amplification too large to write out is said to be more than 10^15', () => {
    // 40 hops retrying 3 times each: 4^40 ≈ 1.2 × 10^24.
    const n = 40;
    const calls = new Map<number, number[]>();
    for (let i = 0; i + 1 < n; i++) calls.set(i, [i + 1]);
    const attempts = new Map(Array.from({ length: n }, (_, i) => [i, 3] as [number, number]));
    const result = compileTexts({ 'mesh.yaml': chainMesh(n, calls, attempts) });
    const chains = result.diagnostics.filter((d) => d.code === 'TRL4021');
    assert.equal(chains.length, 1);
    assert.match(chains[0]!.message, /\(40 services\): one request from s00000 can become more than 10\^15 requests at s00039 when everything fails$/);
  });

  test('generated meshes, thousands of hops deep with cycles: the compile never throws', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 6000, max: 9000 }),
        fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 20 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 3 })), { maxLength: 10 }),
        (n, extra, retries) => {
          const calls = new Map<number, number[]>();
          for (let i = 0; i + 1 < n; i++) calls.set(i, [i + 1]);
          for (const [a, b] of extra) if (a % n !== b % n) calls.get(a % n)?.push(b % n);
          const result = compileTexts({ 'mesh.yaml': chainMesh(n, calls, new Map(retries.map(([i, a]) => [i % n, a]))) });
          assert.ok(result.mesh, result.diagnostics.filter((d) => d.severity === 'error').map((d) => d.message).join('\n'));
        },
      ),
      { numRuns: 3 },
    );
  });

  /** A small graph: services with edges (some to themselves or back up the path) and hop factors. */
  const smallGraph = fc.integer({ min: 1, max: 8 }).chain((n) =>
    fc.record({
      services: fc.constant(Array.from({ length: n }, (_, i) => `s${i}`)),
      edges: fc.array(fc.tuple(fc.nat(n - 1), fc.nat(n - 1)), { maxLength: 3 * n }),
      factors: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: n, maxLength: n }),
      order: fc.array(fc.nat(n - 1), { minLength: 1, maxLength: 2 * n }),
    }),
  );

  test('small graphs: every chain equals the recursive reference, asked in any order', () => {
    fc.assert(
      fc.property(smallGraph, ({ services, edges, factors, order }) => {
        const calls = new Map<string, string[]>();
        for (const [a, b] of edges) calls.set(services[a]!, [...(calls.get(services[a]!) ?? []), services[b]!]);
        const hop = (s: string) => factors[Number(s.slice(1))]!;
        const worst = worstChains(calls, hop);
        const reference = referenceWorst(calls, hop);
        for (const i of order) {
          const got = worst(services[i]!);
          const chain = chainHead(got, got.length);
          assert.deepEqual({ factor: got.factor, chain }, reference(services[i]!));
          // What a message shows of a long chain, kept on each link: its length and its end.
          assert.deepEqual({ length: got.length, tail: got.tail }, { length: chain.length, tail: chain.slice(-TAIL_KEPT) });
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('small meshes: the compiler reports the chains the reference finds', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 7 }).chain((n) =>
          fc.record({
            n: fc.constant(n),
            edges: fc.uniqueArray(fc.tuple(fc.nat(n - 1), fc.nat(n - 1)), { maxLength: 2 * n, selector: ([a, b]) => `${a}>${b}` }),
            attempts: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: n, maxLength: n }),
          }),
        ),
        ({ n, edges, attempts }) => {
          const callsByIndex = new Map<number, number[]>();
          for (const [a, b] of edges) if (a !== b) callsByIndex.set(a, [...(callsByIndex.get(a) ?? []), b]);
          const result = compileTexts({ 'mesh.yaml': chainMesh(n, callsByIndex, new Map(attempts.map((a, i) => [i, a]))) });
          const name = (i: number) => `s${String(i).padStart(5, '0')}`;
          // The checker's call graph: per target in service order, its callers in policy order.
          const calls = new Map<string, string[]>();
          const called = new Set<number>();
          for (let t = 0; t < n; t++) {
            for (const [a, b] of edges) {
              if (b !== t || a === b) continue;
              calls.set(name(a), [...(calls.get(name(a)) ?? []), name(t)]);
              called.add(t);
            }
          }
          const reference = referenceWorst(calls, (s) => 1 + attempts[Number(s.slice(1))]!);
          const expected: string[] = [];
          for (let i = 0; i < n; i++) {
            if (called.has(i)) continue;
            const w = reference(name(i));
            if (w.factor > 8) expected.push(`retries multiply along ${w.chain.join(' → ')}: one request from ${name(i)} can become ${w.factor} requests at ${w.chain.at(-1)} when everything fails`);
          }
          const got = result.diagnostics.filter((d) => d.code === 'TRL4021').map((d) => d.message);
          assert.deepEqual(got.sort(), expected.sort());
        },
      ),
      { numRuns: 200 },
    );
  });
});
