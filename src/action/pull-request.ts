/**
 * Which pull request a run is about, and which two commits to compare. On `pull_request`
 * (and `pull_request_target`) events both come from the event payload. For the second
 * workflow of the fork-safe pattern (`workflow_run`), the pull request number comes from an
 * artifact of the first workflow — untrusted — so its commits are looked up through the API
 * and its head must be the commit the triggering run was for.
 */

/** The pull request and the commits to compare: base is `pull_request.base.sha`, head `pull_request.head.sha`. */
export interface PullRequestTarget {
  readonly number: number;
  readonly baseSha: string;
  readonly headSha: string;
}

const SHA = /^[0-9a-f]{40}(?:[0-9a-f]{24})?$/;

interface ShaPair {
  readonly base?: { readonly sha?: unknown };
  readonly head?: { readonly sha?: unknown };
  readonly number?: unknown;
}

/** Checks the shape of a pull request as the payload or the API gives it. */
export function targetOf(pr: ShaPair | undefined): PullRequestTarget | { problem: string } {
  if (!pr) return { problem: 'this run has no pull request: run the action on pull_request events, or give it the pull-request input' };
  const number = pr.number;
  const baseSha = pr.base?.sha;
  const headSha = pr.head?.sha;
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || number <= 0) return { problem: 'the pull request has no valid number' };
  if (typeof baseSha !== 'string' || !SHA.test(baseSha) || typeof headSha !== 'string' || !SHA.test(headSha)) return { problem: `pull request #${number} has no valid base and head commit ids` };
  return { number, baseSha, headSha };
}

/** Parses the `pull-request` input: a positive whole number, or empty (take it from the event). */
export function parsePullRequestInput(value: string): number | null | { problem: string } {
  const text = value.trim();
  if (text === '') return null;
  if (!/^[1-9]\d{0,9}$/.test(text)) return { problem: `pull-request must be a pull request number, not "${text.slice(0, 40)}"` };
  return Number(text);
}
