/**
 * The dashboard's HTTP side, mounted on the reconciler's listener:
 *
 *   GET /dashboard          the page (and /dashboard/app.js, /dashboard/style.css)
 *   GET /v1/dashboard       everything the page shows (?window=30s), JSON (dashboard-data.ts)
 *   GET /v1/explain         one request traced through the applied revision
 *                           (?from=&to=&method=&path=&header=name=value…), JSON with the text rendering
 *
 * Read-only, like GET /status: they show what the mesh does, never change it.
 */
import type { ServerResponse } from 'node:http';
import { compileFiles, type CompileResult } from '../compiler/compile.ts';
import { ExplainError, explain, renderExplanation } from '../explain/explain.ts';
import { sendJson } from '../http/json-server.ts';
import type { ReconcilerMetrics } from '../reconciler/metrics.ts';
import type { Reconciler } from '../reconciler/reconciler.ts';
import { serveAsset } from './assets.ts';
import { dashboardData, histogramQuantilesMs, RevisionHistory } from './dashboard-data.ts';
import { parseWindow, type StatsQuery, type StatsView } from './mesh-stats.ts';

/** How often the reconciler's latest attempt is looked at for the revision list: often enough that a person's quick fix-up commit does not hide the broken one. */
const SAMPLE_EVERY_MS = 500;

export interface DashboardEndpointsOptions {
  readonly reconciler: Reconciler;
  /** The traffic over a window: from sidecar reports or from Prometheus (rejects when that cannot be read). */
  readonly view: (q: StatsQuery) => Promise<StatsView>;
  readonly metrics: ReconcilerMetrics;
}

export class DashboardEndpoints {
  readonly #o: DashboardEndpointsOptions;
  readonly #history = new RevisionHistory();
  readonly #timer: NodeJS.Timeout;
  /** The applied revision compiled with its spec documents (explain needs them; the reconciler keeps only the configs). */
  #compiled: { id: string; result: CompileResult } | undefined;

  /** Revisions attempted so far (the compile-duration histogram counts one per attempt), when last looked at. */
  #attempts = -1;

  constructor(options: DashboardEndpointsOptions) {
    this.#o = options;
    this.#timer = setInterval(() => void this.#sample(), SAMPLE_EVERY_MS);
    this.#timer.unref();
  }

  /** Records the latest attempt when there was a new one (status() walks every sidecar: it is asked only then). */
  async #sample(): Promise<void> {
    const values = (await this.#o.metrics.reconcileDuration.get()).values;
    const attempts = values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
    if (attempts === this.#attempts) return;
    this.#attempts = attempts;
    this.#history.observe(this.#o.reconciler.status());
  }

  /** Answers the request when it is the dashboard's; false otherwise. */
  handle(method: string, url: URL, res: ServerResponse): boolean {
    if (method !== 'GET') return false;
    if (serveAsset(url.pathname, res)) return true;
    if (url.pathname === '/v1/dashboard') {
      void this.#dashboard(url, res);
      return true;
    }
    if (url.pathname === '/v1/explain') {
      this.#explain(url, res);
      return true;
    }
    return false;
  }

  async #dashboard(url: URL, res: ServerResponse): Promise<void> {
    const windowMs = parseWindow(url.searchParams.get('window') ?? '30s');
    if (windowMs === undefined || windowMs <= 0) return sendJson(res, 400, { error: 'invalid_window', message: 'window is a duration such as 30s, 1m or 5m' });
    const r = this.#o.reconciler;
    const status = r.status();
    this.#history.observe(status);
    const propagation = histogramQuantilesMs((await this.#o.metrics.propagation.get()).values);
    let stats: StatsView;
    try {
      stats = await this.#o.view({ windowMs });
    } catch (err) {
      return sendJson(res, 502, { error: 'stats_unavailable', message: (err as Error).message });
    }
    sendJson(res, 200, dashboardData({ stats, status, applied: r.applied, history: this.#history, propagation }));
  }

  #explain(url: URL, res: ServerResponse): void {
    const applied = this.#o.reconciler.applied;
    if (!applied) return sendJson(res, 503, { error: 'not_applied', message: 'no revision is applied yet' });
    const q = url.searchParams;
    const from = q.get('from');
    const to = q.get('to');
    if (!from || !to) return sendJson(res, 400, { error: 'invalid_request', message: 'explain needs from and to' });
    const headers: Record<string, string> = {};
    for (const h of q.getAll('header')) {
      const eq = h.indexOf('=');
      if (eq <= 0) return sendJson(res, 400, { error: 'invalid_request', message: 'a header is name=value' });
      headers[h.slice(0, eq).trim().toLowerCase()] = h.slice(eq + 1).trim();
    }
    if (this.#compiled?.id !== applied.revision.id) this.#compiled = { id: applied.revision.id, result: compileFiles(applied.revision.files) };
    const full = q.get('path') || '/';
    const cut = full.indexOf('?');
    try {
      const e = explain(
        this.#compiled.result,
        { from, to, method: (q.get('method') || 'GET').toUpperCase(), path: cut < 0 ? full : full.slice(0, cut), query: cut < 0 ? '' : full.slice(cut + 1), headers },
        '',
      );
      sendJson(res, 200, { revision: applied.revision.id, text: renderExplanation(e), explanation: e });
    } catch (err) {
      if (!(err instanceof ExplainError)) throw err;
      sendJson(res, 404, { error: 'cannot_explain', message: err.message });
    }
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
