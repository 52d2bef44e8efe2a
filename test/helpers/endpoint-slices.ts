/**
 * Endpoints from Kubernetes in tests: EndpointSlice bodies, and the mesh spec whose services
 * take their instances from them (a meshed caller `web` first, then the discovered services).
 */
import type * as k8s from '@kubernetes/client-node';

/** An endpoint's conditions as a slice states them; a missing one is unknown. */
export type Conditions = { ready?: boolean; serving?: boolean; terminating?: boolean };

/** One endpoint of a slice: its address and conditions, and its zone when it has one. */
export type SliceEndpoint = readonly [address: string, conditions: Conditions, zone?: string];

/**
 * EndpointSlice `name` in `namespace` of Service `service` (the `kubernetes.io/service-name`
 * label, and `labels` beside it), one address per endpoint. No apiVersion or kind: add them
 * where the request wants them.
 */
export function endpointSlice(
  name: string,
  namespace: string,
  service: string,
  addressType: string,
  ports: k8s.DiscoveryV1EndpointPort[],
  endpoints: readonly SliceEndpoint[],
  labels: Record<string, string> = {},
): k8s.V1EndpointSlice {
  return {
    metadata: { name, namespace, labels: { 'kubernetes.io/service-name': service, ...labels } },
    addressType,
    ports,
    endpoints: endpoints.map(([address, conditions, zone]) => ({ addresses: [address], conditions, ...(zone ? { zone } : {}) })),
  };
}

/** Service `api` (default namespace) with no sidecar, its instances from EndpointSlices: a spec document. */
export const UNMESHED_DISCOVERED_API = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api }
spec: { ports: [{ port: 80 }], sidecar: false, endpoints: { kubernetes: {} } }
`;

/**
 * A spec: Mesh `name` (trust domain `<name>.local`, access allowed by default; `meshFields`
 * adds to its spec, as `sidecar: { inboundPort: 15999 }`), the meshed caller `web` (one
 * placeholder static endpoint), then `documents` (each ending in a newline, without `---`).
 */
export function discoverySpec(name: string, meshFields: string | null, ...documents: string[]): string {
  const mesh = `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: ${name} }
spec: { trustDomain: ${name}.local, access: { default: allow }${meshFields ? `, ${meshFields}` : ''} }
`;
  const web = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: web }
spec: { ports: [{ port: 80 }], endpoints: { static: [{ address: 127.0.0.1, port: 9 }] } }
`;
  return [mesh, web, ...documents].join('---\n');
}
