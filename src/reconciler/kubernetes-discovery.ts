/**
 * Instances from Kubernetes: a watch on `discovery.k8s.io/v1` EndpointSlices, grouped by the
 * Service they belong to (label `kubernetes.io/service-name`, per namespace).
 *
 * The watch follows the API's list-then-watch protocol, as client-go's reflector does:
 * - list every slice (paged), remember the list's resourceVersion, then watch from it;
 * - a watch that ends (server timeout, dropped connection) resumes from the last
 *   resourceVersion seen (bookmarks keep it fresh), so no event is lost or replayed;
 * - `410 Gone` (the version has been compacted away) means a fresh list, whose result
 *   replaces what is known in one step;
 * - any other failure backs off (250 ms doubling to 5 s, jittered) and tries again, while
 *   the last known instances stay: an API server that is down never empties a service.
 */
import type { Logger } from 'pino';
import * as k8s from '@kubernetes/client-node';
import type { CompiledEndpoint } from '../config/types.ts';
import { compareEndpoints, discoveredServiceKey, type Discovery, type DiscoveryState, type PortChoice } from './discovery.ts';
import type { ReconcilerMetrics } from './metrics.ts';

/** The label Kubernetes puts on every EndpointSlice of a Service (set by the EndpointSlice controller). */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** Page size of a list: the API server's recommended chunk, so a large cluster is not read in one response. */
const LIST_PAGE = 500;
/**
 * The server ends each watch after this many seconds and we resume from the last
 * resourceVersion. Below the client library's 30 s inactivity timeout, so a quiet watch
 * ends cleanly instead of as an error.
 */
const WATCH_TIMEOUT_SECONDS = 25;
/**
 * How long a list page or the start of a watch may take before the attempt is given up and
 * retried. An API server that is shutting down (or starting) can accept a connection and
 * never answer; without this bound a watch would sit on it for the client library's 30 s.
 */
const REQUEST_TIMEOUT_MS = 5000;
const BACKOFF_BASE_MS = 250;
/** Ceiling of the backoff: an API server back from a restart is found within 5 s. */
const BACKOFF_MAX_MS = 5000;

/** One endpoint of a slice, as much as Trellis needs. */
export interface SliceEndpoint {
  readonly address: string;
  /** Conditions as the API gives them: absent means unknown, which Kubernetes says to read as true. */
  readonly ready?: boolean;
  readonly serving?: boolean;
  readonly terminating: boolean;
  readonly zone: string | null;
}

/** An EndpointSlice reduced to what maps to instances. Immutable. */
export interface DiscoveredSlice {
  readonly namespace: string;
  readonly name: string;
  /** The Kubernetes Service it belongs to (its `kubernetes.io/service-name` label). */
  readonly service: string;
  /** `IPv4`, `IPv6` or `FQDN`. */
  readonly addressType: string;
  /** Port name ('' when unnamed) and number (null: all ports, which Trellis cannot call). */
  readonly ports: ReadonlyArray<{ readonly name: string; readonly port: number | null }>;
  readonly endpoints: readonly SliceEndpoint[];
}

/** The slice's summary, or undefined for a slice of no Service (no service-name label). */
export function sliceOf(obj: k8s.V1EndpointSlice): DiscoveredSlice | undefined {
  const service = obj.metadata?.labels?.[SERVICE_NAME_LABEL];
  if (!service || !obj.metadata?.name) return undefined;
  return {
    namespace: obj.metadata.namespace ?? 'default',
    name: obj.metadata.name,
    service,
    addressType: obj.addressType,
    ports: (obj.ports ?? []).map((p) => ({ name: p.name ?? '', port: p.port ?? null })),
    endpoints: (obj.endpoints ?? [])
      .filter((e) => (e.addresses?.length ?? 0) > 0)
      .map((e) => ({
        address: e.addresses[0]!,
        ...(e.conditions?.ready !== undefined && e.conditions.ready !== null ? { ready: e.conditions.ready } : {}),
        ...(e.conditions?.serving !== undefined && e.conditions.serving !== null ? { serving: e.conditions.serving } : {}),
        terminating: e.conditions?.terminating === true,
        zone: e.zone ?? null,
      })),
  };
}

/** The port to call a slice's endpoints on, per `choice`; undefined when the slice has no such port. */
function portFor(slice: DiscoveredSlice, choice: PortChoice): number | null | undefined {
  if (choice.kind === 'inbound') return choice.port;
  const wanted = choice.port;
  if (wanted === null) return slice.ports.length === 1 ? slice.ports[0]!.port : null;
  const found = slice.ports.find((p) => (typeof wanted === 'string' ? p.name === wanted : p.port === wanted));
  return found ? found.port : undefined;
}

/**
 * The instances of one Service from its slices:
 * - ready (or unknown) and not terminating → an instance;
 * - terminating but still serving → an instance marked `terminating` (last resort only);
 * - anything else (not ready, or terminating and no longer serving) → dropped.
 * The address is the endpoint's first (Kubernetes says all of one endpoint's addresses are
 * fungible). When a Service has both IPv4 and IPv6 slices (dual stack, the same pods
 * twice) only the IPv4 ones count. Sorted like static endpoints; an endpoint listed in two
 * slices (it moves between them during updates) counts once, as its better state.
 */
export function instancesFromSlices(slices: readonly DiscoveredSlice[], choice: PortChoice): CompiledEndpoint[] {
  const hasV4 = slices.some((s) => s.addressType === 'IPv4');
  const byKey = new Map<string, CompiledEndpoint>();
  for (const slice of slices) {
    if (hasV4 && slice.addressType === 'IPv6') continue;
    const port = portFor(slice, choice);
    if (port === undefined) continue;
    for (const e of slice.endpoints) {
      const ready = !e.terminating && e.ready !== false;
      const draining = e.terminating && (e.serving ?? e.ready) !== false;
      if (!ready && !draining) continue;
      const instance: CompiledEndpoint = { address: e.address, port, weight: 1, zone: e.zone, ...(ready ? {} : { terminating: true as const }) };
      const key = `${e.address}\u0000${port}`;
      const seen = byKey.get(key);
      if (!seen || (seen.terminating && ready)) byKey.set(key, instance);
    }
  }
  return [...byKey.values()].sort(compareEndpoints);
}

/** Milliseconds to wait after `failures` consecutive failures: doubling from 250 ms to 5 s, drawn in [half, whole) so replicas spread out. */
export function watchBackoffMs(failures: number, random: () => number): number {
  const ceiling = Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, failures - 1), BACKOFF_MAX_MS);
  return ceiling / 2 + (random() * ceiling) / 2;
}

/** Why a watch or list failed, in one line; `code` is stable for logs and status. */
function describeError(err: unknown): { code: string; message: string } {
  const e = err as { statusCode?: number; code?: number | string; message?: string; body?: unknown; cause?: { code?: string; message?: string } };
  const status = e.statusCode ?? (typeof e.code === 'number' ? e.code : undefined);
  if (e.code === 'kubernetes_timeout') return { code: 'kubernetes_timeout', message: e.message ?? 'the API server did not answer' };
  if (status === 401 || status === 403) return { code: 'kubernetes_forbidden', message: `the API server refused to list EndpointSlices (${status}): grant list and watch on endpointslices.discovery.k8s.io` };
  const cause = e.cause?.code ?? (typeof e.code === 'string' ? e.code : undefined);
  if (cause) return { code: 'kubernetes_unreachable', message: `the API server cannot be reached (${cause}${e.cause?.message ? `: ${e.cause.message}` : ''})` };
  return { code: 'kubernetes_watch_failed', message: `EndpointSlice watch failed${status ? ` (${status})` : ''}: ${e.message ?? String(err)}` };
}

function timeoutError(what: string): Error & { code: string } {
  return Object.assign(new Error(`the API server did not answer within ${REQUEST_TIMEOUT_MS / 1000} s (${what})`), { code: 'kubernetes_timeout' });
}

/** `promise`, or a `kubernetes_timeout` error after REQUEST_TIMEOUT_MS (the request itself is left to the client's own timeouts). */
function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(timeoutError(what)), REQUEST_TIMEOUT_MS)));
  promise.catch(() => undefined);
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export interface KubernetesDiscoveryOptions {
  readonly kubeConfig: k8s.KubeConfig;
  /**
   * Which namespaces to watch: absent or empty, every namespace (one cluster-wide watch, needs
   * a ClusterRole); a list, those (one watch each, a Role in each is enough); `spec`, the
   * namespaces the applied spec takes endpoints from, as `follow` tells them.
   */
  readonly namespaces?: readonly string[] | 'spec';
  readonly log: Logger;
  readonly metrics?: ReconcilerMetrics;
  readonly now?: () => number;
  readonly random?: () => number;
  /** Waits `ms` unless `signal` aborts first (then resolves at once). Injected for tests. */
  readonly delay?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Seconds after which the API server ends each watch (then resumed from its resourceVersion); default 25. For tests. */
  readonly watchTimeoutSeconds?: number;
}

/** One list-and-watch loop: the whole cluster, or one namespace. */
interface Scope {
  readonly namespace: string | null;
  resourceVersion: string | null;
  listed: boolean;
  failures: number;
  controller: AbortController | null;
  /** Aborted when the scope is no longer wanted (or the discovery stops). */
  readonly ended: AbortController;
  loop: Promise<void> | null;
}

function newScope(namespace: string | null): Scope {
  return { namespace, resourceVersion: null, listed: false, failures: 0, controller: null, ended: new AbortController(), loop: null };
}

function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}

export class KubernetesDiscovery implements Discovery {
  readonly #o: KubernetesDiscoveryOptions;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #delay: (ms: number, signal: AbortSignal) => Promise<void>;
  /** By namespace (null: the cluster-wide scope). */
  readonly #scopes = new Map<string | null, Scope>();
  /** `spec` mode: whether `follow` has been called (before that nothing is known to be complete). */
  #followed = false;
  /** Slices by `namespace/name`. */
  readonly #slices = new Map<string, DiscoveredSlice>();
  /** Slice keys by discovered service key (`namespace/service`). */
  readonly #byService = new Map<string, Set<string>>();
  readonly #stopping = new AbortController();
  #onChange: ((changed: ReadonlySet<string>) => void) | null = null;
  #error: string | null = null;
  #lastChangeAt: number | null = null;
  /** Whether every wanted scope had its first list, as last announced (answers and events wait for it). */
  #synced = false;

  constructor(options: KubernetesDiscoveryOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.#delay = options.delay ?? abortableDelay;
    if (options.namespaces === 'spec') return;
    const namespaces = [...new Set(options.namespaces ?? [])].sort();
    for (const namespace of namespaces.length > 0 ? namespaces : [null]) this.#scopes.set(namespace, newScope(namespace));
  }

  get description(): string {
    const watched = [...this.#scopes.keys()].filter((n): n is string => n !== null).sort();
    if (this.#o.namespaces === 'spec') return `kubernetes EndpointSlices (namespaces of the spec: ${watched.length > 0 ? watched.join(', ') : 'none yet'})`;
    return `kubernetes EndpointSlices (${watched.length > 0 ? `namespaces ${watched.join(', ')}` : 'all namespaces'})`;
  }

  async start(onChange: (changed: ReadonlySet<string>) => void): Promise<void> {
    this.#onChange = onChange;
    for (const scope of this.#scopes.values()) scope.loop = this.#run(scope);
  }

  async stop(): Promise<void> {
    this.#stopping.abort();
    this.#onChange = null;
    for (const scope of this.#scopes.values()) {
      scope.ended.abort();
      scope.controller?.abort();
    }
    await Promise.all([...this.#scopes.values()].map((s) => s.loop));
  }

  /**
   * With `namespaces: 'spec'`: watch exactly these namespaces from now on. New ones are listed
   * (and `synced()` is false until they are); dropped ones stop being watched and their
   * services are forgotten. Ignored in the other modes.
   */
  follow(namespaces: ReadonlySet<string>): void {
    if (this.#o.namespaces !== 'spec' || this.#stopped) return;
    this.#followed = true;
    const changed = new Set<string>();
    for (const [namespace, scope] of this.#scopes) {
      if (namespace !== null && namespaces.has(namespace)) continue;
      scope.ended.abort();
      scope.controller?.abort();
      this.#scopes.delete(namespace);
      for (const [key, slice] of this.#slices) if (slice.namespace === namespace) this.#delete(key, changed);
    }
    for (const namespace of [...namespaces].sort()) {
      if (this.#scopes.has(namespace)) continue;
      const scope = newScope(namespace);
      this.#scopes.set(namespace, scope);
      if (this.#onChange) scope.loop = this.#run(scope);
    }
    this.#o.log.info({ type: 'discovery_namespaces', namespaces: [...namespaces].sort() }, this.description);
    this.#announce(changed);
  }

  synced(): boolean {
    return this.#synced;
  }

  state(): DiscoveryState {
    return { description: this.description, synced: this.#synced, error: this.#error, lastChangeAt: this.#lastChangeAt };
  }

  /** Answers once the namespace's watch (or the cluster-wide one) has listed, whatever other namespaces are doing. */
  instances(namespace: string, service: string, port: PortChoice): readonly CompiledEndpoint[] | undefined {
    if (!this.#listed(namespace)) return undefined;
    const keys = this.#byService.get(discoveredServiceKey(namespace, service));
    if (!keys) return [];
    return instancesFromSlices([...keys].sort().map((k) => this.#slices.get(k)!), port);
  }

  #listed(namespace: string): boolean {
    return (this.#scopes.get(namespace) ?? this.#scopes.get(null))?.listed ?? false;
  }

  get #stopped(): boolean {
    return this.#stopping.signal.aborted;
  }

  async #run(scope: Scope): Promise<void> {
    const log = this.#o.log;
    const ended = () => scope.ended.signal.aborted;
    while (!ended()) {
      try {
        if (scope.resourceVersion === null) await this.#list(scope);
        if (ended()) break;
        const outcome = await this.#watch(scope);
        log.debug({ type: 'discovery_watch_ended', namespace: scope.namespace, outcome, resourceVersion: scope.resourceVersion }, `EndpointSlice watch ended (${outcome})`);
        if (outcome === 'gone') {
          log.info({ type: 'discovery_relist', namespace: scope.namespace }, 'EndpointSlice watch expired (410 Gone); listing again');
          scope.resourceVersion = null;
        } else if (outcome === 'idle') {
          // Closed at once without a word: do not spin on a server that keeps doing that.
          await this.#delay(watchBackoffMs(++scope.failures, this.#random), scope.ended.signal);
        } else {
          scope.failures = 0;
        }
      } catch (err) {
        if (ended()) break;
        scope.failures++;
        const { code, message } = describeError(err);
        log.debug({ type: 'discovery_attempt_failed', code, namespace: scope.namespace, error: message, failures: scope.failures }, message);
        if (this.#error !== message) log.warn({ type: 'discovery_error', code, namespace: scope.namespace, error: message, synced: this.#synced }, `${message}; keeping the last known endpoints`);
        this.#error = message;
        this.#o.metrics?.discoveryErrors.inc({ code });
        await this.#delay(watchBackoffMs(scope.failures, this.#random), scope.ended.signal);
      }
    }
  }

  #recovered(): void {
    if (this.#error === null) return;
    this.#o.log.info({ type: 'discovery_recovered' }, 'EndpointSlice watch running again');
    this.#error = null;
  }

  /** Lists every slice of the scope (all pages), then replaces what is known of it in one step. */
  async #list(scope: Scope): Promise<void> {
    const api = this.#o.kubeConfig.makeApiClient(k8s.DiscoveryV1Api);
    const items: k8s.V1EndpointSlice[] = [];
    let token: string | undefined;
    let resourceVersion = '';
    do {
      const request = scope.namespace === null
        ? api.listEndpointSliceForAllNamespaces({ labelSelector: SERVICE_NAME_LABEL, limit: LIST_PAGE, ...(token ? { _continue: token } : {}) })
        : api.listNamespacedEndpointSlice({ namespace: scope.namespace, labelSelector: SERVICE_NAME_LABEL, limit: LIST_PAGE, ...(token ? { _continue: token } : {}) });
      const page = await withTimeout(request, 'listing EndpointSlices');
      items.push(...page.items);
      token = page.metadata?._continue || undefined;
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
      if (scope.ended.signal.aborted) return;
    } while (token);
    const fresh = new Map<string, DiscoveredSlice>();
    for (const item of items) {
      const slice = sliceOf(item);
      if (slice) fresh.set(`${slice.namespace}/${slice.name}`, slice);
    }
    const changed = new Set<string>();
    for (const [key, old] of this.#slices) {
      if (scope.namespace !== null && old.namespace !== scope.namespace) continue;
      if (!fresh.has(key)) this.#delete(key, changed);
    }
    for (const [key, slice] of fresh) this.#put(key, slice, changed);
    scope.resourceVersion = resourceVersion;
    scope.failures = 0;
    scope.listed = true;
    this.#recovered();
    this.#announce(changed);
  }

  /**
   * Recomputes whether every wanted scope is listed; on turning synced, every known service
   * counts as changed (nothing was announced meanwhile). Then tells the reconciler.
   */
  #announce(changed: Set<string>): void {
    const synced = (this.#o.namespaces !== 'spec' || this.#followed) && [...this.#scopes.values()].every((s) => s.listed);
    if (synced && !this.#synced) {
      for (const key of this.#byService.keys()) changed.add(key);
      this.#o.log.info({ type: 'discovery_synced', slices: this.#slices.size, services: this.#byService.size }, `listed ${this.#slices.size} EndpointSlices of ${this.#byService.size} services`);
    }
    if (synced !== this.#synced) this.#o.metrics?.discoverySynced.set(synced ? 1 : 0);
    const justSynced = synced && !this.#synced;
    this.#synced = synced;
    // Turning synced is news even when the cluster has no slices at all: the reconciler holds
    // its first push until it hears it.
    this.#emit(changed, justSynced);
  }

  /** Watches from the scope's resourceVersion until the watch ends: `gone` (relist), `idle` (closed at once), `closed` (resume). */
  #watch(scope: Scope): Promise<'gone' | 'closed' | 'idle'> {
    const path = scope.namespace === null ? '/apis/discovery.k8s.io/v1/endpointslices' : `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(scope.namespace)}/endpointslices`;
    const started = this.#now();
    return new Promise((resolve, reject) => {
      let gone = false;
      let failure: string | null = null;
      let events = 0;
      let ended = false;
      // Until the response starts, the library gives us no handle to abort: an attempt that
      // does not answer in time is abandoned (its late callbacks ignored, its request aborted
      // when it surfaces) and the loop retries.
      let abandoned = false;
      const connectTimer = setTimeout(() => {
        abandoned = true;
        reject(timeoutError('starting the EndpointSlice watch'));
      }, REQUEST_TIMEOUT_MS);
      const onEvent = (phase: string, obj: k8s.V1EndpointSlice & { code?: number; message?: string }) => {
        if (abandoned || scope.ended.signal.aborted) return;
        clearTimeout(connectTimer);
        events++;
        if (phase === 'ERROR') {
          if (obj.code === 410) gone = true;
          else failure = `watch error ${obj.code ?? ''}: ${obj.message ?? 'unknown'}`;
          return;
        }
        const changed = new Set<string>();
        if (phase === 'ADDED' || phase === 'MODIFIED') {
          const slice = sliceOf(obj);
          const key = `${obj.metadata?.namespace ?? 'default'}/${obj.metadata?.name ?? ''}`;
          if (slice) this.#put(key, slice, changed);
          else this.#delete(key, changed);
        } else if (phase === 'DELETED') {
          this.#delete(`${obj.metadata?.namespace ?? 'default'}/${obj.metadata?.name ?? ''}`, changed);
        }
        const rv = obj.metadata?.resourceVersion;
        if (rv) scope.resourceVersion = rv;
        this.#emit(changed);
      };
      const onDone = (err: unknown) => {
        clearTimeout(connectTimer);
        if (abandoned) return;
        ended = true;
        scope.controller = null;
        const e = err as { statusCode?: number; name?: string } | null;
        if (scope.ended.signal.aborted) return resolve('closed');
        if (gone || e?.statusCode === 410) return resolve('gone');
        if (e && e.name !== 'TimeoutError' && e.name !== 'AbortError') return reject(err);
        if (failure) return reject(new Error(failure));
        resolve(events === 0 && this.#now() - started < 1000 ? 'idle' : 'closed');
      };
      new k8s.Watch(this.#o.kubeConfig)
        .watch(path, { resourceVersion: scope.resourceVersion ?? '', allowWatchBookmarks: true, labelSelector: SERVICE_NAME_LABEL, timeoutSeconds: this.#o.watchTimeoutSeconds ?? WATCH_TIMEOUT_SECONDS }, onEvent, onDone)
        .then((controller) => {
          clearTimeout(connectTimer);
          if (abandoned) return controller.abort();
          if (ended) return;
          scope.controller = controller;
          if (scope.ended.signal.aborted) controller.abort();
          else this.#recovered();
        }, (err: unknown) => {
          clearTimeout(connectTimer);
          reject(err);
        });
    });
  }

  #put(key: string, slice: DiscoveredSlice, changed: Set<string>): void {
    const old = this.#slices.get(key);
    if (old && JSON.stringify(old) === JSON.stringify(slice)) return;
    if (old) this.#delete(key, changed);
    this.#slices.set(key, slice);
    const service = discoveredServiceKey(slice.namespace, slice.service);
    let keys = this.#byService.get(service);
    if (!keys) this.#byService.set(service, (keys = new Set()));
    keys.add(key);
    changed.add(service);
  }

  #delete(key: string, changed: Set<string>): void {
    const old = this.#slices.get(key);
    if (!old) return;
    this.#slices.delete(key);
    const service = discoveredServiceKey(old.namespace, old.service);
    const keys = this.#byService.get(service);
    keys?.delete(key);
    if (keys?.size === 0) this.#byService.delete(service);
    changed.add(service);
  }

  /** Tells the reconciler of changes to services in listed namespaces (others are not answered yet; they are announced when listed). */
  #emit(changed: ReadonlySet<string>, always = false): void {
    const unlisted = (key: string) => {
      const scope = this.#scopes.get(key.slice(0, key.indexOf('/'))) ?? this.#scopes.get(null);
      return scope !== undefined && !scope.listed;
    };
    const known = [...changed].filter((key) => !unlisted(key));
    if (known.length === 0 && !always) return;
    this.#lastChangeAt = this.#now();
    this.#onChange?.(new Set(known));
  }
}
