/** `trellis test [DIR]`: run the spec's TrafficTests and report them like a test runner. */
import { compileDir } from '../compiler/compile.ts';
import { formatLocation } from '../diagnostics/render.ts';
import { escapeForTerminal } from '../diagnostics/terminal-escape.ts';
import { printDiagnostics, type OutputFormat } from './diagnostics-output.ts';
import { EXIT, useColor, type CliIo } from './io.ts';

export async function runTest(dir: string, opts: { format: OutputFormat }, io: CliIo): Promise<number> {
  const result = await compileDir(dir);
  const tests = result.trafficTests;
  if (!tests) {
    // The spec did not compile (tests need a mesh), or has no tests.
    const errors = result.diagnostics.filter((d) => d.severity === 'error');
    if (errors.length > 0) {
      printDiagnostics(io, result.diagnostics, dir, false);
      io.stderr.write('traffic tests did not run: the spec does not compile\n');
      return EXIT.failed;
    }
    io.stderr.write(`${escapeForTerminal(dir)}: no TrafficTest documents\n`);
    return EXIT.ok;
  }
  const failedDiagnostics = result.diagnostics.filter((d) => d.code === 'TRL5001' || d.code === 'TRL5002');
  if (opts.format === 'json') {
    io.stdout.write(JSON.stringify({ passed: tests.filter((t) => t.ok).length, failed: tests.filter((t) => !t.ok).length, tests: tests.map((t) => ({ name: t.name, ok: t.ok, failures: t.failures })) }, null, 2) + '\n');
  } else {
    const color = useColor(io, 'stdout');
    const paint = (code: string, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
    for (const t of tests) {
      // Names, paths and messages come from the spec: escaped (terminal-escape.ts).
      io.stdout.write(`${t.ok ? paint('32', '✓') : paint('31', '✗')} ${escapeForTerminal(t.name)}\n`);
      for (const d of failedDiagnostics.filter((x) => x.message.includes(`"${t.name}"`))) {
        io.stdout.write(`    ${d.span ? `${escapeForTerminal(formatLocation(d.span, { pathPrefix: dir }))}: ` : ''}${escapeForTerminal(d.message.replace(/^traffic test "[^"]+"( failed)?: /, ''))}\n`);
      }
    }
    const failed = tests.filter((t) => !t.ok).length;
    io.stdout.write(`${tests.length} passed, ${failed} failed`.replace(`${tests.length} passed`, `${tests.length - failed} passed`) + '\n');
  }
  return tests.every((t) => t.ok) ? EXIT.ok : EXIT.failed;
}
