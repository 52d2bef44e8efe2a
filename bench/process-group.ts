/**
 * Child processes a benchmark starts, each in its own process group (so a proxy's workers
 * and helpers go with it), optionally pinned to one core with `taskset`, and all killed on
 * the way out: on `stopAll()`, on SIGINT/SIGTERM, and (SIGKILL) on process exit.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/** Whether `name` is an executable on PATH. */
export function onPath(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

export interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  readonly pid: number;
  /** Resolves with the exit code (or signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  /** The last 16 KiB of stderr, for error messages. */
  stderrTail(): string;
  /** All of stdout so far. */
  stdout(): string;
  /** Resolves with the first stdout line that parses as JSON and satisfies `test`; rejects on exit or timeout. */
  waitForJson<T>(test: (value: Record<string, unknown>) => boolean, timeoutMs: number): Promise<T>;
}

export class ProcessGroups {
  readonly #children = new Set<Child>();
  /** `taskset` binary when pinning is possible and wanted, else undefined. */
  readonly #taskset: boolean;

  constructor(pin: boolean) {
    this.#taskset = pin && onPath('taskset');
    const onSignal = (signal: NodeJS.Signals) => {
      process.stderr.write(`\n${signal}: stopping every process the bench started\n`);
      this.killAll();
      process.exit(130);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    process.once('exit', () => this.killAll());
  }

  get pinning(): boolean {
    return this.#taskset;
  }

  /** Starts `command args` in a new process group, on `core` when pinning. stdin stays open (helpers exit when it closes). */
  start(name: string, command: string, args: readonly string[], core: number | undefined, env?: NodeJS.ProcessEnv): Child {
    const [cmd, argv] = this.#taskset && core !== undefined ? ['taskset', ['-c', String(core), command, ...args]] : [command, [...args]];
    const proc = spawn(cmd, argv, { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: env ?? process.env });
    if (proc.pid === undefined) throw new Error(`could not start ${name} (${command})`);
    let stderr = '';
    let stdout = '';
    proc.stderr!.setEncoding('utf8').on('data', (s: string) => {
      stderr = (stderr + s).slice(-16 * 1024);
    });
    const lines: string[] = [];
    const waiters = new Set<() => void>();
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      stdout += `${line}\n`;
      lines.push(line);
      for (const w of waiters) w();
    });
    const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
    const child: Child = {
      name,
      process: proc,
      pid: proc.pid,
      exited,
      stderrTail: () => stderr,
      stdout: () => stdout,
      waitForJson: <T>(test: (value: Record<string, unknown>) => boolean, timeoutMs: number) =>
        new Promise<T>((resolve, reject) => {
          let seen = 0;
          const check = () => {
            for (; seen < lines.length; seen++) {
              let value: unknown;
              try {
                value = JSON.parse(lines[seen]!);
              } catch {
                continue;
              }
              if (value && typeof value === 'object' && test(value as Record<string, unknown>)) {
                done();
                return resolve(value as T);
              }
            }
          };
          const timer = setTimeout(() => {
            done();
            reject(new Error(`${name}: no expected output within ${timeoutMs} ms\n${stderr}`));
          }, timeoutMs);
          const onExit = (code: number | string) => {
            // Lines may still be buffered in readline: look once more before giving up.
            setImmediate(() => {
              check();
              done();
              reject(new Error(`${name} exited (${code}) before the expected output\n${stderr}`));
            });
          };
          const done = () => {
            clearTimeout(timer);
            waiters.delete(check);
          };
          waiters.add(check);
          void exited.then(onExit);
          check();
        }),
    };
    this.#children.add(child);
    void exited.then(() => this.#children.delete(child));
    return child;
  }

  /** SIGTERM to the child's group; SIGKILL if it is not gone after `graceMs`. */
  async stop(child: Child, graceMs = 3000): Promise<number | string> {
    signalGroup(child.pid, 'SIGTERM');
    const timer = setTimeout(() => signalGroup(child.pid, 'SIGKILL'), graceMs);
    const code = await child.exited;
    clearTimeout(timer);
    // Workers of the group (nginx's) may outlive their leader by a moment.
    signalGroup(child.pid, 'SIGKILL');
    return code;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.#children].map((c) => this.stop(c)));
  }

  /** Synchronous last resort: SIGKILL every group still known. */
  killAll(): void {
    for (const c of this.#children) signalGroup(c.pid, 'SIGKILL');
    this.#children.clear();
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}
