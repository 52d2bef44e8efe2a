/**
 * Deltas between two proxy configs of one service: what to add or replace and what to
 * remove. A delta names the version it applies on (`base`) and the version it yields
 * (`target`), so a sidecar can refuse one that does not fit what it runs.
 */
import { makeProxyConfig } from './resources.ts';
import type { ProxyConfig, Resource } from './types.ts';

export interface ConfigDelta {
  readonly service: string;
  readonly base: string;
  readonly target: string;
  /** Resources new in the target or changed since the base. */
  readonly resources: readonly Resource[];
  /** Names of base resources the target no longer has. */
  readonly removed: readonly string[];
}

/** The delta that turns `from` into `to` (both of one service). */
export function diffConfigs(from: ProxyConfig, to: ProxyConfig): ConfigDelta {
  const old = new Map(from.resources.map((r) => [r.name, r.version]));
  const next = new Set(to.resources.map((r) => r.name));
  return {
    service: to.service,
    base: from.version,
    target: to.version,
    resources: to.resources.filter((r) => old.get(r.name) !== r.version),
    removed: from.resources.filter((r) => !next.has(r.name)).map((r) => r.name),
  };
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
