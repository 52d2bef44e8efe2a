/**
 * The sidecar's config: validate → freeze → swap, at one boundary for every source
 * (a file at start, an admin write, the reconciler). A config that fails validation is
 * never applied; the running one stays. Requests capture the snapshot current when they
 * start and finish on it, whatever is swapped in meanwhile.
 */
import { readFileSync, renameSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { applyDelta, type ConfigDelta } from '../config/delta.ts';
import { checkProxyConfig } from '../config/validate-config.ts';
import type { ClusterBody, EndpointsBody, InboundBody, ProxyConfig, RouteBody } from '../config/types.ts';
import { RouteTable } from '../config/router.ts';
import { parseServiceKey } from '../spec/names.ts';
import { systemWallClock, type WallClock } from './clock.ts';

/** An applied config, frozen, with what per-request work needs precomputed. */
export interface Snapshot {
  readonly config: ProxyConfig;
  readonly version: string;
  readonly service: string;
  /** Namespace of the local service: where a bare host name (`checkout`) is looked up. */
  readonly namespace: string;
  readonly inbound: InboundBody;
  /** Route tables by destination service. */
  readonly routes: ReadonlyMap<string, RouteTable>;
  readonly clusters: ReadonlyMap<string, ClusterBody>;
  readonly endpoints: ReadonlyMap<string, EndpointsBody>;
  /** `.<trust domain>`: callers may name a service with it (`checkout.shop.local`). */
  readonly hostSuffix: string;
  /** When it was applied (epoch ms), for status. */
  readonly appliedAt: number;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** Builds a snapshot of a config that passed checkProxyConfig. @throws on regexes the linear engine rejects. */
export function buildSnapshot(config: ProxyConfig, now: number = Date.now()): Snapshot {
  deepFreeze(config);
  const routes = new Map<string, RouteTable>();
  const clusters = new Map<string, ClusterBody>();
  const endpoints = new Map<string, EndpointsBody>();
  let inbound: InboundBody | undefined;
  for (const r of config.resources) {
    const slash = r.name.indexOf('/');
    const kind = slash < 0 ? r.name : r.name.slice(0, slash);
    const service = r.name.slice(slash + 1);
    if (kind === 'inbound') inbound = r.body as InboundBody;
    else if (kind === 'route') routes.set(service, new RouteTable(r.body as RouteBody));
    else if (kind === 'cluster') clusters.set(service, r.body as ClusterBody);
    else if (kind === 'endpoints') endpoints.set(service, r.body as EndpointsBody);
  }
  return { config, version: config.version, service: config.service, namespace: parseServiceKey(config.service).namespace, inbound: inbound!, routes, clusters, endpoints, hostSuffix: `.${inbound!.trustDomain}`, appliedAt: now };
}

export type ApplyResult =
  /**
   * `stored`: with a state file, whether this config is now kept there (false when writing it
   * failed: the config runs all the same); absent without one, or when nothing changed.
   */
  | { readonly ok: true; readonly version: string; readonly changed: boolean; readonly stored?: boolean }
  | { readonly ok: false; readonly status: 409 | 422; readonly code: 'invalid_config' | 'wrong_service' | 'base_mismatch' | 'invalid_delta'; readonly reasons: readonly string[] };

export interface ConfigStoreOptions {
  /** Where the last accepted config is kept (written atomically); none to keep nothing. */
  readonly stateFile?: string;
  /** Wall time for `Snapshot.appliedAt` (default: the system clock). */
  readonly wallClock?: WallClock;
  /** The service this sidecar serves; configs for another are refused. Taken from the first config when absent. */
  readonly service?: string;
  /** Called after each swap, before apply returns (metrics, cluster state, logs). */
  readonly onApplied?: (snapshot: Snapshot, previous: Snapshot | undefined, source: string) => void;
  readonly onRejected?: (reasons: readonly string[], source: string) => void;
  /**
   * Called after a config was applied but could not be written to the state file (a
   * read-only or full disk, a path that is no folder). The config runs regardless; the
   * state file still holds `storedVersion` (undefined when none could be read), which a
   * restart without --config would start from.
   */
  readonly onStoreFailed?: (error: Error, version: string, storedVersion: string | undefined, source: string) => void;
}

export class ConfigStore {
  #current: Snapshot | undefined;
  /** Version of the config in the state file, as far as this process knows. */
  #storedVersion: string | undefined;
  #service: string | undefined;
  readonly #options: ConfigStoreOptions;

  constructor(options: ConfigStoreOptions = {}) {
    this.#options = options;
    this.#service = options.service;
  }

  /** The snapshot new requests use; undefined until a config is applied. */
  get current(): Snapshot | undefined {
    return this.#current;
  }

  /** Validates a whole config and swaps it in. `source` names where it came from, for logs and metrics. */
  apply(input: unknown, source: string): ApplyResult {
    const checked = checkProxyConfig(input);
    if (!checked.ok) return this.#reject(422, 'invalid_config', checked.reasons, source);
    return this.#swap(checked.config, source);
  }

  /** Applies a delta on the running config: 409 when its base is not what runs, 422 when the result is invalid. */
  applyDelta(input: unknown, source: string): ApplyResult {
    const current = this.#current;
    const delta = input as ConfigDelta;
    if (typeof delta !== 'object' || delta === null || typeof delta.base !== 'string' || typeof delta.target !== 'string' || !Array.isArray(delta.resources) || !Array.isArray(delta.removed)) {
      return this.#reject(422, 'invalid_delta', ['a delta needs service, base, target, resources[] and removed[]'], source);
    }
    if (!current) return this.#reject(409, 'base_mismatch', ['no config is running yet; send a whole config'], source);
    const outcome = applyDelta(current.config, delta);
    if (!outcome.ok) return this.#reject(outcome.code === 'base_mismatch' ? 409 : 422, outcome.code === 'base_mismatch' ? 'base_mismatch' : 'invalid_delta', [outcome.reason], source);
    return this.apply(outcome.config, source);
  }

  /** The config stored by an earlier run, if any and if it is still valid. */
  loadStored(): ProxyConfig | undefined {
    if (!this.#options.stateFile) return undefined;
    try {
      const checked = checkProxyConfig(JSON.parse(readFileSync(this.#options.stateFile, 'utf8')));
      if (checked.ok) this.#storedVersion = checked.config.version;
      return checked.ok ? checked.config : undefined;
    } catch {
      return undefined;
    }
  }

  #swap(config: ProxyConfig, source: string): ApplyResult {
    if (this.#service !== undefined && config.service !== this.#service) {
      return this.#reject(422, 'wrong_service', [`config is for service "${config.service}", this sidecar serves "${this.#service}"`], source);
    }
    const previous = this.#current;
    if (previous?.version === config.version) return { ok: true, version: config.version, changed: false };
    let snapshot: Snapshot;
    try {
      snapshot = buildSnapshot(config, (this.#options.wallClock ?? systemWallClock).now());
    } catch (err) {
      return this.#reject(422, 'invalid_config', [(err as Error).message], source);
    }
    this.#service = config.service;
    this.#current = snapshot;
    // Applied and reported before it is written: a disk that cannot take it must not
    // leave metrics, logs and callers telling of the old config while the new one runs.
    this.#options.onApplied?.(snapshot, previous, source);
    const stored = this.#persist(config, source);
    return { ok: true, version: config.version, changed: true, ...(stored === undefined ? {} : { stored }) };
  }

  #reject(status: 409 | 422, code: Extract<ApplyResult, { ok: false }>['code'], reasons: readonly string[], source: string): ApplyResult {
    this.#options.onRejected?.(reasons, source);
    return { ok: false, status, code, reasons };
  }

  /**
   * Writes the config so that a crash leaves the old file or the new one, never half of
   * one. Never throws: a failure (read-only or full disk, a path that is no folder) is
   * reported through `onStoreFailed` and the temporary file removed. Undefined without a
   * state file; else whether the config is now stored.
   */
  #persist(config: ProxyConfig, source: string): boolean | undefined {
    const file = this.#options.stateFile;
    if (!file) return undefined;
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(tmp, JSON.stringify(config), { mode: 0o600 });
      renameSync(tmp, file);
      this.#storedVersion = config.version;
      return true;
    } catch (err) {
      try {
        rmSync(tmp, { force: true });
      } catch {
        // Nothing more to do: the folder itself is what failed.
      }
      this.#options.onStoreFailed?.(err as Error, config.version, this.#storedVersion, source);
      return false;
    }
  }
}
