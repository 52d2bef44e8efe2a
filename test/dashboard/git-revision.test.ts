/** The dashboard names a git revision by its short sha, message and author, from a real git remote. */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { DashboardData } from '../../src/dashboard/dashboard-data.ts';
import { createRepo } from '../helpers/git.ts';
import { startGitReconciler, stopReconcilers, trackRepo } from '../helpers/reconciler-harness.ts';
import { waitFor } from '../helpers/sidecar-harness.ts';
import { clientSpec } from '../helpers/spec.ts';

after(stopReconcilers);

test('the applied revision: short sha, commit message and author', async () => {
  const repo = trackRepo(createRepo());
  const sha = repo.commit({ 'mesh.yaml': clientSpec() }, 'Give the client (and only it) a mesh');
  const { reconciler, url } = await startGitReconciler(repo);
  await waitFor(() => reconciler.applied?.revision.id === sha, 'the commit to be applied');
  const d = (await (await fetch(`${url}/v1/dashboard`)).json()) as DashboardData;
  assert.equal(d.applied!.revision, sha);
  assert.deepEqual(d.applied!.commit, { sha: sha.slice(0, d.applied!.commit!.sha.length), message: 'Give the client (and only it) a mesh', author: 'Test' });
  assert.ok(d.applied!.commit!.sha.length >= 7);
  assert.deepEqual(d.revisions.map((r) => [r.commit?.author, r.ok]), [['Test', true]]);
});
