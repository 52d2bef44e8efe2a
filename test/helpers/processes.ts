/**
 * Trellis as real processes for tests: `trellis reconcile` and `trellis sidecar` started from
 * bin/trellis.js, waited on until they log that they listen, and killed at the end; plus the
 * load loops that run traffic through a sidecar while something changes.
 *
 * Call `stopProcesses()` from `after`: it kills every process still running and removes the
 * folders made with `tempDir()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { send } from './sidecar-harness.ts';

export const BIN = fileURLToPath(new URL('../../bin/trellis.js', import.meta.url));
/** The control token every process started here shares (TRELLIS_CONTROL_TOKEN). */
export const TOKEN = 'process-test-token';

const children: ChildProcess[] = [];
const dirs: string[] = [];

/** Kills what is still running and removes temporary folders. */
export async function stopProcesses(): Promise<void> {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** A folder removed by `stopProcesses`. */
export function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'trellis-proc-'));
  dirs.push(d);
  return d;
}

export interface Proc {
  readonly child: ChildProcess;
  /** The fields of its JSON `"type":"listening"` log line (ports by name). */
  readonly listening: Record<string, number>;
  readonly exited: Promise<number | null>;
  /** Everything it wrote so far (stdout and stderr). */
  output(): string;
}

/** One mesh CA for every reconciler of a test file, kept where tests clean up (not in $HOME). */
let caDir: string | undefined;

/**
 * Starts `trellis <args>` (a reconciler gets this file's CA unless it names its own) and waits for
 * its JSON "listening" log line; `spawned` gets its output so far before then (what it logs while starting).
 */
export async function startTrellis(args: string[], env: Record<string, string> = {}, spawned?: (output: () => string) => void): Promise<Proc> {
  if (args[0] === 'reconcile' && !args.some((a) => a === '--ca-dir' || a === '--ca-cert' || a === '--ca-secret')) args = [...args, '--ca-dir', (caDir ??= tempDir())];
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TRELLIS_CONTROL_TOKEN: TOKEN, ...env } });
  children.push(child);
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  spawned?.(() => out);
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const listening = await new Promise<Record<string, number>>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.includes('"type":"listening"'));
      if (line) resolve(JSON.parse(line) as Record<string, number>);
    });
    void exited.then((code) => reject(new Error(`trellis ${args[0]} exited with ${code}: ${out}`)));
  });
  return { child, listening, exited, output: () => out };
}

/** Runs `count` requests from `workers` loops and returns the statuses seen. */
export async function load(port: number, host: string, workers: number, count: number, during?: () => Promise<void>): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  let left = count;
  const loops = Array.from({ length: workers }, async () => {
    while (left-- > 0) {
      const r = await send(port, host, '/').catch(() => ({ status: 0 }));
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    }
  });
  if (during) await during();
  await Promise.all(loops);
  return statuses;
}

export interface SteadyLoad {
  /** Requests answered so far, by status (0: no answer at all). */
  readonly statuses: Map<number, number>;
  /** Bodies of failed requests (status other than 200), the first 20. */
  readonly failures: string[];
  /** Requests sent and not yet answered, and when the last answer came (performance.now()). */
  inFlight(): number;
  lastAnswerAt(): number;
  /** Stops the loops and resolves once in-flight requests are done. */
  stop(): Promise<Map<number, number>>;
}

/**
 * Steady, bounded load: `workers` loops, each sending one request after another through the
 * sidecar at 127.0.0.1:`port` with Host `host`, pausing `pauseMs` between requests, until
 * stopped.
 */
export function steadyLoad(port: number, host: string, workers: number, pauseMs = 2): SteadyLoad {
  const statuses = new Map<number, number>();
  const failures: string[] = [];
  let stopped = false;
  let inFlight = 0;
  let lastAnswerAt = performance.now();
  const loops = Array.from({ length: workers }, async () => {
    while (!stopped) {
      inFlight++;
      const r = await send(port, host, '/').catch((err: Error) => ({ status: 0, body: err.message }));
      inFlight--;
      lastAnswerAt = performance.now();
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (r.status !== 200 && failures.length < 20) failures.push(`${r.status} ${r.body.slice(0, 200)}`);
      if (pauseMs > 0) await new Promise((res) => setTimeout(res, pauseMs));
    }
  });
  return {
    statuses,
    failures,
    inFlight: () => inFlight,
    lastAnswerAt: () => lastAnswerAt,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return statuses;
    },
  };
}

/** Whether the sidecar with admin port `adminPort` is ready (and runs `version`, when given). */
export async function sidecarReady(adminPort: number, version?: string): Promise<boolean> {
  const r = await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined);
  if (!r || r.status !== 200) return false;
  const body = (await r.json()) as { version: string };
  return version === undefined || body.version === version;
}
