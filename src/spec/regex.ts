/**
 * Regular expressions in route matches, compiled so that no pattern can hang a sidecar.
 *
 * Trellis accepts ECMAScript syntax restricted to what V8's linear-time engine runs
 * (no backreferences or lookahead, no huge counted repetitions), and always matches with that engine: matching
 * time grows linearly with the input whatever the pattern. The compiler uses the same
 * function to reject patterns the engine cannot run, so the sidecar never meets one.
 * Patterns match the whole value (they are anchored at both ends), like RE2's full match
 * that Envoy-based meshes use.
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
 * Compiles a match pattern for linear-time full matching.
 * @throws SyntaxError naming the problem when the pattern is too long, invalid, or
 *   needs backtracking (backreferences, lookaround).
 */
export function compileMatchRegex(pattern: string): RegExp {
  if (pattern.length > MAX_REGEX_LENGTH) {
    throw new SyntaxError(`pattern is ${pattern.length} characters long; at most ${MAX_REGEX_LENGTH} are allowed`);
  }
  enableLinearEngine();
  try {
    return new RegExp(`^(?:${pattern})$`, 'l');
  } catch (err) {
    const message = (err as Error).message;
    if (/linear time/.test(message)) {
      throw new SyntaxError(
        'pattern cannot be matched in linear time (backreferences, lookahead and very large counted repetitions need backtracking, which could hang a sidecar)',
      );
    }
    throw new SyntaxError(message.replace(/^Invalid regular expression: \/.*\/l: /, ''));
  }
}
