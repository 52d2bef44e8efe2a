/**
 * The incremental compiler gives, after any sequence of edits, exactly what a cold compile
 * of the same files gives: every config byte for byte, the mesh version, and every
 * diagnostic with its position.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { canonicalJson } from '../../src/config/canonical.ts';
import { compileFiles, type CompileResult } from '../../src/compiler/compile.ts';
import { createIncrementalCompiler } from '../../src/compiler/incremental.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';
import { diagnosticToJson } from '../../src/diagnostics/render.ts';
import { syntheticMesh } from '../../bench/synthetic-mesh.ts';

/** Everything a compile result says, as one string: configs in canonical JSON, diagnostics with spans. */
function canonical(result: CompileResult): string {
  const diagnostics = result.diagnostics.map((d) => ({
    ...diagnosticToJson(d),
    span: d.span ? [d.span.file.path, d.span.start, d.span.end] : null,
    related: (d.related ?? []).map((r) => [r.span.file.path, r.span.start, r.span.end, r.message]),
  }));
  const configs = result.mesh ? [...result.mesh.configs].map(([name, config]) => [name, canonicalJson(config)]) : null;
  return canonicalJson({ diagnostics, mesh: result.mesh ? { name: result.mesh.mesh, version: result.mesh.version } : null, configs, inboundPort: result.plan?.settings.inboundPort ?? null });
}

/** A route's first parent, and its name. */
const PARENT = /parentRefs:\n\s+- kind: Service\n\s+name: ([a-z0-9-]+)/;

/** `file` with its route's first parent changed to the first parent named in `files` from the `k`-th file on that is another. */
function movedRoute(file: SourceFile, files: readonly SourceFile[], k = 0): SourceFile | undefined {
  const from = PARENT.exec(file.text)?.[1];
  if (from === undefined) return undefined;
  for (let n = 0; n < files.length; n++) {
    const to = PARENT.exec(files[(k + n) % files.length]!.text)?.[1];
    if (to !== undefined && to !== from) return new SourceFile(file.path, file.text.replace(PARENT, (m) => m.replace(`name: ${from}`, `name: ${to}`)));
  }
  return undefined;
}

/** One edit of a spec repo, as a person might make it in a pull request. */
type Edit =
  | { kind: 'replace'; file: number; from: string; to: string }
  | { kind: 'delete'; file: number }
  | { kind: 'duplicate'; file: number }
  | { kind: 'add'; services: number; seed: number }
  | { kind: 'break'; file: number; at: number; text: string }
  | { kind: 'touch'; file: number }
  | { kind: 'move'; file: number; to: number };

/** Value swaps that change configs, diagnostics or both (a timeout, a retry count, a weight, a name). */
const SWAPS: ReadonlyArray<[string, string]> = [
  ['request: 2s', 'request: 45s'],
  ['request: 10s', 'request: 1s'],
  ['attempts: 2', 'attempts: 0'],
  ['attempts: 1', 'attempts: 5'],
  ['weight: 90', 'weight: 0'],
  ['weight: 10', 'weight: 70'],
  ['maxConnections: 256', 'maxConnections: 8'],
  ['default: deny', 'default: allow'],
  ['mode: strict', 'mode: permissive'],
  ['port: 80', 'port: 81'],
  ['type: least-request', 'type: round-robin'],
  ['- service: ', '- service: x'],
  ['timeouts:', 'timeout:'],
  // A service's own settings, its endpoints, a port's protocol, its meshing.
  ['targetPort: 8080', 'targetPort: 8081'],
  ['zone: local-a', 'zone: local-c'],
  ['      targetPort: 8080\n', '      targetPort: 8080\n      appProtocol: tcp\n'],
  ['  ports:\n    - name: http', '  sidecar: false\n  ports:\n    - name: http'],
  // A route's parent, a backend.
  ['  parentRefs:\n    - kind: Service\n      name: ', '  parentRefs:\n    - kind: Service\n      name: x'],
  ['      backendRefs:\n        - name: ', '      backendRefs:\n        - name: x'],
  // A TrafficPolicy's target, a lifted retry budget, injected faults.
  ['  targetRefs:\n    - kind: Service\n      name: ', '  targetRefs:\n    - kind: Service\n      name: x'],
  ['  loadBalancer:\n    type: least-request', '  retryBudget:\n    ratio: 1.5\n  loadBalancer:\n    type: least-request'],
  ['  circuitBreaker:\n', '  faultInjection:\n    abort:\n      httpStatus: 503\n      percentage: 10\n  circuitBreaker:\n'],
  // The Mesh's mTLS.
  ['mode: strict', 'mode: off'],
];

const edit: fc.Arbitrary<Edit> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('replace' as const), file: fc.nat(), swap: fc.constantFrom(...SWAPS), back: fc.boolean() }).map(({ file, swap, back }) => ({ kind: 'replace' as const, file, from: back ? swap[1] : swap[0], to: back ? swap[0] : swap[1] })), weight: 6 },
  { arbitrary: fc.record({ kind: fc.constant('delete' as const), file: fc.nat() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('duplicate' as const), file: fc.nat() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('add' as const), services: fc.integer({ min: 1, max: 4 }), seed: fc.integer({ min: 1, max: 1000 }) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('break' as const), file: fc.nat(), at: fc.nat(), text: fc.constantFrom(': : x', '\t', '- ', '&a', '"', 'kind: Nope\n', '\n  x: 1\n') }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('touch' as const), file: fc.nat() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('move' as const), file: fc.nat(), to: fc.nat() }), weight: 1 },
);

function apply(files: SourceFile[], e: Edit): SourceFile[] {
  if (files.length === 0) return files;
  const i = 'file' in e ? e.file % files.length : 0;
  const f = files[i]!;
  switch (e.kind) {
    case 'replace':
      return files.map((x, j) => (j === i ? new SourceFile(x.path, x.text.split(e.from).join(e.to)) : x));
    case 'delete':
      return files.filter((_, j) => j !== i);
    case 'duplicate':
      // The same documents under another path: duplicate definitions, until deleted again.
      return [...files, new SourceFile(f.path.replace(/\.yaml$/, `-copy${files.length}.yaml`), f.text)];
    case 'add': {
      // Services of another small mesh, under a folder of their own (their names clash with ours or not).
      const extra = syntheticMesh(e.services, { seed: e.seed }).files.filter((x) => x.path !== 'mesh.yaml');
      return [...files, ...extra.map((x) => new SourceFile(`added-${e.seed}/${x.path}`, x.text))];
    }
    case 'break': {
      const at = e.at % (f.text.length + 1);
      return files.map((x, j) => (j === i ? new SourceFile(x.path, x.text.slice(0, at) + e.text + x.text.slice(at)) : x));
    }
    case 'touch':
      // Same path, same text, a new object (as a new git revision reads every blob anew).
      return files.map((x, j) => (j === i ? new SourceFile(x.path, x.text) : x));
    case 'move': {
      // A route re-pointed at another Service of the spec (its own parent's routes and the other's change).
      const moved = movedRoute(f, files, e.to);
      return moved ? files.map((x, j) => (j === i ? moved : x)) : files;
    }
  }
}

describe('incremental compile', () => {
  test('after every edit of random edit sequences, the result is byte-identical to a cold compile', () => {
    const base = syntheticMesh(40, { seed: 11 }).files;
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 8 }), (edits) => {
        const compiler = createIncrementalCompiler();
        let files = base;
        assert.equal(canonical(compiler.compile(files)), canonical(compileFiles(files)));
        for (const e of edits) {
          files = apply(files, e);
          assert.equal(canonical(compiler.compile(files)), canonical(compileFiles(files)), JSON.stringify(e));
        }
      }),
      { numRuns: Number(process.env.INCREMENTAL_RUNS ?? 40) },
    );
  });

  test('a one-file change parses only that file', () => {
    const files = syntheticMesh(200, { seed: 2 }).files;
    const compiler = createIncrementalCompiler();
    compiler.compile(files);
    assert.deepEqual({ ...compiler.lastStats, unitsRan: 0 }, { parsedFiles: files.length, reusedFiles: 0, unitsRan: 0, unitsReused: 0, patched: false });
    const changed = files.map((f, i) => (i === 7 ? new SourceFile(f.path, f.text.replace('request: 2s', 'request: 3s')) : new SourceFile(f.path, f.text)));
    const result = compiler.compile(changed);
    const stats = compiler.lastStats;
    assert.deepEqual([stats.parsedFiles, stats.reusedFiles, stats.patched], [1, files.length - 1, true]);
    // Resolve, check and emit visit only the units the changed documents feed: a handful, not one per document.
    assert.ok(stats.unitsRan > 0 && stats.unitsRan + stats.unitsReused < files.length / 4, JSON.stringify(stats));
    assert.equal(canonical(result), canonical(compileFiles(changed)));
  });

  test('a service file added or removed, or a route moved to another parent, patches the last compile too; a Mesh change checks the whole spec', () => {
    const files = syntheticMesh(200, { seed: 2 }).files;
    // An app of another mesh under new names: a Service, its route and its policies, calling into ours.
    const extra = syntheticMesh(3, { seed: 8 }).files.find((f) => f.path.startsWith('services/'))!;
    const app = new SourceFile('services/new/app.yaml', extra.text.replaceAll(/name: ([a-z]+-\d+)$/gm, 'name: $1-new'));
    const compiler = createIncrementalCompiler();
    compiler.compile(files);
    for (const [what, revision, patched] of [
      ['added', [...files, app], true],
      ['removed', files, true],
      ['a service file removed', files.filter((_, i) => i !== 9), true],
      ['a route moved to another parent', files.filter((_, i) => i !== 9).map((f, i) => (i === 20 ? movedRoute(f, files)! : f)), true],
      ['the Mesh changed', files.filter((_, i) => i !== 9).map((f) => (f.path === 'mesh.yaml' ? new SourceFile(f.path, f.text.replace('request: 15s', 'request: 20s')) : f)), false],
    ] as const) {
      const result = compiler.compile(revision);
      assert.equal(compiler.lastStats.patched, patched, what);
      assert.equal(canonical(result), canonical(compileFiles(revision)), what);
    }
  });

  test('a service that takes another identity, or joins or leaves the mesh, and a ReferenceGrant changed, added or removed, are patched too', async () => {
    const { readdirSync, readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { fileURLToPath } = await import('node:url');
    const root = fileURLToPath(new URL('../../examples/namespaces/', import.meta.url));
    const files = (readdirSync(root, { recursive: true }) as string[])
      .filter((p) => p.endsWith('.yaml'))
      .map((p) => new SourceFile(p, readFileSync(join(root, p), 'utf8')));
    const shop = files.findIndex((f) => f.path === 'shop/services.yaml');
    const payments = files.findIndex((f) => f.path === 'payments/services.yaml');
    const grants = files.findIndex((f) => f.path === 'payments/grants.yaml');
    const grant = files[grants]!.text;
    const edit = (i: number, from: string, to: string) => (list: SourceFile[]) => {
      assert.ok(list[i]!.text.includes(from), `${list[i]!.path} holds ${JSON.stringify(from)}`);
      return list.map((f, j) => (j === i ? new SourceFile(f.path, f.text.replace(from, to)) : f));
    };
    const compiler = createIncrementalCompiler();
    let revision = files;
    let previous = canonical(compiler.compile(revision));
    for (const [what, change, compiles] of [
      // Checkout runs as the frontend's ServiceAccount: the two share an identity (a warning), and access rules see it anew.
      ['checkout takes the frontend\'s identity', edit(shop, 'serviceAccount: checkout', 'serviceAccount: frontend'), true],
      ['checkout takes an identity of its own again', edit(shop, '  name: checkout\n  namespace: shop\nspec:\n  ports:\n    - name: http\n      port: 80\n      targetPort: 8080\n  serviceAccount: frontend', '  name: checkout\n  namespace: shop\nspec:\n  ports:\n    - name: http\n      port: 80\n      targetPort: 8080\n  serviceAccount: checkout-2'), true],
      ['a payments service takes a new identity', edit(payments, 'serviceAccount: payments-api-v2', 'serviceAccount: payments-api-v3'), true],
      ['the ledger leaves the mesh', edit(payments, '  name: ledger\n  namespace: payments\nspec:\n', '  name: ledger\n  namespace: payments\nspec:\n  sidecar: false\n'), true],
      ['the ledger joins the mesh again', edit(payments, '  sidecar: false\n', ''), true],
      // The shop's route to api-v2 needs the payments team's grant (TRL3009 without it).
      ['the grant narrowed to another service', edit(grants, 'name: api-v2', 'name: api'), false],
      ['the grant as it was', edit(grants, 'name: api\n', 'name: api-v2\n'), true],
      ['the grant removed', (list: SourceFile[]) => list.map((f, j) => (j === grants ? new SourceFile(f.path, '# no grant\n') : f)), false],
      ['the grant added again', (list: SourceFile[]) => list.map((f, j) => (j === grants ? new SourceFile(f.path, grant) : f)), true],
    ] as const) {
      revision = change(revision);
      const compiled = compiler.compile(revision);
      assert.equal(compiled.mesh !== undefined, compiles, `${what}: the spec ${compiles ? 'compiles' : 'has errors'}`);
      const result = canonical(compiled);
      assert.equal(compiler.lastStats.patched, true, what);
      assert.equal(result, canonical(compileFiles(revision)), what);
      assert.notEqual(result, previous, `${what}: the edit changes what the compiler makes`);
      previous = result;
    }
  });

  test('the example specs, compiled after each other in one compiler, each match their cold compile', async () => {
    const { readdirSync, readFileSync } = await import('node:fs');
    const { join, relative } = await import('node:path');
    const { fileURLToPath } = await import('node:url');
    const examples = fileURLToPath(new URL('../../examples/', import.meta.url));
    const compiler = createIncrementalCompiler();
    for (const name of [...readdirSync(examples).sort(), ...readdirSync(examples).sort()]) {
      const files: SourceFile[] = [];
      const walk = (dir: string) => {
        for (const e of readdirSync(dir, { withFileTypes: true })) {
          if (e.isDirectory()) walk(join(dir, e.name));
          else if (/\.ya?ml$/.test(e.name)) files.push(new SourceFile(relative(join(examples, name), join(dir, e.name)), readFileSync(join(dir, e.name), 'utf8')));
        }
      };
      walk(join(examples, name));
      assert.equal(canonical(compiler.compile(files)), canonical(compileFiles(files)), name);
    }
  });
});
