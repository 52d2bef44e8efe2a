/**
 * The reconciler and sidecars as real processes: a reconciler killed and restarted under
 * traffic, a sidecar restarted while the reconciler is down, make-before-break when a
 * backend is replaced under load, refused remotes, and `trellis up`.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BIN, TOKEN, load, sidecarReady as ready, startTrellis as start, stopProcesses, tempDir } from '../helpers/processes.ts';
import { closedPort, cleanup, metricValue, send, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';

const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));
const children: ChildProcess[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await stopProcesses();
  await cleanup();
});

function spec(dir: string, ports: Record<string, number>, route = ''): void {
  const services = Object.entries(ports)
    .map(([name, port]) => `---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: ${name} }\nspec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${port} }] } }\n`)
    .join('');
  writeFileSync(join(dir, 'mesh.yaml'), `apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: { name: t }\nspec: { trustDomain: t.local, access: { default: allow } }\n${services}`);
  writeFileSync(join(dir, 'route.yaml'), route);
}

describe('reconciler and sidecars as processes', () => {
  test('killing and restarting the reconciler under traffic fails no request; a sidecar restarted meanwhile starts from its stored config', async () => {
    const dir = tempDir();
    const specDir = join(dir, 'spec');
    mkdirSync(specDir);
    const apiInbound = await closedPort();
    const app = await startUpstream('api');
    spec(specDir, { web: 9, api: apiInbound });
    const controlPort = await closedPort();
    const control = `http://127.0.0.1:${controlPort}`;
    let reconciler = await start(['reconcile', '--dir', specDir, '--listen', String(controlPort)]);
    // bin/trellis.js started it again as itself (same pid) with the CLI's V8 settings.
    assert.deepEqual(readFileSync(`/proc/${reconciler.child.pid}/cmdline`, 'utf8').split('\0').slice(1, 4), ['--max-semi-space-size=8', BIN, 'reconcile']);
    const web = await start(['sidecar', '--service', 'web', '--control', control, '--outbound', '0', '--inbound', '0', '--admin', '0', '--state-dir', join(dir, 'web-state')]);
    const api = await start(['sidecar', '--service', 'api', '--control', control, '--outbound', '0', '--inbound', String(apiInbound), '--admin', '0', '--app', `127.0.0.1:${app.port}`]);
    await waitFor(() => ready(web.listening.admin!), 'web to get its config');
    await waitFor(() => ready(api.listening.admin!), 'api to get its config');

    const statuses = await load(web.listening.outbound!, 'api', 4, 400, async () => {
      reconciler.child.kill('SIGKILL');
      await reconciler.exited;
      reconciler = await start(['reconcile', '--dir', specDir, '--listen', String(controlPort)]);
    });
    assert.deepEqual([...statuses.keys()], [200], JSON.stringify([...statuses]));
    await waitFor(async () => {
      const r = await fetch(`${control}/status`).then((x) => x.json() as Promise<{ summary: { inSync: number } }>).catch(() => undefined);
      return r?.summary.inSync === 2;
    }, 'both sidecars to resync with the new reconciler');

    // Reconciler down; web restarts and must serve from what it stored.
    reconciler.child.kill('SIGKILL');
    await reconciler.exited;
    const version = (await (await fetch(`http://127.0.0.1:${web.listening.admin}/readyz`)).json()) as { version: string };
    web.child.kill('SIGTERM');
    assert.equal(await web.exited, 0);
    const web2 = await start(['sidecar', '--service', 'web', '--control', control, '--outbound', '0', '--inbound', '0', '--admin', '0', '--state-dir', join(dir, 'web-state')]);
    assert.ok(await ready(web2.listening.admin!, version.version), 'ready at once on the stored config');
    assert.equal((await send(web2.listening.outbound!, 'api', '/')).body, 'api');
  });

  test('replacing a backend under load: no 5xx (make-before-break)', async () => {
    const dir = tempDir();
    const [oldInbound, newInbound] = [await closedPort(), await closedPort()];
    const oldApp = await startUpstream('api');
    const newApp = await startUpstream('api-v2');
    const routeTo = (backend: string) => `apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: api }\nspec:\n  parentRefs: [{ kind: Service, name: api }]\n  rules: [{ backendRefs: [{ name: ${backend}, port: 80 }] }]\n`;
    spec(dir, { web: 9, api: oldInbound }, routeTo('api'));
    const controlPort = await closedPort();
    const control = `http://127.0.0.1:${controlPort}`;
    await start(['reconcile', '--dir', dir, '--listen', String(controlPort)]);
    const sidecar = (service: string, inbound: number, appPort: number) =>
      start(['sidecar', '--service', service, '--control', control, '--outbound', '0', '--inbound', String(inbound), '--admin', '0', '--app', `127.0.0.1:${appPort}`]);
    const web = await start(['sidecar', '--service', 'web', '--control', control, '--outbound', '0', '--inbound', '0', '--admin', '0']);
    await sidecar('api', oldInbound, oldApp.port);
    // The new backend's sidecar runs before the spec knows it: it waits for a config.
    const v2 = await sidecar('api-v2', newInbound, newApp.port);
    await waitFor(() => ready(web.listening.admin!), 'web to get its config');

    const statuses = await load(web.listening.outbound!, 'api', 4, 600, async () => {
      await waitFor(() => oldApp.seen.length > 50, 'traffic on the old backend');
      // One change: api-v2 appears and takes all of api's traffic.
      spec(dir, { web: 9, api: oldInbound, 'api-v2': newInbound }, routeTo('api-v2'));
      await waitFor(() => newApp.seen.length > 0, 'traffic on the new backend');
    });
    assert.deepEqual([...statuses.keys()], [200], JSON.stringify([...statuses]));
    assert.ok(newApp.seen.length > 0 && (await ready(v2.listening.admin!)));
  });

  test('remotes and branches that git could read as options are refused', async () => {
    for (const args of [['--repo', '--upload-pack=touch /tmp/x'], ['--repo', 'ext::sh -c touch% /tmp/x'], ['--repo', 'file:///tmp/r', '--branch', '--upload-pack=x'], ['--repo', 'fd::3']]) {
      const child = spawn(process.execPath, [BIN, 'reconcile', ...args, '--listen', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TRELLIS_CONTROL_TOKEN: TOKEN } });
      children.push(child);
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise<number | null>((r) => child.on('exit', r));
      assert.ok(code === 2 || code === 1, `${args.join(' ')} exited ${code}`);
      assert.match(err, /refusing|unknown option|error: option/, args.join(' '));
    }
  });

  test('trellis up runs the minimal example, follows an edit, and stops on SIGINT', async () => {
    const dir = tempDir();
    cpSync(join(EXAMPLES, 'minimal'), dir, { recursive: true });
    const controlPort = await closedPort();
    const child = spawn(process.execPath, [BIN, 'up', dir, '--control-port', String(controlPort), '--rate', '20'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await waitFor(() => /web → api: api 100%/.test(out), 'traffic from web to api', 20_000);
    // The minimal mesh is strict: web's calls reach api's sidecar over mTLS only.
    const apiAdmin = Number(/^\s+api\s+sidecar .* admin 127\.0\.0\.1:(\d+)/m.exec(out)![1]);
    const apiMetrics = await (await fetch(`http://127.0.0.1:${apiAdmin}/metrics`)).text();
    assert.ok(metricValue(apiMetrics, 'trellis_inbound_connections_total', { transport: 'mtls' }) > 0);
    assert.equal(metricValue(apiMetrics, 'trellis_inbound_connections_total', { transport: 'plaintext' }), 0);
    const status = (await (await fetch(`http://127.0.0.1:${controlPort}/status`)).json()) as { summary: { connected: number; inSync: number } };
    assert.deepEqual([status.summary.connected, status.summary.inSync], [2, 2]);
    // An edit that sends api's traffic nowhere shows up in the tallies.
    const route = join(dir, 'route.yaml');
    writeFileSync(route, readFileSync(route, 'utf8').replace(/backendRefs:[\s\S]*$/, 'filters: [{ type: RequestRedirect, requestRedirect: { statusCode: 302, hostname: moved.example } }]\n'));
    await waitFor(() => /web → api: 302/.test(out), 'the edit to change where traffic goes', 20_000);
    child.kill('SIGINT');
    assert.equal(await exited, 0);
    assert.match(out, /stopped/);
  });

  test('trellis up runs the shop over strict mTLS, and a call its access policies forbid gets 403', async () => {
    const controlPort = await closedPort();
    const child = spawn(process.execPath, [BIN, 'up', join(EXAMPLES, 'shop'), '--control-port', String(controlPort), '--rate', '10'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await waitFor(() => /frontend → catalog DELETE \/admin \(forbidden\): 403 access_denied 100%/.test(out), 'the forbidden call refused with 403', 30_000);
    assert.match(out, /frontend → catalog: catalog 100%/, 'allowed calls go through');
    // gRPC (one h2c connection from the frontend, spread by the GRPCRoute) and TCP (CONNECT through checkout's sidecar) answer too.
    await waitFor(() => /frontend → reviews \(grpc\): reviews \d+%/.test(out) && /checkout → audit-log \(tcp\): audit-log 100% {2}\(success 100%/.test(out), 'the gRPC and TCP demo calls answered', 30_000);
    const catalogAdmin = Number(/^\s+catalog\s+sidecar .* admin 127\.0\.0\.1:(\d+)/m.exec(out)![1]);
    const identity = (await (await fetch(`http://127.0.0.1:${catalogAdmin}/identity`)).json()) as { identity: string };
    assert.equal(identity.identity, 'spiffe://shop.trellis.local/svc/catalog');
    child.kill('SIGINT');
    assert.equal(await exited, 0);
  });
});
