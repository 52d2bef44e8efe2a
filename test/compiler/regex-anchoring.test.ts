/**
 * A route regex matches the whole value and nothing else (issue 16, item 3). The pattern
 * `/public)|(?:/admin` used to compile to `^(?:/public)|(?:/admin)$`, whose second branch
 * is anchored only at the end, so it matched `/xyz/admin`. Patterns whose groups do not
 * balance on their own are now refused (TRL4007, pointing at the stray parenthesis), and
 * every accepted pattern matches only whole values.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { RouteTable } from '../../src/config/router.ts';
import { formatLocation } from '../../src/diagnostics/render.ts';
import { compileMatchRegex } from '../../src/spec/regex.ts';
import { BASE_SPEC, compileTexts } from '../helpers/spec.ts';

/** Whether compiling throws. */
function rejected(pattern: string): boolean {
  try {
    compileMatchRegex(pattern);
    return false;
  } catch {
    return true;
  }
}

describe('regex anchoring', () => {
  const unbalanced = ['/public)|(?:/admin', '/a)|(/b', ')', '(', '/a(', '/a)', 'a)(b', '(?:a))|((b', '[(]a)|(?:b'];
  for (const p of unbalanced) {
    test(`unbalanced groups are refused: ${JSON.stringify(p)}`, () => assert.ok(rejected(p), `${p} must be refused`));
  }

  const table: Array<[string, string, boolean]> = [
    ['/public|/admin', '/admin', true],
    ['/public|/admin', '/xyz/admin', false],
    ['/public|/admin', '/public/x', false],
    ['(/public)|(/admin)', '/xyz/admin', false],
    ['(?:/public)|(?:/admin)', '/admin/x', false],
    ['/a[)(]b', '/a)b', true],
    ['/a\\)|\\(b', '/a)', true],
    ['/a\\)|\\(b', 'x(b', false],
    ['[|]', '|', true],
    ['a|', '', true],
    ['a|', 'ba', false],
  ];
  for (const [p, input, expected] of table) {
    test(`${JSON.stringify(p)} ${expected ? 'matches' : 'does not match'} ${JSON.stringify(input)}`, () => {
      assert.equal(compileMatchRegex(p).test(input), expected);
    });
  }

  test('property: whatever the pattern, an accepted one only ever matches the whole value', () => {
    const atom = fc.constantFrom('a', 'b', '/', '(', ')', '(?:', '|', '*', '?', '.', '[', ']', '\\', '+');
    fc.assert(
      fc.property(fc.array(atom, { maxLength: 12 }).map((xs) => xs.join('')), fc.array(fc.constantFrom('a', 'b', '/', 'x'), { maxLength: 8 }).map((xs) => xs.join('')), (pattern, input) => {
        let re: RegExp;
        try {
          re = compileMatchRegex(pattern);
        } catch {
          return true;
        }
        const m = re.exec(input);
        return m === null || (m.index === 0 && m[0] === input);
      }),
      { numRuns: 5000 },
    );
  });

  test('the compiler refuses the attack pattern at the stray parenthesis, in path, header and query matches', () => {
    const route = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api }
spec:
  parentRefs: [{ kind: Service, name: api }]
  rules:
    - matches:
        - path: { type: RegularExpression, value: "/public)|(?:/admin" }
        - headers: [{ type: RegularExpression, name: x-role, value: "user)|(?:admin" }]
        - queryParams: [{ type: RegularExpression, name: role, value: user)|(?:admin }]
      backendRefs: [{ name: api, port: 80 }]
`;
    const result = compileTexts({ 'base.yaml': BASE_SPEC, 'route.yaml': route });
    assert.equal(result.mesh, undefined);
    const found = result.diagnostics.filter((d) => d.code === 'TRL4007');
    const lines = route.split('\n');
    const expected = [8, 9, 10].map((n) => `route.yaml:${n}:${lines[n - 1]!.indexOf(')|(') + 1}`);
    assert.deepEqual(found.map((d) => formatLocation(d.span!)), expected);
    for (const d of found) assert.match(d.message, /"\)" at character \d+ closes no group/);
  });

  test('a route table built from a config (the sidecar side) does not let the attack through either', () => {
    assert.throws(
      () =>
        new RouteTable({
        service: 'api',
        ports: [80],
        rules: [
          {
            id: 'r/0/0',
            route: 'r',
            ruleName: null,
            match: { port: null, path: { type: 'RegularExpression', value: '/public)|(?:/admin' }, method: null, headers: [], queryParams: [] },
            filters: [],
            backends: [],
            timeouts: { requestMs: 0, backendRequestMs: 0 },
            retry: { attempts: 0, codes: [], backoffMs: 0 },
          },
        ],
      } as never),
      SyntaxError,
    );
  });
});
