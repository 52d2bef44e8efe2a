/**
 * One comment per pull request (and spec path) that Trellis keeps up to date. It is found by
 * a hidden marker on its first line AND by its author being the token's own user, so a
 * comment someone else wrote (copying the marker, say) is never edited. It is updated in
 * place, and not written at all when its text would not change.
 */
import type { getOctokit } from '@actions/github';

/** The Octokit client of @actions/github (REST methods and pagination). */
export type GitHubApi = ReturnType<typeof getOctokit>;

/**
 * Who comments with a token whose user cannot be asked: the workflow's GITHUB_TOKEN gets 403
 * from `GET /user` ("Resource not accessible by integration"), and what it writes is shown
 * as `github-actions[bot]`.
 */
export const WORKFLOW_TOKEN_LOGIN = 'github-actions[bot]';

/** The first line of every Trellis comment: an HTML comment (invisible) naming the spec path. */
export function commentMarker(specPath: string): string {
  // encodeURIComponent leaves no `--` or `>` that could end the HTML comment early.
  return `<!-- trellis-diff path=${encodeURIComponent(specPath === '' ? '.' : specPath).replace(/-/g, '%2D')} -->`;
}

/** The pull request (an issue, to the comments API) a comment belongs to. */
export interface IssueRef {
  readonly owner: string;
  readonly repo: string;
  readonly issueNumber: number;
}

/** Status of a failed API call, or undefined for errors that are not HTTP answers. */
export function httpStatus(err: unknown): number | undefined {
  const status = (err as { status?: unknown } | null)?.status;
  return typeof status === 'number' ? status : undefined;
}

/**
 * The login comments are written as: the token's user, or when the token may not read its
 * user (401/403/404), `override` if given, else {@link WORKFLOW_TOKEN_LOGIN}.
 */
export async function ownLogin(api: GitHubApi, override: string): Promise<string> {
  if (override !== '') return override;
  try {
    const { data } = await api.rest.users.getAuthenticated();
    return data.login;
  } catch (err) {
    const status = httpStatus(err);
    if (status === 401 || status === 403 || status === 404) return WORKFLOW_TOKEN_LOGIN;
    throw err;
  }
}

/** What {@link upsertComment} did. */
export type CommentOutcome = 'created' | 'updated' | 'unchanged';

/**
 * Creates or updates the sticky comment. `body` must start with `marker`. Of several
 * matching comments (from races between runs) the oldest is kept up to date.
 */
export async function upsertComment(api: GitHubApi, issue: IssueRef, marker: string, login: string, body: string): Promise<{ outcome: CommentOutcome; id: number }> {
  const comments = await api.paginate(api.rest.issues.listComments, { owner: issue.owner, repo: issue.repo, issue_number: issue.issueNumber, per_page: 100 });
  const mine = comments.find((c) => c.user?.login === login && (c.body ?? '').split('\n', 1)[0] === marker);
  if (mine) {
    // Bodies edited in the web UI come back with CRLF line ends; those are not a change.
    if ((mine.body ?? '').replace(/\r\n/g, '\n') === body) return { outcome: 'unchanged', id: mine.id };
    await api.rest.issues.updateComment({ owner: issue.owner, repo: issue.repo, comment_id: mine.id, body });
    return { outcome: 'updated', id: mine.id };
  }
  const { data } = await api.rest.issues.createComment({ owner: issue.owner, repo: issue.repo, issue_number: issue.issueNumber, body });
  return { outcome: 'created', id: data.id };
}
