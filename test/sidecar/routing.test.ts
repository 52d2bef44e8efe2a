/** The outbound path end to end: destination lookup, route rules, filters, headers, weighted splits. */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { backendsSpec, cleanup, configOf, metricValue, rawSend, seededRandom, send, startSidecar, startUpstream, waitFor } from '../helpers/sidecar-harness.ts';

after(cleanup);

function route(name: string, rules: string): string {
  return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name} }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
${rules}`;
}

describe('finding the destination', () => {
  test('by Host (bare, with port, with the mesh domain) and by absolute URI; unknown services get 404 with a code', async () => {
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'));
    for (const host of ['api', 'api:80', 'api.test.local', 'API.test.local:80']) {
      const r = await send(sc.outbound, host, '/x');
      assert.equal(r.status, 200, host);
      assert.equal(r.body, 'api');
    }
    const viaProxy = await rawSend(sc.outbound, 'http://api/proxied', { host: 'ignored' });
    assert.equal(viaProxy.status, 200);
    assert.equal(api.seen.at(-1)!.url, '/proxied');
    const unknown = await send(sc.outbound, 'nosuch', '/');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.headers['x-trellis-error'], 'unknown_service');
    assert.deepEqual(JSON.parse(unknown.body).error, 'unknown_service');
  });

  test('a request no rule matches gets 404 no_route, as Gateway API says', async () => {
    const api = await startUpstream('api');
    const spec = backendsSpec({ api: [api.port] }, route('api', `    - matches: [{ path: { type: PathPrefix, value: /only } }]\n      backendRefs: [{ name: api, port: 80 }]`));
    const sc = await startSidecar(configOf(spec, 'client'));
    assert.equal((await send(sc.outbound, 'api', '/only/here')).status, 200);
    const miss = await send(sc.outbound, 'api', '/onlyx');
    assert.equal(miss.status, 404);
    assert.equal(miss.headers['x-trellis-error'], 'no_route');
  });
});

describe('route rules', () => {
  test('header, method, query and path matches pick the rule Gateway API precedence says', async () => {
    const [v1, v2, v3, v4] = await Promise.all(['v1', 'v2', 'v3', 'v4'].map((n) => startUpstream(n)));
    const spec = backendsSpec(
      { v1: [v1!.port], v2: [v2!.port], v3: [v3!.port], v4: [v4!.port], api: [v1!.port] },
      route(
        'api',
        `    - backendRefs: [{ name: v1, port: 80 }]
    - matches: [{ headers: [{ name: x-canary, value: "1" }] }]
      backendRefs: [{ name: v2, port: 80 }]
    - matches: [{ path: { type: Exact, value: /exact }, method: POST }]
      backendRefs: [{ name: v3, port: 80 }]
    - matches: [{ path: { type: RegularExpression, value: "/items/[0-9]+" }, queryParams: [{ name: debug, value: "on" }] }]
      backendRefs: [{ name: v4, port: 80 }]`,
      ),
    );
    const sc = await startSidecar(configOf(spec, 'client'));
    const to = async (path: string, init?: Parameters<typeof send>[3]) => (await send(sc.outbound, 'api', path, init)).body;
    assert.equal(await to('/anything'), 'v1');
    assert.equal(await to('/anything', { headers: { 'X-Canary': '1' } }), 'v2');
    assert.equal(await to('/exact', { method: 'POST', body: 'x' }), 'v3');
    assert.equal(await to('/exact'), 'v1', 'method must match');
    assert.equal(await to('/items/42?debug=on'), 'v4');
    assert.equal(await to('/items/42/more?debug=on'), 'v1', 'regex matches the whole path');
    assert.equal(await to('/items/42?debug=off'), 'v1');
  });

  test('weights split traffic in proportion; weight 0 never gets any', async () => {
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => startUpstream(n)));
    const spec = backendsSpec(
      { a: [a!.port], b: [b!.port], c: [c!.port], api: [a!.port] },
      route('api', `    - backendRefs: [{ name: a, port: 80, weight: 80 }, { name: b, port: 80, weight: 20 }, { name: c, port: 80, weight: 0 }]`),
    );
    const sc = await startSidecar(configOf(spec, 'client'), { random: seededRandom(7) });
    const n = 2000;
    const counts = new Map<string, number>();
    for (let i = 0; i < n; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => send(sc.outbound, 'api', '/')));
      for (const r of batch) counts.set(r.body, (counts.get(r.body) ?? 0) + 1);
    }
    // Binomial(2000, 0.2): sd ≈ 17.9; six sd either side holds for any fair generator.
    const share = counts.get('b') ?? 0;
    assert.ok(share > 400 - 108 && share < 400 + 108, `b got ${share} of ${n}`);
    assert.equal(counts.get('c') ?? 0, 0);
    assert.equal((counts.get('a') ?? 0) + share, n);
  });
});

describe('filters', () => {
  test('without a hostname rewrite a backend gets the authority the app sent, not the instance address', async () => {
    // Issue 16: backends got Host: 127.0.0.1:<port>; a backend serving several virtual hosts needs the name the app used.
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'));
    for (const host of ['api', 'api:80', 'api.default.svc.cluster.local']) {
      assert.equal((await send(sc.outbound, host, '/')).status, 200);
      assert.equal(api.seen.at(-1)!.headers.host, host);
    }
    assert.equal((await rawSend(sc.outbound, 'http://api.default/x', { host: 'ignored' })).status, 200);
    assert.equal(api.seen.at(-1)!.headers.host, 'api.default', 'as a proxy: the authority of the absolute URI');
    assert.equal(api.seen.at(-1)!.headers['x-trellis-destination'], undefined, 'an unmeshed backend gets no mesh header');
  });

  test('request and response header modifiers, prefix rewrite and host rewrite', async () => {
    const api = await startUpstream('api');
    const spec = backendsSpec(
      { api: [api.port] },
      route(
        'api',
        `    - matches: [{ path: { type: PathPrefix, value: /old } }]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: X-Set, value: yes }], add: [{ name: x-add, value: two }], remove: [x-drop] }
        - type: ResponseHeaderModifier
          responseHeaderModifier: { add: [{ name: x-served-by, value: mesh }], remove: [x-upstream] }
        - type: URLRewrite
          urlRewrite: { hostname: internal.example, path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } }
      backendRefs: [{ name: api, port: 80 }]`,
      ),
    );
    const sc = await startSidecar(configOf(spec, 'client'));
    const r = await send(sc.outbound, 'api', '/old/thing?q=1', { headers: { 'x-drop': 'gone', 'x-add': 'one', 'x-set': 'no' } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-served-by'], 'mesh');
    assert.equal(r.headers['x-upstream'], undefined);
    const seen = api.seen.at(-1)!;
    assert.equal(seen.url, '/new/thing?q=1');
    assert.equal(seen.headers.host, 'internal.example', 'the rewritten host is the Host the backend sees');
    assert.equal(seen.headers['x-forwarded-host'], 'api', 'x-forwarded-host keeps the host the caller named');
    assert.equal(seen.headers['x-set'], 'yes');
    assert.equal(seen.headers['x-add'], 'one,two');
    assert.equal(seen.headers['x-drop'], undefined);
  });

  test('a redirect answers without calling any backend', async () => {
    const api = await startUpstream('api');
    const spec = backendsSpec(
      { api: [api.port] },
      route(
        'api',
        `    - filters: [{ type: RequestRedirect, requestRedirect: { scheme: https, hostname: shop.example, statusCode: 301, path: { type: ReplaceFullPath, replaceFullPath: /moved } } }]`,
      ),
    );
    const sc = await startSidecar(configOf(spec, 'client'));
    const r = await send(sc.outbound, 'api', '/somewhere?x=1');
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, 'https://shop.example/moved?x=1');
    assert.equal(api.seen.length, 0);
  });

  test('a mirror gets a copy, and a mirror that never answers does not hold up the primary', async () => {
    const api = await startUpstream('api');
    const shadow = await startUpstream('shadow', () => undefined); // never responds
    const spec = backendsSpec(
      { api: [api.port], shadow: [shadow.port] },
      route('api', `    - filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: shadow, port: 80 } } }]\n      backendRefs: [{ name: api, port: 80 }]`),
    );
    const sc = await startSidecar(configOf(spec, 'client'));
    for (let i = 0; i < 3; i++) assert.equal((await send(sc.outbound, 'api', '/m', { method: 'POST', body: `n${i}` })).body, 'api');
    await waitFor(() => shadow.seen.length === 3, 'three mirrored copies');
    assert.deepEqual(shadow.seen.map((s) => s.body), ['n0', 'n1', 'n2']);
    assert.equal(shadow.seen[0]!.headers['x-trellis-mirror'], '1');
  });
});

describe('backend filters', () => {
  test('a backend-level mirror fires only when its backend is chosen', async () => {
    const [a, b, shadowA, shadowB] = await Promise.all(['a', 'b', 'shadow-a', 'shadow-b'].map((n) => startUpstream(n)));
    const mirrorTo = (name: string) => `[{ type: RequestMirror, requestMirror: { backendRef: { name: ${name}, port: 80 } } }]`;
    const spec = backendsSpec(
      { api: [a!.port], a: [a!.port], b: [b!.port], 'shadow-a': [shadowA!.port], 'shadow-b': [shadowB!.port] },
      route('api', `    - backendRefs:
        - { name: a, port: 80, weight: 1, filters: ${mirrorTo('shadow-a')} }
        - { name: b, port: 80, weight: 0, filters: ${mirrorTo('shadow-b')} }`),
    );
    const sc = await startSidecar(configOf(spec, 'client'));
    for (let i = 0; i < 3; i++) assert.equal((await send(sc.outbound, 'api', '/')).body, 'a');
    await waitFor(() => shadowA!.seen.length === 3, 'the chosen backend\'s mirror');
    assert.equal(shadowB!.seen.length, 0, 'the other backend was never chosen, so its mirror never fires');
  });
});

describe('headers on the way through', () => {
  test('hop-by-hop headers are dropped; forwarding, request id and trace context are added or kept', async () => {
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'));
    await rawSend(sc.outbound, '/', { host: 'api', connection: 'x-secret', 'x-secret': 'hop', 'proxy-authorization': 'Basic abc', te: 'trailers' });
    const first = api.seen.at(-1)!.headers;
    assert.equal(first['x-secret'], undefined, 'headers named in Connection are hop-by-hop');
    assert.equal(first['proxy-authorization'], undefined);
    assert.equal(first['x-forwarded-for'], '127.0.0.1');
    assert.equal(first['x-forwarded-proto'], 'http');
    assert.match(String(first['x-request-id']), /^[0-9a-f-]{36}$/);
    assert.match(String(first.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);

    const trace = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await send(sc.outbound, 'api', '/', { headers: { traceparent: trace, 'x-request-id': 'abc', 'x-forwarded-for': '10.1.1.1' } });
    const second = api.seen.at(-1)!.headers;
    assert.equal(second.traceparent, trace);
    assert.equal(second['x-request-id'], 'abc');
    assert.equal(second['x-forwarded-for'], '10.1.1.1, 127.0.0.1');
  });

  test('metrics label by route and code, never by raw path', async () => {
    const api = await startUpstream('api');
    const sc = await startSidecar(configOf(backendsSpec({ api: [api.port] }), 'client'));
    await send(sc.outbound, 'api', '/users/123');
    await send(sc.outbound, 'nosuch', '/users/456');
    const text = await (await fetch(`http://127.0.0.1:${sc.admin}/metrics`)).text();
    assert.equal(metricValue(text, 'trellis_requests_total', { reporter: 'outbound', destination_service: 'api', response_code: '200', response_flags: '-' }), 1);
    assert.equal(metricValue(text, 'trellis_requests_total', { destination_service: 'unknown', response_flags: 'unknown_service' }), 1);
    assert.doesNotMatch(text, /users\/123|nosuch/);
    assert.match(text, /trellis_config_info\{service="client",version="[0-9a-f]{64}"\} 1/);
  });
});
