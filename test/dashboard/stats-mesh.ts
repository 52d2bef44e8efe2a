/**
 * A small real mesh for the stats tests: a reconciler on a spec folder (with its CA, so
 * sidecars talk mTLS), sidecars for `client` and `api` (and `api-v2`), an upstream app behind
 * each api instance, and a stats reporter per sidecar that the test triggers (`report()`),
 * so no test waits on a timer. The api apps answer 200 after `delayMs`, or the status in a
 * `/status/<code>` path. `client` may call both; nothing else may call anything.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { CertificateIssuer } from '../../src/reconciler/certificates.ts';
import { FolderSource } from '../../src/reconciler/folder-source.ts';
import { ReconcilerMetrics } from '../../src/reconciler/metrics.ts';
import { Reconciler } from '../../src/reconciler/reconciler.ts';
import { ReconcilerServer } from '../../src/reconciler/server.ts';
import type { PrometheusStats } from '../../src/dashboard/prometheus.ts';
import { StatsReporter } from '../../src/sidecar/stats-report.ts';
import { testCa } from '../helpers/identity.ts';
import { cleanup, closedPort, startSidecar, startUpstream, waitFor, type RunningSidecar } from '../helpers/sidecar-harness.ts';

export const TOKEN = 'stats-test-token-0123456789';

export interface StatsMesh {
  readonly url: string;
  readonly dir: string;
  readonly server: ReconcilerServer;
  readonly reconciler: Reconciler;
  readonly client: RunningSidecar;
  readonly api: RunningSidecar;
  readonly apiV2: RunningSidecar;
  /** Writes the spec with this split between api and api-v2 (weights). */
  writeSpec(weights: { api: number; apiV2: number }): void;
  /** Every sidecar reports its traffic to the reconciler now. */
  report(): Promise<void>;
  stop(): Promise<void>;
}

/** The stats mesh's spec: client, api and api-v2 at these ports, api split between api and api-v2 by `weights`, client allowed GET only. */
export function statsSpec(ports: { api: number; apiV2: number; client?: number }, weights: { api: number; apiV2: number }): string {
  const svc = (name: string, port: number) => `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: ${name} }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: ${port} }] } }
`;
  return [
    `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: stats }
spec:
  trustDomain: stats.test
  mtls: { mode: strict }
  access: { default: deny }
`,
    svc('client', ports.client ?? 9),
    svc('api', ports.api),
    svc('api-v2', ports.apiV2),
    `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: api }
spec: { targetRefs: [{ kind: Service, name: api }, { kind: Service, name: api-v2 }], rules: [{ from: [{ service: client }], to: [{ methods: [GET] }] }] }
`,
    `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api-split }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - name: split
      backendRefs: [{ name: api, port: 80, weight: ${weights.api} }, { name: api-v2, port: 80, weight: ${weights.apiV2} }]
`,
  ].join('---\n');
}

/** An app that waits `delayMs`, then answers 200, or the code of a `/status/<code>` path. */
function app(delayMs: number) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const code = /^\/status\/(\d{3})$/.exec(req.url ?? '')?.[1];
    setTimeout(() => {
      res.writeHead(code ? Number(code) : 200, { 'content-type': 'text/plain' });
      res.end('ok');
    }, delayMs);
  };
}

export async function startStatsMesh(options: { delayMs: number; weights?: { api: number; apiV2: number }; prometheus?: PrometheusStats }): Promise<StatsMesh> {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-stats-'));
  const ports = { api: await closedPort(), apiV2: await closedPort() };
  const writeSpec = (weights: { api: number; apiV2: number }) => writeFileSync(join(dir, 'mesh.yaml'), statsSpec(ports, weights));
  writeSpec(options.weights ?? { api: 100, apiV2: 0 });
  const metrics = new ReconcilerMetrics();
  const log = pino({ level: 'silent' });
  const reconciler = new Reconciler({ source: new FolderSource({ dir }), log, metrics });
  const certificates = new CertificateIssuer({ ca: await testCa(), ttlMs: 3_600_000, reconciler, metrics, log });
  const sidecars: RunningSidecar[] = [];
  const scrapeTargets = () => sidecars.map((s) => ({ service: s.sidecar.store.current?.service ?? 'unknown', node: `${s.sidecar.store.current?.service ?? 'unknown'}-0`, address: `127.0.0.1:${s.admin}` }));
  const server = new ReconcilerServer({ reconciler, metrics, token: TOKEN, certificates, scrapeTargets, ...(options.prometheus ? { prometheus: options.prometheus } : {}) });
  const address = await server.listen('127.0.0.1', 0);
  await reconciler.start();
  const url = `http://127.0.0.1:${address.port}`;
  const control = { url, token: TOKEN };
  const apiApp = await startUpstream('api', app(options.delayMs));
  const apiV2App = await startUpstream('api-v2', app(options.delayMs));
  const api = await startSidecar(undefined, { service: 'api', inbound: { host: '127.0.0.1', port: ports.api }, app: { host: '127.0.0.1', port: apiApp.port }, control: { ...control, node: 'api-0' } });
  const apiV2 = await startSidecar(undefined, { service: 'api-v2', inbound: { host: '127.0.0.1', port: ports.apiV2 }, app: { host: '127.0.0.1', port: apiV2App.port }, control: { ...control, node: 'api-v2-0' } });
  const client = await startSidecar(undefined, { service: 'client', control: { ...control, node: 'client-0' } });
  try {
    await waitFor(() => api.sidecar.ready && apiV2.sidecar.ready && client.sidecar.ready, 'the sidecars to hold a config and a certificate', 15_000);
  } catch (err) {
    // The test's after() has no mesh to stop: leave nothing behind.
    await cleanup();
    await reconciler.stop();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  sidecars.push(client, api, apiV2);
  const reporters = [client, api, apiV2].map(
    (s) => new StatsReporter({ url, token: TOKEN, service: s.sidecar.store.current!.service, node: `${s.sidecar.store.current!.service}-0`, metrics: s.sidecar.metrics, log, intervalMs: 3_600_000 }),
  );
  return {
    url,
    dir,
    server,
    reconciler,
    client,
    api,
    apiV2,
    writeSpec,
    report: async () => {
      for (const r of reporters) await r.sendNow();
    },
    stop: async () => {
      for (const r of reporters) await r.stop();
      await cleanup();
      await reconciler.stop();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
