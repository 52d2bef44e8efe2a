/** TRL4024: access that needs verified callers, in a mesh whose mTLS is off. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BASE_SPEC, codes, compileTexts } from '../helpers/spec.ts';

/** BASE_SPEC (web, api, api-v2; access default allow) with another mTLS mode and access default. */
function mesh(mtls: 'strict' | 'permissive' | 'off', access: 'allow' | 'deny' | 'all-authenticated' | null): string {
  const accessLine = access === null ? '' : `access: { default: ${access} }`;
  return BASE_SPEC.replace('access: { default: allow }', `mtls: { mode: ${mtls} }\n  ${accessLine}`);
}

/** An AccessPolicy on `target` admitting web, in `mode`. */
function policy(target: string, mode: 'enforce' | 'audit' = 'enforce'): string {
  return `apiVersion: trellis.dev/v1alpha1
kind: AccessPolicy
metadata: { name: ${target}-from-web }
spec:
  targetRefs: [{ kind: Service, name: ${target} }]
  mode: ${mode}
  rules: [{ from: [{ service: web }] }]
`;
}

const warnings = (files: Record<string, string>) => compileTexts(files).diagnostics.filter((d) => d.code === 'TRL4024');

describe('TRL4024 access-without-mtls', () => {
  test('mTLS off with an AccessPolicy on a meshed service warns once, at spec.mtls.mode, naming the service', () => {
    const found = warnings({ 'mesh.yaml': mesh('off', 'allow'), 'policy.yaml': policy('api') });
    assert.equal(found.length, 1);
    const d = found[0]!;
    assert.equal(d.severity, 'warning');
    assert.equal(d.span?.file.path, 'mesh.yaml');
    assert.equal(d.span?.file.text.slice(d.span.start, d.span.end), 'off');
    assert.match(d.message, /AccessPolicy rules on "api" admit no caller/);
    assert.doesNotMatch(d.message, /all-authenticated/);
    assert.match(d.hint ?? '', /permissive/);
  });

  test('mTLS off with the access default all-authenticated warns, whether the default is written or built in', () => {
    for (const access of ['all-authenticated', null] as const) {
      const found = warnings({ 'mesh.yaml': mesh('off', access) });
      assert.equal(found.length, 1, `access default ${access ?? '(built-in)'}`);
      assert.match(found[0]!.message, /all-authenticated admits no caller to "api", "api-v2", "web"/);
    }
  });

  test('a policy in audit mode is said to be only logged', () => {
    const [d] = warnings({ 'mesh.yaml': mesh('off', 'allow'), 'policy.yaml': policy('api', 'audit') });
    assert.match(d!.message, /only logged where a policy is in audit mode/);
  });

  test('no warning when mTLS verifies callers, or when no decision needs a verified caller', () => {
    const quiet: Array<[string, Record<string, string>]> = [
      ['strict with a policy', { 'mesh.yaml': mesh('strict', 'all-authenticated'), 'policy.yaml': policy('api') }],
      ['permissive with a policy', { 'mesh.yaml': mesh('permissive', 'all-authenticated'), 'policy.yaml': policy('api') }],
      ['off, default allow, no policy', { 'mesh.yaml': mesh('off', 'allow') }],
      ['off, default deny, no policy', { 'mesh.yaml': mesh('off', 'deny') }],
    ];
    for (const [name, files] of quiet) assert.deepEqual(warnings(files), [], name);
  });

  test('a policy on a service without a sidecar needs no verified caller (its callers apply it)', () => {
    const unmeshed = mesh('off', 'allow').replace('ports: [{ name: http, port: 80, targetPort: 8081 }]', 'ports: [{ name: http, port: 80, targetPort: 8081 }]\n  sidecar: false');
    const result = compileTexts({ 'mesh.yaml': unmeshed, 'policy.yaml': policy('api') });
    assert.ok(codes(result).includes('TRL4013'), 'the fixture really targets an unmeshed service');
    assert.ok(!codes(result).includes('TRL4024'));
  });
});
