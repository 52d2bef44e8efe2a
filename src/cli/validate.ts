/** `trellis validate [DIR]`: check a spec folder; exit 0 valid, 1 invalid. */
import { hasErrors } from '../diagnostics/diagnostic.ts';
import { compileDir } from '../compiler/compile.ts';
import { diagnosticsJson, printDiagnostics, type OutputFormat } from './diagnostics-output.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { EXIT, type CliIo } from './io.ts';

export async function runValidate(dir: string, opts: { format: OutputFormat; verbose?: boolean; trafficTests?: boolean }, io: CliIo): Promise<number> {
  const result = await compileDir(dir, { trafficTests: opts.trafficTests !== false });
  const valid = !hasErrors(result.diagnostics);
  if (opts.format === 'json') {
    io.stdout.write(JSON.stringify({ valid, ...diagnosticsJson(result.diagnostics, dir) }, null, 2) + '\n');
  } else {
    printDiagnostics(io, result.diagnostics, dir, opts.verbose === true);
    const tests = result.trafficTests ? `, ${result.trafficTests.length} traffic tests passed` : '';
    if (valid) io.stderr.write(`${escapeForTerminal(dir)}: valid, ${result.mesh?.configs.size ?? 0} sidecar configs${tests}\n`);
  }
  return valid ? EXIT.ok : EXIT.failed;
}
