/**
 * A compiler exception does not take the reconciler down: the revision is reported as
 * failed with TRL9001, the exception is logged with its stack, sidecars keep (and new ones
 * get) the last good snapshot, and the next revision is reconciled as usual.
 *
 * The compiler is injected through ReconcilerOptions.compile: the real compileFiles, made
 * to throw for revisions holding `crash.yaml` (no real spec may crash the compiler; each
 * that did is fixed with its own test). Everything else is real: a git remote, the
 * reconciler and its HTTP server, sidecars on the control protocol.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { compileFiles } from '../../src/compiler/compile.ts';
import type { SourceFile } from '../../src/diagnostics/source-file.ts';
import { createRepo } from '../helpers/git.ts';
import { meshedSidecar, reconcilerStatus, startGitReconciler, stopReconcilers, trackRepo } from '../helpers/reconciler-harness.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';

after(stopReconcilers);

const MESH = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec: { trustDomain: test.local, access: { default: allow } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: client }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: web }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
`;

const ROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: api, port: 80 }]
      timeouts: { request: 7s }
`;

/** The real compiler, throwing as the call-chain check once did when the revision holds crash.yaml. */
function crashingCompile(files: readonly SourceFile[]) {
  if (files.some((f) => f.path === 'crash.yaml')) throw new RangeError('Maximum call stack size exceeded');
  return compileFiles(files);
}

test('a compiler exception fails the revision with TRL9001; the last good snapshot stays served and the next revision applies', async () => {
  const repo = trackRepo(createRepo());
  const good = repo.commit({ 'mesh.yaml': MESH }, 'Two services');
  const logged: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) });
  const { reconciler, url } = await startGitReconciler(repo, { log, compile: crashingCompile, makeBeforeBreakTimeoutMs: 100 });
  const status = () => reconcilerStatus(url);
  await waitFor(() => reconciler.applied?.revision.id === good, 'the first revision to be applied');
  // Sidecars of every service but web; callers' routes to web wait for it (make-before-break),
  // so the waits allow for that bound (5 s).
  const client = await meshedSidecar('client', url);
  const api = await meshedSidecar('api', url);
  await waitFor(() => client.sidecar.store.current !== undefined && api.sidecar.store.current !== undefined, 'the client and api sidecars to hold a config', 15_000);
  const version = client.sidecar.store.current!.version;
  const snapshot = (await status()).snapshot!.version;

  const bad = repo.commit({ 'crash.yaml': '# any file: the injected compiler throws on it\n' }, 'A revision the compiler throws on');
  reconciler.poke();
  await waitFor(async () => (await status()).attempted?.revision === bad, 'the revision to be attempted');
  const st = await status();
  assert.equal(st.attempted!.ok, false);
  assert.deepEqual(
    st.attempted!.diagnostics.map((d) => [d.code, d.name, d.severity, d.message]),
    [['TRL9001', 'internal-error', 'error', 'internal compiler error: RangeError: Maximum call stack size exceeded']],
  );
  assert.equal(st.applied!.revision, good, 'the mesh stays on the last good revision');
  assert.equal(st.snapshot!.version, snapshot, 'the snapshot is unchanged');
  const bug = logged.find((l) => l.type === 'compiler_bug');
  assert.equal(bug?.revision, bad);
  assert.match(String(bug?.error), /^RangeError: Maximum call stack size exceeded\n\s+at crashingCompile/);
  assert.ok(logged.some((l) => l.type === 'compile_failed' && l.revision === bad));
  assert.match(await (await fetch(`${url}/metrics`)).text(), /trellis_reconcile_compile_errors_total 1/);

  // Still serving: the connected sidecar keeps its config, a new one gets the good snapshot.
  assert.equal(client.sidecar.store.current!.version, version);
  const web = await meshedSidecar('web', url);
  await waitFor(() => web.sidecar.store.current !== undefined, 'a sidecar that joins after the crash to get the last good config', 15_000);
  assert.equal((await fetch(`${url}/healthz`)).status, 200);

  // The loop lives on: the next revision (without the file) is applied and pushed.
  const fixed = repo.commit({ 'crash.yaml': null, 'route.yaml': ROUTE }, 'Drop the file, add a route');
  reconciler.poke();
  await waitFor(() => reconciler.applied?.revision.id === fixed, 'the next revision to be applied');
  await waitFor(() => client.sidecar.store.current!.version !== version, 'the new route to reach the client', 15_000);
});
