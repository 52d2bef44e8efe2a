/**
 * decideAccess, the access decision of a sidecar's inbound port, case by case: one row per
 * line of the decision table in docs/access.md, then the shop example's compiled policies.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileDir } from '../../src/compiler/compile.ts';
import { decideAccess } from '../../src/config/access.ts';
import { normalizePath } from '../../src/config/normalize-path.ts';
import type { CompiledAccessRule, InboundBody } from '../../src/config/types.ts';

type Access = InboundBody['access'];

const WEB = 'spiffe://test.local/svc/web';
const OPS = 'spiffe://test.local/svc/ops';
const STRANGER = 'spiffe://test.local/svc/stranger';

/** One rule of AccessPolicy `policy`, admitting `from` for the operations `to` (none: any). */
function rule(policy: string, from: string[], to: CompiledAccessRule['to'] = []): CompiledAccessRule {
  return { from, to, policy };
}

function withPolicies(rules: CompiledAccessRule[], mode: Access['mode'] = 'enforce'): Access {
  return { default: 'policy', mode, rules };
}

/** What a row expects; `reason` is checked loosely, the rest exactly. */
interface Expected {
  readonly allowed: boolean;
  readonly audited?: boolean;
  readonly policy?: string | null;
  readonly ruleIndex?: number | null;
  readonly reason?: RegExp;
}

interface Row {
  readonly name: string;
  readonly access: Access;
  readonly caller: string | null;
  readonly method?: string;
  readonly path?: string;
  readonly expect: Expected;
}

const ALLOWED = { allowed: true, audited: false, policy: null, ruleIndex: null } as const;
const DENIED = { allowed: false, audited: false, policy: null, ruleIndex: null } as const;
const AUDITED = { allowed: true, audited: true, policy: null, ruleIndex: null } as const;
const admittedBy = (policy: string, ruleIndex: number) => ({ allowed: true, audited: false, policy, ruleIndex });

/** Rules for the method and path rows: GET on the Exact path /healthz, anything under PathPrefix /api. */
const OPERATIONS = withPolicies([
  rule('probes', [OPS], [{ methods: ['GET'], paths: [{ type: 'Exact', value: '/healthz' }] }]),
  rule('api', [WEB], [{ methods: [], paths: [{ type: 'PathPrefix', value: '/api' }] }]),
]);

/** GET under /read and POST under /write, for web: method and path must hold in the same `to` entry. */
const READ_WRITE = withPolicies([
  rule('rw', [WEB], [
    { methods: ['GET'], paths: [{ type: 'PathPrefix', value: '/read' }] },
    { methods: ['POST'], paths: [{ type: 'PathPrefix', value: '/write' }] },
  ]),
]);

const ROWS: Row[] = [
  // Mesh default: no AccessPolicy targets the service.
  { name: 'default allow, verified caller', access: { default: 'allow', mode: 'enforce', rules: [] }, caller: WEB, expect: { ...ALLOWED, reason: /default is allow/ } },
  { name: 'default allow, unauthenticated caller', access: { default: 'allow', mode: 'enforce', rules: [] }, caller: null, expect: ALLOWED },
  { name: 'default all-authenticated, verified caller', access: { default: 'all-authenticated', mode: 'enforce', rules: [] }, caller: WEB, expect: ALLOWED },
  {
    name: 'default all-authenticated, unauthenticated caller',
    access: { default: 'all-authenticated', mode: 'enforce', rules: [] },
    caller: null,
    expect: { ...DENIED, reason: /only authenticated/ },
  },
  { name: 'default deny, verified caller', access: { default: 'deny', mode: 'enforce', rules: [] }, caller: WEB, expect: { ...DENIED, reason: /default is deny/ } },
  { name: 'default deny, unauthenticated caller', access: { default: 'deny', mode: 'enforce', rules: [] }, caller: null, expect: DENIED },

  // Policies, enforce mode: callers.
  { name: 'policy, caller named by a rule without `to`', access: withPolicies([rule('web-in', [WEB])]), caller: WEB, method: 'DELETE', path: '/anything', expect: admittedBy('web-in', 0) },
  { name: 'policy, caller named by no rule', access: withPolicies([rule('web-in', [WEB])]), caller: STRANGER, expect: { ...DENIED, reason: /no AccessPolicy rule admits spiffe:\/\/test.local\/svc\/stranger/ } },
  { name: 'policy, unauthenticated caller', access: withPolicies([rule('web-in', [WEB])]), caller: null, expect: { ...DENIED, reason: /unauthenticated/ } },
  { name: 'policy without rules denies', access: withPolicies([]), caller: WEB, expect: DENIED },
  {
    name: 'policy, the first admitting rule decides, across policies',
    access: withPolicies([rule('a-ops', [OPS]), rule('b-web', [STRANGER, WEB]), rule('c-web', [WEB])]),
    caller: WEB,
    expect: admittedBy('b-web', 1),
  },

  // Policies: methods (case-sensitive, as HTTP methods are).
  { name: 'method listed', access: OPERATIONS, caller: OPS, method: 'GET', path: '/healthz', expect: admittedBy('probes', 0) },
  { name: 'method not listed', access: OPERATIONS, caller: OPS, method: 'POST', path: '/healthz', expect: DENIED },
  { name: 'HEAD is not GET', access: OPERATIONS, caller: OPS, method: 'HEAD', path: '/healthz', expect: DENIED },
  { name: 'method in another case', access: OPERATIONS, caller: OPS, method: 'get', path: '/healthz', expect: DENIED },
  { name: 'an empty method list admits any method', access: OPERATIONS, caller: WEB, method: 'PATCH', path: '/api/x', expect: admittedBy('api', 1) },

  // Policies: Exact paths.
  { name: 'Exact path, same path', access: OPERATIONS, caller: OPS, method: 'GET', path: '/healthz', expect: admittedBy('probes', 0) },
  { name: 'Exact path, trailing slash added', access: OPERATIONS, caller: OPS, method: 'GET', path: '/healthz/', expect: DENIED },
  { name: 'Exact path, a segment below', access: OPERATIONS, caller: OPS, method: 'GET', path: '/healthz/deep', expect: DENIED },
  { name: 'Exact path, case variant', access: OPERATIONS, caller: OPS, method: 'GET', path: '/HEALTHZ', expect: DENIED },

  // Policies: PathPrefix paths, segment by segment.
  { name: 'PathPrefix /api admits /api', access: OPERATIONS, caller: WEB, method: 'GET', path: '/api', expect: admittedBy('api', 1) },
  { name: 'PathPrefix /api admits /api/', access: OPERATIONS, caller: WEB, method: 'GET', path: '/api/', expect: admittedBy('api', 1) },
  { name: 'PathPrefix /api admits /api/x/y', access: OPERATIONS, caller: WEB, method: 'GET', path: '/api/x/y', expect: admittedBy('api', 1) },
  { name: 'PathPrefix /api does not admit /apix', access: OPERATIONS, caller: WEB, method: 'GET', path: '/apix', expect: DENIED },
  { name: 'PathPrefix /api does not admit /ap', access: OPERATIONS, caller: WEB, method: 'GET', path: '/ap', expect: DENIED },
  { name: 'PathPrefix /api does not admit /', access: OPERATIONS, caller: WEB, method: 'GET', path: '/', expect: DENIED },
  { name: 'PathPrefix /api does not admit /API/x', access: OPERATIONS, caller: WEB, method: 'GET', path: '/API/x', expect: DENIED },
  {
    name: 'PathPrefix /api/ (trailing slash) admits /api and /api/x alike',
    access: withPolicies([rule('api', [WEB], [{ methods: [], paths: [{ type: 'PathPrefix', value: '/api/' }] }])]),
    caller: WEB,
    path: '/api',
    expect: admittedBy('api', 0),
  },
  {
    name: 'PathPrefix / admits every path',
    access: withPolicies([rule('all', [WEB], [{ methods: ['GET'], paths: [{ type: 'PathPrefix', value: '/' }] }])]),
    caller: WEB,
    path: '/x/y',
    expect: admittedBy('all', 0),
  },
  {
    name: 'a path rule admits no other caller',
    access: OPERATIONS,
    caller: STRANGER,
    method: 'GET',
    path: '/api/x',
    expect: DENIED,
  },

  // Policies: method and path must hold in the same `to` entry.
  {
    name: 'GET /read and POST /write: POST /read is denied',
    access: READ_WRITE,
    caller: WEB,
    method: 'POST',
    path: '/read',
    expect: DENIED,
  },
  {
    name: 'GET /read and POST /write: POST /write is admitted',
    access: READ_WRITE,
    caller: WEB,
    method: 'POST',
    path: '/write/1',
    expect: admittedBy('rw', 0),
  },

  // Audit mode: what enforce would deny is let through and marked; admissions are unchanged.
  { name: 'audit, admitted caller', access: withPolicies([rule('web-in', [WEB])], 'audit'), caller: WEB, expect: admittedBy('web-in', 0) },
  { name: 'audit, caller named by no rule', access: withPolicies([rule('web-in', [WEB])], 'audit'), caller: STRANGER, expect: { ...AUDITED, reason: /audit mode/ } },
  { name: 'audit, unauthenticated caller', access: withPolicies([rule('web-in', [WEB])], 'audit'), caller: null, expect: { ...AUDITED, reason: /unauthenticated.*audit mode/ } },
  { name: 'audit, method not listed', access: { ...OPERATIONS, mode: 'audit' }, caller: OPS, method: 'DELETE', path: '/healthz', expect: AUDITED },
  { name: 'audit, path outside the prefix', access: { ...OPERATIONS, mode: 'audit' }, caller: WEB, method: 'GET', path: '/apix', expect: AUDITED },
  { name: 'audit, path inside the prefix', access: { ...OPERATIONS, mode: 'audit' }, caller: WEB, method: 'GET', path: '/api/x', expect: admittedBy('api', 1) },
];

describe('decideAccess decision table', () => {
  for (const row of ROWS) {
    test(row.name, () => {
      const decision = decideAccess(row.access, row.caller, row.method ?? 'GET', row.path ?? '/');
      const { reason, ...exact } = row.expect;
      assert.deepEqual(
        { allowed: decision.allowed, audited: decision.audited, policy: decision.policy, ruleIndex: decision.ruleIndex },
        { audited: false, policy: null, ruleIndex: null, ...exact },
      );
      assert.equal(typeof decision.reason, 'string');
      if (reason) assert.match(decision.reason, reason);
    });
  }
});

describe('decideAccess on the shop example', async () => {
  const shop = await compileDir(fileURLToPath(new URL('../../examples/shop', import.meta.url)));
  const accessOf = (service: string): Access => {
    const inbound = shop.mesh?.configs.get(service)?.resources.find((r) => r.name === 'inbound');
    assert.ok(inbound, `the shop compiles and ${service} has an inbound resource`);
    return (inbound.body as InboundBody).access;
  };
  const id = (service: string) => `spiffe://shop.trellis.local/svc/${service}`;

  test('inventory: catalog reads stock, and nothing else', () => {
    const inventory = accessOf('inventory');
    assert.equal(decideAccess(inventory, id('catalog'), 'GET', '/stock/42').allowed, true);
    assert.equal(decideAccess(inventory, id('catalog'), 'GET', '/stock').allowed, true);
    assert.equal(decideAccess(inventory, id('catalog'), 'GET', '/stockpile').allowed, false);
    assert.equal(decideAccess(inventory, id('catalog'), 'POST', '/stock/42').allowed, false);
    assert.equal(decideAccess(inventory, id('catalog'), 'GET', '/reservations').allowed, false);
  });

  test('inventory: checkout reserves; frontend and unauthenticated callers get nothing', () => {
    const inventory = accessOf('inventory');
    const reserve = decideAccess(inventory, id('checkout'), 'POST', '/reservations/7');
    assert.deepEqual([reserve.allowed, reserve.policy, reserve.ruleIndex], [true, 'inventory', 1]);
    assert.equal(decideAccess(inventory, id('checkout'), 'PUT', '/reservations/7').allowed, false);
    assert.equal(decideAccess(inventory, id('frontend'), 'GET', '/stock/1').allowed, false);
    assert.equal(decideAccess(inventory, null, 'GET', '/stock/1').allowed, false);
  });

  test('users: the prober of another trust domain may only GET /healthz exactly', () => {
    const users = accessOf('users');
    const prober = 'spiffe://ops.example.com/ns/monitoring/sa/prober';
    assert.equal(decideAccess(users, prober, 'GET', '/healthz').allowed, true);
    assert.equal(decideAccess(users, prober, 'GET', '/healthz/details').allowed, false);
    assert.equal(decideAccess(users, prober, 'GET', '/users/1').allowed, false);
  });

  test('frontend has no AccessPolicy: the mesh default deny refuses everyone', () => {
    const frontend = accessOf('frontend');
    assert.equal(frontend.default, 'deny');
    assert.equal(decideAccess(frontend, id('checkout'), 'GET', '/').allowed, false);
  });
});

describe('the worked example of docs/access.md: normalisation, then the decision, at inventory', async () => {
  const shop = await compileDir(fileURLToPath(new URL('../../examples/shop', import.meta.url)));
  const inbound = shop.mesh?.configs.get('inventory')?.resources.find((r) => r.name === 'inbound');
  const access = (inbound?.body as InboundBody).access;
  const id = (service: string) => `spiffe://shop.trellis.local/svc/${service}`;
  /** [caller, method, raw path, normalised path, admitting rule or null for 403] */
  const rows: Array<[string, string, string, string, number | null]> = [
    ['catalog', 'GET', '/stock/42', '/stock/42', 0],
    ['catalog', 'GET', '/%73tock/42', '/stock/42', 0],
    ['catalog', 'GET', '/stock/../reservations', '/reservations', null],
    ['catalog', 'GET', '/stockpile', '/stockpile', null],
    ['catalog', 'POST', '/stock/42', '/stock/42', null],
    ['checkout', 'POST', '/reservations/7', '/reservations/7', 1],
    ['checkout', 'PUT', '/reservations/7', '/reservations/7', null],
    ['frontend', 'GET', '/stock/1', '/stock/1', null],
  ];
  for (const [caller, method, raw, normalised, ruleIndex] of rows) {
    test(`${caller} ${method} ${raw}`, () => {
      const path = normalizePath(raw);
      assert.deepEqual(path, { ok: true, path: normalised });
      const decision = decideAccess(access, id(caller), method, normalised);
      assert.deepEqual([decision.allowed, decision.ruleIndex, decision.policy], ruleIndex === null ? [false, null, null] : [true, ruleIndex, 'inventory']);
    });
  }
});

test('the PathPrefix /public table of docs/access.md', () => {
  const access = withPolicies([rule('public', [WEB], [{ methods: [], paths: [{ type: 'PathPrefix', value: '/public' }] }])]);
  /** raw path → 'allowed' | 'denied' | 'refused' (400 before any decision) */
  const table: Record<string, 'allowed' | 'denied' | 'refused'> = {
    '/public/a': 'allowed',
    '/public/../admin': 'denied',
    '//public/a': 'allowed',
    '/public/%2e%2e/admin': 'denied',
    '/public/.%2E/admin': 'denied',
    '/%70ublic/a': 'allowed',
    '/publicity': 'denied',
    '/PUBLIC/a': 'denied',
    '/public/..%2Fadmin': 'refused',
    '/public/..;/admin': 'refused',
    '/public/a%00': 'refused',
  };
  for (const [raw, expected] of Object.entries(table)) {
    const path = normalizePath(raw);
    const outcome = !path.ok ? 'refused' : decideAccess(access, WEB, 'GET', path.path).allowed ? 'allowed' : 'denied';
    assert.equal(outcome, expected, raw);
  }
});
