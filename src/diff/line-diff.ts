/**
 * A unified line diff of two texts, for showing how a compiled resource changes. Longest
 * common subsequence over lines; inputs too large for that (more than MAX_CELLS line
 * pairs) are shown as all-removed then all-added, which is still correct, only longer.
 */

/** Line pairs the LCS table may hold: 4 M cells of 4 bytes is 16 MB, which a CI runner can spare. */
const MAX_CELLS = 4_000_000;

type Op = { readonly kind: ' ' | '-' | '+'; readonly line: string };

function splitLines(text: string | null): string[] {
  if (text === null || text === '') return [];
  return text.replace(/\n$/, '').split('\n');
}

function diffOps(a: readonly string[], b: readonly string[]): Op[] {
  const n = a.length;
  const m = b.length;
  if ((n + 1) * (m + 1) > MAX_CELLS) return [...a.map((line) => ({ kind: '-' as const, line })), ...b.map((line) => ({ kind: '+' as const, line }))];
  // lcs[i][j]: length of the LCS of a[i..] and b[j..].
  const width = m + 1;
  const lcs = new Uint32Array((n + 1) * width);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * width + j] = a[i] === b[j] ? lcs[(i + 1) * width + j + 1]! + 1 : Math.max(lcs[(i + 1) * width + j]!, lcs[i * width + j + 1]!);
    }
  }
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      ops.push({ kind: ' ', line: a[i]! });
      i++;
      j++;
    } else if (lcs[(i + 1) * width + j]! >= lcs[i * width + j + 1]!) ops.push({ kind: '-', line: a[i++]! });
    else ops.push({ kind: '+', line: b[j++]! });
  }
  while (i < n) ops.push({ kind: '-', line: a[i++]! });
  while (j < m) ops.push({ kind: '+', line: b[j++]! });
  return ops;
}

/**
 * The lines that differ between `before` and `after` (null: the text does not exist), each
 * prefixed `-`, `+` or ` ` (context), with `context` unchanged lines around each change and
 * `@@` between distant hunks. Empty when the texts are equal.
 */
export function unifiedLineDiff(before: string | null, after: string | null, context = 2): string {
  const ops = diffOps(splitLines(before), splitLines(after));
  const keep = new Uint8Array(ops.length);
  ops.forEach((op, k) => {
    if (op.kind === ' ') return;
    for (let x = Math.max(0, k - context); x <= Math.min(ops.length - 1, k + context); x++) keep[x] = 1;
  });
  const out: string[] = [];
  let gap = false;
  ops.forEach((op, k) => {
    if (!keep[k]) {
      gap = true;
      return;
    }
    if (gap && out.length > 0) out.push('@@');
    gap = false;
    out.push(`${op.kind}${op.line}`);
  });
  return out.length === 0 ? '' : out.join('\n') + '\n';
}
