/**
 * What `trellis up` puts on the screen (in process, on a spec with free ports): the tally
 * with each call's success rate and p99, a rejected revision as a compiler-style diagnostic
 * (never a JSON log line), the fix announced, and the dashboard at the address it gives.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { up } from '../../src/up/up.ts';
import { closedPort, waitFor } from '../helpers/sidecar-harness.ts';
import { statsSpec } from './stats-mesh.ts';

const dir = mkdtempSync(join(tmpdir(), 'trellis-up-screen-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('the tally gives success rate and p99; a rejected revision is shown with its diagnostic, then its fix', { timeout: 60_000 }, async () => {
  const ports = { client: await closedPort(), api: await closedPort(), apiV2: await closedPort() };
  writeFileSync(join(dir, 'mesh.yaml'), statsSpec(ports, { api: 100, apiV2: 0 }));
  const screen: string[] = [];
  const mesh = await up({ dir, controlPort: 0, rate: 20, reportEveryMs: 300, report: (t) => screen.push(t), revisions: (t) => screen.push(t) });
  try {
    const all = () => screen.join('\n');
    await waitFor(() => /client → api: api 100% {2}\(success 100%, p99 \d+(\.\d)?ms\)/.test(all()), 'a tally line with success rate and p99', 20_000);
    const page = await fetch(mesh.dashboardUrl);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<title>Trellis/);

    writeFileSync(join(dir, 'broken.yaml'), 'apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: broken }\nspec:\n  parentRefs: [{ kind: Service, name: api }]\n  rules: [{ backendRefs: [{ name: api-v3, port: 80 }] }]\n');
    await waitFor(() => /REJECTED/.test(all()), 'the rejection on the screen', 20_000);
    const rejection = screen.find((t) => /REJECTED/.test(t))!;
    assert.match(rejection, /^\[\d\d:\d\d:\d\d\] REJECTED folder .*: the mesh stays on the last good revision\n/);
    assert.match(rejection, /broken\.yaml:6:\d+: error TRL3003: backendRef names unknown service "api-v3"/);
    assert.match(rejection, /\n 6 \| .*\n +\| +\^+/, 'the source line with a caret');
    // Undone: the folder is back to the applied revision.
    rmSync(join(dir, 'broken.yaml'));
    await waitFor(() => /back to folder .*, the revision the mesh runs/.test(all()), 'the undo announced', 20_000);
    const dashboard = (await (await fetch(`${mesh.controlUrl}/v1/dashboard`)).json()) as { failing: unknown };
    assert.equal(dashboard.failing, null, 'the dashboard no longer shows the rejected revision as pending');
    // Fixed forward: a new revision that compiles.
    writeFileSync(join(dir, 'mesh.yaml'), statsSpec(ports, { api: 50, apiV2: 50 }));
    writeFileSync(join(dir, 'broken.yaml'), 'not: [valid\n');
    await waitFor(() => screen.filter((t) => /REJECTED/.test(t)).length === 2, 'the second rejection', 20_000);
    rmSync(join(dir, 'broken.yaml'));
    await waitFor(() => /applied folder .*: the mesh now runs it \(the rejected revision never ran\)/.test(all()), 'the fix announced', 20_000);
    assert.ok(!all().includes('"level"'), 'no JSON log line on the screen');
  } finally {
    await mesh.stop();
  }
});
