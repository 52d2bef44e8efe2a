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
 */
import type { Logger } from 'pino';
import type { Ack, ControlMessage, Subscribe } from '../config/control-protocol.ts';
import type { ProxyConfig } from '../config/types.ts';
import { compileFiles } from '../compiler/compile.ts';
import type { CompiledMesh } from '../compiler/emit.ts';
import { hasErrors, type Diagnostic } from '../diagnostics/diagnostic.ts';
import { diagnosticToJson, type DiagnosticJson } from '../diagnostics/render.ts';
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
  /** What was sent and is not yet acknowledged. */
  pending: { revision: string; version: string; resources: Map<string, string>; sentAt: number } | null;
  lastRejection: { revision: string; reasons: readonly string[]; at: number } | null;
  bytesSent: number;
  writer: StreamWriter | null;
  /** Called when an ack for the pending version arrives (make-before-break waits on it). */
  onSettled: Array<() => void>;
}

export interface AppliedRevision {
  readonly revision: Revision;
  readonly mesh: CompiledMesh;
  readonly at: number;
}

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
  /** How long a push waits for new services' sidecars before sending routes that use them, in ms. */
  readonly makeBeforeBreakTimeoutMs?: number;
  readonly now?: () => number;
}

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
    readonly lastRejection: { readonly revision: string; readonly reasons: readonly string[]; readonly at: string } | null;
    readonly bytesSent: number;
  }>;
}

export class Reconciler {
  readonly #options: ReconcilerOptions;
  readonly #now: () => number;
  readonly #sidecars = new Map<string, SidecarRecord>();
  #sourceRevision: Revision | null = null;
  #sourceError: string | null = null;
  #attempted: AttemptedRevision | null = null;
  #applied: AppliedRevision | null = null;
  /** Revisions wait here while one is being reconciled; only the newest matters. */
  #queued: Revision | null = null;
  #running: Promise<void> | null = null;
  #stopped = false;

  constructor(options: ReconcilerOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  get applied(): AppliedRevision | null {
    return this.#applied;
  }

  async start(): Promise<void> {
    await this.#options.source.start((event) => this.#onSourceEvent(event));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#options.source.stop();
    await this.#running;
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

  #enqueue(revision: Revision): void {
    this.#queued = revision;
    if (this.#running) return;
    this.#running = (async () => {
      while (this.#queued && !this.#stopped) {
        const next = this.#queued;
        this.#queued = null;
        await this.#reconcile(next);
      }
      this.#running = null;
    })();
  }

  /** Compile, then (if good) publish and push. One revision at a time. */
  async #reconcile(revision: Revision): Promise<void> {
    const { log, metrics } = this.#options;
    const started = performance.now();
    if (this.#applied?.revision.id === revision.id) return;
    const result = compileFiles(revision.files);
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
    const previous = this.#applied;
    this.#applied = { revision, mesh: result.mesh!, at: this.#now() };
    metrics.appliedInfo.reset();
    metrics.appliedInfo.set({ revision: revision.id }, 1);
    log.info({ type: 'revision_applied', revision: revision.id, description: revision.description, meshVersion: result.mesh!.version, services: result.mesh!.configs.size }, 'revision compiled; pushing');
    await this.#push(this.#applied, previous?.mesh);
  }

  async #push(applied: AppliedRevision, previous: CompiledMesh | undefined): Promise<void> {
    const connected = [...this.#sidecars.values()].filter((s) => s.connected);
    const isNew = (s: SidecarRecord) => s.heldVersion === null || (previous !== undefined && !previous.configs.has(s.service));
    const first = connected.filter(isNew);
    const rest = connected.filter((s) => !isNew(s));
    const waits = first.map((s) => this.#send(s, applied)).filter((w): w is Promise<void> => w !== undefined);
    if (waits.length > 0) {
      const timeout = this.#options.makeBeforeBreakTimeoutMs ?? 5000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(waits), new Promise<void>((r) => (timer = setTimeout(r, timeout)))]);
      clearTimeout(timer);
    }
    if (this.#applied !== applied) return; // a newer revision took over; it pushes to everyone
    for (const s of rest) void this.#send(s, applied);
  }

  /**
   * Sends a sidecar what it needs to run `applied`: nothing when it already does, a delta
   * against what it holds, or a whole config. Resolves when it acknowledges (or leaves).
   */
  #send(record: SidecarRecord, applied: AppliedRevision): Promise<void> | undefined {
    if (!record.writer) return undefined;
    const target = applied.mesh.configs.get(record.service);
    const revision = applied.revision.id;
    if (!target) {
      record.bytesSent += record.writer.send({ type: 'unknown-service', revision, message: `service "${record.service}" is not in revision ${revision.slice(0, 12)}; keep running on what you have` });
      return undefined;
    }
    if (record.heldVersion === target.version) {
      record.heldRevision = revision;
      record.pending = null;
      this.#options.metrics.propagation.observe(Math.max(0, this.#now() - applied.revision.seenAt) / 1000);
      return undefined;
    }
    const message = this.#messageFor(record, target, revision);
    record.pending = { revision, version: target.version, resources: new Map(target.resources.map((r) => [r.name, r.version])), sentAt: this.#now() };
    record.bytesSent += record.writer.send(message);
    this.#options.metrics.pushes.inc({ kind: message.type });
    return new Promise<void>((resolve) => record.onSettled.push(resolve));
  }

  #messageFor(record: SidecarRecord, target: ProxyConfig, revision: string): ControlMessage {
    if (record.heldVersion === null || record.held === null) return { type: 'config', revision, config: target };
    const held = record.held;
    const wanted = new Set(target.resources.map((r) => r.name));
    return {
      type: 'delta',
      revision,
      delta: {
        service: target.service,
        base: record.heldVersion,
        target: target.version,
        resources: target.resources.filter((r) => held.get(r.name) !== r.version),
        removed: [...held.keys()].filter((name) => !wanted.has(name)).sort(),
      },
    };
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
      lastRejection: existing?.lastRejection ?? null,
      bytesSent: existing?.bytesSent ?? 0,
      writer,
      onSettled: [],
    };
    this.#sidecars.set(sub.node, record);
    this.#options.metrics.connected.set(this.#connectedCount());
    this.#options.log.info({ type: 'sidecar_connected', service: sub.service, node: sub.node, version: sub.version }, 'sidecar connected');
    if (this.#applied) void this.#send(record, this.#applied);
    return record;
  }

  disconnect(record: SidecarRecord): void {
    if (this.#sidecars.get(record.node) !== record || !record.connected) return;
    record.connected = false;
    record.disconnectedAt = this.#now();
    record.writer = null;
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
      const seenAt = this.#applied?.revision.id === pending.revision ? this.#applied.revision.seenAt : pending.sentAt;
      this.#options.metrics.propagation.observe(Math.max(0, this.#now() - seenAt) / 1000);
    } else if (!ack.ok) {
      record.lastRejection = { revision: ack.revision, reasons: ack.reasons ?? [], at: this.#now() };
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
    return true;
  }

  #connectedCount(): number {
    let n = 0;
    for (const s of this.#sidecars.values()) if (s.connected) n++;
    return n;
  }

  status(): ReconcilerStatus {
    const applied = this.#applied;
    const iso = (ms: number) => new Date(ms).toISOString();
    const sidecars = [...this.#sidecars.values()]
      .sort((a, b) => (a.service === b.service ? (a.node < b.node ? -1 : 1) : a.service < b.service ? -1 : 1))
      .map((s) => {
        const target = applied?.mesh.configs.get(s.service);
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
    return {
      source: { description: this.#options.source.description, revision: this.#sourceRevision?.id ?? null, error: this.#sourceError },
      attempted: attempted
        ? { revision: attempted.revision.id, description: attempted.revision.description, at: iso(attempted.at), ok: attempted.ok, diagnostics: attempted.diagnostics.map((d) => diagnosticToJson(d)) }
        : null,
      applied: applied ? { revision: applied.revision.id, description: applied.revision.description, at: iso(applied.at), meshVersion: applied.mesh.version, services: applied.mesh.configs.size } : null,
      summary: { sidecars: sidecars.length, connected: sidecars.filter((s) => s.connected).length, inSync: sidecars.filter((s) => s.inSync).length },
      sidecars,
    };
  }
}
