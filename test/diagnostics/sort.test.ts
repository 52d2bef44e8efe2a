/**
 * sortDiagnosticsLike (the incremental compiler's sort, which starts from the last order)
 * gives exactly what sortDiagnostics gives, whatever was kept, dropped or added, ties
 * (same file, offset, code and message) included.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { diagnostic, sortDiagnostics, sortDiagnosticsLike, type Diagnostic } from '../../src/diagnostics/diagnostic.ts';
import { SourceFile } from '../../src/diagnostics/source-file.ts';

const FILES = ['a.yaml', 'b.yaml', 'c/d.yaml'].map((p) => new SourceFile(p, 'x'.repeat(100)));

/** A diagnostic from a few choices, so that ties are common; `hint` tells tied ones apart. */
const arbitraryDiagnostic: fc.Arbitrary<Diagnostic> = fc
  .record({ file: fc.integer({ min: -1, max: 2 }), start: fc.integer({ min: 0, max: 3 }), code: fc.constantFrom('TRL4022' as const, 'TRL4002' as const), message: fc.constantFrom('m', 'n'), hint: fc.nat(1000) })
  .map(({ file, start, code, message, hint }) => diagnostic(code, message, file < 0 ? undefined : { file: FILES[file]!, start, end: start + 1 }, { hint: String(hint) }));

test('sortDiagnosticsLike equals sortDiagnostics for any previous order and any change', () => {
  fc.assert(
    fc.property(fc.array(arbitraryDiagnostic, { maxLength: 60 }), fc.array(fc.boolean(), { maxLength: 60 }), fc.array(arbitraryDiagnostic, { maxLength: 30 }), fc.nat(), (before, keep, fresh, seed) => {
      const previous = sortDiagnostics(before);
      const kept = before.filter((_, i) => keep[i] ?? true);
      // The current list in some other order: kept ones and new ones interleaved.
      const current = [...kept, ...fresh].sort((a, b) => ((a.hint!.length * 31 + seed) % 7) - ((b.hint!.length * 31 + seed) % 7));
      assert.deepEqual(sortDiagnosticsLike(previous, current).map((d) => d.hint), sortDiagnostics(current).map((d) => d.hint));
    }),
    { numRuns: 500 },
  );
});
