/**
 * Names of services across namespaces. A Service is identified by `namespace/name`; the
 * namespace `default` (where every document without `metadata.namespace` lives) is written
 * as the bare name, so a mesh that never names a namespace keeps the keys, resource names
 * (`route/<key>`, `cluster/<key>`, `endpoints/<key>`), identities and golden files it had.
 *
 * A *service key* is that string: `checkout` (namespace `default`) or `shop/checkout`.
 */

/** The namespace of documents that name none. */
export const DEFAULT_NAMESPACE = 'default';

/** A Kubernetes DNS-1123 label: the form of a namespace and of a service name. */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** The key of service `name` in `namespace` (undefined or `default`: the bare name). */
export function serviceKey(namespace: string | undefined, name: string): string {
  return namespace === undefined || namespace === DEFAULT_NAMESPACE ? name : `${namespace}/${name}`;
}

/** The namespace and name of a service key. */
export function parseServiceKey(key: string): { readonly namespace: string; readonly name: string } {
  const slash = key.indexOf('/');
  return slash < 0 ? { namespace: DEFAULT_NAMESPACE, name: key } : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/** Whether `key` is a well-formed service key (`name` or `namespace/name`, each a DNS label). */
export function isServiceKey(key: string): boolean {
  const slash = key.indexOf('/');
  if (slash < 0) return DNS_LABEL.test(key);
  return DNS_LABEL.test(key.slice(0, slash)) && DNS_LABEL.test(key.slice(slash + 1));
}

/**
 * The service key a caller in `callerNamespace` means by a host name, Kubernetes-style:
 * `name` is in the caller's own namespace; `name.ns`, `name.ns.svc` and
 * `name.ns.svc.<cluster domain>` are in `ns`. Returns null for anything else (an IP
 * address, or a host outside the mesh's naming), which the caller resolves otherwise.
 * `host` is lower-case, without port and without a trailing dot.
 */
export function serviceKeyOfHost(host: string, callerNamespace: string, clusterDomain = 'cluster.local'): string | null {
  const labels = host.split('.');
  if (labels.length === 1) return DNS_LABEL.test(host) ? serviceKey(callerNamespace, host) : null;
  const [name, namespace, svc] = labels as [string, string, string | undefined];
  if (!DNS_LABEL.test(name) || !DNS_LABEL.test(namespace)) return null;
  if (labels.length === 2) return serviceKey(namespace, name);
  if (svc !== 'svc') return null;
  if (labels.length === 3 || labels.slice(3).join('.') === clusterDomain) return serviceKey(namespace, name);
  return null;
}
