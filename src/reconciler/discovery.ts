/**
 * Discovery: the reconciler's second input beside the git source. Git says what the mesh
 * is (routes, policies, which services take their instances from where); a discovery
 * says which instances those services have right now. Both meet in one snapshot
 * (`snapshotOf`), and the reconciler turns each snapshot into per-sidecar deltas with the
 * one delta function of `config/delta.ts`. An endpoint change never waits for a commit, and
 * endpoints never go into git.
 */
import type { CompiledMesh } from '../compiler/emit.ts';
import { makeProxyConfig, makeResource, versionOf } from '../config/resources.ts';
import type { ClusterBody, CompiledEndpoint, EndpointsBody, ProxyConfig, Resource } from '../config/types.ts';

/**
 * Which port a discovered instance is called on:
 * - `inbound`: the instance runs a sidecar (a meshed service): the mesh's sidecar inbound
 *   port, the same port the compiler gives meshed static endpoints that name none;
 * - `named`: an unmeshed instance: the discovery's port with that name (string) or number,
 *   or with `null` its only port (when it lists several, the endpoint's port stays null and
 *   the caller's sidecar uses the called service port's targetPort, as for static endpoints).
 */
export type PortChoice = { readonly kind: 'inbound'; readonly port: number } | { readonly kind: 'named'; readonly port: string | number | null };

/** Where a discovery stands, for status and metrics. */
export interface DiscoveryState {
  /** One line for people: `kubernetes EndpointSlices (all namespaces)`. */
  readonly description: string;
  /** Whether a full list has been read at least once (the instances it answers are then complete). */
  readonly synced: boolean;
  /** The last failure, until the discovery recovers (null: healthy). Endpoints are then the last ones known. */
  readonly error: string | null;
  /** When instances last changed (epoch ms), null before the first list. */
  readonly lastChangeAt: number | null;
}

/**
 * A source of instances for services whose endpoints come from outside git (Kubernetes
 * EndpointSlices). Contract:
 * - `start` begins watching and resolves without waiting for the first list; once the first
 *   full list is read, `synced()` turns true and `onChange` is called with every service it
 *   knows;
 * - `onChange(changed)` names the services (`namespace/name`, always with the namespace)
 *   whose instances may have changed; calls are never made after `stop` resolved;
 * - `instances` answers from memory: undefined before the first full list, afterwards the
 *   current instances (empty when the service has none), sorted by address then port and
 *   without duplicates; a failure of the underlying watch never empties it — the last known
 *   instances stay until the discovery hears otherwise;
 * - returned arrays and endpoints are immutable.
 */
export interface Discovery {
  readonly description: string;
  start(onChange: (changed: ReadonlySet<string>) => void): Promise<void>;
  stop(): Promise<void>;
  instances(namespace: string, service: string, port: PortChoice): readonly CompiledEndpoint[] | undefined;
  synced(): boolean;
  state(): DiscoveryState;
  /**
   * Optional: the namespaces the applied spec takes endpoints from, told on every revision,
   * for a discovery that watches only those. A namespace it starts watching makes `synced()`
   * false until it is listed (and calls `onChange` when it is).
   */
  follow?(namespaces: ReadonlySet<string>): void;
}

/** The namespaces whose Kubernetes Services a compiled mesh takes endpoints from. */
export function discoveredNamespaces(mesh: CompiledMesh): Set<string> {
  const namespaces = new Set<string>();
  for (const config of mesh.configs.values()) {
    for (const r of config.resources) {
      const k8s = r.name.startsWith('endpoints/') ? (r.body as EndpointsBody).kubernetes : undefined;
      if (k8s) namespaces.add(k8s.namespace);
    }
  }
  return namespaces;
}

/** `namespace/name` of a discovered service: the key `onChange` uses (unlike service keys, it always names the namespace). */
export function discoveredServiceKey(namespace: string, service: string): string {
  return `${namespace}/${service}`;
}

/** Orders endpoints as the compiler orders static ones: by address, then port (null first). */
export function compareEndpoints(a: CompiledEndpoint, b: CompiledEndpoint): number {
  return a.address < b.address ? -1 : a.address > b.address ? 1 : (a.port ?? 0) - (b.port ?? 0);
}

/** A compiled mesh with the discovered instances filled in: what sidecars are sent. Immutable. */
export interface Snapshot {
  /** Same shape as the compiler's output: configs by service key, `version` over them. */
  readonly mesh: CompiledMesh;
  /** Services (`namespace/name`) whose instances this snapshot took from the discovery. */
  readonly discovered: ReadonlySet<string>;
  /**
   * Backends that callers' configs hold with no instance at all (service keys, sorted). The
   * snapshot is still consistent — every route names a cluster and endpoints resource — but
   * calls to them fail with 503 until instances appear.
   */
  readonly withoutEndpoints: readonly string[];
}

/**
 * The snapshot of `mesh` with instances from `discovery`: every `endpoints/<key>` resource
 * whose body names `kubernetes` gets `static` filled (new content hash), and every config
 * holding one gets its new version. Pure apart from reading the discovery's memory.
 *
 * Whether an instance runs a sidecar comes from the `cluster/<key>` resource beside the
 * endpoints (callers always hold both); meshed instances are called on `inboundPort`.
 * A service the discovery has not listed yet keeps the compiler's empty list — the
 * reconciler never pushes before the first full list, so that only happens for services
 * a discovery does not watch.
 */
/** For configs with no Kubernetes endpoints: the services whose endpoints they hold empty (null for a config with some). */
const withoutKubernetes = new WeakMap<ProxyConfig, readonly string[] | null>();

/**
 * What `snapshotOf` needs of a config without Kubernetes endpoints (the services whose
 * endpoints it holds empty), worked out once per config object; undefined for a config with
 * Kubernetes endpoints, which every snapshot fills from the discovery. The compile worker's
 * client calls it as configs arrive.
 */
export function prepareForSnapshot(config: ProxyConfig): readonly string[] | undefined {
  let plain = withoutKubernetes.get(config);
  if (plain === undefined) {
    let empty: string[] | null = [];
    for (const r of config.resources) {
      if (!r.name.startsWith('endpoints/')) continue;
      const body = r.body as EndpointsBody;
      if (body.kubernetes) {
        empty = null;
        break;
      }
      if (body.static.length === 0 && body.dns === null) empty.push(r.name.slice('endpoints/'.length));
    }
    plain = empty;
    withoutKubernetes.set(config, plain);
  }
  return plain ?? undefined;
}

export function snapshotOf(mesh: CompiledMesh, inboundPort: number, discovery: Discovery | undefined): Snapshot {
  const filled = new Map<string, Resource>();
  const discovered = new Set<string>();
  const empty = new Set<string>();
  const fill = (endpoints: Resource, cluster: Resource | undefined): Resource => {
    const body = endpoints.body as EndpointsBody;
    const k8s = body.kubernetes;
    if (!k8s || !discovery) return endpoints;
    const key = `${endpoints.name}\u0000${endpoints.version}`;
    const done = filled.get(key);
    if (done) return done;
    discovered.add(discoveredServiceKey(k8s.namespace, k8s.service));
    const meshed = (cluster?.body as ClusterBody | undefined)?.meshed ?? false;
    const port: PortChoice = meshed ? { kind: 'inbound', port: inboundPort } : { kind: 'named', port: k8s.port };
    const instances = discovery.instances(k8s.namespace, k8s.service, port);
    const resource = instances === undefined ? endpoints : makeResource(endpoints.name, { ...body, static: instances });
    filled.set(key, resource);
    return resource;
  };
  // A new map only once some config is filled; until then the mesh's configs are the snapshot's.
  let configs: Map<string, ProxyConfig> | undefined;
  let anyChanged = false;
  let index = 0;
  for (const [service, config] of mesh.configs) {
    index++;
    // Most configs have no Kubernetes endpoints: what they hold without any is worked out
    // once per config object (the compile worker hands back the same object for a config
    // that did not change), so that at 10 000 services a revision costs this thread a
    // lookup per config, not a walk of every resource.
    const plain = prepareForSnapshot(config);
    if (plain) {
      for (const name of plain) empty.add(name);
      configs?.set(service, config);
      continue;
    }
    let byName: Map<string, Resource> | undefined;
    let resources: Resource[] | undefined;
    const emptyHere: string[] = [];
    const list = config.resources;
    for (let i = 0; i < list.length; i++) {
      const r = list[i]!;
      if (!r.name.startsWith('endpoints/')) continue;
      let next = r;
      if (discovery && (r.body as EndpointsBody).kubernetes) {
        byName ??= new Map(list.map((x) => [x.name, x]));
        next = fill(r, byName.get(`cluster/${r.name.slice('endpoints/'.length)}`));
      }
      const body = next.body as EndpointsBody;
      if (body.static.length === 0 && body.dns === null) emptyHere.push(r.name.slice('endpoints/'.length));
      if (next !== r) {
        resources ??= [...list];
        resources[i] = next;
      }
    }
    for (const name of emptyHere) empty.add(name);
    if (resources && !configs) {
      configs = new Map();
      let i = 0;
      for (const [name, earlier] of mesh.configs) if (++i < index) configs.set(name, earlier);
    }
    configs?.set(service, resources ? makeProxyConfig(service, resources) : config);
    if (resources) anyChanged = true;
  }
  // Unchanged configs keep their versions, and the mesh's version is made from them alone.
  const version = anyChanged && configs ? versionOf([...configs.values()].map((c) => ({ name: c.service, version: c.version }))) : mesh.version;
  return { mesh: { mesh: mesh.mesh, version, configs: configs ?? mesh.configs }, discovered, withoutEndpoints: [...empty].sort() };
}
