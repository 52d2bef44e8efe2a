/**
 * The affected edges of a change set as a mermaid `flowchart`: a traffic edge per service →
 * backend whose share moves (labelled old → new), a thick edge per caller that may now call
 * a service and a dotted one per caller that may no longer. Bounded: past MAX_EDGES a
 * diagram stops being readable (and nears mermaid's own limits), so callers get null and
 * show a table instead.
 */
import type { ChangeSet } from './change-set.ts';
import { mermaidLabel } from './markdown-escape.ts';
import { shareArrow } from './describe-config.ts';

/** Edges past which a flowchart is replaced by a table; far under mermaid's default maxEdges (500). */
export const MAX_EDGES = 40;

/** One edge of the picture, in the order it is drawn. */
export interface AffectedEdge {
  readonly from: string;
  readonly to: string;
  readonly kind: 'traffic' | 'granted' | 'revoked';
  /** `95% → 75%` per changed rule (`every request: …` when the service has several), or the access change. */
  readonly label: string;
}

/** Every affected edge: traffic edges by service then backend, then access edges by service then caller. */
export function affectedEdges(set: ChangeSet): AffectedEdge[] {
  const edges: AffectedEdge[] = [];
  for (const s of set.services) {
    const labels = new Map<string, string[]>();
    const several = s.rules.length > 1;
    for (const r of s.rules) {
      for (const sh of r.shares) {
        if (sh.before === sh.after) continue;
        labels.set(sh.backend, [...(labels.get(sh.backend) ?? []), `${several ? `${r.match}: ` : ''}${shareArrow(sh.before, sh.after)}`]);
      }
    }
    for (const backend of [...labels.keys()].sort()) edges.push({ from: s.service, to: backend, kind: 'traffic', label: labels.get(backend)!.join('; ') });
  }
  for (const e of set.access) edges.push({ from: e.caller, to: e.service, kind: e.change, label: e.change === 'granted' ? 'may now call' : 'may no longer call' });
  return edges;
}

/** The flowchart source (without fences), or null when there is nothing to draw or more than MAX_EDGES edges. */
export function renderFlowchart(edges: readonly AffectedEdge[]): string | null {
  if (edges.length === 0 || edges.length > MAX_EDGES) return null;
  // A traffic edge starts at the route ("calls to checkout", a rounded node), not at the
  // service, so a canary's checkout → checkout share is not drawn as a loop. Node ids are
  // indexes, so no service name needs to be a valid mermaid id.
  const routes = [...new Set(edges.filter((e) => e.kind === 'traffic').map((e) => e.from))].sort();
  const names = [...new Set(edges.flatMap((e) => (e.kind === 'traffic' ? [e.to] : [e.from, e.to])))].sort();
  const routeId = new Map(routes.map((n, i) => [n, `r${i}`]));
  const id = new Map(names.map((n, i) => [n, `s${i}`]));
  const lines = ['flowchart LR'];
  for (const n of routes) lines.push(`  ${routeId.get(n)}(["calls to ${mermaidLabel(n)}"])`);
  for (const n of names) lines.push(`  ${id.get(n)}["${mermaidLabel(n)}"]`);
  for (const e of edges) {
    const arrow = e.kind === 'traffic' ? '-->' : e.kind === 'granted' ? '==>' : '-.->';
    const from = e.kind === 'traffic' ? routeId.get(e.from) : id.get(e.from);
    lines.push(`  ${from} ${arrow}|"${mermaidLabel(e.label)}"| ${id.get(e.to)}`);
  }
  return lines.join('\n');
}
