/**
 * The dashboard in a real browser (Debian's chromium, driven by playwright-core) against a
 * real running mesh: `trellis up` of a copy of examples/shop, with its sidecars, mTLS, demo
 * apps and traffic. What the page shows is checked: the graph's edges with the rate the
 * traffic generator sends, success rate and p99; the 90/10 canary split configured and
 * observed; the README's first edit (50/50) refused by the shop's own traffic test, shown as
 * a rejected revision with its diagnostic; the fix applied and the observed split moving;
 * a service's detail with its callers and `explain`; the rate chart over time. A screenshot is written to
 * test-artifacts/dashboard.png for review.
 *
 * Runs on its own (npm run test:browser): it needs /usr/bin/chromium (apt-get install chromium),
 * or CHROMIUM_PATH.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { up, type RunningMesh } from '../../src/up/up.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Requests per second the traffic generator sends on each call (frontend → each service). */
const RATE = 20;

const dirs: string[] = [];
let mesh: RunningMesh;
let context: BrowserContext;
let page: Page;
let dir: string;
const printed: string[] = [];
const pageErrors: string[] = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no browser at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`);
  dir = mkdtempSync(join(tmpdir(), 'trellis-browser-shop-'));
  dirs.push(dir);
  cpSync(join(ROOT, 'examples/shop'), dir, { recursive: true });
  mesh = await up({ dir, controlPort: 0, rate: RATE, reportEveryMs: 1000, report: (t) => printed.push(t), revisions: (t) => printed.push(t) });
  const profile = mkdtempSync(join(tmpdir(), 'trellis-chromium-'));
  dirs.push(profile);
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 1500 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  // The page works offline: any request to another origin fails the test.
  await context.route(/.*/, (route) => (new URL(route.request().url()).origin === new URL(mesh.controlUrl).origin ? route.continue() : (pageErrors.push(`request to ${route.request().url()}`), route.abort())));
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (m) => (m.type() === 'error' ? pageErrors.push(m.text()) : undefined));
});

after(async () => {
  await context?.close();
  await mesh?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Polls `check` (every 250 ms) until it returns a value, failing with `what` after `ms`. */
async function until<T>(what: string, check: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await page.waitForTimeout(250);
  }
}

/** A row of the page's edge table, as shown: [from, to, mTLS, success, rps, p50, p95, p99, requests, denied]. */
async function edgeRow(from: string, to: string): Promise<string[] | undefined> {
  const row = page.locator(`#edges tr[data-edge="${from}→${to}"] td`);
  if ((await row.count()) === 0) return undefined;
  return row.allTextContents();
}

/** The observed requests per backend of the checkout split, from the page. */
async function observedSplit(): Promise<Record<string, number>> {
  const text = (await page.locator('[data-split^="checkout/checkout/"] [data-observed]').getAttribute('data-observed')) ?? '';
  return Object.fromEntries(text.split(',').filter(Boolean).map((p) => [p.split('=')[0]!, Number(p.split('=')[1])]));
}

const share = (o: Record<string, number>, who: string) => (o[who] ?? 0) / Object.values(o).reduce((a, b) => a + b, 0);

test('the dashboard shows the shop live: edges with rate, success and p99, the canary split, a refused edit, the split moving, service detail', { timeout: 240_000 }, async () => {
  await page.goto(mesh.dashboardUrl);
  await page.selectOption('#window', '10s');

  // The graph and the edge table: frontend's calls, at the rate the generator sends, all
  // succeeding, over mTLS (cart: only allowed calls go there; catalog also gets forbidden ones).
  const row = await until('frontend → cart with traffic', async () => {
    const r = await edgeRow('frontend', 'cart');
    return r && Number(r[8]) > RATE * 5 ? r : undefined;
  });
  assert.equal(row[2], 'yes', 'mTLS');
  assert.equal(row[3], '100%');
  const rps = Number(row[4]);
  assert.ok(rps > RATE * 0.6 && rps < RATE * 1.4, `frontend → cart at ${rps} rps; the generator sends ${RATE}`);
  assert.match(row[7]!, /^\d+(\.\d)?ms$/, `p99 ${row[7]}`);
  const graphEdge = await page.evaluate(() => {
    const cy = (window as unknown as { trellisGraph: { getElementById(id: string): { data(): Record<string, unknown> } } }).trellisGraph;
    return [cy.getElementById('frontend→cart').data(), cy.getElementById('frontend→catalog').data()];
  });
  assert.equal(graphEdge[0]!.mtls, true);
  assert.match(String(graphEdge[0]!.label), /^\d+(\.\d)? rps · 100% · p99 \d/);
  // The forbidden calls (DELETE /admin to catalog, at the same rate) show as denied, on the edge and in the list.
  assert.equal(graphEdge[1]!.denied, true);
  assert.match(String(graphEdge[1]!.label), / · \d+ denied$/);
  const catalog = (await edgeRow('frontend', 'catalog'))!;
  const denied = Number(catalog[9]);
  assert.ok(denied > 0 && Math.abs(denied - Number(catalog[8]) / 2) <= RATE * 2, `catalog: ${denied} of ${catalog[8]} denied, about half`);
  assert.match((await page.locator('#refused').textContent()) ?? '', /catalog: \d+ denied by access policy \(no_matching_rule\)/);

  // The canary: 90/10 configured, about that observed.
  const configured = await page.locator('[data-split^="checkout/checkout/"]').textContent();
  assert.match(configured ?? '', /configured checkout 90% \/ checkout-v2 10%/);
  const before = await until('the checkout split observed', async () => {
    const o = await observedSplit();
    return Object.values(o).reduce((a, b) => a + b, 0) >= 100 ? o : undefined;
  });
  assert.ok(share(before, 'checkout-v2') < 0.2, `checkout-v2 observed at ${share(before, 'checkout-v2')} with 10% configured`);

  // The README's first edit alone: the shop's own traffic test refuses it, and the page says why.
  const route = join(dir, 'routes/checkout.yaml');
  writeFileSync(route, readFileSync(route, 'utf8').replace('weight: 90', 'weight: 50').replace('weight: 10', 'weight: 50'));
  await page.locator('#failing').waitFor({ state: 'visible', timeout: 30_000 });
  const failing = (await page.locator('#failing').textContent()) ?? '';
  assert.match(failing, /tests\/traffic\.yaml:\d+:\d+: error TRL5001/);
  assert.match(failing, /canary-share-stays-small/);
  assert.match((await page.locator('#revisions').textContent()) ?? '', /rejected folder/);
  assert.ok(share(await observedSplit(), 'checkout-v2') < 0.2, 'the mesh stays on 90/10');
  // trellis up says so too, readable, not as a log line.
  assert.ok(printed.some((t) => /REJECTED folder .*\n.*traffic\.yaml:\d+:\d+: error TRL5001/.test(t)), printed.filter((t) => /REJECTED/.test(t)).join('\n') || 'no rejection printed');

  // The fix: the test allows half; the revision applies and the observed split moves.
  const tests = join(dir, 'tests/traffic.yaml');
  writeFileSync(tests, readFileSync(tests, 'utf8').replace('max: 10', 'max: 50'));
  await page.locator('#failing').waitFor({ state: 'hidden', timeout: 30_000 });
  assert.match((await page.locator('[data-split^="checkout/checkout/"]').textContent()) ?? '', /configured checkout 50% \/ checkout-v2 50%/);
  const moved = await until('the observed split to move to about 50/50', async () => {
    const o = await observedSplit();
    const s = share(o, 'checkout-v2');
    return Object.values(o).reduce((a, b) => a + b, 0) >= 100 && s > 0.35 && s < 0.65 ? o : undefined;
  }, 40_000);
  assert.ok(moved);
  const v2 = await until('frontend → checkout-v2 with traffic', async () => {
    const r = await edgeRow('frontend', 'checkout-v2');
    return r && Number(r[4]) > RATE * 0.3 ? r : undefined;
  });
  assert.equal(v2[3], '100%');

  // The chart of requests per second over time shows checkout-v2 taking more of the traffic.
  const series = await page.evaluate(() => {
    const charts = (window as unknown as { trellisCharts: { rps: { series: Array<{ label?: string }>; data: Array<Array<number | null>> } } }).trellisCharts;
    const i = charts.rps.series.findIndex((x) => x.label === 'frontend→checkout-v2');
    return { labels: charts.rps.series.map((x) => x.label ?? ''), v2: i < 0 ? [] : charts.rps.data[i]! };
  });
  assert.ok(series.labels.includes('frontend→cart') && series.labels.includes('frontend→checkout'), `chart series: ${series.labels.join(', ')}`);
  const points = series.v2.filter((x): x is number => x !== null);
  assert.ok(points.length > 5 && points.at(-1)! > points[0]! * 1.2, `frontend→checkout-v2 rps over time: ${points.join(' ')}`);

  // A service's detail: its routes, callers and callees, and explain.
  // A real click where the node is drawn (asked again on each try: the page re-renders every 2 s).
  await until('the detail of checkout after clicking its node', async () => {
    const at = await page.evaluate(() => {
      const cy = (window as unknown as { trellisGraph: { getElementById(id: string): { renderedPosition(): { x: number; y: number } } } }).trellisGraph;
      const p = cy.getElementById('checkout').renderedPosition();
      const box = document.getElementById('graph')!.getBoundingClientRect();
      return { x: box.left + p.x, y: box.top + p.y };
    });
    await page.mouse.click(at.x, at.y);
    return (await page.locator('#detail-title').textContent()) === 'checkout' && (await page.locator('#detail-body').isVisible());
  }, 10_000);
  assert.equal(await page.locator('#detail-title').textContent(), 'checkout');
  assert.match((await page.locator('#detail-callers').textContent()) ?? '', /frontend — \d/);
  assert.match((await page.locator('#detail-routes').textContent()) ?? '', /checkout\/weighted-split: .* → checkout 50, checkout-v2 50/);
  await page.selectOption('#explain-from', 'frontend');
  await page.fill('#explain-header', 'x-canary=1');
  await page.click('#explain-form button');
  await until('the explanation', async () => /checkout-v2/.test((await page.locator('#explain-out').textContent()) ?? '') && !/explaining/.test((await page.locator('#explain-out').textContent()) ?? ''));
  assert.match((await page.locator('#explain-out').textContent()) ?? '', /canary-opt-in/);

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
  assert.deepEqual(pageErrors, [], 'no script error, CSP violation or request elsewhere');
});
