/**
 * The pure layers of the outbound path, without sockets: the route plan (rule, redirect,
 * backend by weight, filters in order) and the retry decisions (how an attempt ended,
 * whether it may be tried again).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RouteTable } from '../../src/config/router.ts';
import type { RouteBody } from '../../src/config/types.ts';
import { planRoute, rewritePath } from '../../src/sidecar/route-plan.ts';
import { judgeAttempt, mayRetry, untriedFirst } from '../../src/sidecar/retry.ts';
import type { AttemptResult } from '../../src/sidecar/upstream.ts';
import { backendsSpec, configOf } from '../helpers/sidecar-harness.ts';

function table(rules: string): RouteTable {
  const spec = backendsSpec(
    { api: [9], v2: [9] },
    `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
${rules}`,
  );
  const route = configOf(spec, 'client').resources.find((r) => r.name === 'route/api')!;
  return new RouteTable(route.body as RouteBody);
}

const request = (path: string, extra: Partial<Parameters<typeof planRoute>[1]> = {}) => ({ port: undefined, method: 'GET', path, query: '', authority: 'api', headers: {}, ...extra });

describe('planRoute', () => {
  test('no matching rule: no_route', () => {
    const t = table('    - matches: [{ path: { type: PathPrefix, value: /only } }]\n      backendRefs: [{ name: api, port: 80 }]');
    assert.deepEqual(planRoute(t, request('/other'), () => 0), { kind: 'no_route' });
  });

  test('a redirect keeps the host the app named and rewrites the matched prefix', () => {
    const t = table(`    - matches: [{ path: { type: PathPrefix, value: /old } }]
      filters: [{ type: RequestRedirect, requestRedirect: { scheme: https, path: { type: ReplacePrefixMatch, replacePrefixMatch: /new }, statusCode: 301 } }]`);
    const plan = planRoute(t, request('/old/x', { query: 'q=1', authority: 'api:80' }), () => 0);
    assert.equal(plan.kind, 'redirect');
    assert.deepEqual(plan.kind === 'redirect' && [plan.status, plan.location], [301, 'https://api/new/x?q=1']);
  });

  test('forward: the backend by weight, filters in order (rule then backend), rewrites, mirrors, ports', () => {
    const t = table(`    - matches: [{ path: { type: PathPrefix, value: /api } }]
      filters:
        - { type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-rule, value: "1" }] } }
        - { type: URLRewrite, urlRewrite: { hostname: rewritten, path: { type: ReplacePrefixMatch, replacePrefixMatch: /v1 } } }
        - { type: RequestMirror, requestMirror: { backendRef: { name: v2, port: 80 } } }
      backendRefs:
        - { name: api, port: 80, weight: 1 }
        - name: v2
          port: 80
          weight: 3
          filters: [{ type: ResponseHeaderModifier, responseHeaderModifier: { add: [{ name: x-backend, value: v2 }] } }]`);
    const toApi = planRoute(t, request('/api/items', { query: 'a=b' }), () => 0);
    const toV2 = planRoute(t, request('/api/items'), () => 0.5);
    assert.ok(toApi.kind === 'forward' && toV2.kind === 'forward');
    assert.deepEqual([toApi.backend.service, toV2.backend.service], ['api', 'v2'], 'weights 1:3 over the draw');
    assert.equal(toApi.pathAndQuery, '/v1/items?a=b');
    assert.equal(toApi.rewriteHost, 'rewritten');
    assert.equal(toApi.requestHeaders.length, 1);
    assert.deepEqual([toApi.responseHeaders.length, toV2.responseHeaders.length], [0, 1], "the backend's own filters only with it");
    assert.deepEqual(toApi.mirrors.map((m) => m.backend.service), ['v2']);
    assert.deepEqual([toApi.servicePort, toApi.backendPort], [80, 80]);
  });

  test('rewritePath: full path, prefix element-wise', () => {
    assert.equal(rewritePath('/a/b', { type: 'ReplaceFullPath', value: '/x' }, '/a'), '/x');
    assert.equal(rewritePath('/a/b', { type: 'ReplacePrefixMatch', value: '/x' }, '/a'), '/x/b');
    assert.equal(rewritePath('/a', { type: 'ReplacePrefixMatch', value: '' }, '/a'), '/');
    assert.equal(rewritePath('/a/b', { type: 'ReplacePrefixMatch', value: '/x/' }, '/a/'), '/x/b');
  });
});

describe('retry decisions', () => {
  const response = (statusCode: number) => ({ ok: true, statusCode, headers: {}, body: undefined }) as unknown as AttemptResult;
  const failed = (failure: 'connect_failure' | 'tls_failure' | 'upstream_reset' | 'request_timeout' | 'aborted'): AttemptResult => ({ ok: false, failure, error: new Error(failure) });
  const retry = { attempts: 2, codes: [503], backoffMs: 1 };
  const may = (result: AttemptResult, o: { attempt?: number; retrySafe?: boolean; replayable?: boolean; requestTimedOut?: boolean; tryTimedOut?: boolean; codes?: number[] } = {}) =>
    mayRetry({
      attempt: o.attempt ?? 1,
      retry: { ...retry, codes: o.codes ?? retry.codes },
      result,
      verdict: judgeAttempt(result, { requestTimedOut: o.requestTimedOut ?? false, tryTimedOut: o.tryTimedOut ?? false }),
      requestTimedOut: o.requestTimedOut ?? false,
      retrySafe: o.retrySafe ?? true,
      replayable: o.replayable ?? true,
    });

  test('how attempts end', () => {
    assert.deepEqual(judgeAttempt(response(503), { requestTimedOut: false, tryTimedOut: false }), { failure: undefined, clientGone: false, notSent: false, outcome: 'gateway-error' });
    assert.deepEqual(judgeAttempt(failed('tls_failure'), { requestTimedOut: false, tryTimedOut: false }), { failure: 'tls_failure', clientGone: false, notSent: true, outcome: 'connect-failure' });
    assert.deepEqual(judgeAttempt(failed('aborted'), { requestTimedOut: false, tryTimedOut: true }).failure, 'request_timeout');
    assert.deepEqual(judgeAttempt(failed('aborted'), { requestTimedOut: false, tryTimedOut: false }), { failure: undefined, clientGone: true, notSent: false, outcome: undefined });
    assert.equal(judgeAttempt(failed('upstream_reset'), { requestTimedOut: true, tryTimedOut: false }).failure, 'request_timeout');
  });

  test('what may be tried again', () => {
    assert.equal(may(response(503)), true);
    assert.equal(may(response(500)), false, 'not a listed code');
    assert.equal(may(response(503), { retrySafe: false }), false, 'a POST without Idempotency-Key');
    assert.equal(may(response(503), { attempt: 3 }), false, 'attempts used up');
    assert.equal(may(failed('connect_failure'), { retrySafe: false }), true, 'nothing was sent');
    assert.equal(may(failed('tls_failure'), { retrySafe: false }), true);
    assert.equal(may(failed('upstream_reset')), true);
    assert.equal(may(failed('upstream_reset'), { retrySafe: false }), false);
    assert.equal(may(failed('aborted'), { tryTimedOut: true }), false, 'a per-try timeout counts as 504, not listed');
    assert.equal(may(failed('aborted'), { tryTimedOut: true, codes: [504] }), true);
    assert.equal(may(failed('aborted')), false, 'the client went away');
    assert.equal(may(failed('connect_failure'), { requestTimedOut: true }), false, 'past the deadline');
    assert.equal(may(response(503), { replayable: false }), false, 'a streamed body cannot be sent twice');
  });
});

describe('retry candidates', () => {
  test('a retry picks among the endpoints not tried yet, and falls back to all when none is left', () => {
    const [a, b, c] = [{ n: 'a' }, { n: 'b' }, { n: 'c' }];
    assert.deepEqual(untriedFirst([a, b, c], new Set()), [a, b, c]);
    assert.deepEqual(untriedFirst([a, b, c], new Set([a])), [b, c]);
    assert.deepEqual(untriedFirst([a, b, c], new Set([a, c])), [b]);
    assert.deepEqual(untriedFirst([a, b], new Set([a, b])), [a, b], 'every endpoint tried: try again rather than fail');
    assert.deepEqual(untriedFirst([a], new Set([a])), [a], 'a lone endpoint is retried');
  });
});
