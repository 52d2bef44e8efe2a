/**
 * A local folder as the source of revisions, for development: `trellis reconcile --dir` and
 * `trellis up`. The folder is read exactly as the compiler reads a spec root (readSpecDir:
 * `*.yaml`/`*.yml`, hidden files and folders and symlinks skipped, sorted), watched with
 * chokidar, and bursts of file events (an editor saving, a `git checkout`) are coalesced into
 * one read after a quiet period. A revision is emitted only when the spec files' paths or
 * contents changed, so saving a file unchanged emits nothing.
 *
 * Only stable files form a revision. An editor that truncates a file and then writes it can be
 * read in between, as an empty or partial file that may well compile (an empty file is valid
 * YAML: every service in it would vanish). So a read is only a candidate: it becomes a revision
 * when a later read, at least `settleMs` after the candidate was first seen, finds the same
 * contents with the same size, mtime and inode for every file. A file that was not empty in the
 * last revision and reads as empty must stay so for EMPTY_HOLD_MS before it counts.
 *
 * The confirming read also makes the source robust to events chokidar drops (it throttles a
 * second `change` of one file within 50 ms of the first): after any event the whole folder is
 * read again at least `settleMs` after the read it answers, so a change that lost its event is
 * still seen. All timers run on the injected `schedule` and `now`, so tests drive them.
 */
import { watch, type FSWatcher } from 'chokidar';
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { readSpecDir } from '../compiler/load.ts';
import type { SourceFile } from '../diagnostics/source-file.ts';
import type { Revision, Source, SourceEvent } from './source.ts';

/** Options of a {@link FolderSource}. */
export interface FolderSourceOptions {
  /** The spec folder. It may not exist yet: an error is emitted, and its creation is noticed. */
  readonly dir: string;
  /** Quiet time after the last file event before the folder is read, in ms. Default 100: longer than an editor's save (write, rename, chmod), short enough to feel immediate. */
  readonly debounceMs?: number;
  /**
   * How long a read must hold (same contents, sizes, mtimes) before it forms a revision, in ms.
   * Default 100: an editor's truncate-then-write takes microseconds to milliseconds. At least
   * CHOKIDAR_CHANGE_THROTTLE_MS + 10, so that the confirming read comes after any change whose
   * event chokidar throttled away.
   */
  readonly settleMs?: number;
  /** Clock for `Revision.seenAt` and the settle window, epoch ms; default Date.now. */
  readonly now?: () => number;
  /** Runs `fn` after `ms`; returns a cancel function. Every timer of the source goes through it (tests pass a manual clock). */
  readonly schedule?: (fn: () => void, ms: number) => () => void;
}

/** chokidar drops a second `change` event of one file within this many ms of the first (its `_throttle('change', path, 50)`). */
export const CHOKIDAR_CHANGE_THROTTLE_MS = 50;

/**
 * How long a file that had contents in the last revision must read as empty before the empty
 * file counts, in ms: a truncate-then-write whose writer pauses longer than the settle window
 * (a slow disk, an editor writing through a network share) is then still not taken for a
 * deletion of everything in the file. People empty a spec file rarely, and delete it instead.
 */
export const EMPTY_HOLD_MS = 1_000;

const defaultSchedule = (fn: () => void, ms: number) => {
  const timer = setTimeout(fn, ms);
  return () => clearTimeout(timer);
};

/** A read waiting to be confirmed: its revision id, the files' stat stamp, and when it was first seen. */
interface Candidate {
  readonly id: string;
  readonly stamp: string;
  readonly files: readonly SourceFile[];
  readonly since: number;
}

/** First wait before re-reading after a transient read error; doubles up to RETRY_MAX_MS. A read is a local stat or two, and errors are not repeated, so retrying often costs nothing; a person who creates the folder expects it picked up within seconds (chokidar does not reliably report a watched root appearing). */
const RETRY_FIRST_MS = 1_000;
const RETRY_MAX_MS = 5_000;

/**
 * Revision id of a set of spec files: sha256 over each file's path and contents in order
 * (lengths included, so no two different sets hash the same stream). Files must be sorted,
 * as readSpecDir returns them.
 */
export function folderRevisionId(files: readonly SourceFile[]): string {
  const hash = createHash('sha256');
  for (const file of files) {
    const text = Buffer.from(file.text, 'utf8');
    hash.update(`${file.path}\0${text.length}\0`);
    hash.update(text);
  }
  return hash.digest('hex');
}

/**
 * A {@link Source} over a local folder. Events, beyond the Source contract:
 * - `revision`: id from {@link folderRevisionId}; description `folder <dir> (<first 12 hex of id>)`;
 * - `error` transient: the folder is missing or unreadable; re-read on the next file event,
 *   poke, or after a backoff (1 s doubling to 5 s);
 * - `error` permanent: a spec file is over the size limit (TRL1001); waits for an edit.
 * The same error is not repeated until a read succeeds. Never emits `force-push` or `unverified`.
 */
export class FolderSource implements Source {
  readonly description: string;
  readonly #dir: string;
  /** The folder as given, for people. */
  readonly #label: string;
  readonly #debounceMs: number;
  readonly #settleMs: number;
  readonly #now: () => number;
  readonly #scheduleFn: (fn: () => void, ms: number) => () => void;
  #watcher: FSWatcher | undefined;
  /** Set when a read failed: the folder may have been (re)created since, which chokidar does not reliably follow, so the next good read starts a fresh watcher. */
  #rewatch = false;
  /** Cancels the scheduled read, if any. */
  #cancelTimer: (() => void) | undefined;
  /** The last read, waiting to be confirmed by a later one (see the file comment). */
  #candidate: Candidate | undefined;
  /** Texts of the last emitted revision by path: which files were not empty. */
  #lastTexts = new Map<string, string>();
  /** The scheduled read was asked for by poke: file events do not push it back. */
  #urgent = false;
  /** The reads under way began with a poke: their confirming reads are not pushed back by file events either. */
  #poked = false;
  /** Resolved by stop, so that waiting for a watcher to be ready ends with it. */
  readonly #stopping = Promise.withResolvers<void>();
  /** Settled when the scheduled read has run (see idle). */
  #pending: PromiseWithResolvers<void> | undefined;
  #retryMs = RETRY_FIRST_MS;
  #lastId: string | undefined;
  #lastError: string | undefined;
  #onEvent: ((event: SourceEvent) => void) | undefined;
  #stopped = false;

  constructor(options: FolderSourceOptions) {
    this.#dir = resolve(options.dir);
    this.#label = options.dir;
    this.#debounceMs = options.debounceMs ?? 100;
    this.#settleMs = options.settleMs ?? 100;
    if (!(this.#settleMs >= CHOKIDAR_CHANGE_THROTTLE_MS + 10)) throw new RangeError(`settleMs must be at least ${CHOKIDAR_CHANGE_THROTTLE_MS + 10} ms (chokidar drops a second change within ${CHOKIDAR_CHANGE_THROTTLE_MS} ms), not ${this.#settleMs}`);
    this.#now = options.now ?? Date.now;
    this.#scheduleFn = options.schedule ?? defaultSchedule;
    this.description = `folder ${options.dir}`;
  }

  /** Starts watching, then reads the folder and emits its revision (or an error); resolves once that first read settled (settleMs). */
  async start(onEvent: (event: SourceEvent) => void): Promise<void> {
    if (this.#onEvent) throw new Error('FolderSource.start: already started');
    this.#onEvent = onEvent;
    // Watch first and read once the watcher is ready: an edit made meanwhile is then either in
    // the first read or reported by the watcher, never lost between the two.
    await this.#watch();
    this.#poked = true;
    this.#schedule(0, true);
    await this.idle();
  }

  /** Re-reads the folder now (on the next turn of the event loop), dropping any pending debounce; a change still forms a revision only once it held for settleMs. */
  poke(): void {
    this.#poked = true;
    this.#schedule(0, true);
  }

  /** Stops watching; no event follows once it resolves. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stopping.resolve();
    this.#cancelTimer?.();
    this.#pending?.resolve();
    this.#pending = undefined;
    await this.#watcher?.close();
  }

  /** Resolves once the reads scheduled now (by a file event, a poke or a retry), if any, have run and settled (a revision emitted, nothing new, or an error): for tests and shutdown. */
  idle(): Promise<void> {
    return this.#pending?.promise ?? Promise.resolve();
  }

  /** Whether a watched path lies in a hidden file or folder below the spec folder (`.git`, editor swap files). */
  #isHidden(path: string): boolean {
    const rel = relative(this.#dir, resolve(path));
    return rel !== '' && rel.split(sep).some((part) => part.startsWith('.') && part !== '..');
  }

  /** Starts a watcher (replacing the one before) and resolves once it is ready, or stop was called. */
  async #watch(): Promise<void> {
    const previous = this.#watcher;
    const watcher = watch(this.#dir, {
      ignoreInitial: true,
      followSymlinks: false,
      ignored: (path) => this.#isHidden(path),
    });
    this.#watcher = watcher;
    watcher.on('all', () => this.#schedule(this.#debounceMs));
    watcher.on('error', (err) => this.#emitError('transient', `watching ${this.#dir}: ${(err as Error).message}`));
    await previous?.close();
    await Promise.race([new Promise<void>((ready) => watcher.once('ready', ready)), this.#stopping.promise]);
    if (this.#stopped) await watcher.close();
  }

  /**
   * (Re)starts the timer of the next read. Every file event pushes it back, so a burst gets one
   * read `debounceMs` after its last event; a poke (`urgent`) reads on the next turn, and events
   * meanwhile do not delay it (the read comes after them, so it sees their changes).
   */
  #schedule(delayMs: number, urgent = false): void {
    if (this.#stopped || this.#urgent) return;
    this.#urgent = urgent;
    this.#cancelTimer?.();
    this.#pending ??= Promise.withResolvers<void>();
    this.#cancelTimer = this.#scheduleFn(() => {
      this.#cancelTimer = undefined;
      this.#urgent = false;
      this.#read();
      // Settled unless a candidate waits for its confirming read.
      if (this.#candidate && !this.#stopped) return;
      this.#poked = false;
      const pending = this.#pending;
      this.#pending = undefined;
      pending?.resolve();
    }, delayMs);
  }

  #emit(event: SourceEvent): void {
    if (!this.#stopped) this.#onEvent?.(event);
  }

  #emitError(kind: 'transient' | 'permanent', message: string): void {
    if (message === this.#lastError) return;
    this.#lastError = message;
    this.#emit({ type: 'error', kind, message });
  }

  /**
   * Reads the folder. A read that matches the waiting candidate, held for settleMs (and
   * EMPTY_HOLD_MS for a file emptied since the last revision), is emitted when its files differ
   * from the last emitted ones; any other read becomes the candidate and a confirming read is
   * scheduled. A problem is reported at once (and drops the candidate).
   */
  #read(): void {
    if (this.#stopped) return;
    const { files, diagnostics } = readSpecDir(this.#dir);
    const problem = diagnostics[0];
    if (problem) {
      this.#candidate = undefined;
      // Files are never emitted partially: a revision without an unreadable or oversized file
      // would compile to a different mesh. TRL1010 is a folder or file that cannot be read
      // (maybe not yet: retried); anything else (TRL1001, too large) waits for an edit.
      const message = `${problem.path ? `${problem.path}: ` : ''}${problem.message} (${problem.code})`;
      if (problem.code === 'TRL1010') {
        this.#rewatch = true;
        this.#emitError('transient', message);
        this.#schedule(this.#retryMs);
        this.#retryMs = Math.min(this.#retryMs * 2, RETRY_MAX_MS);
      } else this.#emitError('permanent', message);
      return;
    }
    this.#lastError = undefined;
    this.#retryMs = RETRY_FIRST_MS;
    if (this.#rewatch) {
      this.#rewatch = false;
      // Read again once the new watcher is ready, for changes made while it started.
      void this.#watch().then(() => this.#schedule(0));
    }
    const id = folderRevisionId(files);
    const stamp = this.#stampOf(files);
    const now = this.#now();
    const previous = this.#candidate;
    const same = previous !== undefined && previous.id === id && previous.stamp === stamp;
    const since = same ? previous.since : now;
    const hold = files.some((f) => f.text === '' && (this.#lastTexts.get(f.path) ?? '') !== '') ? Math.max(EMPTY_HOLD_MS, this.#settleMs) : this.#settleMs;
    if (!same || now - since < hold) {
      this.#candidate = { id, stamp, files, since };
      this.#schedule(same ? Math.max(1, since + hold - now) : this.#settleMs, this.#poked);
      return;
    }
    this.#candidate = undefined;
    if (id === this.#lastId) return;
    this.#lastId = id;
    this.#lastTexts = new Map(files.map((f) => [f.path, f.text]));
    const revision: Revision = { id, files, description: `folder ${this.#label} (${id.slice(0, 12)})`, seenAt: now };
    this.#emit({ type: 'revision', revision });
  }

  /** Size, mtime and inode of every file read (a rename-into-place changes the inode): what must not move while a read settles. A file gone meanwhile stamps as `gone`. */
  #stampOf(files: readonly SourceFile[]): string {
    return files
      .map((f) => {
        try {
          const st = statSync(join(this.#dir, f.path), { bigint: true });
          return `${f.path}\0${st.size}\0${st.mtimeNs}\0${st.ino}`;
        } catch {
          return `${f.path}\0gone`;
        }
      })
      .join('\n');
  }
}
