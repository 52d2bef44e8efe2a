/** The one delta function: what a sidecar is sent, given what it holds and its target config. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { applyDelta, diffConfigs, holdingOf, updateFor } from '../../src/config/delta.ts';
import { makeProxyConfig, makeResource } from '../../src/config/resources.ts';
import type { EndpointsBody } from '../../src/config/types.ts';

const endpoints = (service: string, addresses: string[]) =>
  makeResource<EndpointsBody>(`endpoints/${service}`, { service, static: addresses.map((address) => ({ address, port: 8080, weight: 1, zone: null })), dns: null });

const v1 = makeProxyConfig('web', [endpoints('api', ['10.0.0.1']), endpoints('cart', ['10.0.1.1']), endpoints('old', ['10.0.2.1'])]);
const v2 = makeProxyConfig('web', [endpoints('api', ['10.0.0.1', '10.0.0.2']), endpoints('cart', ['10.0.1.1']), endpoints('new', ['10.0.3.1'])]);

describe('updateFor', () => {
  test('a sidecar that holds nothing gets the whole config', () => {
    assert.deepEqual(updateFor(null, v2), { kind: 'config', config: v2 });
  });

  test('a sidecar that holds the target gets nothing', () => {
    assert.deepEqual(updateFor(holdingOf(v2), v2), { kind: 'none' });
  });

  test('a delta carries changed and new resources and names the removed ones, and applies to the target version', () => {
    const update = updateFor(holdingOf(v1), v2);
    assert.equal(update.kind, 'delta');
    if (update.kind !== 'delta') return;
    assert.deepEqual(update.delta.resources.map((r) => r.name), ['endpoints/api', 'endpoints/new']);
    assert.deepEqual(update.delta.removed, ['endpoints/old']);
    assert.equal(update.delta.base, v1.version);
    assert.equal(update.delta.target, v2.version);
    const applied = applyDelta(v1, update.delta);
    assert.ok(applied.ok);
    assert.deepEqual(applied.config, v2);
  });

  test('the holding a sidecar reports on subscribe (a name → version map) gives the same delta as the config it came from', () => {
    const reported = { version: v1.version, resources: new Map(Object.entries(Object.fromEntries(v1.resources.map((r) => [r.name, r.version])))) };
    assert.deepEqual(updateFor(reported, v2), { kind: 'delta', delta: diffConfigs(v1, v2) });
  });

  test('a delta computed against another base is refused', () => {
    const v3 = makeProxyConfig('web', [endpoints('api', ['10.0.0.9'])]);
    const outcome = applyDelta(v3, diffConfigs(v1, v2));
    assert.equal(outcome.ok, false);
    if (!outcome.ok) assert.equal(outcome.code, 'base_mismatch');
  });
});
