/** Printing compile diagnostics the same way for every command. */
import { InvalidArgumentError } from 'commander';
import type { Diagnostic } from '../diagnostics/diagnostic.ts';
import { diagnosticToJson, renderDiagnostics, type DiagnosticJson } from '../diagnostics/render.ts';
import { useColor, type CliIo } from './io.ts';

export type OutputFormat = 'text' | 'json';

export function parseFormat(value: string): OutputFormat {
  if (value !== 'text' && value !== 'json') throw new InvalidArgumentError('use text or json.');
  return value;
}

/** Diagnostics as JSON data, with counts. */
export function diagnosticsJson(diagnostics: readonly Diagnostic[], pathPrefix: string): { diagnostics: DiagnosticJson[]; errors: number; warnings: number } {
  return {
    diagnostics: diagnostics.map((d) => diagnosticToJson(d, { pathPrefix })),
    errors: diagnostics.filter((d) => d.severity === 'error').length,
    warnings: diagnostics.filter((d) => d.severity === 'warning').length,
  };
}

/** Human rendering of diagnostics and their summary, to stderr. Infos are shown only when `verbose`. */
export function printDiagnostics(io: CliIo, diagnostics: readonly Diagnostic[], pathPrefix: string, verbose: boolean): void {
  const shown = verbose ? diagnostics : diagnostics.filter((d) => d.severity !== 'info');
  if (shown.length === 0) return;
  io.stderr.write(renderDiagnostics(shown, { pathPrefix, color: useColor(io) }));
}
