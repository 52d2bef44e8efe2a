/**
 * The GitHub Action: on a pull request, compile the spec at the base and the head commit
 * (read from git's object store in the checked-out repository: YAML is parsed, nothing from
 * the pull request is run), diff them, and report — outputs, annotations on the offending
 * lines, the job summary, and one sticky comment on the pull request.
 *
 * A token that may not comment (pull requests from forks get a read-only GITHUB_TOKEN) is
 * not a failure: the comment goes to the job summary and the log says how to enable it.
 */
import { normalize } from 'node:path';
import * as core from '@actions/core';
import { context, getOctokit } from '@actions/github';
import type { Diagnostic } from '../diagnostics/diagnostic.ts';
import { diagnosticToJson } from '../diagnostics/render.ts';
import { changesTraffic, summaryLine, type ChangeSet } from '../diff/change-set.ts';
import { diffMeshes } from '../diff/diff-meshes.ts';
import { emptySide, loadSide } from '../diff/load-side.ts';
import { fitMarkdown, renderMarkdown, type MarkdownOptions } from '../diff/render-markdown.ts';
import { parsePullRequestInput, targetOf, type PullRequestTarget } from './pull-request.ts';
import { commentMarker, httpStatus, ownLogin, upsertComment, type GitHubApi } from './sticky-comment.ts';

/** GitHub keeps at most 1 MiB of job summary per step. */
const SUMMARY_LIMIT = 1_000_000;

/** The action's inputs, read and checked. */
interface Inputs {
  /** Spec folder relative to the repository root, normalised; '' for the root. */
  readonly path: string;
  readonly token: string;
  readonly comment: boolean;
  readonly failOnInvalid: boolean;
  readonly pullRequest: number | null;
  readonly commentAuthor: string;
}

/** A boolean input: `true`/`false` (YAML 1.2 core spellings), or `fallback` when empty. */
function booleanInput(name: string, fallback: boolean): boolean | { problem: string } {
  if (core.getInput(name) === '') return fallback;
  try {
    return core.getBooleanInput(name);
  } catch {
    return { problem: `${name} must be true or false, not "${core.getInput(name).slice(0, 40)}"` };
  }
}

function readInputs(): Inputs | { problem: string } {
  const raw = core.getInput('path') || '.';
  const path = normalize(raw).replace(/\/+$/, '');
  if (path.startsWith('..') || path.startsWith('/')) return { problem: `path must be a folder inside the repository, not "${raw}"` };
  const pullRequest = parsePullRequestInput(core.getInput('pull-request'));
  if (pullRequest !== null && typeof pullRequest === 'object') return pullRequest;
  const comment = booleanInput('comment', true);
  if (typeof comment === 'object') return comment;
  const failOnInvalid = booleanInput('fail-on-invalid', true);
  if (typeof failOnInvalid === 'object') return failOnInvalid;
  return {
    path: path === '.' ? '' : path,
    token: core.getInput('github-token'),
    comment,
    failOnInvalid,
    pullRequest,
    commentAuthor: core.getInput('comment-author').trim(),
  };
}

/**
 * The pull request and commits: from the event payload, or (with the pull-request input, in
 * a `workflow_run` workflow) from the API, checked against the commit the triggering run built.
 */
async function findTarget(inputs: Inputs, api: GitHubApi | null): Promise<PullRequestTarget | { problem: string }> {
  if (inputs.pullRequest === null) return targetOf(context.payload.pull_request as Parameters<typeof targetOf>[0]);
  if (!api) return { problem: 'the pull-request input needs a github-token' };
  const { data } = await api.rest.pulls.get({ ...context.repo, pull_number: inputs.pullRequest });
  const target = targetOf(data);
  if ('problem' in target) return target;
  const runHead = (context.payload.workflow_run as { head_sha?: unknown } | undefined)?.head_sha;
  if (typeof runHead === 'string' && runHead !== target.headSha) {
    return { problem: `pull request #${target.number} is at ${target.headSha.slice(0, 7)}, but the run that triggered this one built ${runHead.slice(0, 7)}: not commenting on a pull request the artifact may not belong to` };
  }
  return target;
}

/** Error and warning annotations on the spec lines of the head commit (paths from the repository root). */
function annotate(diagnostics: readonly Diagnostic[], path: string): void {
  for (const d of diagnostics) {
    const j = diagnosticToJson(d, path === '' ? {} : { pathPrefix: path });
    const props: core.AnnotationProperties = { title: `${j.code} ${j.name}` };
    if (j.file !== undefined) props.file = j.file;
    if (j.line !== undefined) Object.assign(props, { startLine: j.line, startColumn: j.col, endLine: j.endLine, ...(j.endLine === j.line ? { endColumn: j.endCol } : {}) });
    const message = j.hint ? `${j.message}\nhint: ${j.hint}` : j.message;
    if (d.severity === 'error') core.error(message, props);
    else if (d.severity === 'warning') core.warning(message, props);
  }
}

function setOutputs(set: ChangeSet, comment: string): void {
  core.setOutput('traffic-changed', String(changesTraffic(set)));
  core.setOutput('valid', String(set.head.valid));
  core.setOutput('traffic-changes', String(set.counts.traffic));
  core.setOutput('access-changes', String(set.counts.access));
  core.setOutput('sidecars-affected', String(set.counts.sidecars));
  core.setOutput('risk-flags', String(set.counts.risks));
  core.setOutput('comment', comment);
}

async function writeSummary(text: string): Promise<void> {
  if (!process.env.GITHUB_STEP_SUMMARY) return;
  await core.summary.addRaw(text, true).write();
}

/** Posts or updates the sticky comment; any failure is reported, never fatal. Returns what happened. */
async function postComment(api: GitHubApi, inputs: Inputs, target: PullRequestTarget, body: string, marker: string): Promise<string> {
  try {
    const login = await ownLogin(api, inputs.commentAuthor);
    const { outcome, id } = await upsertComment(api, { ...context.repo, issueNumber: target.number }, marker, login, body);
    core.info(`Trellis: comment ${id} on #${target.number} ${outcome}`);
    return outcome;
  } catch (err) {
    const status = httpStatus(err);
    if (status === 403 || status === 404) {
      core.warning(
        `Trellis could not comment on #${target.number} (HTTP ${status}): the token may not write pull-request comments. ` +
          'Pull requests from forks get a read-only GITHUB_TOKEN; for them use the two-workflow pattern (pull_request uploads an artifact, workflow_run comments) in docs/diff.md. ' +
          'For pull requests from this repository, give the job `permissions: pull-requests: write`. The comment is in this run\'s job summary.',
      );
    } else core.warning(`Trellis could not comment on #${target.number}: ${(err as Error).message}. The comment is in this run's job summary.`);
    await writeSummary(`> [!NOTE]\n> Not posted as a comment (${status === undefined ? 'error' : `HTTP ${status}`}); this is the preview.\n\n`);
    return 'failed';
  }
}

/** Runs the action; sets the process exit code through core.setFailed on failure. */
export async function run(): Promise<void> {
  const inputs = readInputs();
  if ('problem' in inputs) return core.setFailed(inputs.problem);
  const api = inputs.token === '' ? null : getOctokit(inputs.token);
  const target = await findTarget(inputs, api);
  if ('problem' in target) return core.setFailed(target.problem);

  const repo = process.env.GITHUB_WORKSPACE || process.cwd();
  const [loadedBase, head] = await Promise.all([loadSide({ repo, path: inputs.path, rev: target.baseSha }), loadSide({ repo, path: inputs.path, rev: target.headSha })]);
  // The pull request that adds the spec folder: compare against an empty mesh.
  const base = 'absent' in loadedBase && loadedBase.absent ? { result: emptySide() } : loadedBase;
  for (const [name, side, sha] of [['base', base, target.baseSha], ['head', head, target.headSha]] as const) {
    if ('problem' in side) {
      return core.setFailed(`cannot read the ${name} commit ${sha.slice(0, 7)}: ${side.problem}. When a commit is missing, actions/checkout did not fetch it: use fetch-depth: 0 (or fetch the base and head shas).`);
    }
  }
  if ('problem' in base || 'problem' in head) return;

  const set = diffMeshes(base.result, head.result);
  annotate(set.head.diagnostics, inputs.path);
  const blob = (sha: string) => `${context.serverUrl}/${context.repo.owner}/${context.repo.repo}/blob/${sha}`;
  const options: MarkdownOptions = {
    headBlobUrl: blob(target.headSha),
    baseBlobUrl: blob(target.baseSha),
    ...(inputs.path === '' ? {} : { pathPrefix: inputs.path }),
    baseLabel: target.baseSha.slice(0, 7),
    headLabel: target.headSha.slice(0, 7),
  };
  core.info(`Trellis: ${summaryLine(set)}`);

  const full = renderMarkdown(set, options);
  let comment = 'skipped';
  if (inputs.comment && api) {
    const marker = commentMarker(inputs.path);
    const body = `${marker}\n${fitMarkdown(set, { ...options, where: "this run's job summary" })}`;
    comment = await postComment(api, inputs, target, body, marker);
  }
  await writeSummary(full.length <= SUMMARY_LIMIT ? full : fitMarkdown(set, { ...options, limit: SUMMARY_LIMIT, where: '`trellis diff` run locally' }));
  setOutputs(set, comment);
  if (!set.head.valid && inputs.failOnInvalid) core.setFailed(`the head spec does not compile: ${summaryLine(set)}`);
}

