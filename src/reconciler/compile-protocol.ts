/**
 * What the reconciler and its compile worker say to each other (node:worker_threads
 * messages, structured-cloned), and the worker's side of it.
 *
 * The worker holds the spec files and an incremental compiler, so the reconciler sends
 * only the files that changed since the last compile, and the worker answers with only the
 * configs that changed since the last good compile it reported, in chunks, one at a time:
 * the next chunk is sent when the reconciler asks for it. A port delivers every message
 * queued on it in one go, so chunks sent all at once would be read in one long stretch;
 * asked for one by one, each is read in a task of its own, with timers and sockets served
 * in between, whatever the size of the mesh. Diagnostics
 * come back as plain data with spans by file path (a SourceFile does not survive the
 * copy); the reconciler points them back at its own files. They come grouped by file,
 * and only the groups that changed since the last result are sent: a large mesh can carry
 * tens of thousands of warnings, of which a one-file change alters a few.
 */
import type { ProxyConfig, Resource } from '../config/types.ts';
import type { CompileResult } from '../compiler/compile.ts';
import type { Code, Severity } from '../diagnostics/codes.ts';
import type { Diagnostic } from '../diagnostics/diagnostic.ts';
import { SourceFile } from '../diagnostics/source-file.ts';

/** Configs per result message: a few milliseconds of reading for the serving thread each. */
export const CONFIGS_PER_MESSAGE = 200;

/** Diagnostics per result message (a large mesh may raise tens of thousands of warnings). */
export const DIAGNOSTICS_PER_MESSAGE = 2000;

/** A file as sent: path and text. */
export interface WireFile {
  readonly path: string;
  readonly text: string;
}

/** Reconciler → worker: compile the held files after these changes. */
export interface CompileRequest {
  readonly type: 'compile';
  readonly id: number;
  /** Files new or changed since the last request (all of them on the first). */
  readonly changed: readonly WireFile[];
  /** Paths of files gone since the last request. */
  readonly removed: readonly string[];
}

/** A config as sent: its resources by key (see CompileReply.configs). */
export interface WireConfig extends Omit<ProxyConfig, 'resources'> {
  readonly resources: readonly string[];
}

/** How a resource is named on the wire: name and version. */
export function resourceKey(resource: { readonly name: string; readonly version: string }): string {
  return `${resource.name}\u0000${resource.version}`;
}

export interface WireSpan {
  readonly path: string;
  readonly start: number;
  readonly end: number;
}

/** Reconciler → worker: send the next message of the result under way. */
export interface NextRequest {
  readonly type: 'next';
  readonly id: number;
}

/** A Diagnostic with its spans by file path. */
export interface WireDiagnostic {
  readonly code: Code;
  readonly severity: Severity;
  readonly message: string;
  readonly span?: WireSpan;
  readonly path?: string;
  readonly hint?: string;
  readonly related?: ReadonlyArray<{ readonly span: WireSpan; readonly message: string }>;
}

/**
 * Worker → reconciler, one or more per request (`last` on the final one; each further one
 * after a NextRequest). The first carries the outcome; diagnostics (in order) and configs
 * follow in chunks. On success `services` lists every config's service in order, and the
 * configs not sent are those of the last good result, unchanged.
 */
export interface CompileReply {
  readonly type: 'result';
  readonly id: number;
  readonly last: boolean;
  /**
   * Every diagnostics group of the result, in order (a group is a file's path, `''` for
   * diagnostics of no file): present when the list differs from the last result's.
   */
  readonly groups?: readonly string[];
  /** Groups new or changed since the last result (a chunk of them); the others are as last time. */
  readonly diagnostics?: ReadonlyArray<{ readonly group: string; readonly diagnostics: readonly WireDiagnostic[] }>;
  /**
   * Present when the revision compiled: mesh name and version, sidecars' inbound port, and
   * every service in order (left out when the same as in the last good result).
   */
  readonly compiled?: { readonly mesh: string; readonly version: string; readonly inboundPort: number; readonly services?: readonly string[] };
  /**
   * Configs new or changed since the last good result (a chunk of them), each naming its
   * resources by `resourceKey`: a resource is sent once, in `resources` of this or an
   * earlier message of the result, unless a config of the last good result held it already
   * (the reconciler keeps every resource its configs hold). Most resources are shared by
   * many configs, so this copies each once instead of once per config.
   */
  readonly configs?: readonly WireConfig[];
  readonly resources?: readonly Resource[];
  /** The compiler threw: its stack, for the log (the diagnostics carry TRL9001). */
  readonly bug?: string;
}

function wireSpan(span: NonNullable<Diagnostic['span']>): WireSpan {
  return { path: span.file.path, start: span.start, end: span.end };
}

export function toWire(d: Diagnostic): WireDiagnostic {
  const out: { -readonly [K in keyof WireDiagnostic]: WireDiagnostic[K] } = { code: d.code, severity: d.severity, message: d.message };
  if (d.span) out.span = wireSpan(d.span);
  if (d.path !== undefined) out.path = d.path;
  if (d.hint !== undefined) out.hint = d.hint;
  if (d.related) out.related = d.related.map((r) => ({ span: wireSpan(r.span), message: r.message }));
  return out;
}

/**
 * A wire diagnostic as a Diagnostic again, its spans in `files` (by path: the files of the
 * revision that was compiled, which hold the same text the worker read). A path not among
 * them (never expected) gets an empty file, so rendering still works.
 */
export function fromWire(d: WireDiagnostic, files: { get(path: string): SourceFile | undefined }): Diagnostic {
  const file = (path: string) => files.get(path) ?? new SourceFile(path, '');
  const span = (s: WireSpan) => ({ file: file(s.path), start: s.start, end: s.end });
  const out: { -readonly [K in keyof Diagnostic]: Diagnostic[K] } = { code: d.code, severity: d.severity, message: d.message };
  if (d.span) out.span = span(d.span);
  if (d.path !== undefined) out.path = d.path;
  if (d.hint !== undefined) out.hint = d.hint;
  if (d.related) out.related = d.related.map((r) => ({ span: span(r.span), message: r.message }));
  return out;
}

/**
 * The worker's side: answers every CompileRequest on `port` with `compile` over the files
 * held. An exception from `compile` answers TRL9001 (as `compileGuarded` does) with the
 * stack in `bug`; the worker carries on with the next request.
 */
/** The group a diagnostic is sent in: its file's path, `''` for none. */
function diagnosticGroup(d: Diagnostic): string {
  return d.span?.file.path ?? d.path ?? '';
}

function sameItems<T>(a: readonly T[] | undefined, b: readonly T[]): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function serveCompiles(
  port: { on(event: 'message', listener: (message: CompileRequest | NextRequest) => void): unknown; postMessage(message: CompileReply): void },
  compile: (files: readonly SourceFile[]) => CompileResult,
): void {
  const files = new Map<string, SourceFile>();
  /** The configs of the last good result sent, by service, and how many of them hold each resource (by key). */
  let reported = new Map<string, ProxyConfig>();
  const held = new Map<string, number>();
  /** The services of the last good result sent, in order. */
  let reportedServices: readonly string[] = [];
  /** The diagnostics of the last result sent (sorted, so grouped by file). */
  let reportedAll: readonly Diagnostic[] = [];
  /** The rest of the result under way, sent one message per NextRequest. */
  let queued: { id: number; replies: CompileReply[] } | null = null;
  port.on('message', (request) => {
    if (request.type === 'next') {
      if (queued?.id !== request.id) return;
      const reply = queued.replies.shift();
      if (queued.replies.length === 0) queued = null;
      if (reply) port.postMessage(reply);
      return;
    }
    if (request.type !== 'compile') return;
    queued = null;
    for (const path of request.removed) files.delete(path);
    for (const f of request.changed) files.set(f.path, new SourceFile(f.path, f.text));
    let result: CompileResult;
    try {
      result = compile([...files.values()]);
    } catch (error) {
      const what = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      const failure: WireDiagnostic = {
        code: 'TRL9001',
        severity: 'error',
        message: `internal compiler error: ${what}`,
        hint: 'this is a bug in Trellis, not a problem found in the spec; please report it with the revision. Nothing of this revision was applied',
      };
      // The reconciler now holds this one diagnostic: every group is sent afresh next time.
      reportedAll = [failure as unknown as Diagnostic];
      port.postMessage({ type: 'result', id: request.id, last: true, bug: error instanceof Error ? (error.stack ?? what) : what, groups: [''], diagnostics: [{ group: '', diagnostics: [failure] }] });
      return;
    }
    // Diagnostics are sorted by file first, so each group is one stretch of the list, in the
    // same order as last time: the two lists are walked together, group by group, and only
    // groups whose diagnostics are not the very same objects are sent.
    const all = result.diagnostics;
    const last = reportedAll;
    const changedGroups: Array<{ group: string; diagnostics: WireDiagnostic[] }> = [];
    let groupsChanged = false;
    const end = (list: readonly Diagnostic[], from: number, group: string) => {
      let k = from;
      while (k < list.length && diagnosticGroup(list[k]!) === group) k++;
      return k;
    };
    let j = 0;
    for (let i = 0; i < all.length; ) {
      const group = diagnosticGroup(all[i]!);
      const k = end(all, i, group);
      while (j < last.length && diagnosticGroup(last[j]!) < group) {
        groupsChanged = true;
        j = end(last, j, diagnosticGroup(last[j]!));
      }
      let same = false;
      if (j < last.length && diagnosticGroup(last[j]!) === group) {
        const m = end(last, j, group);
        same = m - j === k - i;
        for (let x = 0; same && x < k - i; x++) same = all[i + x] === last[j + x];
        j = m;
      } else groupsChanged = true;
      if (!same) changedGroups.push({ group, diagnostics: all.slice(i, k).map(toWire) });
      i = k;
    }
    if (j < last.length) groupsChanged = true;
    reportedAll = all;

    const replies: Array<Omit<CompileReply, 'last'>> = [];
    const mesh = result.mesh;
    let changed: ProxyConfig[] = [];
    const first: { -readonly [K in keyof CompileReply]: CompileReply[K] } = { type: 'result', id: request.id, last: false };
    if (groupsChanged) {
      const order: string[] = [];
      for (const d of all) {
        const g = diagnosticGroup(d);
        if (order.at(-1) !== g) order.push(g);
      }
      first.groups = order;
    }
    const resources: Resource[] = [];
    if (mesh && result.plan) {
      // Only configs whose version changed are looked into: the count of configs holding
      // each resource is patched from the old and new config of each.
      for (const [service, config] of mesh.configs) {
        const old = reported.get(service);
        if (old?.version !== config.version) changed.push(config);
      }
      const gone: ProxyConfig[] = [];
      const added = changed.filter((c) => !reported.has(c.service)).length;
      if (reported.size > mesh.configs.size - added) for (const [service, config] of reported) if (!mesh.configs.has(service)) gone.push(config);
      for (const config of changed) {
        for (const r of config.resources) {
          const key = resourceKey(r);
          const n = held.get(key) ?? 0;
          if (n === 0) resources.push(r);
          held.set(key, n + 1);
        }
      }
      for (const config of [...changed.map((c) => reported.get(c.service)), ...gone]) {
        for (const r of config?.resources ?? []) {
          const key = resourceKey(r);
          const n = held.get(key)! - 1;
          if (n === 0) held.delete(key);
          else held.set(key, n);
        }
      }
      for (const config of changed) reported.set(config.service, config);
      for (const config of gone) reported.delete(config.service);
      // The list of services goes only when it changed (a service came or went).
      let services: string[] | undefined;
      if (added > 0 || gone.length > 0 || reportedServices.length !== mesh.configs.size) {
        services = [...mesh.configs.keys()];
        if (sameItems(reportedServices, services)) services = undefined;
        else reportedServices = services;
        reported = new Map(mesh.configs);
      }
      first.compiled = { mesh: mesh.mesh, version: mesh.version, inboundPort: result.plan.settings.inboundPort, ...(services ? { services } : {}) };
    } else changed = [];
    replies.push(first);
    let chunk: Array<{ group: string; diagnostics: WireDiagnostic[] }> = [];
    let size = 0;
    for (const g of changedGroups) {
      chunk.push(g);
      size += g.diagnostics.length;
      if (size >= DIAGNOSTICS_PER_MESSAGE) {
        replies.push({ type: 'result', id: request.id, diagnostics: chunk });
        chunk = [];
        size = 0;
      }
    }
    if (chunk.length > 0) replies.push({ type: 'result', id: request.id, diagnostics: chunk });
    // Each resource goes with the first chunk of configs that holds it.
    const unsent = new Map(resources.map((r) => [resourceKey(r), r]));
    for (let i = 0; i < changed.length; i += CONFIGS_PER_MESSAGE) {
      const chunk = changed.slice(i, i + CONFIGS_PER_MESSAGE);
      const with_: Resource[] = [];
      for (const config of chunk) {
        for (const r of config.resources) {
          const key = resourceKey(r);
          const resource = unsent.get(key);
          if (!resource) continue;
          with_.push(resource);
          unsent.delete(key);
        }
      }
      replies.push({ type: 'result', id: request.id, resources: with_, configs: chunk.map((c) => ({ ...c, resources: c.resources.map(resourceKey) })) });
    }
    const sequence = replies.map((r, i) => ({ ...r, last: i === replies.length - 1 }));
    port.postMessage(sequence.shift()!);
    if (sequence.length > 0) queued = { id: request.id, replies: sequence };
  });
}
