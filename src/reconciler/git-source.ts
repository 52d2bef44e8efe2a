/**
 * A git branch as the source of revisions: `trellis reconcile --repo URL --branch main`.
 *
 * The cache is a bare repository in `cacheDir` into which only the watched branch is fetched:
 * - bare, because nothing is ever checked out: files from the spec repo never land on disk,
 *   so its symlinks, `.gitattributes` filters and checkout hooks never act;
 * - one branch rather than a mirror, because a mirror also fetches every other branch, tag and
 *   pull-request ref of the remote, which costs bandwidth and is never read;
 * - `git init` + `git fetch` rather than `git clone`, so that the first start and a restart
 *   that reuses the cache run the same code, and a missing branch is an ordinary fetch error.
 *
 * Spec files are read straight from git's object store at the fetched commit (`ls-tree`, then
 * one `cat-file --batch`). Fetches run on an interval with jitter, at once on `poke()` (one
 * at a time, pokes coalesced), and back off after failures (pokes do not cut a backoff short);
 * the last revision stays in force meanwhile.
 *
 * Credentials in an http(s) URL (`https://user:token@host/repo.git`) are split off: the cache's
 * config holds the URL without them, logs and status show it without them, and only the
 * environment of `git fetch` carries them (as an `http.extraHeader` Authorization setting).
 *
 * Security: every value that comes from a user is checked before git sees it (URLs, branch
 * and path names that git could read as options, `<transport>::` helpers such as `ext::`),
 * every git runs with a minimal environment, an explicit allow-list of transports, literal
 * pathspecs, no terminal prompts and no replace refs; with an allowed-signers file only
 * commits whose ssh signature verifies are applied.
 *
 * Processes: simple-git runs the plain queries (init, config, rev-parse, ls-tree, log).
 * `runGit` below runs the rest, for reasons simple-git cannot serve: a fetch reaches the
 * network through children of its own (ssh, git-remote-https) that outlive a killed git, so
 * it runs in its own process group that `stop()` kills whole; `verify-commit` and
 * `merge-base --is-ancestor` answer by exit code alone (simple-git treats a failure without
 * stderr as success: an unsigned commit would "verify"); `cat-file --batch` reads stdin.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { simpleGit, type SimpleGit } from 'simple-git';
import { DEFAULT_LIMITS } from '../compiler/load.ts';
import { SourceFile } from '../diagnostics/source-file.ts';
import type { Revision, Source, SourceEvent } from './source.ts';

/** Options of a {@link GitSource}. Checked at construction; see {@link UnsafeGitArgumentError}. */
export interface GitSourceOptions {
  /** Remote: an `https://`, `http://`, `ssh://`, `git://` or `file://` URL, scp-like `user@host:path`, or an absolute local path. */
  readonly url: string;
  /** Branch to follow, a plain name such as `main` (not `refs/heads/main`). */
  readonly branch: string;
  /** Spec folder inside the repository, `/`-separated (`mesh`, `deploy/mesh`); default the repository root. */
  readonly path?: string;
  /**
   * Folder of the bare cache repository. Created when missing; reused when it holds a cache of
   * the same remote; replaced when it holds a Trellis cache of another remote. Any other
   * non-empty folder is refused (a permanent error), never deleted.
   */
  readonly cacheDir: string;
  /** Fetch period, in ms (> 0). */
  readonly intervalMs: number;
  /** Share of each wait added or taken at random, 0..1 (default 0.2), so that replicas do not fetch in step. */
  readonly jitter?: number;
  /**
   * An ssh allowed-signers file (`ssh-keygen(1)` ALLOWED SIGNERS). When set, a head commit is
   * applied only if `git verify-commit` verifies its ssh signature against this file;
   * otherwise an `unverified` event is emitted and the last verified revision stays.
   */
  readonly allowedSignersFile?: string;
  /** Random source in [0, 1) for jitter; default Math.random. */
  readonly random?: () => number;
  /** Clock for `Revision.seenAt`, epoch ms; default Date.now. */
  readonly now?: () => number;
}

/** Thrown by the GitSource constructor for a remote, branch or path that is refused. `message` says why, for people. */
export class UnsafeGitArgumentError extends Error {
  override readonly name = 'UnsafeGitArgumentError';
  /** Stable code for logs and tests. */
  readonly code = 'unsafe_git_argument';
}

/** Transports git may use; everything else (ext::, fd::, other remote helpers) is off. */
const ALLOWED_SCHEMES = ['https', 'http', 'ssh', 'git', 'file'] as const;

const URL_HELP = 'give an https://, http://, ssh://, git:// or file:// URL, user@host:path, or an absolute path';

/**
 * Checks a remote URL and returns it unchanged, or throws {@link UnsafeGitArgumentError}.
 * Refused: anything git or ssh could read as an option (a leading `-`, also as the host or
 * user), `<transport>::` forms (`ext::` runs any command, `fd::` reads descriptors), other
 * URL schemes, control characters (a newline would split a config line).
 */
export function checkRemoteUrl(url: string): string {
  const refuse = (why: string): never => {
    throw new UnsafeGitArgumentError(`refusing remote "${url}": ${why}; ${URL_HELP}`);
  };
  if (url.startsWith('-')) refuse('git would read it as an option');
  const helper = /^([A-Za-z][A-Za-z0-9+.-]*)::/.exec(url);
  if (helper) refuse(`the ${helper[1]}:: form hands the remote to a helper program (ext:: runs any command)`);
  if (/[\u0000-\u001f\u007f]/.test(url)) refuse('it contains control characters');
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(url);
  if (scheme) {
    const name = scheme[1]!;
    if (!(ALLOWED_SCHEMES as readonly string[]).includes(name)) refuse(`the ${name} transport is not allowed`);
    const authority = url.slice(scheme[0].length).split('/')[0]!;
    const at = authority.lastIndexOf('@');
    const user = at >= 0 ? authority.slice(0, at) : '';
    const host = authority.slice(at + 1);
    if (user.startsWith('-') || host.startsWith('-')) refuse('ssh would read its user or host as an option');
    if (name !== 'file' && host === '') refuse('it names no host');
    return url;
  }
  if (url.startsWith('/')) return url;
  // scp-like: git reads `x@y:z` as ssh when no `/` comes before the colon.
  const scp = /^([^@/:]+)@([^/:]+|\[[0-9A-Fa-f:.]+\]):(.+)$/.exec(url);
  if (scp && !scp[1]!.startsWith('-') && !scp[2]!.startsWith('-') && !scp[3]!.startsWith('-')) return url;
  return refuse('it is not a URL git may fetch from');
}

/**
 * Checks a branch name and returns it, or throws {@link UnsafeGitArgumentError}. Follows
 * git's ref-name rules (git-check-ref-format) on a conservative character set: letters,
 * digits and `._+@/-`; no leading `-`, no `..`, no empty, hidden (`.x`) or `*.lock` parts,
 * no trailing `.`; not `HEAD` or `@`; at most 255 characters (the longest file name most
 * file systems allow, and loose refs are files).
 */
export function checkBranch(branch: string): string {
  const parts = branch.split('/');
  const ok =
    branch.length > 0 &&
    branch.length <= 255 &&
    /^[A-Za-z0-9._+@/-]+$/.test(branch) &&
    !branch.startsWith('-') &&
    branch !== 'HEAD' &&
    branch !== '@' &&
    !branch.includes('..') &&
    !branch.endsWith('.') &&
    parts.every((part) => part !== '' && !part.startsWith('.') && !part.endsWith('.lock'));
  if (!ok) throw new UnsafeGitArgumentError(`refusing branch name "${branch}": not a valid git branch name (use letters, digits and ._+@/-, not starting with - and without ..)`);
  return branch;
}

/**
 * Checks a spec folder inside the repository and returns it normalised (no `./` prefix, no
 * trailing `/`; `''` for the root), or throws {@link UnsafeGitArgumentError}. Refused: absolute
 * paths, `.`/`..`/empty segments, a leading `-` or `:` (option, pathspec magic), backslashes
 * and control characters.
 */
export function checkSpecPath(path: string): string {
  const clean = path.replace(/^(?:\.\/)+/, '').replace(/\/+$/, '');
  if (clean === '' || clean === '.') return '';
  const bad =
    clean.startsWith('-') ||
    clean.startsWith('/') ||
    clean.startsWith(':') ||
    /[\u0000-\u001f\u007f\\]/.test(clean) ||
    clean.split('/').some((part) => part === '' || part === '.' || part === '..');
  if (bad) throw new UnsafeGitArgumentError(`refusing spec path "${path}": give a folder inside the repository, such as mesh or deploy/mesh`);
  return clean;
}

/**
 * Backoff cap, as a multiple of the interval. Waits double after each failed fetch; the cap
 * bounds how long the mesh stays behind once the remote is back (5 minutes at a 1-minute
 * interval) while still cutting the load on a struggling git server by 80%. A poke (webhook)
 * does not skip the wait: webhooks can be replayed, and a forge that sends one says nothing
 * about the git server being reachable from here.
 */
export const MAX_BACKOFF_FACTOR = 5;

/**
 * Milliseconds to wait before the next fetch. `failures` counts consecutive transient
 * failures: 0 waits the interval, n waits `interval × 2^n` capped at
 * `MAX_BACKOFF_FACTOR × interval`. Jitter then moves the wait by up to `± jitter × wait`
 * (`random` in [0, 1)). At least 1 ms.
 */
export function fetchDelayMs(intervalMs: number, failures: number, jitter: number, random: number): number {
  const base = failures === 0 ? intervalMs : Math.min(intervalMs * 2 ** failures, MAX_BACKOFF_FACTOR * intervalMs);
  return Math.max(1, Math.round(base * (1 + jitter * (2 * random - 1))));
}

/**
 * `-c` settings for every git run: only the transports checked URLs may name, never `ext::`
 * or `fd::` (also reachable through redirects and submodule URLs); credentials are never asked
 * for interactively; automatic gc runs in the fetch's own process (a detached gc would outlive
 * `stop()`).
 */
const GIT_CONFIG = [
  'protocol.allow=never',
  ...ALLOWED_SCHEMES.map((s) => `protocol.${s}.allow=always`),
  'protocol.ext.allow=never',
  'protocol.fd.allow=never',
  'credential.interactive=never',
  'gc.autoDetach=false',
  'maintenance.autoDetach=false',
];

/**
 * The environment git runs with: only what it needs to find itself, reach remotes (ssh agent,
 * proxies, CA bundles) and never wait for a person. Nothing else passes through, so no
 * inherited variable (EDITOR, PAGER, GIT_SSH_COMMAND, a GIT_DIR set by a hook…) can make git
 * run a program or act on another repository. Operators configure ssh keys in ~/.ssh/config
 * or ~/.gitconfig, which git still reads through HOME.
 */
const KEPT_ENV = /^(?:PATH|HOME|LANG|LC_[A-Z]+|TMPDIR|SSH_AUTH_SOCK|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|all_proxy|ALL_PROXY|GIT_SSL_CAINFO|SSL_CERT_FILE|SSL_CERT_DIR)$/;

function gitEnv(gitDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (KEPT_ENV.test(name)) env[name] = value;
  return {
    ...env,
    // An explicit GIT_DIR: git never searches upwards, so a vanished cache cannot make it act on an enclosing repository.
    GIT_DIR: gitDir,
    GIT_TERMINAL_PROMPT: '0',
    GCM_INTERACTIVE: 'never',
    GIT_LITERAL_PATHSPECS: '1',
    GIT_NO_REPLACE_OBJECTS: '1',
    // English messages: a missing branch is recognised by git's wording.
    LC_ALL: 'C',
  };
}

/** Longest silence (no output) of a fetch before it is killed: past any TCP connect or TLS retry, short enough not to hold polling up. Fetches report progress, so a slow but moving one is never cut. */
const FETCH_IDLE_TIMEOUT_MS = 60_000;
/** Longest silence of a local git command; they take milliseconds, so this only catches a wedged one. */
const LOCAL_TIMEOUT_MS = 60_000;
/** After SIGTERM (which lets git remove its lock files), how long before SIGKILL. */
const KILL_GRACE_MS = 2_000;

const SHA = /^[0-9a-f]{40}(?:[0-9a-f]{24})?$/;

/**
 * Hides credentials in URLs of text that is logged: the password of `scheme://user:password@host`,
 * and for http(s) the whole user part, since `https://TOKEN@host` carries the token as the user.
 */
function redact(text: string): string {
  return text
    .replace(/\b(https?:\/\/)[^\s/@]+@/gi, '$1***@')
    .replace(/([A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s:@/]*):[^\s@/]*@/g, '$1:***@');
}

/**
 * Splits the credentials off a remote URL. `remote` is what git stores in the cache's config
 * and what is shown: an http(s) URL without its user part, any other URL without a password
 * (an ssh user is a login name, not a secret; git ignores an ssh password). `authorization`
 * is the Basic credential an http(s) URL carried, handed to `git fetch` only (see {@link GitSource}).
 */
export function splitCredentials(url: string): { remote: string; authorization?: string } {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/@]*)@(.*)$/s.exec(url);
  if (!m) return { remote: url };
  const [, scheme, userinfo, rest] = m as unknown as [string, string, string, string];
  const colon = userinfo.indexOf(':');
  const user = colon < 0 ? userinfo : userinfo.slice(0, colon);
  const password = colon < 0 ? '' : userinfo.slice(colon + 1);
  if (/^https?:\/\/$/i.test(scheme)) {
    const decode = (part: string) => {
      try {
        return decodeURIComponent(part);
      } catch {
        return part;
      }
    };
    return { remote: scheme + rest, authorization: `Basic ${Buffer.from(`${decode(user)}:${decode(password)}`).toString('base64')}` };
  }
  return { remote: colon < 0 ? url : `${scheme}${user}@${rest}` };
}

/** The line of git's stderr worth showing: the first `fatal:`/`error:` line, else the last non-progress line. */
function gitProblem(stderr: string): string {
  const lines = stderr
    .split(/[\r\n]+/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^(?:remote: )?[\w ]+:\s+\d+% \(/.test(l));
  return redact(lines.find((l) => /^(?:fatal|error):/.test(l)) ?? lines.at(-1) ?? 'no message');
}

/** What a {@link runGit} produced. `code` is null when a signal ended git. */
interface GitRun {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
  /** Killed for going silent longer than its timeout. */
  readonly timedOut: boolean;
}

/**
 * Runs git as the leader of a new process group and collects its output. Killing (on
 * `signal`, or after `idleTimeoutMs` without output) sends SIGTERM to the whole group, so the
 * ssh or git-remote-https child of a fetch dies with it, SIGKILL after KILL_GRACE_MS, and
 * SIGKILL again to whatever of the group is left once git has exited. Resolves when every
 * process holding its output is gone; rejects only when git cannot be started.
 */
function runGit(args: readonly string[], options: { env: NodeJS.ProcessEnv; cwd: string; signal: AbortSignal; idleTimeoutMs: number; input?: string }): Promise<GitRun> {
  if (options.signal.aborted) return Promise.resolve({ code: null, stdout: Buffer.alloc(0), stderr: 'aborted', timedOut: false });
  return new Promise((resolvePromise, reject) => {
    // Windows has no process groups to signal; there git alone is killed.
    const grouped = process.platform !== 'win32';
    const child = spawn('git', [...GIT_CONFIG.flatMap((c) => ['-c', c]), ...args], {
      cwd: options.cwd,
      env: options.env,
      detached: grouped,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let killing = false;
    let timedOut = false;
    let idle: NodeJS.Timeout | undefined;
    let escalate: NodeJS.Timeout | undefined;
    const signalGroup = (sig: NodeJS.Signals) => {
      try {
        if (grouped && child.pid !== undefined) process.kill(-child.pid, sig);
        else child.kill(sig);
      } catch {
        // ESRCH: the group is already gone.
      }
    };
    const kill = () => {
      if (killing) return;
      killing = true;
      signalGroup('SIGTERM');
      escalate = setTimeout(() => signalGroup('SIGKILL'), KILL_GRACE_MS);
    };
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        timedOut = true;
        kill();
      }, options.idleTimeoutMs);
    };
    const finish = () => {
      clearTimeout(idle);
      clearTimeout(escalate);
      options.signal.removeEventListener('abort', kill);
    };
    touch();
    options.signal.addEventListener('abort', kill, { once: true });
    child.stdout!.on('data', (chunk: Buffer) => {
      out.push(chunk);
      touch();
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      err.push(chunk);
      touch();
    });
    child.on('exit', () => {
      if (killing) signalGroup('SIGKILL');
    });
    child.once('error', (e) => {
      finish();
      reject(e);
    });
    child.on('close', (code) => {
      finish();
      resolvePromise({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), timedOut });
    });
    if (options.input !== undefined) {
      child.stdin!.on('error', () => undefined); // EPIPE when git dies first; its exit code tells
      child.stdin!.end(options.input);
    }
  });
}

/** Outcome of reading the spec at one commit: the files, or why the commit cannot be used. */
/** Spec files at a commit, or why not; `absent` when the commit has no spec folder at all. */
type SpecRead = { readonly files: SourceFile[]; readonly byBlob: Map<string, SourceFile> } | { readonly problem: string; readonly absent?: boolean };

/**
 * A {@link Source} that follows one branch of a git remote. See the file comment for how.
 *
 * Events, beyond the Source contract:
 * - `revision`: id is the commit sha; description `<short sha> <subject> (<author>)`;
 * - `force-push` (then `revision`): the new head does not descend from the last emitted revision;
 * - `unverified`: with `allowedSignersFile`, once per new head whose signature does not verify;
 * - `error` transient: every failed fetch or read (waits back off, see {@link fetchDelayMs});
 * - `error` permanent: a missing branch, a cache folder that is not Trellis's, a commit
 *   without the spec folder or with a file over the size limit; said once (again only after
 *   another error came between), polling goes on at the normal interval.
 *
 * The constructor only checks its options (throwing {@link UnsafeGitArgumentError}); disk
 * and network are touched from `start` on. One instance runs once: start, then stop.
 */
export class GitSource implements Source {
  readonly description: string;
  /** The remote without credentials: what the cache's config holds and what people see. */
  readonly #url: string;
  /** Environment of `git fetch` alone: #env plus the remote's credentials, if it had any. */
  readonly #fetchEnv: NodeJS.ProcessEnv;
  readonly #branch: string;
  readonly #path: string;
  readonly #cacheDir: string;
  readonly #intervalMs: number;
  readonly #jitter: number;
  readonly #allowedSigners: string | undefined;
  readonly #random: () => number;
  readonly #now: () => number;
  readonly #env: NodeJS.ProcessEnv;
  /** Aborted by stop(): kills every git process this source runs. */
  readonly #abort = new AbortController();
  #git: SimpleGit | undefined;
  #onEvent: ((event: SourceEvent) => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  /** A poke arrived during a check: run one more right after it. */
  #again = false;
  /** Consecutive transient failures; sets the backoff. */
  #failures = 0;
  /** The permanent error last emitted, so it is said once rather than every interval. */
  #permanent: string | undefined;
  /** Last revision emitted (the base of force-push detection). */
  #applied: string | undefined;
  /** Last head dealt with: applied, or rejected (unverified, unusable). A fetch that finds it again does nothing. */
  #examined: string | undefined;
  #stopped = false;

  constructor(options: GitSourceOptions) {
    const { remote, authorization } = splitCredentials(checkRemoteUrl(options.url));
    this.#url = remote;
    this.#branch = checkBranch(options.branch);
    this.#path = checkSpecPath(options.path ?? '');
    if (!(options.intervalMs > 0) || !Number.isFinite(options.intervalMs)) throw new RangeError(`intervalMs must be a positive number of milliseconds, not ${options.intervalMs}`);
    const jitter = options.jitter ?? 0.2;
    if (!(jitter >= 0 && jitter <= 1)) throw new RangeError(`jitter must be between 0 and 1, not ${jitter}`);
    this.#cacheDir = resolve(options.cacheDir);
    this.#intervalMs = options.intervalMs;
    this.#jitter = jitter;
    // Absolute: git runs in the cache folder, where a relative path would mean something else.
    this.#allowedSigners = options.allowedSignersFile === undefined ? undefined : resolve(options.allowedSignersFile);
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
    this.#env = gitEnv(this.#cacheDir);
    // Credentials reach git as configuration in the environment of the fetch (git ≥ 2.31): not
    // on a command line (`ps` shows those to every user), never in the cache's config file.
    this.#fetchEnv = authorization ? { ...this.#env, GIT_CONFIG_COUNT: '1', GIT_CONFIG_KEY_0: 'http.extraHeader', GIT_CONFIG_VALUE_0: `Authorization: ${authorization}` } : this.#env;
    this.description = `git ${redact(this.#url)} ${this.#branch}${this.#path ? ` (${this.#path}/)` : ''}`;
  }

  /** Prepares the cache, fetches and emits the current revision (or an error), then polls until stop. */
  async start(onEvent: (event: SourceEvent) => void): Promise<void> {
    if (this.#onEvent) throw new Error('GitSource.start: already started');
    this.#onEvent = onEvent;
    await this.#check();
  }

  /**
   * Fetches now; a poke during a fetch makes one more fetch after it (any number of pokes, one
   * fetch). While fetches fail (backoff) a poke does nothing: the next fetch comes when the
   * backoff says, however many webhooks arrive, so a replayed or forged stream of them cannot
   * turn into a stream of fetches against a struggling remote.
   */
  poke(): void {
    if (this.#stopped || !this.#onEvent || this.#failures > 0) return;
    void this.#check();
  }

  /** Stops polling and kills any git process still running (fetch included); resolves when they are gone. No event follows. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#abort.abort();
    await this.#running;
  }

  /** Resolves once no check is running (for tests and shutdown). Pair with `poke()` to wait for one fetch. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  #emit(event: SourceEvent): void {
    if (!this.#stopped) this.#onEvent?.(event);
  }

  #emitPermanent(message: string): void {
    if (message === this.#permanent) return;
    this.#permanent = message;
    this.#emit({ type: 'error', kind: 'permanent', message });
  }

  #emitTransient(message: string): void {
    this.#failures++;
    // Say a permanent problem again once this one clears: the consumer shows the latest error.
    this.#permanent = undefined;
    this.#emit({ type: 'error', kind: 'transient', message });
  }

  /** Runs checks until no poke is pending, then schedules the next one. Never rejects. */
  #check(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    clearTimeout(this.#timer);
    this.#running = (async () => {
      do {
        this.#again = false;
        await this.#checkOnce();
      } while (this.#again && this.#failures === 0 && !this.#stopped);
      this.#running = undefined;
      if (this.#stopped) return;
      this.#timer = setTimeout(() => void this.#check(), fetchDelayMs(this.#intervalMs, this.#failures, this.#jitter, this.#random()));
    })();
    return this.#running;
  }

  /** One fetch, and when the head moved, one revision (or why not). */
  async #checkOnce(): Promise<void> {
    if (this.#stopped) return;
    try {
      if (!this.#git) {
        const problem = await this.#prepareCache();
        if (this.#stopped) return;
        if (problem) {
          this.#failures = 0; // permanent: poll at the normal interval
          return this.#emitPermanent(problem);
        }
      }
      const fetched = await this.#fetch();
      if (this.#stopped) return;
      if (fetched === 'missing') {
        this.#failures = 0; // permanent: poll at the normal interval
        return this.#emitPermanent(`branch ${this.#branch} does not exist on ${redact(this.#url)}`);
      }
      if (fetched !== 'ok') return this.#emitTransient(`fetch from ${redact(this.#url)} failed: ${fetched}`);
      if (this.#failures > 0 || this.#permanent !== undefined) this.#emit({ type: 'recovered' });
      this.#failures = 0;
      this.#permanent = undefined;
      const head = (await this.#sg().raw(['rev-parse', '--verify', '--quiet', `refs/remotes/origin/${this.#branch}^{commit}`])).trim();
      if (!SHA.test(head)) throw new Error(`unexpected rev-parse output "${head}"`);
      if (head !== this.#examined) await this.#consider(head);
    } catch (err) {
      if (this.#stopped) return;
      this.#emitTransient(`reading ${redact(this.#url)}: ${redact((err as Error).message.trim().split('\n')[0] ?? '')}`);
    }
  }

  /** Deals with a new head: verify, read, then emit (force-push first when history was rewritten). */
  async #consider(head: string): Promise<void> {
    if (head === this.#applied) {
      // Back to the revision in force (a rejected head was replaced): nothing to emit.
      this.#examined = head;
      return;
    }
    if (this.#allowedSigners) {
      const reason = await this.#verify(head);
      if (this.#stopped) return;
      if (reason) {
        this.#examined = head;
        this.#emit({ type: 'unverified', commit: head, reason });
        return;
      }
    }
    const read = await this.#readSpec(head);
    if (this.#stopped) return;
    if ('problem' in read) {
      this.#examined = head;
      return this.#emitPermanent(read.problem);
    }
    const description = (await this.#sg().raw(['log', '-1', '--no-show-signature', '--format=%h %s (%an)', head, '--'])).trim();
    const from = this.#applied;
    const rewritten = from !== undefined && !(await this.#isAncestor(from, head));
    if (this.#stopped) return;
    if (rewritten) this.#emit({ type: 'force-push', from, to: head });
    const revision: Revision = { id: head, files: read.files, description, seenAt: this.#now() };
    this.#applied = head;
    this.#examined = head;
    this.#emit({ type: 'revision', revision });
  }

  #sg(): SimpleGit {
    if (!this.#git) throw new Error('bug: git cache used before it was prepared');
    return this.#git;
  }

  /**
   * Makes `cacheDir` a bare repository whose origin is our remote (see GitSourceOptions.cacheDir).
   * Returns why it cannot, for a folder that is someone else's; throws on I/O errors (transient).
   */
  async #prepareCache(): Promise<string | undefined> {
    const dir = this.#cacheDir;
    mkdirSync(dir, { recursive: true });
    const git = simpleGit({
      baseDir: dir,
      config: GIT_CONFIG,
      abort: this.#abort.signal,
      timeout: { block: LOCAL_TIMEOUT_MS },
      // Any non-zero exit is a failure, with or without stderr.
      errors: (error, result) => error ?? (result.exitCode ? Buffer.concat([...result.stdOut, ...result.stdErr, Buffer.from(`git exited with ${result.exitCode}`)]) : undefined),
      // simple-git refuses protocol.* settings by default; ours only ever switch transports off.
      unsafe: { allowUnsafeProtocolOverride: true },
    }).env(this.#env);
    const entries = readdirSync(dir);
    if (entries.length > 0) {
      if (!entries.includes('HEAD')) return `cache folder ${dir} is not empty and holds no git repository; give an empty or missing folder`;
      const get = (key: string) => git.raw(['config', '--get', key]).then((s) => s.trim(), () => '');
      const [origin, ours, bare] = [await get('remote.origin.url'), await get('trellis.cache'), await git.raw(['rev-parse', '--is-bare-repository']).then((s) => s.trim(), () => '')];
      if (origin === this.#url && bare === 'true') {
        removeStaleLocks(dir);
        this.#git = git;
        return undefined;
      }
      if (ours !== 'true') return `cache folder ${dir} holds a git repository${origin ? ` of ${redact(origin)}` : ''} that Trellis did not create; give another folder`;
      // Our own cache of another remote (the URL changed): start afresh.
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
    }
    await git.raw(['init', '--bare', '--quiet']);
    await git.raw(['config', 'trellis.cache', 'true']);
    await git.raw(['remote', 'add', '--', 'origin', this.#url]);
    this.#git = git;
    return undefined;
  }

  /** Fetches the branch: 'ok', 'missing' (no such branch on the remote), or what went wrong. */
  async #fetch(): Promise<'ok' | 'missing' | string> {
    const refspec = `+refs/heads/${this.#branch}:refs/remotes/origin/${this.#branch}`;
    const run = await runGit(['fetch', '--progress', '--no-tags', '--no-write-fetch-head', '--no-recurse-submodules', '--', 'origin', refspec], {
      env: this.#fetchEnv,
      cwd: this.#cacheDir,
      signal: this.#abort.signal,
      idleTimeoutMs: FETCH_IDLE_TIMEOUT_MS,
    });
    if (run.code === 0) return 'ok';
    if (run.timedOut) return `no progress for ${FETCH_IDLE_TIMEOUT_MS / 1000} s`;
    if (/couldn't find remote ref/i.test(run.stderr)) return 'missing';
    return gitProblem(run.stderr);
  }

  /** Whether `older` is in `newer`'s history. An `older` that no longer exists is not (its history was rewritten away). */
  async #isAncestor(older: string, newer: string): Promise<boolean> {
    const run = await runGit(['merge-base', '--is-ancestor', older, newer], { env: this.#env, cwd: this.#cacheDir, signal: this.#abort.signal, idleTimeoutMs: LOCAL_TIMEOUT_MS });
    return run.code === 0;
  }

  /**
   * Undefined when the commit carries an ssh signature that verifies against the allowed
   * signers with a matching principal; otherwise why not. The output is checked as well as the
   * exit code, so that a PGP signature the host's gpg happens to trust cannot stand in.
   */
  async #verify(sha: string): Promise<string | undefined> {
    const run = await runGit(
      ['-c', 'gpg.format=ssh', '-c', `gpg.ssh.allowedSignersFile=${this.#allowedSigners}`, '-c', 'gpg.minTrustLevel=fully', 'verify-commit', '--', sha],
      { env: this.#env, cwd: this.#cacheDir, signal: this.#abort.signal, idleTimeoutMs: LOCAL_TIMEOUT_MS },
    );
    const output = (run.stderr + run.stdout.toString('utf8')).trim();
    if (run.code === 0 && /^Good "git" signature for .+ with \S+ key \S+$/m.test(output)) return undefined;
    if (output === '') return 'the commit is not signed';
    if (/No principal matched/.test(output)) {
      const key = /key (SHA256:\S+)/.exec(output)?.[1];
      return `signed by a key that is not in ${this.#allowedSigners}${key ? ` (${key})` : ''}`;
    }
    return `the signature does not verify against ${this.#allowedSigners}: ${output.split('\n').join('; ')}`;
  }

  /**
   * The spec files at a commit, by readSpecDir's rules: blobs under the spec path named
   * `*.yaml`/`*.yml`, no hidden path segment below it, no symlinks (mode 120000) or submodules
   * (160000), paths relative to the spec path, sorted. A problem (the spec folder is missing,
   * a file is over the size limit) makes the commit unusable rather than silently partial.
   */
  async #readSpec(sha: string): Promise<SpecRead> {
    const read = await readSpecAt({ env: this.#env, cwd: this.#cacheDir, signal: this.#abort.signal }, sha, this.#path, this.#lastFiles);
    if ('files' in read) this.#lastFiles = read.byBlob;
    return read;
  }

  /**
   * The last revision's files by blob id and path: a file whose blob did not change is the
   * same SourceFile object in the next revision, read from git once (at 10 000 services a
   * commit that changes one file would otherwise read 16 MB of unchanged text, and the
   * compile worker's client would compare it all).
   */
  #lastFiles = new Map<string, SourceFile>();
}

interface GitContext {
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  readonly signal: AbortSignal;
}

/**
 * The spec files at a commit, by readSpecDir's rules: blobs under the spec path named
 * `*.yaml`/`*.yml`, no hidden path segment below it, no symlinks (mode 120000) or submodules
 * (160000), paths relative to the spec path, sorted. A problem (the spec folder is missing,
 * a file is over the size limit) makes the commit unusable rather than silently partial.
 */
async function readSpecAt(git: GitContext, sha: string, specPath: string, known: ReadonlyMap<string, SourceFile> = new Map()): Promise<SpecRead> {
  const ls = await runGit(['ls-tree', '-r', '-z', '-l', sha, '--', ...(specPath ? [specPath] : [])], { ...git, idleTimeoutMs: LOCAL_TIMEOUT_MS });
  if (ls.code !== 0) throw new Error(`git ls-tree failed: ${gitProblem(ls.stderr)}`);
  const listing = ls.stdout.toString('utf8');
  const prefix = specPath ? `${specPath}/` : '';
  const wanted: Array<{ oid: string; path: string }> = [];
  let inFolder = false;
  for (const entry of listing.split('\0')) {
    const tab = entry.indexOf('\t');
    if (tab < 0) continue;
    const [mode, type, oid, size] = entry.slice(0, tab).split(/\s+/);
    const full = entry.slice(tab + 1);
    if (!full.startsWith(prefix)) continue;
    inFolder = true;
    const path = full.slice(prefix.length);
    if (type !== 'blob' || (mode !== '100644' && mode !== '100755')) continue;
    if (!/\.ya?ml$/.test(path) || path.split('/').some((part) => part.startsWith('.'))) continue;
    if (Number(size) > DEFAULT_LIMITS.maxFileBytes) {
      return { problem: `commit ${sha.slice(0, 12)}: ${path}: file is ${size} bytes; spec files may be at most ${DEFAULT_LIMITS.maxFileBytes} bytes (TRL1001)` };
    }
    wanted.push({ oid: oid!, path });
  }
  if (specPath && !inFolder) return { problem: `commit ${sha.slice(0, 12)} has no folder ${specPath}/`, absent: true };
  // Blobs read for an earlier revision (same id, same path) are not read again.
  const byBlob = new Map<string, SourceFile>();
  const unread = wanted.filter((w) => {
    const file = known.get(`${w.oid}\u0000${w.path}`);
    if (file) byBlob.set(`${w.oid}\u0000${w.path}`, file);
    return !file;
  });
  const texts = await catBlobs(git, unread.map((w) => w.oid));
  unread.forEach((w, i) => byBlob.set(`${w.oid}\u0000${w.path}`, new SourceFile(w.path, texts[i]!)));
  const files = wanted.map((w) => byBlob.get(`${w.oid}\u0000${w.path}`)!);
  return { files: files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)), byBlob };
}

/** Blob contents as UTF-8 text, in the order asked, from one `git cat-file --batch`. */
async function catBlobs(git: GitContext, oids: readonly string[]): Promise<string[]> {
  if (oids.length === 0) return [];
  const run = await runGit(['cat-file', '--batch'], { ...git, idleTimeoutMs: LOCAL_TIMEOUT_MS, input: oids.join('\n') + '\n' });
  if (run.code !== 0) throw new Error(`git cat-file failed: ${gitProblem(run.stderr)}`);
  const out = run.stdout;
  const texts: string[] = [];
  let at = 0;
  for (const oid of oids) {
    // Each answer: "<oid> blob <size>\n<size bytes>\n".
    const nl = out.indexOf(10, at);
    const header = out.subarray(at, nl < 0 ? out.length : nl).toString('utf8').split(' ');
    const size = Number(header[2]);
    if (nl < 0 || header[0] !== oid || header[1] !== 'blob' || !Number.isInteger(size)) throw new Error(`git cat-file: unexpected answer "${header.join(' ')}" for ${oid}`);
    texts.push(out.subarray(nl + 1, nl + 1 + size).toString('utf8'));
    at = nl + 1 + size + 1;
  }
  return texts;
}

/**
 * The spec folder `dir` as of revision `rev` of the git repository it is in, read from git's
 * objects (the working tree is not touched): for `trellis explain --rev` and `trellis diff`.
 * `rev` is refused when git could read it as an option. `absent` marks a commit that has no
 * such folder (the commit before a spec was added, say).
 */
export async function readSpecAtRevision(dir: string, rev: string): Promise<{ sha: string; files: SourceFile[] } | { problem: string; absent?: boolean }> {
  if (rev.startsWith('-') || !/^[\w./~^@{}:-]+$/.test(rev)) return { problem: `refusing revision "${rev}"` };
  const signal = new AbortController().signal;
  const discoverEnv = gitEnv('');
  delete discoverEnv.GIT_DIR; // let git find the repository that holds `dir`
  const discover = { env: discoverEnv, cwd: dir, signal, idleTimeoutMs: LOCAL_TIMEOUT_MS };
  const gitDir = await runGit(['rev-parse', '--absolute-git-dir'], discover);
  const prefix = await runGit(['rev-parse', '--show-prefix'], discover);
  if (gitDir.code !== 0 || prefix.code !== 0) return { problem: `${dir} is not inside a git repository` };
  const git = { env: gitEnv(gitDir.stdout.toString('utf8').trim()), cwd: dir, signal };
  const verified = await runGit(['rev-parse', '--verify', '--quiet', '--end-of-options', `${rev}^{commit}`], { ...git, idleTimeoutMs: LOCAL_TIMEOUT_MS });
  const sha = verified.stdout.toString('utf8').trim();
  if (verified.code !== 0 || !SHA.test(sha)) return { problem: `no commit "${rev}" in the repository of ${dir}` };
  const read = await readSpecAt(git, sha, prefix.stdout.toString('utf8').trim().replace(/\/$/, ''));
  return 'problem' in read ? { problem: read.problem, ...(read.absent ? { absent: true } : {}) } : { sha, files: read.files };
}

/**
 * Removes lock files older than any live git run could hold them (a fetch is killed after
 * FETCH_IDLE_TIMEOUT_MS of silence): a process killed with SIGKILL leaves its `*.lock` behind,
 * and git then refuses every later fetch. Only the places a fetch locks are looked at.
 */
function removeStaleLocks(gitDir: string): void {
  const cutoff = Date.now() - 2 * FETCH_IDLE_TIMEOUT_MS;
  const pending = [gitDir, join(gitDir, 'refs')];
  while (pending.length > 0) {
    const dir = pending.pop()!;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const full = join(dir, name);
      try {
        const stat = statSync(full);
        if (stat.isDirectory()) {
          if (dir !== gitDir) pending.push(full);
        } else if (name.endsWith('.lock') && stat.mtimeMs < cutoff) rmSync(full, { force: true });
      } catch {
        // Gone meanwhile.
      }
    }
  }
}
