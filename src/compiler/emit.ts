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

export function emitMesh(plan: MeshPlan): CompiledMesh {
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
