/**
 * Durations are bounded (issue 16, item 1): `request: 600h` used to validate and then fail
 * every request on the route with 504, because Node timers cannot hold 2^31 ms or more
 * and fire at once. Every duration of every kind is held to MAX_DURATION (24h) with a
 * diagnostic on its own YAML node, and the sidecar's config check refuses any millisecond
 * count a timer cannot hold, whoever wrote the config.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { contentHash } from '../../src/config/canonical.ts';
import { makeProxyConfig } from '../../src/config/resources.ts';
import type { ClusterBody, ProxyConfig, Resource, RouteBody } from '../../src/config/types.ts';
import { checkProxyConfig } from '../../src/config/validate-config.ts';
import { formatLocation } from '../../src/diagnostics/render.ts';
import { MAX_DURATION_MS, MAX_TIMER_MS, parseDuration } from '../../src/spec/duration.ts';
import { compileTexts } from '../helpers/spec.ts';

/** A spec that sets every duration the spec model has to `D`, each on a line of its own. */
function everyDuration(d: string): Record<string, string> {
  const policy = `
      loadBalancer:
        type: peak-ewma
        ewma:
          decay: ${d}
          defaultRTT: ${d}
      outlierDetection:
        interval: ${d}
        baseEjectionTime: ${d}
      retryBudget:
        ttl: ${d}
      connection:
        connectTimeout: ${d}
        idleTimeout: ${d}
      faultInjection:
        delay:
          fixedDelay: ${d}
          percentage: 1`;
  return {
    'mesh.yaml': `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: test }
spec:
  access: { default: allow }
  defaults:
    timeouts:
      request: ${d}
      backendRequest: ${d}
    retry:
      backoff: ${d}
    trafficPolicy:${policy}
`,
    'services.yaml': `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: web }
spec:
  ports: [{ port: 80 }]
  endpoints: { static: [{ address: 127.0.0.1, port: 16001 }] }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api }
spec:
  ports: [{ port: 80 }]
  endpoints:
    dns:
      hostname: api.internal
      port: 8080
      refreshInterval: ${d}
`,
    'policy.yaml': `apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: { name: api }
spec:
  targetRefs: [{ kind: Service, name: api }]${policy.replace(/^ {4}/gm, '')}
`,
    'route.yaml': `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - backendRefs: [{ name: api, port: 80 }]
      timeouts:
        request: ${d}
        backendRequest: ${d}
      retry:
        backoff: ${d}
`,
    'test.yaml': `apiVersion: trellis.dev/v1alpha1
kind: TrafficTest
metadata: { name: t }
spec:
  request: { from: web, to: api }
  expect:
    timeout:
      min: ${d}
      max: ${d}
`,
  };
}

/** `file:line` of every line that sets a duration in `everyDuration`. */
function durationLines(files: Record<string, string>, d: string): string[] {
  return Object.entries(files)
    .flatMap(([path, text]) => text.split('\n').flatMap((line, i) => (line.endsWith(`: ${d}`) ? [`${path}:${i + 1}:${line.indexOf(d) + 1}`] : [])))
    .sort();
}

describe('durations in the spec are bounded', () => {
  test('a duration over 24h is an error at its own node, for every duration of every kind', () => {
    const files = everyDuration('600h');
    const result = compileTexts(files);
    assert.equal(result.mesh, undefined, 'a spec with a 600h duration must not compile');
    const bounded = result.diagnostics.filter((d) => d.code === 'TRL2006');
    const where = bounded.map((d) => formatLocation(d.span!)).sort();
    assert.deepEqual(where, durationLines(files, '600h'), 'one TRL2006 on each duration, at its value');
    for (const d of bounded) {
      assert.equal(d.span!.file.text.slice(d.span!.start, d.span!.end), '600h');
      assert.match(d.message, /is 600h; a duration may be at most 24h/);
    }
  });

  test('exactly 24h compiles, and every config it yields passes the sidecar check', () => {
    const files = everyDuration('24h');
    const result = compileTexts(files);
    assert.deepEqual(result.diagnostics.filter((d) => d.severity === 'error').map((d) => d.code), []);
    assert.ok(result.mesh);
    for (const config of result.mesh.configs.values()) assert.deepEqual(checkProxyConfig(config), { ok: true, config });
  });

  test('the bound is counted in milliseconds over all parts, not per part', () => {
    for (const [d, ok] of [['23h59m59s999ms', true], ['23h59m60s', true], ['23h60m1s', false], ['86400s', true], ['86401s', false], ['1440m', true], ['1441m', false]] as const) {
      const result = compileTexts({ 'route.yaml': everyDuration('1s')['route.yaml']!.replace('request: 1s', `request: ${d}`), 'services.yaml': everyDuration('1s')['services.yaml']! });
      assert.equal(
        result.diagnostics.some((x) => x.code === 'TRL2006'),
        !ok,
        `${d} (${parseDuration(d)} ms) should ${ok ? '' : 'not '}be accepted`,
      );
    }
  });

  test('the documented maximum leaves a timer room to spare', () => {
    assert.equal(MAX_DURATION_MS, 24 * 3_600_000);
    assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
    assert.ok(MAX_DURATION_MS < MAX_TIMER_MS);
  });
});

describe('the sidecar config check refuses what its timers cannot hold', () => {
  const base = compileTexts(everyDuration('1s')).mesh!.configs.get('web')!;

  /** `config` with one resource body changed, re-hashed so only the value is wrong. */
  function edit(config: ProxyConfig, name: string, change: (body: any) => void): ProxyConfig {
    const resources = config.resources.map((r): Resource => {
      if (r.name !== name) return r;
      const body = structuredClone(r.body) as any;
      change(body);
      return { name: r.name, version: contentHash(body), body };
    });
    return makeProxyConfig(config.service, resources);
  }

  const fields: Array<[string, string, (body: any, v: number) => void]> = [
    ['route/api', 'timeouts.requestMs', (b: RouteBody, v) => void ((b.rules[0]!.timeouts as any).requestMs = v)],
    ['route/api', 'timeouts.backendRequestMs', (b: RouteBody, v) => void ((b.rules[0]!.timeouts as any).backendRequestMs = v)],
    ['route/api', 'retry.backoffMs', (b: RouteBody, v) => void ((b.rules[0]!.retry as any).backoffMs = v)],
    ['cluster/api', 'faultInjection.delay.delayMs', (b: ClusterBody, v) => void ((b.faultInjection.delay as any).delayMs = v)],
    ['cluster/api', 'connection.connectTimeoutMs', (b: ClusterBody, v) => void ((b.connection as any).connectTimeoutMs = v)],
    ['cluster/api', 'connection.idleTimeoutMs', (b: ClusterBody, v) => void ((b.connection as any).idleTimeoutMs = v)],
    ['cluster/api', 'outlierDetection.intervalMs', (b: ClusterBody, v) => void ((b.outlierDetection as any).intervalMs = v)],
    ['cluster/api', 'outlierDetection.baseEjectionMs', (b: ClusterBody, v) => void ((b.outlierDetection as any).baseEjectionMs = v)],
    ['cluster/api', 'retryBudget.ttlMs', (b: ClusterBody, v) => void ((b.retryBudget as any).ttlMs = v)],
    ['cluster/api', 'loadBalancer.ewmaDecayMs', (b: ClusterBody, v) => void ((b.loadBalancer as any).ewmaDecayMs = v)],
    ['cluster/api', 'loadBalancer.ewmaDefaultRttMs', (b: ClusterBody, v) => void ((b.loadBalancer as any).ewmaDefaultRttMs = v)],
    ['endpoints/api', 'dns.refreshIntervalMs', (b: any, v) => void (b.dns.refreshIntervalMs = v)],
  ];
  for (const [resource, field, set] of fields) {
    test(`${resource} ${field}: 2^31-1 ms is accepted, 2^31 ms refused`, () => {
      assert.equal(checkProxyConfig(edit(base, resource, (b) => set(b, MAX_TIMER_MS))).ok, true);
      const refused = checkProxyConfig(edit(base, resource, (b) => set(b, MAX_TIMER_MS + 1)));
      assert.equal(refused.ok, false);
      assert.ok(!refused.ok && refused.reasons.some((r) => /must be <= 2147483647/.test(r)), JSON.stringify(refused));
    });
  }
});
