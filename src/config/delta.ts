/**
 * Deltas between proxy configs of one service: what to add or replace and what to remove.
 * A delta names the version it applies on (`base`) and the version it yields (`target`),
 * so a sidecar can refuse one that does not fit what it runs.
 *
 * `updateFor` is the one place that decides what a sidecar is sent: nothing, a delta
 * against what it holds, or a whole config. The reconciler uses it for every push (git
 * revisions and endpoint changes alike); `diffConfigs` is the same computation for two
 * whole configs.
 */
import { makeProxyConfig } from './resources.ts';
import type { ProxyConfig, Resource } from './types.ts';

export interface ConfigDelta {
  readonly service: string;
  readonly base: string;
  readonly target: string;
  /** Resources new in the target or changed since the base. */
  readonly resources: readonly Resource[];
  /** Names of base resources the target no longer has (sorted). */
  readonly removed: readonly string[];
}

/** What a sidecar holds, as it said on subscribe or as it acknowledged: its version and each resource's version. */
export interface Holding {
  readonly version: string;
  /** Resource name → resource version. */
  readonly resources: ReadonlyMap<string, string>;
}

/** What to send a sidecar so that it runs a target config. */
export type ConfigUpdate =
  /** It already runs the target. */
  | { readonly kind: 'none' }
  /** It holds nothing we can diff against: the whole config. */
  | { readonly kind: 'config'; readonly config: ProxyConfig }
  /** Changed and removed resources against what it holds. */
  | { readonly kind: 'delta'; readonly delta: ConfigDelta };

/** The holding of a whole config. */
export function holdingOf(config: ProxyConfig): Holding {
  return { version: config.version, resources: new Map(config.resources.map((r) => [r.name, r.version])) };
}

/**
 * The delta that turns `held` into `target`: resources whose version differs or that are
 * new, and names held but no longer wanted. Resource versions are content hashes, so an
 * unchanged resource is never resent, whichever input (a revision, an endpoint change)
 * produced the target.
 */
export function deltaAgainst(held: Holding, target: ProxyConfig): ConfigDelta {
  const wanted = new Set(target.resources.map((r) => r.name));
  return {
    service: target.service,
    base: held.version,
    target: target.version,
    resources: target.resources.filter((r) => held.resources.get(r.name) !== r.version),
    removed: [...held.resources.keys()].filter((name) => !wanted.has(name)).sort(),
  };
}

/**
 * What a sidecar holding `held` (null: nothing, or something we cannot diff against) needs
 * to run `target`: nothing when the versions are equal, else a delta, else the whole config.
 */
export function updateFor(held: Holding | null, target: ProxyConfig): ConfigUpdate {
  if (held === null) return { kind: 'config', config: target };
  if (held.version === target.version) return { kind: 'none' };
  return { kind: 'delta', delta: deltaAgainst(held, target) };
}

/** The delta that turns `from` into `to` (both of one service). */
export function diffConfigs(from: ProxyConfig, to: ProxyConfig): ConfigDelta {
  return deltaAgainst(holdingOf(from), to);
}

export type DeltaOutcome = { ok: true; config: ProxyConfig } | { ok: false; code: 'base_mismatch' | 'target_mismatch' | 'wrong_service'; reason: string };

/**
 * Applies a delta on `current`. Fails without side effects when the delta's base is not
 * `current.version`, or when the result's version is not the promised target (a delta
 * computed against something else, or tampered with).
 */
export function applyDelta(current: ProxyConfig, delta: ConfigDelta): DeltaOutcome {
  if (delta.service !== current.service) return { ok: false, code: 'wrong_service', reason: `delta is for service "${delta.service}", this sidecar runs "${current.service}"` };
  if (delta.base !== current.version) return { ok: false, code: 'base_mismatch', reason: `delta applies on version ${delta.base}, this sidecar runs ${current.version}` };
  const byName = new Map(current.resources.map((r) => [r.name, r]));
  for (const name of delta.removed) byName.delete(name);
  for (const r of delta.resources) byName.set(r.name, r);
  const config = makeProxyConfig(current.service, byName.values());
  if (config.version !== delta.target) return { ok: false, code: 'target_mismatch', reason: `delta yields version ${config.version}, not the promised ${delta.target}` };
  return { ok: true, config };
}
