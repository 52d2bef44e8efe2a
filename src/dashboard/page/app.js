// The dashboard page: polls /v1/dashboard and draws it. Every text that comes from a spec or
// a request reaches the document through text nodes (textContent), never as HTML; the graph
// library draws labels on a canvas. Bundled with cytoscape by src/dashboard/build.ts.
import cytoscape from 'cytoscape';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

/** An element with attributes (no event handlers, no HTML) and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, String(v));
    else if (k === 'title') e.title = String(v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  return e;
}

const pct = (r) => (r === null || r === undefined ? '-' : `${(r * 100).toFixed(r >= 0.9995 || r === 0 ? 0 : 1)}%`);
const rps = (x) => (!x ? '-' : x < 0.05 ? '<0.1' : x.toFixed(1));
const ms = (s) => (s === null || s === undefined ? '-' : s >= 1 ? `${s.toFixed(2)}s` : s * 1000 < 1 ? `${(s * 1000).toFixed(1)}ms` : `${Math.round(s * 1000)}ms`);
const health = (g) => (!g || g.requests === 0 ? 'none' : g.successRate >= 0.99 ? 'good' : g.successRate >= 0.95 ? 'warn' : 'bad');
const COLORS = { none: '#9ca3af', good: '#1b7f3b', warn: '#d97706', bad: '#b91c1c' };

let state = null;
let selected = null;
const cy = cytoscape({
  container: $('graph'),
  wheelSensitivity: 0.3,
  style: [
    { selector: 'node', style: { label: 'data(id)', 'text-valign': 'bottom', 'text-margin-y': 4, 'font-size': 12, 'text-background-color': '#fff', 'text-background-opacity': 0.85, 'text-background-padding': 1, 'background-color': '#2563eb', width: 22, height: 22 } },
    { selector: 'node[!meshed]', style: { 'background-color': '#6b7280', shape: 'round-rectangle' } },
    { selector: 'node:selected', style: { 'border-width': 3, 'border-color': '#f59e0b' } },
    { selector: 'edge', style: { 'curve-style': 'bezier', 'target-arrow-shape': 'triangle', width: 2, 'line-color': 'data(color)', 'target-arrow-color': 'data(color)', label: 'data(label)', 'font-size': 9, 'text-rotation': 'autorotate', 'text-background-color': '#fff', 'text-background-opacity': 0.85, 'text-background-padding': 1 } },
    { selector: 'edge[!mtls]', style: { 'line-style': 'dotted' } },
    { selector: 'edge[?denied]', style: { 'line-style': 'dashed', 'line-color': COLORS.bad, 'target-arrow-color': COLORS.bad } },
    { selector: 'edge[!traffic]', style: { opacity: 0.45, width: 1 } },
  ],
  layout: { name: 'grid' },
});
// For the browser test and for curious people: the graph as drawn.
window.trellisGraph = cy;

// ---- charts: per edge over time, from this page's own polls (the reconciler keeps no history for it)
const HISTORY_POINTS = 150; // 5 minutes at one poll every 2 s
const PALETTE = ['#2563eb', '#f59e0b', '#10b981', '#8b5cf6', '#ef4444', '#0ea5e9', '#84cc16', '#ec4899', '#64748b', '#14b8a6'];
const history = { t: [], edges: new Map() };
const charts = { rps: null, p99: null, keys: '' };
window.trellisCharts = charts;

function recordHistory(d) {
  const t = Date.parse(d.stats.at) / 1000;
  const seen = new Map(d.stats.edges.map((e) => [`${e.source}→${e.destination}`, e]));
  for (const id of seen.keys()) if (!history.edges.has(id)) history.edges.set(id, { rps: history.t.map(() => null), p99: history.t.map(() => null) });
  history.t.push(t);
  for (const [id, h] of history.edges) {
    const e = seen.get(id);
    h.rps.push(e ? e.rps : 0);
    h.p99.push(e && e.p99 !== null ? Math.round(e.p99 * 10000) / 10 : null);
  }
  if (history.t.length > HISTORY_POINTS) {
    history.t.shift();
    for (const h of history.edges.values()) (h.rps.shift(), h.p99.shift());
  }
}

function makeChart(el, ids, value) {
  const width = Math.max(300, el.clientWidth || 500);
  return new uPlot(
    {
      width,
      height: 220,
      scales: { x: { time: true } },
      legend: { live: false },
      series: [{}, ...ids.map((id, i) => ({ label: id, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: false, value: (_u, v) => (v === null || v === undefined ? '-' : value(v)) }))],
      axes: [{}, { size: 50 }],
    },
    [history.t, ...ids.map(() => [])],
    el,
  );
}

function renderCharts() {
  const ids = [...history.edges.keys()].sort();
  const keys = ids.join('|');
  if (keys !== charts.keys) {
    charts.rps?.destroy();
    charts.p99?.destroy();
    $('chart-rps').replaceChildren();
    $('chart-p99').replaceChildren();
    charts.rps = makeChart($('chart-rps'), ids, (v) => v.toFixed(1));
    charts.p99 = makeChart($('chart-p99'), ids, (v) => `${v} ms`);
    charts.keys = keys;
  }
  charts.rps.setData([history.t, ...ids.map((id) => history.edges.get(id).rps)]);
  charts.p99.setData([history.t, ...ids.map((id) => history.edges.get(id).p99)]);
}

cy.on('tap', 'node', (evt) => {
  selected = evt.target.id();
  renderDetail();
});

function graphElements(d) {
  const nodes = new Map();
  for (const s of d.services) nodes.set(s.service, { meshed: s.meshed });
  const edges = new Map();
  for (const s of d.services) for (const c of s.callees) edges.set(`${s.service}→${c}`, { source: s.service, target: c, mtls: s.mtlsTo[c] ?? false, stats: null });
  for (const e of d.stats.edges) {
    for (const n of [e.source, e.destination]) if (!nodes.has(n)) nodes.set(n, { meshed: false });
    const id = `${e.source}→${e.destination}`;
    const caller = d.services.find((s) => s.service === e.source);
    edges.set(id, { source: e.source, target: e.destination, mtls: caller?.mtlsTo[e.destination] ?? false, stats: e });
  }
  return { nodes, edges };
}

function renderGraph(d) {
  const { nodes, edges } = graphElements(d);
  let added = false;
  cy.batch(() => {
    for (const n of cy.nodes()) if (!nodes.has(n.id())) cy.remove(n);
    for (const [id, n] of nodes) {
      const node = cy.getElementById(id);
      if (node.empty()) {
        cy.add({ group: 'nodes', data: { id, meshed: n.meshed } });
        added = true;
      } else node.data('meshed', n.meshed);
    }
    for (const e of cy.edges()) if (!edges.has(e.id())) cy.remove(e);
    for (const [id, e] of edges) {
      const s = e.stats;
      const data = {
        id,
        source: e.source,
        target: e.target,
        mtls: e.mtls,
        traffic: !!s && s.requests > 0,
        denied: !!s && s.denied > 0,
        color: COLORS[health(s)],
        label: s && s.requests > 0 ? `${rps(s.rps)} rps · ${pct(s.successRate)} · p99 ${ms(s.p99)}${s.denied > 0 ? ` · ${s.denied} denied` : ''}` : '',
        successRate: s ? s.successRate : null,
        rps: s ? s.rps : 0,
        p99: s ? s.p99 : null,
        requests: s ? s.requests : 0,
      };
      const edge = cy.getElementById(id);
      // A new edge does not move the nodes: a graph that jumps under the pointer cannot be clicked.
      if (edge.empty()) cy.add({ group: 'edges', data });
      else edge.data(data);
    }
  });
  if (added) {
    const roots = cy.nodes().filter((n) => n.indegree(false) === 0 && n.outdegree(false) > 0);
    // Callers left, callees right: the long edge labels then run along the wide side of the box.
    cy.layout({ name: 'breadthfirst', directed: true, roots: roots.length > 0 ? roots : undefined, spacingFactor: 1.2, padding: 24, animate: false, transform: (_node, p) => ({ x: p.y * 1.8, y: p.x / 1.4 }) }).run();
    cy.fit(undefined, 24);
  }
}

function cells(g) {
  return [pct(g.successRate), rps(g.rps), ms(g.p50), ms(g.p95), ms(g.p99), String(g.requests), g.denied > 0 ? String(g.denied) : '-'];
}

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(
    ...rows.map(({ keys, g, extra, data }) => {
      const tr = el('tr', data);
      for (const k of keys) tr.append(el('td', {}, k));
      for (const x of extra ?? []) tr.append(el('td', {}, x));
      cells(g).forEach((c, i) => tr.append(el('td', { class: i === 0 ? `num ${health(g)}` : 'num' }, c)));
      return tr;
    }),
  );
  if (rows.length === 0) body.append(el('tr', {}, el('td', { class: 'muted' }, 'No traffic in the window.')));
}

function diagnosticLine(x) {
  const where = x.file ? `${x.file}${x.line ? `:${x.line}:${x.col}` : ''}: ` : '';
  return el('div', { class: 'diag' }, where, el('span', { class: 'code' }, `${x.severity} ${x.code}`), `: ${x.message}`, x.hint ? `\n  hint: ${x.hint}` : null);
}

function revisionTitle(r) {
  return r.commit ? `${r.commit.sha} ${r.commit.message} — ${r.commit.author}` : r.description;
}

function render(d) {
  state = d;
  $('revision').textContent = d.applied ? `applied ${revisionTitle(d.applied)} at ${d.applied.at.slice(11, 19)}` : 'no revision applied yet';
  $('sync').textContent = `sidecars in sync ${d.sync.inSync}/${d.sync.connected}${d.sync.sidecars > d.sync.connected ? ` (${d.sync.sidecars - d.sync.connected} disconnected)` : ''}`;
  $('propagation').textContent = d.propagation.count > 0 ? `propagation p50 ${d.propagation.p50Ms} ms · p99 ${d.propagation.p99Ms} ms` : 'propagation: no push yet';
  $('updated').textContent = `updated ${d.stats.at.slice(11, 19)} · ${d.stats.source === 'prometheus' ? 'from Prometheus' : 'from sidecar reports'}`;

  $('failing').hidden = !d.failing;
  if (d.failing) {
    $('failing-body').replaceChildren(
      el('p', {}, `${revisionTitle(d.failing)} at ${d.failing.at.slice(11, 19)} does not compile:`),
      ...d.failing.diagnostics.filter((x) => x.severity === 'error').map(diagnosticLine),
    );
  }

  renderGraph(d);
  // The banner or the header may have moved the graph: cytoscape keeps the container's offset
  // to map clicks to nodes, and measures it again on resize().
  cy.resize();
  recordHistory(d);
  renderCharts();

  const mtlsOf = (a, b) => d.services.find((s) => s.service === a)?.mtlsTo[b];
  fillTable('edges', d.stats.edges.map((e) => ({ keys: [e.source, e.destination], extra: [mtlsOf(e.source, e.destination) ? 'yes' : 'no'], g: e, data: { 'data-edge': `${e.source}→${e.destination}` } })));
  fillTable('services', d.stats.services.map((s) => ({ keys: [s.service, s.reporter === 'inbound' ? 'itself' : 'its callers'], g: s, data: { 'data-service': s.service } })));
  fillTable('routes', d.stats.routes.map((r) => ({ keys: [r.source, r.destination, r.route], g: r, data: { 'data-route': `${r.source}→${r.destination} ${r.route}` } })));

  const splits = d.splits.map((s) => {
    const seen = s.observed.reduce((n, o) => n + o.requests, 0);
    const bar = (parts) => el('div', { class: 'bar' }, ...parts.map((p) => { const span = el('span', { title: p.title }, p.text); span.style.width = `${(p.share * 100).toFixed(2)}%`; return span; }));
    return el(
      'div',
      { class: 'split', 'data-split': `${s.service}/${s.route}/${s.rule ?? ''}` },
      el('div', { class: 'title' }, `${s.service} — route ${s.route}${s.rule ? `, rule ${s.rule}` : ''}`),
      el('div', { class: 'split-row' }, el('span', { class: 'bar-label' }, 'configured'), bar(s.configured.map((c) => ({ share: c.share, text: `${c.service} ${Math.round(c.share * 100)}%`, title: `weight ${c.weight}` })))),
      el('div', { class: 'split-row' }, el('span', { class: 'bar-label' }, 'observed'), seen === 0 ? el('span', { class: 'muted' }, 'no traffic in the window') : bar(s.observed.map((o) => ({ share: o.share ?? 0, text: `${o.service} ${Math.round((o.share ?? 0) * 100)}%`, title: `${o.requests} requests` })))),
      el('div', { class: 'muted', 'data-observed': s.observed.map((o) => `${o.service}=${o.requests}`).join(',') }, `configured ${s.configured.map((c) => `${c.service} ${Math.round(c.share * 100)}%`).join(' / ')} · observed ${seen === 0 ? '-' : s.observed.map((o) => `${o.service} ${Math.round((o.share ?? 0) * 100)}%`).join(' / ')} (${seen} requests)`),
    );
  });
  $('splits').replaceChildren(...(splits.length > 0 ? splits : [el('p', { class: 'muted' }, 'No weighted rule.')]));

  const refused = [
    ...d.stats.access.filter((a) => a.what !== 'allowed').map((a) => `${a.service}: ${a.count} ${a.what === 'audited' ? 'would be denied (audit mode)' : 'denied by access policy'} (${a.reason})`),
    ...d.stats.tls.map((t) => `${t.service}: ${t.count} ${t.what} mTLS connection${t.count === 1 ? '' : 's'} refused (${t.reason})`),
  ];
  $('refused').replaceChildren(...(refused.length > 0 ? refused.map((t) => el('li', {}, t)) : [el('li', { class: 'muted' }, 'None in the window.')]));

  $('revisions').replaceChildren(
    ...d.revisions.map((r) =>
      el('li', { 'data-revision': r.revision, 'data-ok': r.ok }, el('span', { class: r.ok ? 'ok' : 'rejected' }, r.ok ? 'applied ' : 'rejected '), `${revisionTitle(r)} at ${r.at.slice(11, 19)}`, ...(r.ok ? [] : r.diagnostics.filter((x) => x.severity === 'error').map(diagnosticLine))),
    ),
  );
  if (d.revisions.length === 0) $('revisions').append(el('li', { class: 'muted' }, 'None yet.'));
  renderDetail();
}

function renderDetail() {
  const d = state;
  if (!d || !selected) return;
  const svc = d.services.find((s) => s.service === selected);
  $('detail-title').textContent = selected;
  $('detail-hint').hidden = true;
  $('detail-body').hidden = false;
  const g = d.stats.services.find((s) => s.service === selected);
  $('detail-metrics').replaceChildren(
    el('p', {}, svc?.meshed ? 'runs a sidecar' : 'no sidecar (its callers report it)'),
    g ? el('p', {}, `success ${pct(g.successRate)} · ${rps(g.rps)} rps · p50 ${ms(g.p50)} · p95 ${ms(g.p95)} · p99 ${ms(g.p99)} · ${g.requests} requests`) : el('p', { class: 'muted' }, 'no traffic in the window'),
  );
  const rules = svc?.rules ?? [];
  $('detail-routes').replaceChildren(
    ...(rules.length > 0
      ? rules.map((r) => el('div', { class: 'diag' }, `${r.route ?? '(implicit)'}${r.name ? `/${r.name}` : ''}: ${r.match} → ${r.backends.map((b) => (r.backends.length > 1 ? `${b.service} ${b.weight}` : b.service)).join(', ')}`))
      : [el('p', { class: 'muted' }, 'none')]),
  );
  const callers = new Set([...d.services.filter((s) => s.callees.includes(selected)).map((s) => s.service), ...d.stats.edges.filter((e) => e.destination === selected).map((e) => e.source)]);
  const callees = new Set([...(svc?.callees ?? []), ...d.stats.edges.filter((e) => e.source === selected).map((e) => e.destination)]);
  const list = (id, names, other) =>
    $(id).replaceChildren(
      ...(names.size > 0
        ? [...names].sort().map((n) => {
            const e = d.stats.edges.find((x) => (other === 'source' ? x.source === n && x.destination === selected : x.source === selected && x.destination === n));
            return el('li', {}, n, e ? ` — ${rps(e.rps)} rps, ${pct(e.successRate)}, p99 ${ms(e.p99)}` : ' — no traffic');
          })
        : [el('li', { class: 'muted' }, 'none')]),
    );
  list('detail-callers', callers, 'source');
  list('detail-callees', callees, 'destination');
  const from = $('explain-from');
  const options = [...callers].sort();
  if (from.dataset.for !== selected || from.options.length !== options.length) {
    from.replaceChildren(...(options.length > 0 ? options : d.services.map((s) => s.service)).map((n) => el('option', {}, n)));
    from.dataset.for = selected;
    $('explain-out').textContent = '';
  }
}

$('explain-form').addEventListener('submit', async (evt) => {
  evt.preventDefault();
  const q = new URLSearchParams({ from: $('explain-from').value, to: selected ?? '', method: $('explain-method').value, path: $('explain-path').value || '/' });
  const header = $('explain-header').value.trim();
  if (header) q.append('header', header);
  const out = $('explain-out');
  out.textContent = 'explaining…';
  try {
    const res = await fetch(`/v1/explain?${q}`);
    const body = await res.json();
    out.textContent = res.ok ? body.text : `cannot explain: ${body.message ?? body.error}`;
  } catch (err) {
    out.textContent = `cannot reach the reconciler: ${err.message}`;
  }
});

let timer = null;
async function poll() {
  clearTimeout(timer);
  try {
    const res = await fetch(`/v1/dashboard?window=${encodeURIComponent($('window').value)}`);
    if (res.ok) render(await res.json());
    else $('updated').textContent = `the reconciler answered ${res.status}`;
  } catch (err) {
    $('updated').textContent = `cannot reach the reconciler: ${err.message}`;
  }
  timer = setTimeout(poll, POLL_MS);
}
$('window').addEventListener('change', poll);
poll();
