/**
 * `npm run bench:propagation`: how fast one commit reaches every sidecar, and how many
 * bytes it costs, for K = 10, 100, 500 sidecars, and for a mesh of 10 000 services.
 *
 * Setup per K: a synthetic mesh of K services (bench/synthetic-mesh.ts) committed to a real
 * bare git repo; a reconciler (GitSource over file://, its HTTP server on loopback); and K
 * subscribers, one per service, each the sidecar's real control client and config store
 * (in-process: the listeners are left out, since propagation ends when a config is
 * validated, swapped in and acknowledged). Then one commit changes one route's timeout,
 * the reconciler is poked (as a webhook would), and we measure, from the moment the
 * reconciler saw the commit to each sidecar's acknowledgement: p50, p99 and max, plus the
 * bytes each affected and unaffected sidecar received. Median of `--runs` commits.
 *
 * A mesh larger than `--subscribers` (default 500) gets that many subscribers, not one per
 * service: every sidecar whose config the commits change (worked out beforehand by
 * compiling the changed spec) and as many unaffected ones as fit, so a 10 000-service mesh
 * is measured as its reconciler sees it (compile, snapshot, deltas) without 10 000 clients
 * in this process.
 *
 *   node bench/propagation.ts [--sizes 10,100,500,10000] [--runs 5] [--subscribers 500]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { GitSource } from '../src/reconciler/git-source.ts';
import { ReconcilerMetrics } from '../src/reconciler/metrics.ts';
import { Reconciler } from '../src/reconciler/reconciler.ts';
import { ReconcilerServer } from '../src/reconciler/server.ts';
import { compileFiles } from '../src/compiler/compile.ts';
import { SourceFile } from '../src/diagnostics/source-file.ts';
import { ConfigStore } from '../src/sidecar/config-store.ts';
import { ControlClient } from '../src/sidecar/control-client.ts';
import { syntheticMesh } from './synthetic-mesh.ts';

const { values } = parseArgs({ options: { sizes: { type: 'string', default: '10,100,500,10000' }, runs: { type: 'string', default: '5' }, subscribers: { type: 'string', default: '500' } } });
const sizes = values.sizes.split(',').map(Number);
const runs = Number(values.runs);
const maxSubscribers = Number(values.subscribers);
const silent = pino({ level: 'silent' });
const TOKEN = 'bench';

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', env: { ...process.env, GIT_AUTHOR_NAME: 'b', GIT_AUTHOR_EMAIL: 'b@b', GIT_COMMITTER_NAME: 'b', GIT_COMMITTER_EMAIL: 'b@b' } }).trim();
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function waitUntil(check: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function measure(k: number) {
  const root = mkdtempSync(join(tmpdir(), 'trellis-prop-'));
  const bare = join(root, 'remote.git');
  const work = join(root, 'work');
  git(root, 'init', '-q', '--bare', '--initial-branch', 'main', bare);
  git(root, 'init', '-q', '--initial-branch', 'main', work);
  git(work, 'remote', 'add', 'origin', bare);
  const mesh = syntheticMesh(k);
  for (const f of mesh.files) {
    mkdirSync(dirname(join(work, f.path)), { recursive: true });
    writeFileSync(join(work, f.path), f.text);
  }
  git(work, 'add', '-A');
  git(work, 'commit', '-q', '-m', 'mesh');
  git(work, 'push', '-q', 'origin', 'HEAD:main');

  const metrics = new ReconcilerMetrics();
  const reconciler = new Reconciler({ source: new GitSource({ url: `file://${bare}`, branch: 'main', cacheDir: join(root, 'cache'), intervalMs: 3_600_000 }), log: silent, metrics });
  const server = new ReconcilerServer({ reconciler, metrics, token: TOKEN });
  const { port } = await server.listen('127.0.0.1', 0);
  await reconciler.start();
  await waitUntil(() => reconciler.applied !== null, 'the first revision', 300_000);
  const routeFile = mesh.files.find((f) => f.path.startsWith('services/') && /timeouts:/.test(f.text))!;
  /** The route file as the run-th commit writes it: one route's request timeout changed. */
  const edited = (run: number) => routeFile.text.replace(/request: (\d+)s/, `request: ${31 + run}s`);
  const all = [...reconciler.applied!.mesh.configs.keys()];
  let services = all;
  if (all.length > maxSubscribers) {
    // The sidecars the commits change, then unaffected ones up to the cap.
    const before = reconciler.applied!.mesh.configs;
    const changed = compileFiles(mesh.files.map((f) => (f === routeFile ? new SourceFile(f.path, edited(0)) : f))).mesh!.configs;
    const affected = all.filter((s) => changed.get(s)!.version !== before.get(s)!.version);
    const rest = all.filter((s) => !affected.includes(s));
    services = [...affected, ...rest.slice(0, Math.max(0, maxSubscribers - affected.length))];
  }

  // Record when each store swaps in a new version (the ack follows at once).
  const appliedAt = new Map<string, number>();
  const subscribers = services.map((service) => {
    const store = new ConfigStore({ service, onApplied: (snap) => appliedAt.set(service, performance.now()) });
    const client = new ControlClient({ url: `http://127.0.0.1:${port}`, token: TOKEN, service, node: service, store, log: silent, random: Math.random });
    client.start();
    return { service, store, client };
  });
  await waitUntil(() => reconciler.status().summary.inSync === services.length, 'every subscriber in sync');

  const results: Array<{ p50: number; p99: number; max: number; affected: number; bytesAffected: number; bytesUnaffected: number }> = [];
  for (let run = 0; run < runs; run++) {
    const before = new Map(reconciler.status().sidecars.map((s) => [s.service, s.bytesSent]));
    const versions = new Map(subscribers.map((s) => [s.service, s.store.current!.version]));
    appliedAt.clear();
    // One route's request timeout changes; callers of that service are the affected sidecars.
    writeFileSync(join(work, routeFile.path), edited(run));
    git(work, 'commit', '-q', '-am', `timeout ${run}`);
    git(work, 'push', '-q', 'origin', 'HEAD:main');
    const previous = reconciler.applied!.revision.id;
    reconciler.poke();
    await waitUntil(() => reconciler.applied?.revision.id !== previous, 'the commit to be seen', 300_000);
    const seenMs = performance.now() - (Date.now() - reconciler.applied!.revision.seenAt);
    await waitUntil(() => reconciler.status().summary.inSync === services.length && subscribers.every((s) => s.store.current!.version === reconciler.applied!.mesh.configs.get(s.service)!.version), 'all acks', 300_000);
    const affected = subscribers.filter((s) => s.store.current!.version !== versions.get(s.service));
    const latencies = affected.map((s) => appliedAt.get(s.service)! - seenMs).sort((a, b) => a - b);
    const after = new Map(reconciler.status().sidecars.map((s) => [s.service, s.bytesSent]));
    const sent = (s: { service: string }) => after.get(s.service)! - before.get(s.service)!;
    const unaffected = subscribers.filter((s) => !affected.includes(s));
    results.push({
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      max: latencies.at(-1)!,
      affected: affected.length,
      bytesAffected: Math.max(...affected.map(sent)),
      bytesUnaffected: unaffected.length ? Math.max(...unaffected.map(sent)) : 0,
    });
  }
  for (const s of subscribers) await s.client.stop();
  await reconciler.stop();
  await server.close();
  rmSync(root, { recursive: true, force: true });
  return {
    k: all.length,
    subscribers: services.length,
    affected: median(results.map((r) => r.affected)),
    p50: median(results.map((r) => r.p50)),
    p99: median(results.map((r) => r.p99)),
    max: median(results.map((r) => r.max)),
    bytesAffected: Math.max(...results.map((r) => r.bytesAffected)),
    bytesUnaffected: Math.max(...results.map((r) => r.bytesUnaffected)),
  };
}

const rows = [];
for (const k of sizes) {
  process.stderr.write(`K=${k}…\n`);
  rows.push(await measure(k));
}
console.log(`Median of ${runs} one-route commits per K; subscribers are in-process control clients with real config stores (no listeners); a mesh of more than ${maxSubscribers} services gets ${maxSubscribers} (every affected one among them).\n`);
console.log('| services | sidecars | affected | seen → acked p50 ms | p99 ms | max ms | bytes to an affected sidecar (max) | bytes to an unaffected sidecar (max) |');
console.log('|--:|--:|--:|--:|--:|--:|--:|--:|');
for (const r of rows) console.log(`| ${r.k} | ${r.subscribers} | ${r.affected} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(1)} | ${r.bytesAffected} | ${r.bytesUnaffected} |`);
console.log(`\nMachine: ${cpus()[0]?.model.trim()}, ${cpus().length} cores, Node ${process.version}.`);
