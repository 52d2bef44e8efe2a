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
import { isHttpFieldName, isHttpFieldValue, PATH_MODIFIER_PATTERN } from '../../src/config/http-field.ts';
import httpRouteSchema from '../../schema/httproute.schema.json' with { type: 'json' };
import { makeProxyConfig } from '../../src/config/resources.ts';
import type { ProxyConfig, Resource, RouteBody } from '../../src/config/types.ts';
import { checkProxyConfig } from '../../src/config/validate-config.ts';
import { formatLocation } from '../../src/diagnostics/render.ts';
import { apiRoute, BASE_SPEC, compileTexts } from '../helpers/spec.ts';

/** A route on `api` with request and response header modifiers on the rule and on its backendRef. */
function route(value: string): string {
  const v = JSON.stringify(value);
  return apiRoute(`    - filters:
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
`);
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

describe('path modifiers, which become a Location header or the request line', () => {
  function rewrite(value: string): string {
    const v = JSON.stringify(value);
    return apiRoute(`    - matches: [{ path: { type: PathPrefix, value: /r } }]
      filters:
        - type: RequestRedirect
          requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: ${v} } }
    - matches: [{ path: { type: PathPrefix, value: /w } }]
      filters:
        - type: URLRewrite
          urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: ${v} } }
      backendRefs: [{ name: api, port: 80 }]
`);
  }
  for (const [name, value] of [['CR LF', '/a\r\nx-evil: 1'], ['a space', '/a b'], ['NUL', '/a\0'], ['a character above U+00FF', '/caf€']] as const) {
    test(`${name} in replaceFullPath and replacePrefixMatch is refused at the value`, () => {
      const text = rewrite(value);
      const result = compileTexts({ 'base.yaml': BASE_SPEC, 'route.yaml': text });
      assert.equal(result.mesh, undefined);
      const lines = text.split('\n');
      const expected = [10, 14].map((n) => `route.yaml:${n}:${lines[n - 1]!.indexOf('"') + 1}`);
      assert.deepEqual(result.diagnostics.filter((d) => d.code === 'TRL2005').map((d) => formatLocation(d.span!)), expected);
    });
  }

  test('URL path characters and percent-encoding are fine, and an empty prefix replacement', () => {
    for (const value of ['/v2/a-b_c.d~e!$&\'()*+,;=:@%20', '']) {
      const result = compileTexts({ 'base.yaml': BASE_SPEC, 'route.yaml': rewrite(value) });
      assert.deepEqual(result.diagnostics.filter((d) => d.severity === 'error').map((d) => d.message), []);
    }
  });

  test('the schema and the sidecar check use one pattern', () => {
    const modifier = (httpRouteSchema as any).definitions.httpPathModifier.properties;
    assert.equal(modifier.replaceFullPath.pattern, PATH_MODIFIER_PATTERN);
    assert.equal(modifier.replacePrefixMatch.pattern, PATH_MODIFIER_PATTERN);
  });

  test('the sidecar config check refuses them too', () => {
    const config = compileTexts({ 'base.yaml': BASE_SPEC, 'route.yaml': rewrite('/ok') }).mesh!.configs.get('web')!;
    assert.equal(checkProxyConfig(config).ok, true);
    for (const bad of ['/a\r\nx: 1', '/a b']) {
      const resources = config.resources.map((r): Resource => {
        if (r.name !== 'route/api') return r;
        const body = structuredClone(r.body) as any;
        for (const rule of body.rules) for (const f of rule.filters) if (f.path) f.path.value = bad;
        return { name: r.name, version: contentHash(body), body };
      });
      assert.equal(checkProxyConfig(makeProxyConfig(config.service, resources)).ok, false, JSON.stringify(bad));
    }
  });
});
