/**
 * The reconcile loop: each revision from the source is compiled; a revision that does not
 * compile is reported and goes nowhere (the mesh stays on the last good one); a good one
 * is pushed to every connected sidecar as a delta against what that sidecar holds.
 *
 * State is only what git and the sidecars say: the last attempted and last applied
 * revisions, and per sidecar what it holds (from its subscribe and its acks). A restart,
 * or a second replica, rebuilds the same picture as sidecars reconnect.
 *
 * Make-before-break across sidecars: a push first goes to sidecars of services that are
 * new in this revision (or that hold no config yet), and waits (bounded) for their acks,
 * before callers get routes that send to them. Within one sidecar a delta is applied whole,
 * so no request there sees a route without its backend.
 *
 * Joining services too: a config that gives a sidecar its first route to a meshed service S
 * (a `cluster/S` it does not hold) is held back while no connected sidecar of S holds a
 * config (sidecars acknowledge only once they hold a certificate fitting it) and one is
 * connected or expected, bounded by the make-before-break timeout (see `#unreadyBackends`).
 * So callers and callees that start together do not send to a callee that cannot serve yet.
 *
 * Two inputs, one way out: the applied revision and the discovery's endpoints (when there
 * is one) make a snapshot (`snapshotOf`); every push — after a commit or after an endpoint
 * change — sends each sidecar `updateFor(what it holds, its config in the snapshot)`. An
 * endpoint change is coalesced for a moment (ENDPOINT_DEBOUNCE_MS) and pushed without
 * waiting for a commit; it reaches only sidecars whose configs hold that service's
 * endpoints, as a delta of those resources. Nothing is pushed before the discovery's first
 * full list, so a restarted reconciler never sends an empty endpoint set. Revisions and
 * endpoint changes are handled one at a time, in one queue.
 */
import type { Logger } from 'pino';
import type { Ack, ControlMessage, Subscribe } from '../config/control-protocol.ts';
import { updateFor, type Holding } from '../config/delta.ts';
import type { ProxyConfig } from '../config/types.ts';
import { compileGuarded, type compileFiles } from '../compiler/compile.ts';
import type { CompiledMesh } from '../compiler/emit.ts';
import { WorkerCompiler, type RevisionCompile } from './compile-client.ts';
import { hasErrors, type Diagnostic } from '../diagnostics/diagnostic.ts';
import { diagnosticToJson, type DiagnosticJson } from '../diagnostics/render.ts';
import { discoveredNamespaces, snapshotOf, type Discovery, type Snapshot } from './discovery.ts';
import type { ReconcilerMetrics } from './metrics.ts';
import type { Revision, Source, SourceEvent } from './source.ts';

/** A stream to one sidecar, as the server hands it over. */
export interface StreamWriter {
  /** Writes one message; returns the bytes written. */
  send(message: ControlMessage): number;
  close(): void;
}

/** What the reconciler knows of one sidecar instance. */
export interface SidecarRecord {
  readonly service: string;
  readonly node: string;
  connected: boolean;
  connectedAt: number;
  disconnectedAt: number | null;
  /** Version and resource versions the sidecar holds, as it last told us (null: unknown or none). */
  heldVersion: string | null;
  held: Map<string, string> | null;
  /** Revision of the config it holds, once it acknowledged one from this reconciler. */
  heldRevision: string | null;
  /** What was sent and is not yet acknowledged; `since` is when the change it carries happened (for the propagation metric). */
  pending: { revision: string; version: string; resources: Map<string, string>; sentAt: number; since: number } | null;
  /** The snapshot moved on while a message was pending: send again once it is acknowledged. */
  behind: boolean;
  lastRejection: { revision: string; version: string; reasons: readonly string[]; at: number } | null;
  bytesSent: number;
  writer: StreamWriter | null;
  /** Called when an ack for the pending version arrives (make-before-break waits on it). */
  onSettled: Array<() => void>;
  /** Its config is held back until these services can serve (joining make-before-break); `since` on the reconciler's clock. */
  hold: { waitingOn: readonly string[]; since: number; settled: Promise<void> } | null;
}

export interface AppliedRevision {
  readonly revision: Revision;
  /** As compiled: endpoints from a discovery are not in it (see `Published`). */
  readonly mesh: CompiledMesh;
  /** The mesh's sidecar inbound port: where discovered instances of meshed services are called. */
  readonly inboundPort: number;
  readonly at: number;
}

/** What sidecars are being brought to: the applied revision with the discovery's endpoints. */
interface Published {
  readonly applied: AppliedRevision;
  readonly snapshot: Snapshot;
  /** When its latest change happened (the revision seen, or the endpoint change), epoch ms. */
  readonly changedAt: number;
}

/**
 * How long endpoint changes are coalesced before a push, in ms: a rollout changes slices
 * in bursts (one pod after another within milliseconds), and one delta per burst costs
 * sidecars less than one per event, while 50 ms is far below what a caller notices.
 */
export const ENDPOINT_DEBOUNCE_MS = 50;

/**
 * Largest spec (characters of YAML) compiled in the serving thread rather than the compile
 * worker: about 30 services, which compile in under 15 ms, less than starting a worker and
 * passing the spec to it costs (the process's first compile also builds the schema
 * validators, about 0.2 s, once).
 */
const IN_THREAD_MAX_CHARS = 64 * 1024;

/** How long an unacknowledged message holds back further pushes to its sidecar: sidecars ack within milliseconds, so 10 s means the ack was lost. */
const PENDING_STALE_MS = 10_000;

/** Default make-before-break bound, in ms: past the sidecar's own 5 s wait for a certificate before it acknowledges. */
const MAKE_BEFORE_BREAK_MS = 5000;

/** Nodes whose certificate issue is remembered: more than any mesh's sidecars, so that churn of pods cannot grow it without end. */
const MAX_CERTIFIED_NODES = 100_000;

/** In `#certified`: the node's last certificate request was refused (no service key contains a NUL). */
const REFUSED = '\0refused';

export interface AttemptedRevision {
  readonly revision: Revision;
  readonly at: number;
  readonly ok: boolean;
  readonly diagnostics: readonly Diagnostic[];
}

export interface ReconcilerOptions {
  readonly source: Source;
  readonly log: Logger;
  readonly metrics: ReconcilerMetrics;
  /** Where instances of services with `endpoints.kubernetes` come from; absent: only what the spec lists. */
  readonly discovery?: Discovery;
  /** How long a push waits for new services' sidecars before sending routes that use them, in ms. */
  readonly makeBeforeBreakTimeoutMs?: number;
  readonly now?: () => number;
  /**
   * A compiler to run in the reconciler's own thread instead of the compile worker; a test
   * seam for a compiler that throws. Default: compileFiles, incrementally, in a worker thread.
   */
  readonly compile?: typeof compileFiles;
  /** The compile worker's entry module (default compile-worker.ts); a test seam for a worker whose compiler fails. */
  readonly compileWorker?: URL;
  /** Runs `fn` after `ms`; returns a cancel function. Every timer of the reconciler goes through it (endpoint debounce, make-before-break bounds), so tests drive them. */
  readonly schedule?: (fn: () => void, ms: number) => () => void;
}

const defaultSchedule = (fn: () => void, ms: number) => {
  const timer = setTimeout(fn, ms);
  return () => clearTimeout(timer);
};

/** Status as served on GET /status and printed by `trellis status`. */
export interface ReconcilerStatus {
  readonly source: { readonly description: string; readonly revision: string | null; readonly error: string | null };
  readonly attempted: { readonly revision: string; readonly description: string; readonly at: string; readonly ok: boolean; readonly diagnostics: DiagnosticJson[] } | null;
  readonly applied: { readonly revision: string; readonly description: string; readonly at: string; readonly meshVersion: string; readonly services: number } | null;
  readonly summary: { readonly sidecars: number; readonly connected: number; readonly inSync: number };
  readonly sidecars: ReadonlyArray<{
    readonly service: string;
    readonly node: string;
    readonly connected: boolean;
    readonly version: string | null;
    readonly revision: string | null;
    readonly inSync: boolean;
    readonly lastRejection: { readonly revision: string; readonly version: string; readonly reasons: readonly string[]; readonly at: string } | null;
    readonly bytesSent: number;
  }>;
  /** What sidecars are brought to; null until the first push (a discovery that has not listed yet holds it back). */
  readonly snapshot: {
    readonly version: string;
    /** Backends callers hold with no instance (service keys): consistent, but calls to them fail until instances appear. */
    readonly withoutEndpoints: readonly string[];
  } | null;
  /** The endpoint discovery, when the reconciler runs one. */
  readonly discovery: { readonly description: string; readonly synced: boolean; readonly error: string | null; readonly lastChangeAt: string | null } | null;
}

export class Reconciler {
  readonly #options: ReconcilerOptions;
  readonly #now: () => number;
  readonly #sidecars = new Map<string, SidecarRecord>();
  #sourceRevision: Revision | null = null;
  #sourceError: string | null = null;
  #attempted: AttemptedRevision | null = null;
  readonly #renderedDiagnostics = new WeakMap<AttemptedRevision, ReturnType<typeof diagnosticToJson>[]>();
  #applied: AppliedRevision | null = null;
  #published: Published | null = null;
  /** Revisions wait here while one is being reconciled; only the newest matters. */
  #queued: Revision | null = null;
  /** Discovered endpoints changed since the last snapshot. */
  #endpointsDirty = false;
  #cancelDebounce: (() => void) | null = null;
  #waitingLogged = false;
  /** Per node, the service a certificate was last issued for: which sidecars can serve as soon as they hold a config. Bounded (MAX_CERTIFIED_NODES). */
  readonly #certified = new Map<string, string>();
  /** Per meshed service without any connected sidecar: until when callers wait for one to join (set at the first wait, never extended). */
  readonly #expectedUntil = new Map<string, number>();
  /** During a make-before-break wait: the sidecars that go first (nobody else may catch up yet). */
  #goingFirst: ReadonlySet<SidecarRecord> | null = null;
  #running: Promise<void> | null = null;
  #stopped = false;
  /** The compile worker, started with the first revision (none when a compiler is injected). */
  #compiler: WorkerCompiler | null = null;
  /** Where the compile under way reports a compiler bug (the log line names its revision). */
  #compileBug: ((error: unknown) => void) | null = null;

  constructor(options: ReconcilerOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  get applied(): AppliedRevision | null {
    return this.#applied;
  }

  /** Whether sidecars are being served a snapshot: a revision is applied and (with a discovery) its first list is read. */
  get ready(): boolean {
    return this.#published !== null;
  }

  async start(): Promise<void> {
    await this.#options.discovery?.start((changed) => this.#onEndpoints(changed));
    await this.#options.source.start((event) => this.#onSourceEvent(event));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#cancelDebounce?.();
    await this.#options.discovery?.stop();
    await this.#options.source.stop();
    await this.#running;
    await this.#compiler?.close();
    for (const record of this.#sidecars.values()) record.writer?.close();
  }

  /** A webhook said something changed. */
  poke(): void {
    this.#options.source.poke();
  }

  /** Resolves once every revision seen so far has been reconciled (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  #onSourceEvent(event: SourceEvent): void {
    const log = this.#options.log;
    switch (event.type) {
      case 'revision':
        this.#sourceRevision = event.revision;
        this.#sourceError = null;
        this.#enqueue(event.revision);
        break;
      case 'force-push':
        log.warn({ type: 'force_push', from: event.from, to: event.to }, `history rewritten: ${event.from.slice(0, 12)} is not an ancestor of ${event.to.slice(0, 12)}`);
        this.#options.metrics.forcePushes.inc();
        break;
      case 'unverified':
        log.error({ type: 'unverified_commit', commit: event.commit, reason: event.reason }, 'commit signature did not verify; it is not applied');
        this.#options.metrics.unverified.inc();
        this.#sourceError = `commit ${event.commit.slice(0, 12)} not applied: ${event.reason}`;
        break;
      case 'recovered':
        log.info({ type: 'source_recovered' }, 'source reachable again');
        this.#sourceError = null;
        break;
      case 'error':
        log.warn({ type: 'source_error', kind: event.kind, error: event.message }, 'source failed; serving the last applied revision');
        this.#options.metrics.sourceErrors.inc({ kind: event.kind });
        this.#sourceError = event.message;
        break;
    }
  }

  /**
   * The discovery says these services' instances may have changed. Changes to services the
   * snapshot does not use are ignored; the rest are coalesced for ENDPOINT_DEBOUNCE_MS.
   */
  #onEndpoints(changed: ReadonlySet<string>): void {
    if (this.#stopped) return;
    const published = this.#published;
    const relevant = published === null || published.applied !== this.#applied || [...changed].some((k) => published.snapshot.discovered.has(k));
    if (!relevant || this.#cancelDebounce) return;
    this.#cancelDebounce = (this.#options.schedule ?? defaultSchedule)(() => {
      this.#cancelDebounce = null;
      this.#endpointsDirty = true;
      this.#kick();
    }, ENDPOINT_DEBOUNCE_MS);
  }

  #enqueue(revision: Revision): void {
    this.#queued = revision;
    this.#kick();
  }

  /** Runs the queue: revisions first (newest only), then endpoint changes; one step at a time. */
  #kick(): void {
    if (this.#running) return;
    this.#running = (async () => {
      while (!this.#stopped) {
        if (this.#queued) {
          const next = this.#queued;
          this.#queued = null;
          await this.#reconcile(next);
        } else if (this.#endpointsDirty) {
          this.#endpointsDirty = false;
          await this.#publish();
        } else break;
      }
      this.#running = null;
    })();
  }

  /**
   * Compiles a revision: in the compile worker, so that serving never waits on a compile;
   * in this thread when a compiler is injected (a test seam), or when the spec is so small
   * that compiling it costs less than handing it to a worker (IN_THREAD_MAX_CHARS).
   */
  async #compile(revision: Revision, onBug: (error: unknown) => void): Promise<RevisionCompile> {
    const small = !this.#options.compileWorker && revision.files.reduce((n, f) => n + f.text.length, 0) <= IN_THREAD_MAX_CHARS;
    if (this.#options.compile || small) {
      const result = compileGuarded(revision.files, this.#options.compile, onBug);
      return { diagnostics: result.diagnostics, ...(result.mesh && result.plan ? { mesh: result.mesh, inboundPort: result.plan.settings.inboundPort } : {}) };
    }
    this.#compiler ??= new WorkerCompiler({ onBug: (error) => this.#compileBug?.(error), ...(this.#options.compileWorker ? { entry: this.#options.compileWorker } : {}) });
    this.#compileBug = onBug;
    try {
      return await this.#compiler.compile(revision.files);
    } finally {
      this.#compileBug = null;
    }
  }

  /** Compile, then (if good) publish and push. One revision at a time. */
  async #reconcile(revision: Revision): Promise<void> {
    const { log, metrics } = this.#options;
    const started = performance.now();
    if (this.#applied?.revision.id === revision.id) return;
    // A compiler exception is a bug: the revision fails with TRL9001 and the last applied one stays served.
    const onBug = (error: unknown) =>
      log.error({ type: 'compiler_bug', revision: revision.id, error: error instanceof Error ? error.stack : String(error) }, `the compiler threw on revision ${revision.id.slice(0, 12)}; this is a bug in Trellis`);
    const result = await this.#compile(revision, onBug);
    const ok = !hasErrors(result.diagnostics) && result.mesh !== undefined;
    this.#attempted = { revision, at: this.#now(), ok, diagnostics: result.diagnostics };
    metrics.reconcileDuration.observe((performance.now() - started) / 1000);
    if (!ok) {
      metrics.compileErrors.inc();
      const errors = result.diagnostics.filter((d) => d.severity === 'error');
      log.error(
        { type: 'compile_failed', revision: revision.id, description: revision.description, errors: errors.slice(0, 20).map((d) => diagnosticToJson(d)), stillApplied: this.#applied?.revision.id ?? null },
        `revision ${revision.id.slice(0, 12)} does not compile (${errors.length} errors); the mesh stays on the last good revision`,
      );
      return;
    }
    this.#applied = { revision, mesh: result.mesh!, inboundPort: result.inboundPort!, at: this.#now() };
    metrics.appliedInfo.reset();
    metrics.appliedInfo.set({ revision: revision.id }, 1);
    log.info({ type: 'revision_applied', revision: revision.id, description: revision.description, meshVersion: result.mesh!.version, services: result.mesh!.configs.size }, 'revision compiled; pushing');
    await this.#publish();
  }

  /**
   * Builds the snapshot of the applied revision and the discovery's endpoints and pushes it
   * when it differs from the last one. A new revision goes out make-before-break; an
   * endpoint change goes to every sidecar at once (it adds no service, so no sidecar has to
   * be ready first).
   *
   * A discovery that follows the spec's namespaces is told the new revision's namespaces
   * together with those of the revision sidecars run; while a namespace new to it is being
   * listed, the new revision waits, but endpoint changes of the running revision still go
   * out. Namespaces only the old revision used are dropped once the new one is pushed.
   */
  async #publish(): Promise<void> {
    const applied = this.#applied;
    const discovery = this.#options.discovery;
    if (!applied) return;
    const previous = this.#published;
    if (discovery?.follow) {
      const namespaces = discoveredNamespaces(applied.mesh);
      if (previous && previous.applied !== applied) for (const n of discoveredNamespaces(previous.applied.mesh)) namespaces.add(n);
      discovery.follow(namespaces);
    }
    if (discovery && !discovery.synced()) {
      if (!this.#waitingLogged) this.#options.log.info({ type: 'waiting_for_discovery', discovery: discovery.description }, 'revision applied; pushing once the endpoint discovery has listed every instance');
      this.#waitingLogged = true;
      if (previous && previous.applied !== applied) this.#publishEndpoints(previous.applied);
      return;
    }
    if (previous?.applied === applied) return this.#publishEndpoints(applied);
    const published: Published = { applied, snapshot: snapshotOf(applied.mesh, applied.inboundPort, discovery), changedAt: applied.revision.seenAt };
    this.#published = published;
    this.#waitingLogged = false;
    await this.#push(published, previous?.snapshot.mesh);
    if (this.#published?.applied === applied) discovery?.follow?.(discoveredNamespaces(applied.mesh));
  }

  /** Pushes the endpoint changes of `applied` (the revision sidecars run) to every connected sidecar whose config they touch. */
  #publishEndpoints(applied: AppliedRevision): void {
    const previous = this.#published;
    const snapshot = snapshotOf(applied.mesh, applied.inboundPort, this.#options.discovery);
    if (previous && previous.snapshot.mesh.version === snapshot.mesh.version) return;
    const published: Published = { applied, snapshot, changedAt: this.#now() };
    this.#published = published;
    this.#options.metrics.endpointSnapshots.inc();
    this.#options.log.debug({ type: 'endpoints_changed', meshVersion: snapshot.mesh.version, withoutEndpoints: snapshot.withoutEndpoints }, 'endpoints changed; pushing');
    for (const s of this.#sidecars.values()) if (s.connected) void this.#send(s, published);
  }

  async #push(published: Published, previous: CompiledMesh | undefined): Promise<void> {
    const connected = [...this.#sidecars.values()].filter((s) => s.connected);
    const isNew = (s: SidecarRecord) => s.heldVersion === null || (previous !== undefined && !previous.configs.has(s.service));
    const first = connected.filter(isNew);
    const rest = connected.filter((s) => !isNew(s));
    this.#goingFirst = new Set(first);
    const waits = first.map((s) => this.#send(s, published)).filter((w): w is Promise<void> => w !== undefined);
    if (waits.length > 0) {
      const timeout = this.#mbbMs();
      let cancel: (() => void) | undefined;
      await Promise.race([Promise.all(waits), new Promise<void>((r) => (cancel = (this.#options.schedule ?? defaultSchedule)(r, timeout)))]);
      cancel?.();
    }
    this.#goingFirst = null;
    if (this.#published !== published) return; // a newer snapshot took over; it pushes to everyone
    // The wait above was their make-before-break: they are not held again for the same sidecars.
    for (const s of rest) void this.#send(s, published, true);
  }

  /**
   * Sends a sidecar what it needs to run `published`: nothing when it already does, else
   * `updateFor` what it holds (a delta, or a whole config). While an earlier message is
   * unacknowledged nothing more is sent — a delta on top of an unconfirmed base could not
   * apply — and the sidecar catches up when the ack arrives. Resolves when it acknowledges
   * (or leaves).
   */
  #send(record: SidecarRecord, published: Published, force = false): Promise<void> | undefined {
    if (!record.writer) return undefined;
    const target = published.snapshot.mesh.configs.get(record.service);
    const revision = published.applied.revision.id;
    if (!target) {
      record.bytesSent += record.writer.send({ type: 'unknown-service', revision, message: `service "${record.service}" is not in revision ${revision.slice(0, 12)}; keep running on what you have` });
      return undefined;
    }
    if (!record.pending) {
      const waitingOn = force ? [] : this.#unreadyBackends(record, target, published);
      if (waitingOn.length > 0) {
        if (!record.hold) {
          this.#options.log.info({ type: 'config_held', service: record.service, node: record.node, waitingOn }, 'config held until the services it newly routes to can serve');
          (this.#options.schedule ?? defaultSchedule)(() => this.#releaseHeld(), this.#mbbMs());
          record.hold = { waitingOn, since: this.#now(), settled: new Promise<void>((resolve) => record.onSettled.push(resolve)) };
        } else {
          record.hold = { ...record.hold, waitingOn };
          // A timer can fire a little before the clock reads the whole wait (Node's timers run on a
          // monotonic clock, Date.now() on the wall clock): look again when the rest has passed,
          // or the hold would last until some other event.
          const rest = record.hold.since + this.#mbbMs() - this.#now();
          if (rest > 0) (this.#options.schedule ?? defaultSchedule)(() => this.#releaseHeld(), rest);
        }
        return record.hold.settled;
      }
      if (record.hold) this.#options.log.info({ type: 'config_released', service: record.service, node: record.node, heldMs: this.#now() - record.hold.since }, 'held config released');
      record.hold = null;
    }
    // An ack lost on the way leaves `pending` forever; past PENDING_STALE_MS we stop waiting
    // and send the whole config, which applies whether or not the lost one did.
    const stale = record.pending !== null && this.#now() - record.pending.sentAt >= PENDING_STALE_MS;
    if (record.pending && !stale) {
      record.behind = record.pending.version !== target.version;
      return new Promise<void>((resolve) => record.onSettled.push(resolve));
    }
    if (!stale && record.heldVersion === target.version) {
      record.heldRevision = revision;
      this.#options.metrics.propagation.observe(Math.max(0, this.#now() - published.changedAt) / 1000);
      return undefined;
    }
    const held: Holding | null = !stale && record.heldVersion !== null && record.held !== null ? { version: record.heldVersion, resources: record.held } : null;
    const update = updateFor(held, target);
    if (update.kind === 'none') return undefined;
    const message: ControlMessage = update.kind === 'config' ? { type: 'config', revision, config: update.config } : { type: 'delta', revision, delta: update.delta };
    record.pending = { revision, version: target.version, resources: new Map(target.resources.map((r) => [r.name, r.version])), sentAt: this.#now(), since: published.changedAt };
    record.behind = false;
    record.bytesSent += record.writer.send(message);
    this.#options.metrics.pushes.inc({ kind: message.type });
    return new Promise<void>((resolve) => record.onSettled.push(resolve));
  }

  /** After an ack: a sidecar that fell behind while a message was pending gets the current snapshot (unless it just refused exactly that). */
  #catchUp(record: SidecarRecord): void {
    const published = this.#published;
    if (!published || !record.connected || record.pending || record.hold || !record.behind) return;
    if (this.#goingFirst && !this.#goingFirst.has(record)) return; // #push sends to it once the first ones are ready
    const target = published.snapshot.mesh.configs.get(record.service);
    if (!target || target.version === record.heldVersion || target.version === record.lastRejection?.version) return;
    void this.#send(record, published);
  }

  /** A sidecar (re)connected: remember what it holds and bring it up to date. */
  subscribe(sub: Subscribe, writer: StreamWriter): SidecarRecord {
    const existing = this.#sidecars.get(sub.node);
    existing?.writer?.close();
    const record: SidecarRecord = {
      service: sub.service,
      node: sub.node,
      connected: true,
      connectedAt: this.#now(),
      disconnectedAt: null,
      heldVersion: sub.version,
      held: sub.version === null ? null : new Map(Object.entries(sub.resources)),
      heldRevision: existing && existing.heldVersion === sub.version ? existing.heldRevision : null,
      pending: null,
      behind: false,
      lastRejection: existing?.lastRejection ?? null,
      bytesSent: existing?.bytesSent ?? 0,
      writer,
      onSettled: [],
      hold: null,
    };
    this.#sidecars.set(sub.node, record);
    this.#options.metrics.connected.set(this.#connectedCount());
    this.#options.log.info({ type: 'sidecar_connected', service: sub.service, node: sub.node, version: sub.version }, 'sidecar connected');
    if (this.#published) void this.#send(record, this.#published);
    // A sidecar of a service others wait for has joined: a cycle of waits may now resolve.
    this.#releaseHeld();
    return record;
  }

  disconnect(record: SidecarRecord): void {
    if (this.#sidecars.get(record.node) !== record || !record.connected) return;
    record.connected = false;
    record.disconnectedAt = this.#now();
    record.writer = null;
    record.hold = null;
    this.#certified.delete(record.node);
    for (const settle of record.onSettled.splice(0)) settle();
    this.#options.metrics.connected.set(this.#connectedCount());
    this.#options.log.info({ type: 'sidecar_disconnected', service: record.service, node: record.node }, 'sidecar disconnected');
  }

  /** A sidecar applied (or refused) what it was sent. */
  ack(ack: Ack): boolean {
    const record = this.#sidecars.get(ack.node);
    if (!record || record.service !== ack.service) return false;
    const pending = record.pending;
    if (ack.ok && pending && ack.version === pending.version) {
      record.heldVersion = pending.version;
      record.held = pending.resources;
      record.heldRevision = pending.revision;
      record.pending = null;
      this.#options.metrics.propagation.observe(Math.max(0, this.#now() - pending.since) / 1000);
    } else if (!ack.ok) {
      record.lastRejection = { revision: ack.revision, version: pending?.version ?? '', reasons: ack.reasons ?? [], at: this.#now() };
      record.pending = null;
      this.#options.metrics.rejections.inc({ service: record.service });
      this.#options.log.warn({ type: 'sidecar_rejected', service: record.service, node: record.node, revision: ack.revision, reasons: ack.reasons }, 'sidecar rejected a config');
    } else if (ack.version !== record.heldVersion) {
      // It runs something we did not send: diff against nothing next time.
      record.heldVersion = ack.version;
      record.held = null;
      record.pending = null;
    }
    for (const settle of record.onSettled.splice(0)) settle();
    this.#catchUp(record);
    if (ack.ok) this.#releaseHeld();
    return true;
  }

  /**
   * The mesh CA issued `node` a certificate for `service` (called by the server). A sidecar
   * with its certificate serves as soon as it holds a config: held configs are looked at again.
   */
  certificateIssued(node: string, service: string): void {
    this.#certificateAnswered(node, service);
  }

  /**
   * The mesh CA refused `node` a certificate (its service was not meshed, say). Such a sidecar
   * asks again at once when a config arrives, and otherwise only after its backoff: holding
   * its config would hold its certificate, so it is never held (see `#unreadyBackends`).
   */
  certificateRefused(node: string): void {
    this.#certificateAnswered(node, REFUSED);
  }

  #certificateAnswered(node: string, service: string): void {
    this.#certified.delete(node);
    this.#certified.set(node, service);
    if (this.#certified.size > MAX_CERTIFIED_NODES) this.#certified.delete(this.#certified.keys().next().value!);
    this.#releaseHeld();
  }

  #mbbMs(): number {
    return this.#options.makeBeforeBreakTimeoutMs ?? MAKE_BEFORE_BREAK_MS;
  }

  /** Sends held configs whose services can now serve (or whose wait ran out). */
  #releaseHeld(): void {
    const published = this.#published;
    if (!published || this.#stopped) return;
    for (const record of this.#sidecars.values()) {
      if (!record.hold || !record.connected) continue;
      // During a revision's make-before-break only the sidecars going first may move.
      if (this.#goingFirst && !this.#goingFirst.has(record)) continue;
      void this.#send(record, published);
    }
  }

  /**
   * The meshed services `target` newly routes `record`'s sidecar to that cannot serve yet, so
   * that its config should wait. A service S counts when the sidecar does not hold `cluster/S`
   * already, S is meshed (has a config), and no connected sidecar of S holds a config, while
   * - one is connected (its first config is on the way or it waits for its certificate), or
   * - none is, and S is expected: until its deadline, set the first time anyone waits for it
   *   (a meshed service whose sidecars never come costs callers one bounded wait in all).
   * Every wait ends after the make-before-break timeout since the hold began. A sidecar whose
   * last certificate request was refused never waits: its config is what makes it ask again.
   *
   * Two services that route to each other would wait for each other. When every connected
   * sidecar of S is held too, the less ready side goes first: S's sidecars when this one has
   * its certificate and they have none (they acknowledge once they get it, and this one waits
   * for that); this one when S's have theirs and it has none; S's when both have one. When
   * neither has, both wait for the first certificate issued, which decides.
   * (A sidecar that holds its certificate acknowledges within milliseconds of a config.)
   */
  #unreadyBackends(record: SidecarRecord, target: ProxyConfig, published: Published): string[] {
    const now = this.#now();
    if (record.hold && now - record.hold.since >= this.#mbbMs()) return [];
    if (this.#certified.get(record.node) === REFUSED) return [];
    const waiting: string[] = [];
    for (const resource of target.resources) {
      if (!resource.name.startsWith('cluster/')) continue;
      const service = resource.name.slice('cluster/'.length);
      if (service === record.service || record.held?.has(resource.name) || !published.snapshot.mesh.configs.has(service)) continue;
      const sidecars = [...this.#sidecars.values()].filter((s) => s.connected && s.service === service);
      if (sidecars.some((s) => s.heldVersion !== null)) continue;
      if (sidecars.length === 0) {
        const until = this.#expectedUntil.get(service) ?? now + this.#mbbMs();
        this.#expectedUntil.set(service, until);
        if (now < until) waiting.push(service);
        continue;
      }
      if (sidecars.every((s) => s.hold !== null)) {
        const mine = this.#certified.get(record.node) === record.service;
        const theirs = sidecars.some((s) => this.#certified.get(s.node) === service);
        if (theirs && !mine) continue;
        // Neither side can serve yet: wait for the first certificate to say who goes first.
        if (mine || theirs) for (const s of sidecars) void this.#send(s, published, true);
      }
      waiting.push(service);
    }
    return waiting;
  }

  #connectedCount(): number {
    let n = 0;
    for (const s of this.#sidecars.values()) if (s.connected) n++;
    return n;
  }

  /** The attempted revision's diagnostics as JSON, rendered once per revision (status is read often: the dashboard polls it, and a big mesh has thousands of warnings). */
  #attemptedDiagnostics(attempted: AttemptedRevision): ReturnType<typeof diagnosticToJson>[] {
    let json = this.#renderedDiagnostics.get(attempted);
    if (json === undefined) {
      json = attempted.diagnostics.map((d) => diagnosticToJson(d));
      this.#renderedDiagnostics.set(attempted, json);
    }
    return json;
  }

  status(): ReconcilerStatus {
    const applied = this.#applied;
    const published = this.#published;
    const iso = (ms: number) => new Date(ms).toISOString();
    const sidecars = [...this.#sidecars.values()]
      .sort((a, b) => (a.service === b.service ? (a.node < b.node ? -1 : 1) : a.service < b.service ? -1 : 1))
      .map((s) => {
        const target = published?.snapshot.mesh.configs.get(s.service);
        return {
          service: s.service,
          node: s.node,
          connected: s.connected,
          version: s.heldVersion,
          revision: s.heldRevision,
          inSync: s.connected && target !== undefined && s.heldVersion === target.version,
          lastRejection: s.lastRejection ? { ...s.lastRejection, at: iso(s.lastRejection.at) } : null,
          bytesSent: s.bytesSent,
        };
      });
    const attempted = this.#attempted;
    const discovery = this.#options.discovery?.state();
    return {
      source: { description: this.#options.source.description, revision: this.#sourceRevision?.id ?? null, error: this.#sourceError },
      attempted: attempted
        ? { revision: attempted.revision.id, description: attempted.revision.description, at: iso(attempted.at), ok: attempted.ok, diagnostics: this.#attemptedDiagnostics(attempted) }
        : null,
      applied: applied ? { revision: applied.revision.id, description: applied.revision.description, at: iso(applied.at), meshVersion: applied.mesh.version, services: applied.mesh.configs.size } : null,
      summary: { sidecars: sidecars.length, connected: sidecars.filter((s) => s.connected).length, inSync: sidecars.filter((s) => s.inSync).length },
      sidecars,
      snapshot: published ? { version: published.snapshot.mesh.version, withoutEndpoints: published.snapshot.withoutEndpoints } : null,
      discovery: discovery ? { description: discovery.description, synced: discovery.synced, error: discovery.error, lastChangeAt: discovery.lastChangeAt === null ? null : iso(discovery.lastChangeAt) } : null,
    };
  }
}
