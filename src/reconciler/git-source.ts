/**
 * A git branch as the source of revisions: `trellis reconcile --repo URL --branch main`.
 *
 * The remote is fetched into a bare cache repository (no working tree: nothing is ever
 * checked out, so files in the repo cannot be executed or followed as symlinks), on an
 * interval with jitter and at once when poked (a webhook). The spec files of a commit are
 * read straight from git's object store. Failures back off and keep the last revision.
 *
 * Security: every argument that comes from a user is checked before git sees it (URLs,
 * branch and path names that git could read as options, `ext::`/`fd::` transports), git
 * runs with those transports disabled and never prompts, and with an allowed-signers file
 * only commits whose ssh signature verifies are applied.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { simpleGit, type SimpleGit } from 'simple-git';
import { SourceFile } from '../diagnostics/source-file.ts';
import type { Revision, Source, SourceEvent } from './source.ts';

export interface GitSourceOptions {
  /** Remote: https://, http://, ssh://, git://, file:// URLs, scp-like `user@host:path`, or an absolute local path. */
  readonly url: string;
  readonly branch: string;
  /** Spec folder inside the repository; default its root. */
  readonly path?: string;
  /** Where the bare cache clone lives (created if missing; replaced if it holds another remote). */
  readonly cacheDir: string;
  /** Fetch period, in ms. */
  readonly intervalMs: number;
  /** Share of the interval added or taken at random, 0..1 (default 0.2), so replicas do not fetch in step. */
  readonly jitter?: number;
  /** ssh allowed-signers file: only commits whose signature verifies against it are applied. */
  readonly allowedSignersFile?: string;
  readonly random?: () => number;
}

/** Thrown at construction for a remote, branch or path that is refused. */
export class UnsafeGitArgumentError extends Error {
  override readonly name = 'UnsafeGitArgumentError';
}

/** Transports git would run commands for, or that read file descriptors: never allowed. */
const SAFE_URL = /^(?:(?:https?|ssh|git|file):\/\/[^\s]+|[A-Za-z0-9._~-]+@[A-Za-z0-9.-]+:(?!-)[^\s]+|\/[^\s]*)$/;

/** Checks a remote URL; see SAFE_URL. */
export function checkRemoteUrl(url: string): void {
  if (url.startsWith('-') || /^[A-Za-z][A-Za-z0-9+.-]*::/.test(url) || !SAFE_URL.test(url)) {
    throw new UnsafeGitArgumentError(`refusing remote "${url}": use an https://, http://, ssh://, git:// or file:// URL, user@host:path, or an absolute path`);
  }
}

/** Checks a branch name against git's ref rules (the subset real branches use). */
export function checkBranch(branch: string): void {
  const ok =
    /^[A-Za-z0-9._/-]+$/.test(branch) &&
    !branch.startsWith('-') &&
    !branch.startsWith('/') &&
    !branch.endsWith('/') &&
    !branch.endsWith('.') &&
    !branch.endsWith('.lock') &&
    !branch.includes('..') &&
    !branch.includes('//') &&
    !branch.split('/').some((part) => part.startsWith('.'));
  if (!ok) throw new UnsafeGitArgumentError(`refusing branch name "${branch}"`);
}

/** Checks a spec path inside the repo: relative, no `..`, nothing git could read as an option. */
export function checkSpecPath(path: string): string {
  const clean = path.replace(/^\.\/+/, '').replace(/\/+$/, '');
  if (clean === '' || clean === '.') return '';
  if (clean.startsWith('-') || clean.startsWith('/') || clean.split('/').some((p) => p === '..' || p === '') || /[\0\n]/.test(clean)) {
    throw new UnsafeGitArgumentError(`refusing spec path "${path}": give a folder inside the repository, such as mesh/`);
  }
  return clean;
}

/** Options given to every git invocation. */
const GIT_CONFIG = ['protocol.ext.allow=never', 'protocol.fd.allow=never', 'credential.interactive=never'];
/**
 * The environment git runs with: only what it needs to find itself, reach remotes (ssh
 * agent, proxies, CA bundles) and never wait for a person. Nothing else passes through, so
 * no variable of ours (EDITOR, GIT_*, PAGER…) can make git run a program.
 */
const GIT_ENV: NodeJS.ProcessEnv = (() => {
  const keep = /^(PATH|HOME|LANG|LC_[A-Z]+|TMPDIR|SSH_AUTH_SOCK|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|all_proxy|ALL_PROXY|GIT_SSL_CAINFO|SSL_CERT_FILE|SSL_CERT_DIR)$/;
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (keep.test(k)) env[k] = v;
  return { ...env, GIT_TERMINAL_PROMPT: '0', GCM_INTERACTIVE: 'never' };
})();

/** First wait after a failed fetch; doubling up to the fetch interval. */
const FIRST_BACKOFF_MS = 500;

export class GitSource implements Source {
  readonly description: string;
  readonly #o: GitSourceOptions;
  readonly #path: string;
  readonly #git: SimpleGit;
  readonly #random: () => number;
  #onEvent: ((e: SourceEvent) => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #failures = 0;
  #lastSha: string | undefined;
  #lastSeenHead: string | undefined;
  #stopped = false;

  constructor(options: GitSourceOptions) {
    checkRemoteUrl(options.url);
    checkBranch(options.branch);
    this.#path = checkSpecPath(options.path ?? '');
    this.#o = options;
    this.#random = options.random ?? Math.random;
    this.description = `git ${options.url} ${options.branch}${this.#path ? ` (${this.#path}/)` : ''}`;
    mkdirSync(options.cacheDir, { recursive: true });
    // simple-git refuses protocol settings by default; ours only ever switch transports off.
    this.#git = simpleGit({ baseDir: options.cacheDir, config: GIT_CONFIG, timeout: { block: 120_000 }, unsafe: { allowUnsafeProtocolOverride: true } }).env(GIT_ENV);
  }

  async start(onEvent: (event: SourceEvent) => void): Promise<void> {
    this.#onEvent = onEvent;
    await this.#prepareCache();
    await this.#check();
  }

  poke(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    clearTimeout(this.#timer);
    void this.#check();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  #emit(event: SourceEvent): void {
    if (!this.#stopped) this.#onEvent?.(event);
  }

  /** A bare repository in cacheDir whose origin is our remote (an old cache of another remote is replaced). */
  async #prepareCache(): Promise<void> {
    const dir = this.#o.cacheDir;
    if (existsSync(`${dir}/HEAD`)) {
      const origin = await this.#git.raw(['config', '--get', 'remote.origin.url']).catch(() => '');
      if (origin.trim() === this.#o.url) return;
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
    }
    await this.#git.raw(['init', '--bare', '--quiet']);
    await this.#git.raw(['remote', 'add', 'origin', '--', this.#o.url]);
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#check(), delayMs);
  }

  #withJitter(ms: number): number {
    const j = this.#o.jitter ?? 0.2;
    return Math.max(1, Math.round(ms * (1 - j + 2 * j * this.#random())));
  }

  /** One fetch-and-read, then the next one scheduled (sooner after a failure). */
  #check(): Promise<void> {
    this.#running ??= (async () => {
      try {
        do {
          this.#again = false;
          await this.#fetchAndRead();
        } while (this.#again && !this.#stopped);
      } finally {
        this.#running = undefined;
      }
      const next = this.#failures === 0 ? this.#o.intervalMs : Math.min(this.#o.intervalMs, FIRST_BACKOFF_MS * 2 ** (this.#failures - 1));
      this.#schedule(this.#withJitter(next));
    })();
    return this.#running;
  }

  async #fetchAndRead(): Promise<void> {
    const ref = `refs/remotes/origin/${this.#o.branch}`;
    try {
      await this.#git.raw(['fetch', '--quiet', '--no-tags', '--force', 'origin', `+refs/heads/${this.#o.branch}:${ref}`]);
    } catch (err) {
      this.#failures++;
      const message = (err as Error).message.trim().split('\n').slice(-2).join(' ');
      const missing = /couldn't find remote ref|could not find remote ref/i.test(message);
      this.#emit({ type: 'error', kind: missing ? 'permanent' : 'transient', message: missing ? `branch ${this.#o.branch} does not exist on ${this.#o.url}` : `fetch failed: ${message}` });
      return;
    }
    this.#failures = 0;
    const sha = (await this.#git.raw(['rev-parse', '--verify', '--end-of-options', `${ref}^{commit}`])).trim();
    if (sha === this.#lastSeenHead) return;
    const previousHead = this.#lastSeenHead;
    this.#lastSeenHead = sha;
    if (this.#o.allowedSignersFile) {
      const reason = await this.#verify(sha);
      if (reason) {
        this.#emit({ type: 'unverified', commit: sha, reason });
        return;
      }
    }
    if (previousHead && !(await this.#isAncestor(previousHead, sha))) this.#emit({ type: 'force-push', from: previousHead, to: sha });
    if (sha === this.#lastSha) return;
    const files = await this.#readFiles(sha);
    const description = (await this.#git.raw(['log', '-1', '--format=%h %s (%an)', sha, '--'])).trim();
    this.#lastSha = sha;
    const revision: Revision = { id: sha, files, description, seenAt: Date.now() };
    this.#emit({ type: 'revision', revision });
  }

  /** Whether `older` is in `newer`'s history: their merge base is `older` itself. (`merge-base --is-ancestor` answers by exit code alone, which simple-git does not report.) */
  async #isAncestor(older: string, newer: string): Promise<boolean> {
    const base = await this.#git.raw(['merge-base', older, newer]).catch(() => '');
    return base.trim() === older;
  }

  /** Undefined when the commit's ssh signature verifies against the allowed signers; otherwise why not. */
  async #verify(sha: string): Promise<string | undefined> {
    // Run directly: verify-commit reports an unsigned commit by exit code alone, which
    // simple-git would take for success.
    const { code, stderr } = await runGit(this.#o.cacheDir, ['-c', 'gpg.format=ssh', '-c', `gpg.ssh.allowedSignersFile=${this.#o.allowedSignersFile}`, 'verify-commit', '--', sha]);
    if (code === 0) return undefined;
    const text = stderr.trim();
    return text === '' || /no signature/i.test(text) ? 'the commit is not signed' : `signature does not verify against the allowed signers: ${text.split('\n')[0]}`;
  }

  /** The spec files at a commit: blobs under the spec path ending in .yaml/.yml, no hidden segments, no symlinks or submodules. */
  async #readFiles(sha: string): Promise<SourceFile[]> {
    const args = ['ls-tree', '-r', '-z', '--full-tree', sha];
    if (this.#path) args.push('--', this.#path);
    const listing = await this.#git.raw(args);
    const wanted: Array<{ oid: string; path: string }> = [];
    const prefix = this.#path ? `${this.#path}/` : '';
    for (const entry of listing.split('\0')) {
      if (!entry) continue;
      const tab = entry.indexOf('\t');
      const [mode, type, oid] = entry.slice(0, tab).split(' ');
      const full = entry.slice(tab + 1);
      if (type !== 'blob' || (mode !== '100644' && mode !== '100755') || !full.startsWith(prefix)) continue;
      const path = full.slice(prefix.length);
      if (!/\.ya?ml$/.test(path) || path.split('/').some((p) => p.startsWith('.'))) continue;
      wanted.push({ oid: oid!, path });
    }
    const contents = await catFiles(this.#o.cacheDir, wanted.map((w) => w.oid));
    return wanted.map((w, i) => new SourceFile(w.path, contents[i]!)).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }
}

/** Runs git in a repository and reports its exit code and stderr (never throws for a non-zero exit). */
function runGit(gitDir: string, args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', [...GIT_CONFIG.flatMap((c) => ['-c', c]), '--git-dir', gitDir, ...args], { env: GIT_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

/** Reads blobs with one `git cat-file --batch` process (one process, not one per file). */
function catFiles(gitDir: string, oids: readonly string[]): Promise<string[]> {
  if (oids.length === 0) return Promise.resolve([]);
  return new Promise((resolve, reject) => {
    const child = spawn('git', [...GIT_CONFIG.flatMap((c) => ['-c', c]), '--git-dir', gitDir, 'cat-file', '--batch'], { env: GIT_ENV, stdio: ['pipe', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`git cat-file exited with ${code}`));
      const out = Buffer.concat(chunks);
      const texts: string[] = [];
      let at = 0;
      for (let i = 0; i < oids.length; i++) {
        const nl = out.indexOf(10, at);
        const header = out.subarray(at, nl).toString('utf8').split(' ');
        const size = Number(header[2]);
        if (header[1] !== 'blob' || !Number.isFinite(size)) return reject(new Error(`unexpected cat-file header: ${header.join(' ')}`));
        texts.push(out.subarray(nl + 1, nl + 1 + size).toString('utf8'));
        at = nl + 1 + size + 1;
      }
      resolve(texts);
    });
    child.stdin.end(oids.join('\n') + '\n');
  });
}
