/**
 * The reconciler end to end: a real git remote, a reconciler serving real sidecars over
 * the control protocol, and traffic through them.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { createRepo, type TestRepo } from '../helpers/git.ts';
import { meshedSidecar, reconcilerStatus, startGitReconciler, stopReconcilers, trackRepo } from '../helpers/reconciler-harness.ts';
import { send, waitFor } from '../helpers/sidecar-harness.ts';
import { compileTexts } from '../helpers/spec.ts';

after(stopReconcilers);

const MESH = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec: { trustDomain: test.local, access: { default: allow } }
`;

/** Meshed services, each with one instance: the sidecar inbound port given. */
function services(ports: Record<string, number>): string {
  return Object.entries(ports)
    .map(
      ([name, port]) => `---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${port} }] } }
`,
    )
    .join('');
}

function split(weights: Record<string, number>): string {
  return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [${Object.entries(weights)
      .map(([n, w]) => `{ name: ${n}, port: 80, weight: ${w} }`)
      .join(', ')}]
`;
}

describe('reconciler', () => {
  test('a commit reaches every sidecar; a change reaches only the sidecars it changes', async () => {
    const repo = createRepo();
    trackRepo(repo);
    repo.commit({ 'mesh.yaml': MESH }, 'Empty mesh');
    const rec = await startGitReconciler(repo);
    const [client, api, v2] = [await meshedSidecar('client', rec.url), await meshedSidecar('api', rec.url), await meshedSidecar('api-v2', rec.url)];
    const ports = { client: client.inbound, api: api.inbound, 'api-v2': v2.inbound };
    // Default deny: only client may call api and api-v2, so only client's config holds their routes.
    const access = `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api-callers }
spec:
  targetRefs: [{ kind: Service, name: api }, { kind: Service, name: api-v2 }]
  rules: [{ from: [{ service: client }] }]
`;
    const files = { 'mesh.yaml': MESH.replace('default: allow', 'default: deny') + services(ports), 'access.yaml': access };
    const sha = repo.commit(files, 'Add services');
    rec.reconciler.poke();
    const expected = compileTexts(files).mesh!;
    // Ready: running the commit with a certificate for it (sidecars that join together get their certificates in parallel).
    await waitFor(() => [client, api, v2].every((s) => s.sidecar.ready && s.sidecar.store.current!.version === expected.configs.get(s.sidecar.store.current!.service)?.version), 'every sidecar to run the commit, ready');
    assert.equal((await send(client.outbound, 'api', '/')).body, 'api');
    let st = await reconcilerStatus(rec.url);
    assert.equal(st.applied?.revision, sha);
    assert.deepEqual(st.summary, { sidecars: 3, connected: 3, inSync: 3 });

    const bytesBefore = new Map(st.sidecars.map((s) => [s.service, s.bytesSent]));
    const moved = { ...files, 'route.yaml': split({ api: 0, 'api-v2': 1 }) };
    repo.commit(moved, 'Move api traffic to api-v2');
    rec.reconciler.poke();
    await waitFor(async () => (await send(client.outbound, 'api', '/')).body === 'api-v2', 'the new route to reach the caller');
    st = await reconcilerStatus(rec.url);
    const sent = new Map(st.sidecars.map((s) => [s.service, s.bytesSent - bytesBefore.get(s.service)!]));
    assert.equal(sent.get('api'), 0, 'a sidecar whose config did not change gets nothing');
    assert.equal(sent.get('api-v2'), 0);
    assert.ok(sent.get('client')! > 0 && sent.get('client')! <= 2048, `a one-route change sends at most 2 KB, sent ${sent.get('client')}`);
    await waitFor(async () => (await reconcilerStatus(rec.url)).summary.inSync === 3, 'acks');
  });

  test('a commit that does not compile reaches no sidecar; the next good one recovers', async () => {
    const repo = createRepo();
    trackRepo(repo);
    repo.commit({ 'mesh.yaml': MESH }, 'Empty mesh');
    const rec = await startGitReconciler(repo);
    const client = await meshedSidecar('client', rec.url);
    const api = await meshedSidecar('api', rec.url);
    const files = { 'mesh.yaml': MESH + services({ client: client.inbound, api: api.inbound }) };
    const good = repo.commit(files, 'Add services');
    rec.reconciler.poke();
    await waitFor(async () => (await reconcilerStatus(rec.url)).summary.inSync === 2, 'first commit applied');
    const version = client.sidecar.store.current!.version;

    const bad = repo.commit({ 'route.yaml': split({ 'api-v3': 1 }) }, 'Route to a service that does not exist');
    rec.reconciler.poke();
    await waitFor(async () => (await reconcilerStatus(rec.url)).attempted?.revision === bad, 'the bad commit to be attempted');
    const st = await reconcilerStatus(rec.url);
    assert.equal(st.attempted!.ok, false);
    assert.equal(st.applied!.revision, good, 'the mesh stays on the last good revision');
    const error = st.attempted!.diagnostics.find((d) => d.code === 'TRL3003')!;
    assert.deepEqual([error.file, error.line], ['route.yaml', 7]);
    assert.equal(client.sidecar.store.current!.version, version, 'nothing was pushed');
    assert.match(await (await fetch(`${rec.url}/metrics`)).text(), /trellis_reconcile_compile_errors_total 1/);

    const fixed = repo.commit({ 'route.yaml': split({ api: 1 }) }, 'Fix the route');
    rec.reconciler.poke();
    await waitFor(async () => (await reconcilerStatus(rec.url)).applied?.revision === fixed, 'the fix to be applied');
    await waitFor(async () => (await reconcilerStatus(rec.url)).summary.inSync === 2, 'sidecars in sync again');
  });

  test('a force-push is followed, and a signed webhook triggers a fetch at once', async () => {
    const repo = createRepo();
    trackRepo(repo);
    const secret = 'webhook-secret';
    const first = repo.commit({ 'mesh.yaml': MESH + services({ client: 9, api: 9 }) }, 'One');
    const rec = await startGitReconciler(repo, { webhookSecret: secret });
    await waitFor(() => rec.reconciler.applied?.revision.id === first, 'first revision');
    repo.commit({ 'route.yaml': split({ api: 1 }) }, 'Two');
    const hook = (body: string, signature: string) => fetch(`${rec.url}/hooks/git`, { method: 'POST', body, headers: { 'x-hub-signature-256': signature, 'x-github-delivery': 'a1b2c3d4-0000-4000-8000-000000000001', 'content-type': 'application/json' } });
    const body = JSON.stringify({ ref: 'refs/heads/main' });
    assert.equal((await hook(body, 'sha256=' + 'a'.repeat(64))).status, 401, 'a wrong signature is refused');
    assert.equal((await hook(body, `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`)).status, 202);
    await waitFor(() => rec.reconciler.applied?.revision.id !== first, 'the webhook to bring the second commit');
    repo.forcePush(first);
    rec.reconciler.poke();
    await waitFor(() => rec.reconciler.applied?.revision.id === first, 'the rewritten branch to be applied');
    assert.match(await (await fetch(`${rec.url}/metrics`)).text(), /trellis_reconcile_force_pushes_total 1/);
  });

  test('sidecars must authenticate', async () => {
    const repo = createRepo();
    trackRepo(repo);
    repo.commit({ 'mesh.yaml': MESH }, 'Empty mesh');
    const rec = await startGitReconciler(repo);
    const r = await fetch(`${rec.url}/v1/stream`, { method: 'POST', body: JSON.stringify({ service: 'x', node: 'n', version: null, resources: {} }), headers: { authorization: 'Bearer wrong' } });
    assert.equal(r.status, 401);
  });
});
