/**
 * A local folder as the source of revisions, for development: `trellis reconcile --dir`
 * and `trellis up`. Bursts of file events (an editor saving, a `git checkout`) are
 * coalesced into one read after a quiet period; a revision is emitted only when the
 * spec files' paths or contents changed.
 */
import { watch, type FSWatcher } from 'chokidar';
import { createHash } from 'node:crypto';
import { basename, resolve } from 'node:path';
import { readSpecDir } from '../compiler/load.ts';
import type { Revision, Source, SourceEvent } from './source.ts';

export interface FolderSourceOptions {
  readonly dir: string;
  /** Quiet time after the last file event before the folder is read, in ms. Default 100. */
  readonly debounceMs?: number;
}

export class FolderSource implements Source {
  readonly description: string;
  readonly #dir: string;
  readonly #debounceMs: number;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastId: string | undefined;
  #onEvent: ((event: SourceEvent) => void) | undefined;
  #stopped = false;

  constructor(options: FolderSourceOptions) {
    this.#dir = options.dir;
    this.#debounceMs = options.debounceMs ?? 100;
    this.description = `folder ${options.dir}`;
  }

  async start(onEvent: (event: SourceEvent) => void): Promise<void> {
    this.#onEvent = onEvent;
    this.#read();
    this.#watcher = watch(resolve(this.#dir), {
      ignoreInitial: true,
      // Hidden files and folders (.git, editor swap files) are not spec.
      ignored: (path) => basename(path).startsWith('.') && resolve(path) !== resolve(this.#dir),
    });
    this.#watcher.on('all', () => this.#schedule());
    this.#watcher.on('error', (err) => this.#emit({ type: 'error', kind: 'transient', message: `watching ${this.#dir}: ${(err as Error).message}` }));
    await new Promise<void>((r) => this.#watcher!.once('ready', () => r()));
  }

  poke(): void {
    this.#schedule(0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#watcher?.close();
  }

  #schedule(delay = this.#debounceMs): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#read(), delay);
  }

  #emit(event: SourceEvent): void {
    if (!this.#stopped) this.#onEvent?.(event);
  }

  /** Reads the folder; emits a revision when the files differ from the last emitted ones. */
  #read(): void {
    if (this.#stopped) return;
    const loaded = readSpecDir(this.#dir);
    const unreadable = loaded.diagnostics.find((d) => d.code === 'TRL1010');
    if (unreadable) {
      this.#emit({ type: 'error', kind: 'transient', message: unreadable.message });
      return;
    }
    const hash = createHash('sha256');
    for (const f of loaded.files) hash.update(`${f.path}\u0000${f.text.length}\u0000${f.text}`);
    const id = hash.digest('hex');
    if (id === this.#lastId) return;
    this.#lastId = id;
    const revision: Revision = { id, files: loaded.files, description: `folder ${this.#dir} (${id.slice(0, 12)})`, seenAt: Date.now() };
    this.#emit({ type: 'revision', revision });
  }
}
