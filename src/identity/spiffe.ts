/**
 * SPIFFE identities of mesh workloads, carried as the single URI subject-alternative name of
 * an X.509 certificate (an X.509-SVID): `spiffe://<trust domain>/svc/<service>` off
 * Kubernetes (`…/ns/<namespace>/svc/<service>` outside namespace `default`), and
 * `spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>` for Kubernetes workloads,
 * whose pods prove their ServiceAccount to the reconciler.
 */

/** The SPIFFE ID of a workload running as ServiceAccount `serviceAccount` in `namespace` (Kubernetes). */
export function kubernetesIdentity(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

const KUBERNETES_ID = /^spiffe:\/\/([a-z0-9._-]+)\/ns\/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/sa\/([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$/;

/** The trust domain, namespace and ServiceAccount of a Kubernetes SPIFFE ID; null for anything else. */
export function parseKubernetesIdentity(id: string): { readonly trustDomain: string; readonly namespace: string; readonly serviceAccount: string } | null {
  const m = KUBERNETES_ID.exec(id);
  return m ? { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[4]! } : null;
}

/** The SPIFFE ID of a service in a trust domain. */
export function spiffeId(trustDomain: string, service: string): string {
  return `spiffe://${trustDomain}/svc/${service}`;
}

const SERVICE_ID = /^spiffe:\/\/([a-z0-9._-]+)\/svc\/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$/;

/** The trust domain and service of a service SPIFFE ID; null for anything else. */
export function parseSpiffeId(id: string): { readonly trustDomain: string; readonly service: string } | null {
  const m = SERVICE_ID.exec(id);
  return m ? { trustDomain: m[1]!, service: m[2]! } : null;
}

const NAMESPACED_SERVICE_ID = /^spiffe:\/\/([a-z0-9._-]+)\/ns\/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/svc\/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$/;

/**
 * Any identity a mesh certificate may name, in its three forms:
 * - `spiffe://<td>/svc/<name>`: a service of namespace `default` off Kubernetes (`service` = `name`);
 * - `spiffe://<td>/ns/<ns>/svc/<name>`: a service of another namespace off Kubernetes (`service` = `ns/name`, its service key);
 * - `spiffe://<td>/ns/<ns>/sa/<serviceAccount>`: a Kubernetes workload; names no service, since
 *   several Services may run as one ServiceAccount (`service` undefined).
 * Null for anything else. Sidecars accept peers and their own certificates in any of these.
 */
export function parseMeshIdentity(id: string): { readonly trustDomain: string; readonly namespace: string; readonly service?: string; readonly serviceAccount?: string } | null {
  const plain = parseSpiffeId(id);
  if (plain) return { trustDomain: plain.trustDomain, namespace: 'default', service: plain.service };
  const namespaced = NAMESPACED_SERVICE_ID.exec(id);
  // Namespace `default` is always written without /ns/ (see spec/names.ts), so one service never has two IDs.
  if (namespaced && namespaced[2] !== 'default') return { trustDomain: namespaced[1]!, namespace: namespaced[2]!, service: `${namespaced[2]}/${namespaced[4]}` };
  const k8s = parseKubernetesIdentity(id);
  if (k8s) return { trustDomain: k8s.trustDomain, namespace: k8s.namespace, serviceAccount: k8s.serviceAccount };
  return null;
}

/**
 * The SPIFFE ID in a certificate's subject-alternative names as Node renders them
 * (`subjectaltname`: `URI:spiffe://…, DNS:…`). An X.509-SVID has exactly one URI SAN;
 * a certificate with none, or several, names no identity (null).
 */
export function spiffeIdOfAltNames(subjectaltname: string | undefined): string | null {
  if (!subjectaltname) return null;
  // Node quotes names holding separators as JSON strings; a valid SPIFFE ID never needs it,
  // so a quoted URI is not a usable identity.
  const uris = subjectaltname.split(', ').filter((n) => n.startsWith('URI:'));
  if (uris.length !== 1) return null;
  const uri = uris[0]!.slice(4);
  return uri.startsWith('spiffe://') ? uri : null;
}
