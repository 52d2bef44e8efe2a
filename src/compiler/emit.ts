/**
 * Stage 5: emit. Turns the mesh plan into one proxy config per meshed service. Each
 * resource is built and hashed once and shared by every config that carries it; a
 * service carries outbound resources only for services it may call (and the backends
 * their routes send to), so config size grows with a service's neighbours, not the mesh.
 *
 * Configs are per calling service, so GAMMA consumer routes cost nothing at runtime: a
 * caller in a namespace with consumer routes for a service carries that namespace's table
 * as `route/<service>`; every other caller carries the producer table under the same name.
 */
import { makeProxyConfig, makeResource, versionOf } from '../config/resources.ts';
import type { ProxyConfig, Resource } from '../config/types.ts';
import type { CheckDelta, MeshPlan, ServicePlan } from './check.ts';
import type { CompileMemo } from './memo.ts';

/** The compiler's output for a whole mesh. */
export interface CompiledMesh {
  /** Name of the Mesh document (`default` without one). */
  readonly mesh: string;
  /** Hash over every config's service and version: equal when nothing changed anywhere. */
  readonly version: string;
  /** One config per meshed service, by service key (sorted). */
  readonly configs: ReadonlyMap<string, ProxyConfig>;
}

/** The index written beside the configs: `index.json`. */
export interface MeshIndex {
  readonly mesh: string;
  readonly version: string;
  readonly services: Record<string, { readonly version: string; readonly file: string; readonly resources: number }>;
}

/** Emits the plan's configs (pure). */
export function emitMesh(plan: MeshPlan): CompiledMesh {
  const state = newEmitState();
  emitAll(plan, state);
  return finish(plan, state);
}

/** The resources a service's plan makes, which every caller shares: route, cluster, endpoints, and consumer route tables by caller namespace. */
interface SharedResources {
  readonly route: Resource;
  readonly cluster: Resource;
  readonly endpoints: Resource;
  readonly consumers: ReadonlyMap<string, Resource>;
}

/** What an emit keeps for the next one (the incremental compiler's; the next emit takes it over). */
export interface EmitState {
  readonly shared: Map<string, SharedResources>;
  /** Services open to every caller, in plan order. */
  open: string[];
  /** The services each service may call (among those not open), in plan order. */
  byCaller: Map<string, string[]>;
  readonly configs: Map<string, ProxyConfig>;
}

function newEmitState(): EmitState {
  return { shared: new Map(), open: [], byCaller: new Map(), configs: new Map() };
}

function sharedResources(svc: ServicePlan): SharedResources {
  const consumers = new Map<string, Resource>();
  // A consumer table shares its resource name with the producer table; each serves the callers of one namespace.
  for (const [ns, table] of svc.consumers) consumers.set(ns, makeResource(`route/${svc.name}`, table.route));
  return {
    route: makeResource(`route/${svc.name}`, svc.route),
    cluster: makeResource(`cluster/${svc.name}`, svc.cluster),
    endpoints: makeResource(`endpoints/${svc.name}`, svc.endpoints),
    consumers,
  };
}

/** Who may call what, inverted once: open targets apply to everyone. */
function invertCallers(plan: MeshPlan, state: EmitState): void {
  state.open = [];
  state.byCaller = new Map();
  for (const svc of plan.services.values()) {
    if (svc.callers === 'everyone') state.open.push(svc.name);
    else
      for (const c of svc.callers) {
        const list = state.byCaller.get(c);
        if (list) list.push(svc.name);
        else state.byCaller.set(c, [svc.name]);
      }
  }
}

/** `invertCallers` after the plans in `before` changed (or came, or went): lists kept in plan order (by key). */
function patchCallers(plan: MeshPlan, state: EmitState, before: ReadonlyMap<string, ServicePlan | undefined>): void {
  const insert = (list: string[], name: string) => {
    let i = 0;
    while (i < list.length && list[i]! < name) i++;
    list.splice(i, 0, name);
  };
  const remove = (list: string[] | undefined, name: string) => {
    const i = list ? list.indexOf(name) : -1;
    if (i >= 0) list!.splice(i, 1);
  };
  for (const [name, old] of before) {
    const now = plan.services.get(name);
    if (old?.callers === now?.callers) continue;
    if (old) {
      if (old.callers === 'everyone') remove(state.open, name);
      else for (const c of old.callers) remove(state.byCaller.get(c), name);
    }
    if (now) {
      if (now.callers === 'everyone') insert(state.open, name);
      else
        for (const c of now.callers) {
          let list = state.byCaller.get(c);
          if (!list) state.byCaller.set(c, (list = []));
          insert(list, name);
        }
    }
  }
}

/** The config of meshed service `svc`: its inbound, and what it needs of each service it may call. */
function configOf(plan: MeshPlan, state: EmitState, svc: ServicePlan, units: CompileMemo | undefined): ProxyConfig {
  const picked = new Set<Resource>();
  const add = (target: string) => {
    const targetPlan = plan.services.get(target)!;
    const consumer = targetPlan.consumers.get(svc.namespace);
    const resources = state.shared.get(target)!;
    picked.add(consumer ? resources.consumers.get(svc.namespace)! : resources.route);
    for (const dep of consumer ? consumer.dependencies : targetPlan.dependencies) {
      const d = state.shared.get(dep)!;
      picked.add(d.cluster);
      picked.add(d.endpoints);
    }
  };
  for (const target of state.open) add(target);
  for (const target of state.byCaller.get(svc.name) ?? []) add(target);
  const inbound = units ? units.unit('inbound', svc, [], () => makeResource('inbound', svc.inbound!)) : makeResource('inbound', svc.inbound!);
  const resources: Resource[] = [inbound, ...picked];
  return units ? units.unit('config', svc.inbound!, resources, () => makeProxyConfig(svc.name, resources)) : makeProxyConfig(svc.name, resources);
}

function emitAll(plan: MeshPlan, state: EmitState, units?: CompileMemo): void {
  state.shared.clear();
  state.configs.clear();
  for (const svc of plan.services.values()) state.shared.set(svc.name, units ? units.unit('resources', svc, [], () => sharedResources(svc)) : sharedResources(svc));
  invertCallers(plan, state);
  for (const svc of plan.services.values()) if (svc.inbound) state.configs.set(svc.name, configOf(plan, state, svc, units));
}

/** The compiled mesh; its configs are the state's own map unless `copy` (the incremental compiler hands out its working state). */
function finish(plan: MeshPlan, state: EmitState, copy = true): CompiledMesh {
  const configs = copy ? new Map(state.configs) : state.configs;
  return { mesh: plan.settings.name, version: versionOf([...configs.values()].map((c) => ({ name: c.service, version: c.version }))), configs };
}

/**
 * `emitMesh` for the incremental compiler: the same configs. Resources and configs of plans
 * that are the same objects as last time are reused from `memo`. With `delta` (the services
 * whose plans changed, from a patched check, see check.ts), only the configs that carry
 * something of those services are built again: their own, their callers', and the callers
 * of services whose routes send to them (`dependents`).
 */
export function emitIncrementally(
  plan: MeshPlan,
  memo: { readonly units: CompileMemo },
  previous: EmitState | undefined,
  delta: CheckDelta | undefined,
  dependents: ReadonlyMap<string, ReadonlySet<string>>,
): { mesh: CompiledMesh; state: EmitState } {
  if (!previous || !delta) {
    const state = previous ?? newEmitState();
    emitAll(plan, state, memo.units);
    return { mesh: finish(plan, state, false), state };
  }
  const state = previous;
  const rebuild = new Set<string>();
  let everyone = false;
  const callersOf = (svc: ServicePlan | undefined) => {
    if (!svc) return;
    if (svc.callers === 'everyone') everyone = true;
    else for (const c of svc.callers) rebuild.add(c);
  };
  let added = false;
  for (const name of delta.changed) {
    const svc = plan.services.get(name);
    if (svc) state.shared.set(name, memo.units.unit('resources', svc, [], () => sharedResources(svc)));
    else {
      state.shared.delete(name);
      state.configs.delete(name);
    }
    if (svc && !delta.before.get(name)) added = true;
    rebuild.add(name);
    // Who may call it now, and who could before (those lose it from their configs).
    callersOf(svc);
    callersOf(delta.before.get(name));
    for (const d of dependents.get(name) ?? []) callersOf(plan.services.get(d));
  }
  if (delta.graphChanged) patchCallers(plan, state, delta.before);
  for (const name of everyone ? plan.services.keys() : rebuild) {
    const svc = plan.services.get(name);
    if (svc?.inbound) {
      // A service that joined the mesh gets a config it had not: it goes in plan order below.
      if (!state.configs.has(name)) added = true;
      state.configs.set(name, configOf(plan, state, svc, memo.units));
    } else state.configs.delete(name);
  }
  // Configs in plan order, as a full emit makes them.
  if (added) {
    const ordered = new Map<string, ProxyConfig>();
    for (const name of plan.services.keys()) {
      const config = state.configs.get(name);
      if (config) ordered.set(name, config);
    }
    state.configs.clear();
    for (const [name, config] of ordered) state.configs.set(name, config);
  }
  return { mesh: finish(plan, state, false), state };
}

export function meshIndex(mesh: CompiledMesh): MeshIndex {
  const services: Record<string, MeshIndex['services'][string]> = {};
  // A service outside `default` is written as `<namespace>/<name>.json`: a folder per namespace.
  for (const [name, config] of mesh.configs) services[name] = { file: `${name}.json`, resources: config.resources.length, version: config.version };
  return { mesh: mesh.mesh, services, version: mesh.version };
}
