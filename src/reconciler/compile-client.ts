/**
 * The reconciler's side of its compile worker: compiles a revision in a worker thread
 * (compile-worker.ts) and hands back diagnostics and the compiled mesh as the in-process
 * compiler would, while the serving thread goes on answering health checks, sidecar
 * streams and certificate requests. The worker keeps an incremental compiler, so a revision
 * that changes a few files costs the worker those files' parsing, and costs this thread
 * only the messages for the configs that changed.
 *
 * Failures stay failures of one revision: a compiler exception gives TRL9001 (the worker
 * carries on); a worker that dies, or a compile that outlasts `timeoutMs` (the worker is
 * stopped), gives TRL9001 too, and the next compile starts a new worker.
 */
import { Worker } from 'node:worker_threads';
import type { CompiledMesh } from '../compiler/emit.ts';
import type { ProxyConfig, Resource } from '../config/types.ts';
import { diagnostic, type Diagnostic } from '../diagnostics/diagnostic.ts';
import type { SourceFile } from '../diagnostics/source-file.ts';
import { prepareForSnapshot } from './discovery.ts';
import { fromWire, resourceKey, type CompileReply, type CompileRequest, type NextRequest, type WireFile } from './compile-protocol.ts';

/** What the reconciler needs of one compile. */
export interface RevisionCompile {
  /** Every problem found, in stable order; spans point into the revision's own files. */
  readonly diagnostics: readonly Diagnostic[];
  /** Present only when there are no errors. */
  readonly mesh?: CompiledMesh;
  /** The mesh's sidecar inbound port (present with `mesh`). */
  readonly inboundPort?: number;
}

export interface WorkerCompilerOptions {
  /** The worker's entry module; default compile-worker.ts (tests give one whose compiler fails on purpose). */
  readonly entry?: URL;
  /** How long one compile may take before the worker is stopped and the revision fails, in ms (default 120 000: a 10 000-service mesh compiles in seconds). */
  readonly timeoutMs?: number;
  /** Told why a compile failed for a reason that is not the spec's: the compiler's stack, or how the worker stopped. For the log. */
  readonly onBug?: (error: string) => void;
}

const DEFAULT_TIMEOUT_MS = 120_000;

/**
 * A revision's files by path, for pointing diagnostics back at them: sources hand files
 * sorted by path, so a path is found by binary search (a map of 10 000 files is built only
 * for a list that is not sorted).
 */
class FilesByPath {
  readonly #files: readonly SourceFile[];
  #map: Map<string, SourceFile> | undefined;
  constructor(files: readonly SourceFile[]) {
    this.#files = files;
  }
  get(path: string): SourceFile | undefined {
    const files = this.#files;
    let lo = 0;
    let hi = files.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const p = files[mid]!.path;
      if (p === path) return files[mid];
      if (p < path) lo = mid + 1;
      else hi = mid - 1;
    }
    this.#map ??= new Map(files.map((f) => [f.path, f]));
    return this.#map.get(path);
  }
}

/** Configs walked per task when unused resources are let go. */
const PRUNE_SLICE = 500;

const BUG_HINT = 'this is a bug in Trellis, not a problem found in the spec; please report it with the revision. Nothing of this revision was applied';

/** A compile under way: the replies gathered so far, and how to finish it. */
interface Pending {
  readonly id: number;
  readonly files: FilesByPath;
  /** The result's diagnostics groups in order (the last result's unless the worker sent them), and the groups it sent. */
  groups: readonly string[];
  readonly changedGroups: Map<string, Diagnostic[]>;
  compiled: CompileReply['compiled'];
  readonly configs: Map<string, ProxyConfig>;
  bug: string | undefined;
  readonly done: (result: RevisionCompile) => void;
  readonly cancelTimeout: () => void;
}

export class WorkerCompiler {
  readonly #entry: URL;
  readonly #timeoutMs: number;
  readonly #onBug: ((error: string) => void) | undefined;
  #worker: Worker | null = null;
  /** The text of each file the worker holds, by path, and the files of the last request. */
  #sent = new Map<string, string>();
  #lastFiles: readonly SourceFile[] = [];
  /**
   * The diagnostics of the last result by group, as the worker last reported them (it sends
   * only changes): the groups in order, each one's list, and each one's place.
   */
  #groupOrder: readonly string[] = [];
  #groupLists: Array<readonly Diagnostic[]> = [];
  #groupIndex = new Map<string, number>();
  /** A group's diagnostics in the last result. */
  #lastGroup(group: string): readonly Diagnostic[] | undefined {
    const i = this.#groupIndex.get(group);
    return i === undefined ? undefined : this.#groupLists[i];
  }
  /** The services of the last good result, in order. */
  #services: readonly string[] = [];
  /** The configs of the last good result, as the worker last reported them (it sends only changes). */
  #configs = new Map<string, ProxyConfig>();
  /** Resources of those configs by name and version: configs that share a resource share one object here too. */
  #resources = new Map<string, Resource>();
  /** How many resources were held after the last prune. */
  #resourcesAfterPrune = 0;
  #pruning = false;
  #pending: Pending | null = null;
  #nextId = 1;
  #closed = false;

  constructor(options: WorkerCompilerOptions = {}) {
    this.#entry = options.entry ?? new URL('./compile-worker.ts', import.meta.url);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#onBug = options.onBug;
  }

  /** Whether a worker is running (one starts with the first compile, and again after one stopped). */
  get running(): boolean {
    return this.#worker !== null;
  }

  /** The worker's thread id, while one runs (tests use it to see a worker replaced). */
  get threadId(): number | undefined {
    return this.#worker?.threadId;
  }

  /** Compiles one revision. Never rejects: failures of any kind come back as diagnostics. One compile at a time. */
  compile(files: readonly SourceFile[]): Promise<RevisionCompile> {
    if (this.#pending) throw new Error('bug: WorkerCompiler.compile called while a compile is under way');
    if (this.#closed) return Promise.resolve(this.#failure('the reconciler is stopping; the compile did not run'));
    const worker = this.#start();
    const changed: WireFile[] = [];
    let removed: string[] = [];
    const last = this.#lastFiles;
    if (last.length === files.length && files.every((f, i) => f === last[i] || f.path === last[i]!.path)) {
      // The same paths in the same order (the usual revision): compared file by file, no lookups.
      for (let i = 0; i < files.length; i++) if (files[i] !== last[i] && files[i]!.text !== last[i]!.text) changed.push({ path: files[i]!.path, text: files[i]!.text });
    } else {
      const paths = new Set<string>();
      for (const f of files) {
        paths.add(f.path);
        if (this.#sent.get(f.path) !== f.text) changed.push({ path: f.path, text: f.text });
      }
      removed = [...this.#sent.keys()].filter((p) => !paths.has(p));
    }
    for (const p of removed) this.#sent.delete(p);
    for (const f of changed) this.#sent.set(f.path, f.text);
    this.#lastFiles = files;
    const byPath = new FilesByPath(files);
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#abandon(`the compile took longer than ${this.#timeoutMs / 1000} s; the compiler was stopped`), this.#timeoutMs);
      timer.unref();
      this.#pending = { id, files: byPath, groups: this.#groupOrder, changedGroups: new Map(), compiled: undefined, configs: new Map(), bug: undefined, done: resolve, cancelTimeout: () => clearTimeout(timer) };
      const request: CompileRequest = { type: 'compile', id, changed, removed };
      worker.postMessage(request);
    });
  }

  /** Stops the worker; a compile under way fails with TRL9001. */
  async close(): Promise<void> {
    this.#closed = true;
    const worker = this.#worker;
    this.#abandon('the reconciler stopped during the compile');
    await worker?.terminate();
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(this.#entry);
    // The reconciler's server and sources keep the process alive; a worker idling between
    // revisions must not keep a stopped one from exiting.
    worker.unref();
    worker.on('message', (reply: CompileReply) => this.#onReply(worker, reply));
    worker.on('error', (error) => {
      if (this.#worker === worker) this.#abandon(`the compile worker failed: ${error.stack ?? error.message}`);
    });
    worker.on('exit', (code) => {
      if (this.#worker === worker) this.#abandon(`the compile worker exited with code ${code}`);
    });
    this.#worker = worker;
    return worker;
  }

  /** Forgets the worker (it is stopped, or stopped itself) and fails the compile under way; the next compile starts a new one. */
  #abandon(why: string): void {
    const worker = this.#worker;
    this.#worker = null;
    this.#sent = new Map();
    this.#lastFiles = [];
    this.#configs = new Map();
    this.#groupLists = [];
    this.#groupIndex = new Map();
    this.#groupOrder = [];
    this.#services = [];
    this.#resources = new Map();
    this.#resourcesAfterPrune = 0;
    void worker?.terminate();
    const pending = this.#pending;
    if (!pending) return;
    this.#pending = null;
    pending.cancelTimeout();
    this.#onBug?.(why);
    pending.done(this.#failure(why));
  }

  #failure(why: string): RevisionCompile {
    return { diagnostics: [diagnostic('TRL9001', `internal compiler error: ${why}`, undefined, { hint: BUG_HINT })] };
  }

  #onReply(worker: Worker, reply: CompileReply): void {
    const pending = this.#pending;
    if (worker !== this.#worker || !pending || reply.id !== pending.id) return;
    if (reply.groups) pending.groups = reply.groups;
    for (const g of reply.diagnostics ?? []) pending.changedGroups.set(g.group, g.diagnostics.map((d) => fromWire(d, pending.files)));
    if (reply.compiled) pending.compiled = reply.compiled;
    if (reply.bug !== undefined) pending.bug = reply.bug;
    for (const r of reply.resources ?? []) this.#intern(r);
    for (const received of reply.configs ?? []) {
      const resources: Resource[] = [];
      for (const key of received.resources) {
        const resource = this.#resources.get(key);
        if (!resource) return this.#outOfStep(pending, `resource ${key.replace('\u0000', '@')} of "${received.service}"`);
        resources.push(resource);
      }
      const config: ProxyConfig = { ...received, resources };
      pending.configs.set(config.service, config);
      // What a snapshot reads of each config is worked out as it arrives, a chunk per task,
      // not all at once when the reconciler applies the revision.
      prepareForSnapshot(config);
    }
    if (!reply.last) {
      const next: NextRequest = { type: 'next', id: pending.id };
      worker.postMessage(next);
      return;
    }
    this.#pending = null;
    pending.cancelTimeout();
    if (pending.bug !== undefined) this.#onBug?.(pending.bug);
    // Diagnostics by group, in the result's order: the last result's lists, the changed ones replaced.
    if (pending.groups !== this.#groupOrder) {
      const lists: Array<readonly Diagnostic[]> = [];
      for (const group of pending.groups) {
        const list = pending.changedGroups.get(group) ?? this.#lastGroup(group);
        if (!list) return this.#outOfStep(pending, `the diagnostics of "${group}"`);
        lists.push(list);
      }
      this.#groupLists = lists;
      this.#groupIndex = new Map(pending.groups.map((g, i) => [g, i]));
    } else {
      const lists = [...this.#groupLists];
      for (const [group, list] of pending.changedGroups) {
        const i = this.#groupIndex.get(group);
        if (i === undefined) return this.#outOfStep(pending, `the diagnostics of "${group}"`);
        lists[i] = list;
      }
      this.#groupLists = lists;
    }
    this.#groupOrder = pending.groups;
    const diagnostics: Diagnostic[] = [];
    for (const list of this.#groupLists) for (const d of list) diagnostics.push(d);
    const compiled = pending.compiled;
    if (!compiled) {
      pending.done({ diagnostics });
      return;
    }
    const services = compiled.services ?? this.#services;
    let configs: Map<string, ProxyConfig>;
    if (!compiled.services && this.#configs.size === services.length) {
      // The same services as last time: the last configs, with the changed ones replaced.
      configs = new Map(this.#configs);
      for (const [service, config] of pending.configs) {
        if (!configs.has(service)) return this.#outOfStep(pending, `"${service}" from the list of services`);
        configs.set(service, config);
      }
    } else {
      configs = new Map<string, ProxyConfig>();
      for (const service of services) {
        const config = pending.configs.get(service) ?? this.#configs.get(service);
        if (!config) return this.#outOfStep(pending, `the unchanged config of "${service}"`);
        configs.set(service, config);
      }
    }
    this.#services = services;
    this.#configs = configs;
    // Each in a task of its own, so that neither adds to the reconciler's work on the result
    // (building the snapshot) in one stretch of this thread.
    setImmediate(() => pending.done({ diagnostics, mesh: { mesh: compiled.mesh, version: compiled.version, configs }, inboundPort: compiled.inboundPort }));
    // Nothing to let go after the first result; after that, once a quarter more are held.
    if (this.#resourcesAfterPrune === 0) this.#resourcesAfterPrune = this.#resources.size;
    else if (this.#resources.size > this.#resourcesAfterPrune * 1.25 && !this.#pruning) {
      this.#pruning = true;
      setImmediate(() => this.#pruneResources([...this.#configs.values()], 0, new Set()));
    }
  }

  /** The worker believed this side holds something it does not: start both afresh, failing this revision. */
  #outOfStep(pending: Pending, what: string): void {
    this.#pending = pending;
    this.#abandon(`the compile worker left out ${what}`);
  }

  /** One object per resource name and version, across every config held. */
  #intern(resource: Resource): Resource {
    const key = resourceKey(resource);
    const held = this.#resources.get(key);
    if (held) return held;
    this.#resources.set(key, resource);
    return resource;
  }

  /**
   * Drops interned resources no config holds any more. A walk over every config's resources
   * (tens of milliseconds at 10 000 services), so it runs only once a quarter more resources
   * are held than after the last walk (a one-file change replaces a handful), and in slices
   * of PRUNE_SLICE configs, one per task, so that the thread serves in between.
   */
  #pruneResources(configs: readonly ProxyConfig[], from: number, used: Set<Resource>): void {
    if (this.#closed || this.#worker === null) {
      this.#pruning = false;
      return;
    }
    const to = Math.min(configs.length, from + PRUNE_SLICE);
    for (let i = from; i < to; i++) for (const r of configs[i]!.resources) used.add(r);
    if (to < configs.length) {
      setImmediate(() => this.#pruneResources(configs, to, used));
      return;
    }
    // Resources interned while the walk went on belong to newer configs: keep them too.
    const walked = new Set(configs);
    for (const config of this.#configs.values()) if (!walked.has(config)) for (const r of config.resources) used.add(r);
    // And those of a result still arriving: a later chunk may name them again.
    for (const config of this.#pending?.configs.values() ?? []) for (const r of config.resources) used.add(r);
    for (const [key, r] of this.#resources) if (!used.has(r)) this.#resources.delete(key);
    this.#resourcesAfterPrune = this.#resources.size;
    this.#pruning = false;
  }

}
