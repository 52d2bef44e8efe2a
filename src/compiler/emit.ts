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
import { sha256 } from '../config/canonical.ts';
import type { ProxyConfig, Resource, ResourceBody } from '../config/types.ts';
import type { MeshPlan } from './check.ts';
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

/**
 * Resource versions remembered across emits, for the incremental compiler. A version is the
 * sha256 of the body's canonical (key-sorted) JSON; building that form is most of emit's
 * cost. The memo is keyed by the sha256 of the body's JSON as built (keys in the order the
 * checker wrote them), which costs one native `JSON.stringify` and a hash: an equal key
 * means an equal body, so an equal version. Holds the versions of the last emit only.
 */
export class ResourceVersionMemo {
  #previous = new Map<string, string>();
  #current = new Map<string, string>();

  /** `makeResource(name, body)`, its version reused when the same body was emitted last time. */
  resource<B extends ResourceBody>(name: string, body: B): Resource<B> {
    const key = sha256(`${name}\u0000${JSON.stringify(body)}`);
    let version = this.#current.get(key) ?? this.#previous.get(key);
    if (version === undefined) version = makeResource(name, body).version;
    this.#current.set(key, version);
    return { name, version, body };
  }

  /** Ends an emit: what it used is kept for the next one, the rest let go. */
  endEmit(): void {
    this.#previous = this.#current;
    this.#current = new Map();
  }
}

/**
 * Emits the plan's configs. With `memo` (the incremental compiler's), a service whose plan is
 * the same object as last time keeps its resources, and a config whose resources are all
 * the same objects is itself reused; resource versions of bodies built anew but equal to
 * last time's are reused too. The output is the same either way.
 */
export function emitMesh(plan: MeshPlan, memo?: { readonly units: CompileMemo; readonly versions: ResourceVersionMemo }): CompiledMesh {
  if (!memo) return emitWith(plan, makeResource);
  try {
    return emitWith(plan, (name, body) => memo.versions.resource(name, body), memo.units);
  } finally {
    memo.versions.endEmit();
  }
}

/** The resources a service's plan makes, which every caller shares: route, cluster, endpoints, and consumer route tables by caller namespace. */
interface SharedResources {
  readonly route: Resource;
  readonly cluster: Resource;
  readonly endpoints: Resource;
  readonly consumers: ReadonlyMap<string, Resource>;
}

function emitWith(plan: MeshPlan, makeResource: <B extends ResourceBody>(name: string, body: B) => Resource<B>, units?: CompileMemo): CompiledMesh {
  const unit = <T>(kind: string, key: object, deps: readonly unknown[], compute: () => T): T => (units ? units.unit(kind, key, deps, compute) : compute());
  const shared = new Map<string, SharedResources>();
  for (const svc of plan.services.values()) {
    shared.set(
      svc.name,
      unit('resources', svc, [], () => {
        const consumers = new Map<string, Resource>();
        // A consumer table shares its resource name with the producer table; each serves the callers of one namespace.
        for (const [ns, table] of svc.consumers) consumers.set(ns, makeResource(`route/${svc.name}`, table.route));
        return {
          route: makeResource(`route/${svc.name}`, svc.route),
          cluster: makeResource(`cluster/${svc.name}`, svc.cluster),
          endpoints: makeResource(`endpoints/${svc.name}`, svc.endpoints),
          consumers,
        };
      }),
    );
  }

  // Who may call what, inverted once: open targets apply to everyone.
  const open: string[] = [];
  const byCaller = new Map<string, string[]>();
  for (const svc of plan.services.values()) {
    if (svc.callers === 'everyone') open.push(svc.name);
    else
      for (const c of svc.callers) {
        const list = byCaller.get(c);
        if (list) list.push(svc.name);
        else byCaller.set(c, [svc.name]);
      }
  }

  const configs = new Map<string, ProxyConfig>();
  for (const svc of plan.services.values()) {
    if (!svc.inbound) continue;
    const picked = new Set<Resource>();
    for (const target of [...open, ...(byCaller.get(svc.name) ?? [])]) {
      const targetPlan = plan.services.get(target)!;
      const consumer = targetPlan.consumers.get(svc.namespace);
      const resources = shared.get(target)!;
      picked.add(consumer ? resources.consumers.get(svc.namespace)! : resources.route);
      for (const dep of consumer ? consumer.dependencies : targetPlan.dependencies) {
        picked.add(shared.get(dep)!.cluster);
        picked.add(shared.get(dep)!.endpoints);
      }
    }
    const inbound = unit('inbound', svc, [], () => makeResource('inbound', svc.inbound!));
    const resources: Resource[] = [inbound, ...picked];
    configs.set(svc.name, unit('config', svc.inbound, resources, () => makeProxyConfig(svc.name, resources)));
  }
  const entries = [...configs.values()];
  const version = unit('mesh-version', plan.settings, entries, () => versionOf(entries.map((c) => ({ name: c.service, version: c.version }))));
  return { mesh: plan.settings.name, version, configs };
}

export function meshIndex(mesh: CompiledMesh): MeshIndex {
  const services: Record<string, MeshIndex['services'][string]> = {};
  // A service outside `default` is written as `<namespace>/<name>.json`: a folder per namespace.
  for (const [name, config] of mesh.configs) services[name] = { version: config.version, file: `${name}.json`, resources: config.resources.length };
  return { mesh: mesh.mesh, version: mesh.version, services };
}
