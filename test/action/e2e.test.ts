/**
 * The bundled action run the way the runner runs it: `node dist/index.js` in a child process
 * with INPUT_* variables, an event payload file, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files,
 * a real git repository holding the base and head commits, and GITHUB_API_URL pointing at a
 * local server that stands in for the GitHub REST API and records every request.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createRepo, type TestRepo } from '../helpers/git.ts';

const DIST = fileURLToPath(new URL('../../dist/index.js', import.meta.url));
const CASES = fileURLToPath(new URL('../golden/diff/', import.meta.url));
const TOKEN = 'ghs_test_token';
const PR = 7;

interface Comment {
  id: number;
  body: string;
  user: { login: string };
}

interface Recorded {
  method: string;
  path: string;
  auth: string | undefined;
  body: unknown;
}

/** A stand-in for the few REST endpoints the action uses, with switchable refusals. */
class FakeGitHub {
  readonly requests: Recorded[] = [];
  comments: Comment[] = [];
  /** Status of GET /user: 403 is what a workflow GITHUB_TOKEN gets. */
  userStatus = 403;
  /** Status of comment writes: 403 is what a fork's read-only token gets. */
  writeStatus = 0;
  /** What GET /repos/acme/mesh/pulls/7 answers (the workflow_run pattern looks the pull request up). */
  pull: unknown = null;
  #nextId = 1000;
  readonly server: Server = createServer((req, res) => {
    void this.#handle(req).then(([status, body]) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Requests that change something (anything but GET). */
  writes(): Recorded[] {
    return this.requests.filter((r) => r.method !== 'GET');
  }

  async #handle(req: IncomingMessage): Promise<[number, unknown]> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const path = new URL(req.url!, 'http://x').pathname;
    this.requests.push({ method: req.method!, path, auth: req.headers.authorization, body: text === '' ? null : JSON.parse(text) });
    const forbidden: [number, unknown] = [403, { message: 'Resource not accessible by integration' }];
    if (req.method === 'GET' && path === '/user') return this.userStatus === 200 ? [200, { login: 'trellis-bot' }] : forbidden;
    if (path === `/repos/acme/mesh/issues/${PR}/comments` && req.method === 'GET') return [200, this.comments];
    if (path === `/repos/acme/mesh/pulls/${PR}` && req.method === 'GET' && this.pull) return [200, this.pull];
    if (path === `/repos/acme/mesh/issues/${PR}/comments` && req.method === 'POST') {
      if (this.writeStatus) return forbidden;
      const comment = { id: this.#nextId++, body: (JSON.parse(text) as { body: string }).body, user: { login: 'github-actions[bot]' } };
      this.comments.push(comment);
      return [201, comment];
    }
    const m = /^\/repos\/acme\/mesh\/issues\/comments\/(\d+)$/.exec(path);
    if (m && req.method === 'PATCH') {
      if (this.writeStatus) return forbidden;
      const comment = this.comments.find((c) => c.id === Number(m[1]));
      if (!comment) return [404, { message: 'Not Found' }];
      comment.body = (JSON.parse(text) as { body: string }).body;
      return [200, comment];
    }
    return [404, { message: 'Not Found' }];
  }
}

interface ActionRun {
  code: number;
  log: string;
  outputs: Record<string, string>;
  summary: string;
}

/** Parses GITHUB_OUTPUT's `name<<delimiter` blocks. */
function parseOutputs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<]+)<<(.+)$/.exec(lines[i]!);
    if (!m) continue;
    const end = lines.indexOf(m[2]!, i + 1);
    out[m[1]!] = lines.slice(i + 1, end).join('\n');
    i = end;
  }
  return out;
}

describe('the bundled action, run as the runner runs it', () => {
  const api = new FakeGitHub();
  let repo: TestRepo;
  let runDir: string;
  const sha: Record<string, string> = {};
  let runs = 0;

  /** Writes a case side as mesh/ files, removing files of the previous commit. */
  function specFiles(caseName: string, side: 'base' | 'head'): Record<string, string | null> {
    const files: Record<string, string | null> = {};
    for (const c of ['canary-step', 'access-change', 'invalid-head']) for (const s of ['base', 'head']) for (const f of readdirSync(join(CASES, c, s))) files[`mesh/${f}`] = null;
    for (const f of readdirSync(join(CASES, caseName, side))) files[`mesh/${f}`] = readFileSync(join(CASES, caseName, side, f), 'utf8');
    return files;
  }

  function runAction(head: string, inputs: Record<string, string> = {}, workflowRun?: { head_sha: string }): Promise<ActionRun> {
    const dir = join(runDir, `run-${++runs}`);
    const event = `${dir}-event.json`;
    const output = `${dir}-output`;
    const summary = `${dir}-summary.md`;
    const payload = workflowRun ? { action: 'completed', workflow_run: workflowRun } : { action: 'synchronize', number: PR, pull_request: { number: PR, base: { sha: sha.base }, head: { sha: head } } };
    writeFileSync(event, JSON.stringify(payload));
    writeFileSync(output, '');
    writeFileSync(summary, '');
    const env: Record<string, string> = {
      PATH: process.env.PATH!,
      HOME: runDir,
      GITHUB_ACTIONS: 'true',
      GITHUB_EVENT_NAME: workflowRun ? 'workflow_run' : 'pull_request',
      GITHUB_EVENT_PATH: event,
      GITHUB_OUTPUT: output,
      GITHUB_STEP_SUMMARY: summary,
      GITHUB_REPOSITORY: 'acme/mesh',
      GITHUB_WORKSPACE: repo.work,
      GITHUB_API_URL: api.url,
      GITHUB_SERVER_URL: 'https://github.com',
      'INPUT_PATH': 'mesh',
      'INPUT_GITHUB-TOKEN': TOKEN,
      'INPUT_COMMENT': 'true',
      'INPUT_FAIL-ON-INVALID': 'true',
      'INPUT_PULL-REQUEST': '',
      'INPUT_COMMENT-AUTHOR': '',
      ...inputs,
    };
    return new Promise((resolve) => {
      execFile(process.execPath, [DIST], { cwd: runDir, env, timeout: 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, log: stdout + stderr, outputs: parseOutputs(readFileSync(output, 'utf8')), summary: readFileSync(summary, 'utf8') });
      });
    });
  }

  before(async () => {
    await new Promise<void>((resolve) => api.server.listen(0, '127.0.0.1', resolve));
    runDir = mkdtempSync(join(tmpdir(), 'trellis-action-'));
    repo = createRepo();
    sha.base = repo.commit(specFiles('canary-step', 'base'), 'checkout canary at 5%');
    sha.head = repo.commit(specFiles('canary-step', 'head'), 'checkout canary at 25%');
    sha.head2 = repo.commit(specFiles('access-change', 'head'), 'cart may call payments');
    sha.broken = repo.commit(specFiles('invalid-head', 'head'), 'a typo');
    // Someone else's comment that carries the marker, and one of ours without it: neither may be edited.
    api.comments.push({ id: 1, body: '<!-- trellis-diff path=mesh -->\nI copied the marker', user: { login: 'mallory' } });
    api.comments.push({ id: 2, body: 'an unrelated bot comment', user: { login: 'github-actions[bot]' } });
  });

  after(async () => {
    await new Promise<void>((resolve) => api.server.close(() => resolve()));
    repo.remove();
    rmSync(runDir, { recursive: true, force: true });
  });

  test('first run: creates the comment, with outputs, summary and the token sent', async () => {
    const run = await runAction(sha.head!);
    assert.equal(run.code, 0, run.log);
    assert.deepEqual(api.writes().map((r) => [r.method, r.path]), [['POST', `/repos/acme/mesh/issues/${PR}/comments`]]);
    assert.ok(api.requests.every((r) => r.auth === `token ${TOKEN}`));
    assert.ok(api.requests.some((r) => r.path === '/user'), 'asks for its own login first');
    const body = (api.writes()[0]!.body as { body: string }).body;
    assert.ok(body.startsWith('<!-- trellis-diff path=mesh -->\n### Trellis traffic diff: 1 traffic change, 0 access changes, 1 sidecar affected, 3 risk flags\n'), body.slice(0, 200));
    assert.match(body, /\| checkout \| every request \(changed\) \| checkout-v2 \| 5% \| \*\*25%\*\* \|/);
    assert.deepEqual(
      { ...run.outputs },
      { 'traffic-changed': 'true', valid: 'true', 'traffic-changes': '1', 'access-changes': '0', 'sidecars-affected': '1', 'risk-flags': '3', comment: 'created' },
    );
    assert.match(run.summary, /^### Trellis traffic diff: 1 traffic change/);
    assert.match(run.summary, /checkout-v2 \| 5% \| \*\*25%\*\*/);
  });

  test('second run, same head: finds its comment and writes nothing', async () => {
    api.requests.length = 0;
    const run = await runAction(sha.head!);
    assert.equal(run.code, 0, run.log);
    assert.deepEqual(api.writes(), []);
    assert.equal(run.outputs.comment, 'unchanged');
    assert.equal(api.comments.length, 3);
  });

  test('a new head: updates its own comment in place, never the look-alike of another user', async () => {
    api.requests.length = 0;
    const run = await runAction(sha.head2!);
    assert.equal(run.code, 0, run.log);
    const mine = api.comments.find((c) => c.id === 1000)!;
    assert.deepEqual(api.writes().map((r) => [r.method, r.path]), [['PATCH', '/repos/acme/mesh/issues/comments/1000']]);
    assert.match(mine.body, /cart \| payments \| 🔓 \*\*may now call\*\*/);
    assert.equal(api.comments.find((c) => c.id === 1)!.body, '<!-- trellis-diff path=mesh -->\nI copied the marker');
    assert.equal(api.comments.find((c) => c.id === 2)!.body, 'an unrelated bot comment');
    assert.equal(run.outputs.comment, 'updated');
  });

  test('a token that may read its user: comments are looked up by that login', async () => {
    api.requests.length = 0;
    api.userStatus = 200; // now the token is "trellis-bot": github-actions[bot]'s comment is not its own
    try {
      const run = await runAction(sha.head2!);
      assert.equal(run.code, 0, run.log);
      assert.deepEqual(api.writes().map((r) => r.method), ['POST']);
    } finally {
      api.userStatus = 403;
      api.comments.pop();
    }
  });

  test('a read-only token (a fork): no failure, the preview in the job summary, the log says how to enable comments', async () => {
    api.requests.length = 0;
    api.writeStatus = 403;
    try {
      const run = await runAction(sha.head!);
      assert.equal(run.code, 0, run.log);
      assert.equal(run.outputs.comment, 'failed');
      assert.match(run.log, /::warning::Trellis could not comment on #7 \(HTTP 403\)/);
      assert.match(run.log, /two-workflow pattern/);
      assert.match(run.log, /pull-requests: write/);
      assert.match(run.summary, /Not posted as a comment \(HTTP 403\)/);
      assert.match(run.summary, /Trellis traffic diff: 1 traffic change/);
    } finally {
      api.writeStatus = 0;
    }
  });

  test('an invalid head: annotations on the offending lines, diagnostics linked at the head commit, the step fails', async () => {
    api.requests.length = 0;
    const run = await runAction(sha.broken!);
    assert.equal(run.code, 1, run.log);
    assert.match(run.log, /::error title=TRL3003 [^,]*,file=mesh\/routes\.yaml,line=12,endLine=12,col=19,endColumn=30::backendRef names unknown service "checkout-v3"/);
    assert.equal(run.outputs.valid, 'false');
    const body = api.comments.find((c) => c.id === 1000)!.body;
    assert.match(body, new RegExp(`\\(https://github\\.com/acme/mesh/blob/${sha.broken}/mesh/routes\\.yaml#L12\\) \\*\\*error TRL3003\\*\\*`));
  });

  test('comment: false only writes the summary; a shallow clone fails with how to fetch', async () => {
    api.requests.length = 0;
    const quiet = await runAction(sha.head!, { INPUT_COMMENT: 'false' });
    assert.equal(quiet.code, 0, quiet.log);
    assert.deepEqual(api.requests, []);
    assert.equal(quiet.outputs.comment, 'skipped');
    const missing = await runAction('0123456789abcdef0123456789abcdef01234567');
    assert.equal(missing.code, 1);
    assert.match(missing.log, /cannot read the head commit 0123456.*fetch-depth: 0/);
  });

  test('workflow_run with the pull-request input: commits come from the API, and must match the run that built them', async () => {
    api.pull = { number: PR, base: { sha: sha.base }, head: { sha: sha.head } };
    try {
      api.requests.length = 0;
      const ok = await runAction('', { 'INPUT_PULL-REQUEST': String(PR) }, { head_sha: sha.head! });
      assert.equal(ok.code, 0, ok.log);
      assert.ok(api.requests.some((r) => r.method === 'GET' && r.path === `/repos/acme/mesh/pulls/${PR}`));
      assert.equal(ok.outputs['traffic-changes'], '1');
      api.requests.length = 0;
      const mismatch = await runAction('', { 'INPUT_PULL-REQUEST': String(PR) }, { head_sha: sha.head2! });
      assert.equal(mismatch.code, 1);
      assert.match(mismatch.log, /not commenting on a pull request the artifact may not belong to/);
      assert.deepEqual(api.writes(), []);
      const bad = await runAction('', { 'INPUT_PULL-REQUEST': '7; rm -rf /' }, { head_sha: sha.head! });
      assert.equal(bad.code, 1);
      assert.match(bad.log, /pull-request must be a pull request number/);
    } finally {
      api.pull = null;
    }
  });
});
