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

/** Emits the plan's configs; with `memo`, resource versions of unchanged bodies are reused (same output). */
export function emitMesh(plan: MeshPlan, memo?: ResourceVersionMemo): CompiledMesh {
  if (!memo) return emitWith(plan, makeResource);
  try {
    return emitWith(plan, (name, body) => memo.resource(name, body));
  } finally {
    memo.endEmit();
  }
}

function emitWith(plan: MeshPlan, makeResource: <B extends ResourceBody>(name: string, body: B) => Resource<B>): CompiledMesh {
  const shared = new Map<string, Resource>();
  for (const svc of plan.services.values()) {
    shared.set(`route/${svc.name}`, makeResource(`route/${svc.name}`, svc.route));
    shared.set(`cluster/${svc.name}`, makeResource(`cluster/${svc.name}`, svc.cluster));
    shared.set(`endpoints/${svc.name}`, makeResource(`endpoints/${svc.name}`, svc.endpoints));
    // A consumer table shares its resource name with the producer table; kept apart here by
    // the caller namespace it serves (a space never appears in a resource name).
    for (const [ns, table] of svc.consumers) shared.set(`route/${svc.name} ${ns}`, makeResource(`route/${svc.name}`, table.route));
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
    const names = new Set<string>();
    for (const target of [...open, ...(byCaller.get(svc.name) ?? [])]) {
      const targetPlan = plan.services.get(target)!;
      const consumer = targetPlan.consumers.get(svc.namespace);
      names.add(consumer ? `route/${target} ${svc.namespace}` : `route/${target}`);
      for (const dep of consumer ? consumer.dependencies : targetPlan.dependencies) {
        names.add(`cluster/${dep}`);
        names.add(`endpoints/${dep}`);
      }
    }
    const resources: Resource[] = [makeResource('inbound', svc.inbound)];
    for (const name of names) resources.push(shared.get(name)!);
    configs.set(svc.name, makeProxyConfig(svc.name, resources));
  }
  return { mesh: plan.settings.name, version: versionOf([...configs.values()].map((c) => ({ name: c.service, version: c.version }))), configs };
}

export function meshIndex(mesh: CompiledMesh): MeshIndex {
  const services: Record<string, MeshIndex['services'][string]> = {};
  // A service outside `default` is written as `<namespace>/<name>.json`: a folder per namespace.
  for (const [name, config] of mesh.configs) services[name] = { version: config.version, file: `${name}.json`, resources: config.resources.length };
  return { mesh: mesh.mesh, version: mesh.version, services };
}
