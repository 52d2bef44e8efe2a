/**
 * Startup ordering with real processes: a reconciler, then a caller (web) and a callee (api)
 * sidecar started at the same moment, under strict mTLS. api reaches the reconciler through a
 * real loopback proxy that holds its certificate requests for CA_DELAY_MS, as a slow CA does
 * (on Kubernetes every first request waits for a TokenReview); its stream passes at once. Load
 * through web starts the moment web says it is ready.
 *
 * "The first calls fail" means: a call through a caller sidecar that reports ready, to a
 * service its config routes to, is answered with anything but the callee app's 200 because the
 * callee's sidecar is not serving yet (no config, no certificate, not listening). Make-before-
 * break for joining services means web gets its route to api only once a sidecar of api has
 * acknowledged a config (which a sidecar does once it holds a certificate fitting it), so no
 * such call fails.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { sidecarReady, startTrellis, steadyLoad, stopProcesses, tempDir } from '../helpers/processes.ts';
import { cleanup, closedPort, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';

const CA_DELAY_MS = 1500;
const closers: Array<() => void> = [];
after(async () => {
  await stopProcesses();
  await cleanup();
  for (const close of closers) close();
});

/** A loopback HTTP proxy to `port` that forwards every request as it comes (streams included) but holds `POST /v1/certificate` for `delayMs` first. */
async function slowCaProxy(port: number, delayMs: number): Promise<number> {
  const server = createServer((req, res) => {
    const forward = () => {
      const upstream = request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on('error', () => res.destroy());
      res.on('close', () => upstream.destroy());
      req.pipe(upstream);
    };
    if (req.url?.startsWith('/v1/certificate')) setTimeout(forward, delayMs);
    else forward();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => {
    server.closeAllConnections();
    server.close();
  });
  return (server.address() as { port: number }).port;
}

describe('startup ordering', () => {
  test('a caller and its callee joining at once: no call through the ready caller fails', async () => {
    const specDir = join(tempDir(), 'spec');
    mkdirSync(specDir);
    const [webInbound, apiInbound, controlPort] = [await closedPort(), await closedPort(), await closedPort()];
    const app = await startUpstream('api');
    const service = (name: string, port: number) => `---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: { name: ${name} }\nspec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${port} }] } }\n`;
    writeFileSync(join(specDir, 'mesh.yaml'), `apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: { name: t }\nspec: { trustDomain: t.local, mtls: { mode: strict }, access: { default: allow } }\n${service('web', webInbound)}${service('api', apiInbound)}`);
    const control = `http://127.0.0.1:${controlPort}`;
    const reconciler = await startTrellis(['reconcile', '--dir', specDir, '--listen', String(controlPort)]);
    await waitFor(async () => (await fetch(`${control}/readyz`).catch(() => undefined))?.status === 200, 'the reconciler to apply the spec');

    const slow = `http://127.0.0.1:${await slowCaProxy(controlPort, CA_DELAY_MS)}`;
    const sidecar = (name: string, inbound: number, via: string, extra: string[] = []) => startTrellis(['sidecar', '--service', name, '--control', via, '--outbound', '0', '--inbound', String(inbound), '--admin', '0', ...extra]);
    const [web] = await Promise.all([sidecar('web', webInbound, control), sidecar('api', apiInbound, slow, ['--app', `127.0.0.1:${app.port}`])]);
    // Load from the first moment web says it is ready (polled as fast as the admin port answers).
    await waitFor(() => sidecarReady(web.listening.admin!), 'web to be ready', 15_000);
    const traffic = steadyLoad(web.listening.outbound!, 'api', 4, 1);
    await waitFor(() => (traffic.statuses.get(200) ?? 0) >= 200, 'calls to get through', 15_000);
    const statuses = await traffic.stop();
    const joined = reconciler.output().split('\n').filter((l) => /"type":"(?:sidecar_connected|config_held|config_released|certificate_issued)"/.test(l));
    assert.deepEqual([...statuses.keys()], [200], `calls through the ready caller: ${JSON.stringify([...statuses])}; first failures: ${JSON.stringify(traffic.failures.slice(0, 2))}; the reconciler: ${joined.join('\n')}`);
  });
});
