/**
 * A reconciler in this process over a real git remote: its GitSource, CA, HTTP server, and
 * sidecars subscribed to it over the control protocol. Everything started here is stopped
 * by `stopReconcilers()` (call it from the test file's `after`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { CertificateIssuer } from '../../src/reconciler/certificates.ts';
import { GitSource } from '../../src/reconciler/git-source.ts';
import { ReconcilerMetrics } from '../../src/reconciler/metrics.ts';
import { Reconciler, type ReconcilerOptions, type ReconcilerStatus } from '../../src/reconciler/reconciler.ts';
import { ReconcilerServer } from '../../src/reconciler/server.ts';
import type { TestRepo } from './git.ts';
import { testCa } from './identity.ts';
import { cleanup, startSidecar, startUpstream, type RunningSidecar } from './sidecar-harness.ts';

/** The control token every reconciler here expects and every sidecar here presents. */
export const CONTROL_TOKEN = 'control-token-for-tests';

const stops: Array<() => Promise<void>> = [];
const dirs: string[] = [];
const repos: TestRepo[] = [];

/** Removes `repo` with the rest in `stopReconcilers()`. */
export function trackRepo(repo: TestRepo): TestRepo {
  repos.push(repo);
  return repo;
}

export interface StartedReconciler {
  readonly reconciler: Reconciler;
  readonly url: string;
  readonly metrics: ReconcilerMetrics;
  stop(): Promise<void>;
}

/** Starts a reconciler following `repo`'s main branch (fetching only when poked unless `intervalMs`), listening on a free loopback port. */
export async function startGitReconciler(
  repo: TestRepo,
  options: { webhookSecret?: string; intervalMs?: number; log?: Logger } & Pick<ReconcilerOptions, 'compile' | 'compileWorker' | 'makeBeforeBreakTimeoutMs'> = {},
): Promise<StartedReconciler> {
  const cacheDir = mkdtempSync(join(tmpdir(), 'trellis-cache-'));
  dirs.push(cacheDir);
  const metrics = new ReconcilerMetrics();
  const source = new GitSource({ url: repo.url, branch: 'main', cacheDir, intervalMs: options.intervalMs ?? 3_600_000 });
  const reconciler = new Reconciler({
    source,
    log: options.log ?? pino({ level: 'silent' }),
    metrics,
    ...(options.compile ? { compile: options.compile } : {}),
    ...(options.compileWorker ? { compileWorker: options.compileWorker } : {}),
    ...(options.makeBeforeBreakTimeoutMs !== undefined ? { makeBeforeBreakTimeoutMs: options.makeBeforeBreakTimeoutMs } : {}),
  });
  const certificates = new CertificateIssuer({ ca: await testCa(), ttlMs: 3600_000, reconciler, metrics, log: pino({ level: 'silent' }) });
  const server = new ReconcilerServer({ reconciler, metrics, token: CONTROL_TOKEN, certificates, ...(options.webhookSecret ? { webhookSecret: options.webhookSecret } : {}) });
  const stop = async () => {
    await reconciler.stop();
    await server.close();
  };
  stops.push(stop);
  const address = await server.listen('127.0.0.1', 0);
  await reconciler.start();
  return { reconciler, url: `http://127.0.0.1:${address.port}`, metrics, stop };
}

/** A sidecar for `service` subscribed to the reconciler at `url`, with an app answering its name. */
export async function meshedSidecar(service: string, url: string): Promise<RunningSidecar> {
  const app = await startUpstream(service);
  return startSidecar(undefined, { service, app: { host: '127.0.0.1', port: app.port }, control: { url, token: CONTROL_TOKEN, node: `${service}-0` } });
}

/** The reconciler's `GET /status`. */
export async function reconcilerStatus(url: string): Promise<ReconcilerStatus> {
  return (await (await fetch(`${url}/status`)).json()) as ReconcilerStatus;
}

/** Stops every reconciler and sidecar started here and removes their folders and repositories. */
export async function stopReconcilers(): Promise<void> {
  for (const stop of stops.splice(0).reverse()) await stop().catch(() => undefined);
  await cleanup();
  for (const r of repos.splice(0)) r.remove();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}
