/**
 * The change set as JSON for scripts and CI: the same data as the other renderers, with
 * diagnostics in the shared `DiagnosticJson` shape and the verdicts precomputed. Keys are
 * sorted, so equal change sets give byte-equal output.
 */
import { prettyJson } from '../config/canonical.ts';
import { diagnosticToJson, type RenderOptions } from '../diagnostics/render.ts';
import { changesTraffic, summaryLine, type ChangeSet, type DiffSideSummary } from './change-set.ts';

function side(s: DiffSideSummary, options: RenderOptions) {
  return { valid: s.valid, version: s.version, diagnostics: s.diagnostics.map((d) => diagnosticToJson(d, options)) };
}

/** `{ summary, trafficChanged, counts, base, head, servicesAdded, …, risks }` as pretty, key-sorted JSON. */
export function renderJson(set: ChangeSet, options: RenderOptions = {}): string {
  return prettyJson({
    summary: summaryLine(set),
    trafficChanged: changesTraffic(set),
    counts: set.counts,
    base: side(set.base, options),
    head: side(set.head, options),
    servicesAdded: set.servicesAdded,
    servicesRemoved: set.servicesRemoved,
    services: set.services,
    access: set.access,
    sidecars: set.sidecars,
    risks: set.risks,
  });
}
