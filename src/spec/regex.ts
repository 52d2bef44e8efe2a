/**
 * Regular expressions in route matches, compiled so that no pattern can hang a sidecar.
 *
 * Trellis accepts ECMAScript syntax restricted to what V8's linear-time engine runs
 * (no backreferences or lookahead, no huge counted repetitions), and always matches with that engine: matching
 * time grows linearly with the input whatever the pattern. The compiler uses the same
 * function to reject patterns the engine cannot run, so the sidecar never meets one.
 * Patterns match the whole value (they are anchored at both ends, and a pattern whose
 * groups do not balance on its own is refused so it cannot escape the anchors), like RE2's
 * full match that Envoy-based meshes use.
 */
import { setFlagsFromString } from 'node:v8';

/** Longest pattern accepted; long patterns are a sign of misuse and cost memory per route. */
export const MAX_REGEX_LENGTH = 1024;

let engineEnabled = false;

function enableLinearEngine(): void {
  if (engineEnabled) return;
  // The `l` (linear) flag exists only behind this V8 flag; setting it at run time is
  // enough because it is read when a RegExp with the flag is constructed.
  setFlagsFromString('--enable-experimental-regexp-engine');
  engineEnabled = true;
}

/**
 * A pattern the compiler refuses. `index`, when known, is the UTF-16 index in the pattern
 * of the character at fault (a stray `)`, an unclosed `(`), so diagnostics can point at it.
 */
export class MatchRegexError extends SyntaxError {
  readonly index: number | undefined;
  constructor(message: string, index?: number) {
    super(message);
    this.name = 'MatchRegexError';
    this.index = index;
  }
}

/**
 * Where a pattern's groups fail to balance: the first `)` that closes no group, or the
 * first `(` never closed; undefined when they balance. Escapes and character classes are
 * skipped as ECMAScript reads them (`\)` and `[)]` are literal). Only for naming the
 * place: whether a pattern is valid is decided by the RegExp parser itself.
 */
export function unbalancedGroupAt(pattern: string): { index: number; char: '(' | ')' } | undefined {
  const open: number[] = [];
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') i++;
    else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else if (c === '(') open.push(i);
    else if (c === ')' && open.pop() === undefined) return { index: i, char: ')' };
  }
  return open.length > 0 ? { index: open[0]!, char: '(' } : undefined;
}

/**
 * Compiles a match pattern for linear-time full matching.
 *
 * The pattern is first parsed on its own, and only then wrapped as `^(?:pattern)$`. A
 * pattern that parses alone is one ECMAScript Disjunction, so the wrapper's group holds
 * all of it and both anchors apply to every alternative; without that check,
 * `/public)|(?:/admin` would close the wrapper's group early and compile to
 * `^(?:/public)|(?:/admin)$`, which matches `/xyz/admin`.
 * @throws MatchRegexError naming the problem when the pattern is too long, invalid
 *   (unbalanced groups included, with the index at fault), or needs backtracking
 *   (backreferences, lookaround).
 */
export function compileMatchRegex(pattern: string): RegExp {
  if (pattern.length > MAX_REGEX_LENGTH) {
    throw new MatchRegexError(`pattern is ${pattern.length} characters long; at most ${MAX_REGEX_LENGTH} are allowed`);
  }
  enableLinearEngine();
  try {
    new RegExp(pattern, 'l');
  } catch (err) {
    const message = (err as Error).message;
    const unbalanced = unbalancedGroupAt(pattern);
    if (unbalanced) {
      const what = unbalanced.char === ')' ? 'closes no group' : 'opens a group that is never closed';
      throw new MatchRegexError(`"${unbalanced.char}" at character ${unbalanced.index + 1} ${what}; a pattern's groups must balance`, unbalanced.index);
    }
    if (/linear time/.test(message)) {
      throw new MatchRegexError(
        'pattern cannot be matched in linear time (backreferences, lookahead and very large counted repetitions need backtracking, which could hang a sidecar)',
      );
    }
    throw new MatchRegexError(message.replace(/^Invalid regular expression: \/.*\/l: /, ''));
  }
  return new RegExp(`^(?:${pattern})$`, 'l');
}
