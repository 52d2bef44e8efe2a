/**
 * Discovery without sockets: EndpointSlices mapped to instances (ready, serving,
 * terminating, ports, duplicates), and the snapshot that fills `endpoints/<key>` resources
 * of services whose endpoints come from Kubernetes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type * as k8s from '@kubernetes/client-node';
import type { CompiledEndpoint, EndpointsBody } from '../../src/config/types.ts';
import { discoveredNamespaces, snapshotOf, type Discovery, type PortChoice } from '../../src/reconciler/discovery.ts';
import { instancesFromSlices, sliceOf, watchBackoffMs, type DiscoveredSlice } from '../../src/reconciler/kubernetes-discovery.ts';
import { discoverySpec, endpointSlice, type SliceEndpoint } from '../helpers/endpoint-slices.ts';
import { compileTexts } from '../helpers/spec.ts';

/** A slice in namespace shop. */
function slice(name: string, endpoints: SliceEndpoint[], ports: Array<{ name?: string; port: number }> = [{ name: 'http', port: 8080 }], addressType = 'IPv4', service = 'api'): k8s.V1EndpointSlice {
  return endpointSlice(name, 'shop', service, addressType, ports, endpoints);
}

const slices = (...items: k8s.V1EndpointSlice[]): DiscoveredSlice[] => items.map((s) => sliceOf(s)!);
const named = (port: string | number | null): PortChoice => ({ kind: 'named', port });
const addresses = (eps: readonly CompiledEndpoint[]) => eps.map((e) => `${e.address}:${e.port}${e.terminating ? ' terminating' : ''}`);

describe('EndpointSlices to instances', () => {
  test('ready (or unknown) endpoints are instances, terminating-but-serving ones are last-resort instances, the rest are dropped', () => {
    const eps = instancesFromSlices(
      slices(
        slice('api-a', [
          ['10.0.0.1', { ready: true, serving: true, terminating: false }],
          ['10.0.0.2', {}],
          ['10.0.0.3', { ready: false, serving: false, terminating: false }],
          ['10.0.0.4', { ready: false, serving: true, terminating: true }],
          ['10.0.0.5', { ready: false, serving: false, terminating: true }],
          ['10.0.0.6', { ready: false, serving: true, terminating: false }],
        ]),
      ),
      named(null),
    );
    assert.deepEqual(addresses(eps), ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.4:8080 terminating']);
    // A normal instance carries no `terminating` field at all (absent when default).
    assert.equal('terminating' in eps[0]!, false);
  });

  test('meshed instances are called on the mesh inbound port whatever the slice lists', () => {
    const eps = instancesFromSlices(slices(slice('a', [['10.0.0.1', {}]], [{ name: 'http', port: 8080 }, { name: 'admin', port: 9090 }])), { kind: 'inbound', port: 15006 });
    assert.deepEqual(addresses(eps), ['10.0.0.1:15006']);
  });

  test('unmeshed instances: the port named or numbered, the only one, or none (the called port\'s targetPort) when several', () => {
    const two = slices(slice('a', [['10.0.0.1', {}]], [{ name: 'http', port: 8080 }, { name: 'admin', port: 9090 }]));
    assert.deepEqual(addresses(instancesFromSlices(two, named('admin'))), ['10.0.0.1:9090']);
    assert.deepEqual(addresses(instancesFromSlices(two, named(8080))), ['10.0.0.1:8080']);
    assert.deepEqual(addresses(instancesFromSlices(two, named(null))), ['10.0.0.1:null']);
    assert.deepEqual(instancesFromSlices(two, named('grpc')), [], 'a port the slice does not have: no instance to call');
    assert.deepEqual(addresses(instancesFromSlices(slices(slice('b', [['10.0.0.1', {}]], [{ port: 7000 }])), named(null))), ['10.0.0.1:7000']);
  });

  test('instances of several slices are merged, sorted by address then port, an endpoint in two slices counts once as its better state, and zones are kept', () => {
    const eps = instancesFromSlices(
      slices(
        slice('b', [['10.0.0.9', {}, 'zone-b'], ['10.0.0.3', { ready: false, serving: true, terminating: true }]]),
        slice('a', [['10.0.0.3', { ready: true }], ['10.0.0.10', {}]]),
      ),
      named(null),
    );
    assert.deepEqual(addresses(eps), ['10.0.0.10:8080', '10.0.0.3:8080', '10.0.0.9:8080']);
    assert.equal(eps.find((e) => e.address === '10.0.0.9')!.zone, 'zone-b');
  });

  test('dual stack: the IPv6 slices of a Service with IPv4 slices are the same pods and are not counted twice', () => {
    const eps = instancesFromSlices(slices(slice('v4', [['10.0.0.1', {}]]), slice('v6', [['fd00::1', {}]], undefined, 'IPv6')), named(null));
    assert.deepEqual(addresses(eps), ['10.0.0.1:8080']);
    assert.deepEqual(addresses(instancesFromSlices(slices(slice('v6', [['fd00::1', {}]], undefined, 'IPv6')), named(null))), ['fd00::1:8080']);
  });

  test('a slice without the service-name label belongs to no Service', () => {
    const s = slice('x', [['10.0.0.1', {}]]);
    delete s.metadata!.labels;
    assert.equal(sliceOf(s), undefined);
  });

  test('the watch backs off from 250 ms, doubling, to at most 5 s, jittered within the upper half', () => {
    assert.equal(watchBackoffMs(1, () => 0), 125);
    assert.equal(watchBackoffMs(2, () => 0.999_999) < 500, true);
    assert.equal(watchBackoffMs(3, () => 0), 500);
    assert.equal(watchBackoffMs(30, () => 0), 2500);
    assert.ok(watchBackoffMs(30, () => 0.999_999) <= 5000);
  });
});

/** A discovery whose instances a test sets: the in-memory side of the Discovery contract. */
class FixedDiscovery implements Discovery {
  readonly description = 'fixed';
  readonly lists: Map<string, Array<{ address: string; terminating?: boolean }>>;
  readonly listed: boolean;
  constructor(lists: Map<string, Array<{ address: string; terminating?: boolean }>>, listed = true) {
    this.lists = lists;
    this.listed = listed;
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  instances(namespace: string, service: string, port: PortChoice): readonly CompiledEndpoint[] | undefined {
    if (!this.listed) return undefined;
    const p = port.kind === 'inbound' ? port.port : typeof port.port === 'number' ? port.port : null;
    return (this.lists.get(`${namespace}/${service}`) ?? []).map((e) => ({ address: e.address, port: p, weight: 1, zone: null, ...(e.terminating ? { terminating: true as const } : {}) }));
  }
  synced(): boolean {
    return this.listed;
  }
  state() {
    return { description: this.description, synced: this.listed, error: null, lastChangeAt: null };
  }
}

const SPEC = discoverySpec(
  't',
  'sidecar: { inboundPort: 15999 }',
  `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: legacy, namespace: shop }
spec: { ports: [{ port: 80 }], sidecar: false, endpoints: { kubernetes: { port: 8080 } } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: cart, namespace: shop }
spec: { ports: [{ port: 80 }], endpoints: { kubernetes: {} } }
`,
);

describe('snapshot: the compiled mesh with discovered instances', () => {
  const compiled = compileTexts({ 'mesh.yaml': SPEC });
  assert.deepEqual(compiled.diagnostics.filter((d) => d.severity === 'error'), []);
  const mesh = compiled.mesh!;
  const inboundPort = compiled.plan!.settings.inboundPort;
  const body = (snapshot: ReturnType<typeof snapshotOf>, config: string, name: string) => snapshot.mesh.configs.get(config)!.resources.find((r) => r.name === name)!.body as EndpointsBody;

  test('endpoints/<key> of Kubernetes services get their instances: meshed ones on the inbound port, unmeshed ones on the chosen port; static services stay as compiled', () => {
    const discovery = new FixedDiscovery(new Map([['shop/cart', [{ address: '10.1.0.1' }, { address: '10.1.0.2', terminating: true }]], ['shop/legacy', [{ address: '10.2.0.1' }]]]));
    const snapshot = snapshotOf(mesh, inboundPort, discovery);
    assert.equal(inboundPort, 15999);
    assert.deepEqual(body(snapshot, 'web', 'endpoints/shop/cart').static, [
      { address: '10.1.0.1', port: 15999, weight: 1, zone: null },
      { address: '10.1.0.2', port: 15999, weight: 1, zone: null, terminating: true },
    ]);
    assert.deepEqual(body(snapshot, 'web', 'endpoints/shop/legacy').static, [{ address: '10.2.0.1', port: 8080, weight: 1, zone: null }]);
    assert.deepEqual(body(snapshot, 'web', 'endpoints/web'), mesh.configs.get('web')!.resources.find((r) => r.name === 'endpoints/web')!.body);
    // The Kubernetes reference stays in the body: sidecars see where instances come from.
    assert.equal(body(snapshot, 'web', 'endpoints/shop/cart').kubernetes?.service, 'cart');
    assert.deepEqual([...snapshot.discovered].sort(), ['shop/cart', 'shop/legacy']);
    assert.deepEqual(snapshot.withoutEndpoints, []);
    // Resource and config versions are recomputed, and every config shares the same filled resource.
    const web = snapshot.mesh.configs.get('web')!;
    assert.notEqual(web.version, mesh.configs.get('web')!.version);
    const cartInWeb = web.resources.find((r) => r.name === 'endpoints/shop/cart')!;
    const cartInCart = snapshot.mesh.configs.get('shop/cart')!.resources.find((r) => r.name === 'endpoints/shop/cart')!;
    assert.equal(cartInWeb.version, cartInCart.version);
    assert.notEqual(snapshot.mesh.version, mesh.version);
  });

  test('one endpoint change moves only that resource and the versions of configs that hold it', () => {
    const lists = new Map([['shop/cart', [{ address: '10.1.0.1' }]], ['shop/legacy', [{ address: '10.2.0.1' }]]]);
    const before = snapshotOf(mesh, inboundPort, new FixedDiscovery(lists));
    const after = snapshotOf(mesh, inboundPort, new FixedDiscovery(new Map([...lists, ['shop/legacy', [{ address: '10.2.0.1' }, { address: '10.2.0.2' }]]])));
    const versions = (s: ReturnType<typeof snapshotOf>, config: string) => new Map(s.mesh.configs.get(config)!.resources.map((r) => [r.name, r.version]));
    const changed = [...versions(after, 'web')].filter(([name, v]) => versions(before, 'web').get(name) !== v).map(([name]) => name);
    assert.deepEqual(changed, ['endpoints/shop/legacy']);
  });

  test('the namespaces a mesh takes Kubernetes endpoints from', () => {
    assert.deepEqual([...discoveredNamespaces(mesh)], ['shop']);
  });

  test('backends without instances are listed (the snapshot is still consistent); without a discovery the compiled mesh is unchanged', () => {
    const snapshot = snapshotOf(mesh, inboundPort, new FixedDiscovery(new Map([['shop/cart', [{ address: '10.1.0.1' }]]])));
    assert.deepEqual(snapshot.withoutEndpoints, ['shop/legacy']);
    const none = snapshotOf(mesh, inboundPort, undefined);
    assert.equal(none.mesh.version, mesh.version);
    assert.deepEqual(none.withoutEndpoints, ['shop/cart', 'shop/legacy']);
  });
});
