/**
 * Header modifiers cannot write a header the proxy cannot send (issue 16, item 2): a value
 * with CR or LF used to validate, compile and pass the sidecar's config check, and then
 * every matching request failed with 502 (request modifier) or got an empty reply
 * (response modifier). The compiler refuses such values at their node (TRL4026) and the
 * sidecar's config check refuses them too, with the same rule (src/config/http-field.ts).
 */
import assert from 'node:assert/strict';
import { validateHeaderName, validateHeaderValue } from 'node:http';
import { describe, test } from 'node:test';
import { contentHash } from '../../src/config/canonical.ts';
import { isHttpFieldName, isHttpFieldValue } from '../../src/config/http-field.ts';
import { makeProxyConfig } from '../../src/config/resources.ts';
import type { ProxyConfig, Resource, RouteBody } from '../../src/config/types.ts';
import { checkProxyConfig } from '../../src/config/validate-config.ts';
import { formatLocation } from '../../src/diagnostics/render.ts';
import { BASE_SPEC, compileTexts } from '../helpers/spec.ts';

/** A route on `api` with request and response header modifiers on the rule and on its backendRef. */
function route(value: string): string {
  const v = JSON.stringify(value);
  return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{ name: x-set, value: ${v} }]
            add: [{ name: x-add, value: ${v} }]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{ name: x-set, value: ${v} }]
            add: [{ name: x-add, value: ${v} }]
      backendRefs:
        - name: api
          port: 80
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier:
                set: [{ name: x-set, value: ${v} }]
            - type: ResponseHeaderModifier
              responseHeaderModifier:
                add: [{ name: x-add, value: ${v} }]
`;
}

describe('header modifier values', () => {
  const bad: Array<[string, string]> = [
    ['CR LF (a forged header)', 'ok\r\nx-injected: 1'],
    ['LF alone', 'a\nb'],
    ['CR alone', 'a\rb'],
    ['NUL', 'a\0b'],
    ['another C0 control', 'a\x1bb'],
    ['DEL', 'a\x7fb'],
    ['a character above U+00FF', 'price in €'],
  ];
  for (const [name, value] of bad) {
    test(`${name}: TRL4026 at every set/add value, request and response, rule and backendRef`, () => {
      const text = route(value);
      const result = compileTexts({ 'base.yaml': BASE_SPEC, 'route.yaml': text });
      assert.equal(result.mesh, undefined, 'a spec with such a header value must not compile');
      const found = result.diagnostics.filter((d) => d.code === 'TRL4026');
      const expected = text.split('\n').flatMap((line, i) => (line.includes('value: "') ? [`route.yaml:${i + 1}:${line.indexOf('value: "') + 8}`] : []));
      assert.equal(expected.length, 6);
      assert.deepEqual(found.map((d) => formatLocation(d.span!)), expected);
      for (const d of found) assert.doesNotMatch(d.message, /[\0-\x1f\x7f]/, 'the message names the character without printing it');
    });
  }

  test('values Node sends as they are compile: spaces, tabs, punctuation, Latin-1', () => {
    const result = compileTexts({ 'base.yaml': BASE_SPEC, 'route.yaml': route('a b\tc; q="x", é') });
    assert.deepEqual(result.diagnostics.filter((d) => d.severity === 'error'), []);
    assert.ok(result.mesh);
  });

  test('the rule is exactly what Node http accepts, for every UTF-16 code unit', () => {
    const node = (fn: () => void) => {
      try {
        fn();
        return true;
      } catch {
        return false;
      }
    };
    const disagree: number[] = [];
    for (let c = 0; c <= 0xffff; c++) {
      const ch = String.fromCharCode(c);
      if (isHttpFieldValue(`a${ch}b`) !== node(() => validateHeaderValue('x', `a${ch}b`))) disagree.push(c);
      if (isHttpFieldName(`a${ch}b`) !== node(() => validateHeaderName(`a${ch}b`))) disagree.push(c);
    }
    assert.deepEqual(disagree, []);
    assert.equal(isHttpFieldName(''), false);
  });
});

describe('the sidecar config check refuses headers it cannot send', () => {
  const base = compileTexts({ 'base.yaml': BASE_SPEC, 'route.yaml': route('fine') }).mesh!.configs.get('web')!;

  function editRoute(config: ProxyConfig, change: (body: RouteBody) => void): ProxyConfig {
    const resources = config.resources.map((r): Resource => {
      if (r.name !== 'route/api') return r;
      const body = structuredClone(r.body) as RouteBody;
      change(body);
      return { name: r.name, version: contentHash(body), body };
    });
    return makeProxyConfig(config.service, resources);
  }
  const headers = (f: unknown) => (f as { headers: { set: Array<{ name: string; value: string }>; add: Array<{ name: string; value: string }>; remove: string[] } }).headers;

  test('the compiled config is accepted', () => assert.equal(checkProxyConfig(base).ok, true));

  const cases: Array<[string, (b: RouteBody) => void]> = [
    ['rule request set value with CR LF', (b) => void (headers(b.rules[0]!.filters[0]).set[0]!.value = 'a\r\nx-evil: 1')],
    ['rule response add value with LF', (b) => void (headers(b.rules[0]!.filters[1]).add[0]!.value = 'a\nb')],
    ['backend request set value with NUL', (b) => void (headers(b.rules[0]!.backends[0]!.filters[0]).set[0]!.value = 'a\0')],
    ['backend response add value above U+00FF', (b) => void (headers(b.rules[0]!.backends[0]!.filters[1]).add[0]!.value = '€')],
    ['set name with a space', (b) => void (headers(b.rules[0]!.filters[0]).set[0]!.name = 'x bad')],
    ['add name with a colon', (b) => void (headers(b.rules[0]!.filters[0]).add[0]!.name = 'x:bad')],
    ['remove name empty', (b) => void headers(b.rules[0]!.filters[0]).remove.push('')],
    ['remove name with CR LF', (b) => void headers(b.rules[0]!.filters[0]).remove.push('x\r\ny')],
  ];
  for (const [name, change] of cases) {
    test(`${name}: refused`, () => {
      const check = checkProxyConfig(editRoute(base, change));
      assert.equal(check.ok, false, name);
      assert.ok(!check.ok && check.reasons.some((r) => /header/.test(r)), JSON.stringify(check));
      for (const r of check.ok ? [] : check.reasons) assert.doesNotMatch(r, /[\0-\x1f\x7f]/, 'reasons are printable');
    });
  }
});
