/**
 * A request body of unknown length (an HTTP/2 or gRPC stream) that is sent while it
 * arrives — a streaming call cannot wait for its whole body — and kept in memory up to a
 * limit, so that an attempt that fails early (a refused stream, `unavailable` before any
 * response) can be tried again with the same bytes. Past the limit the copy is dropped and
 * the body is no longer replayable; the attempt in flight carries on.
 *
 * Each `stream()` is a fresh readable of the whole body: what arrived so far, then the rest
 * as it comes. Only the newest is fed; older ones are ended without the rest (their
 * attempts are over).
 */
import { PassThrough, type Readable } from 'node:stream';

export class ReplayBody {
  readonly #source: Readable;
  readonly #limit: number;
  #kept: Buffer[] = [];
  #keptBytes = 0;
  #overflowed = false;
  #ended = false;
  #failed: Error | undefined;
  #current: PassThrough | undefined;
  #started = false;

  constructor(source: Readable, limit: number) {
    this.#source = source;
    this.#limit = limit;
  }

  /** Whether a new `stream()` would carry the whole body. */
  get replayable(): boolean {
    return !this.#overflowed && this.#failed === undefined;
  }

  #start(): void {
    this.#started = true;
    const source = this.#source;
    source.on('data', (chunk: Buffer) => {
      if (!this.#overflowed) {
        this.#keptBytes += chunk.length;
        if (this.#keptBytes > this.#limit) {
          this.#overflowed = true;
          this.#kept = [];
        } else this.#kept.push(chunk);
      }
      const out = this.#current;
      if (out && !out.destroyed && !out.write(chunk)) {
        source.pause();
        // Resumed when the attempt takes more, or when it is over (its stream closed
        // unread): a source left paused would hold the caller's upload forever.
        const resume = () => {
          out.off('drain', resume);
          out.off('close', resume);
          source.resume();
        };
        out.once('drain', resume);
        out.once('close', resume);
      }
    });
    source.once('end', () => {
      this.#ended = true;
      this.#current?.end();
    });
    source.once('error', (err: Error) => {
      this.#failed = err;
      this.#current?.destroy(err);
    });
  }

  /** The whole body once it has arrived, if it stayed within the limit (for mirrors); undefined otherwise. */
  complete(): Promise<Buffer | undefined> {
    if (this.#ended || this.#overflowed || this.#failed) return Promise.resolve(this.#ended && this.replayable ? Buffer.concat(this.#kept) : undefined);
    return new Promise((resolve) => {
      const done = () => resolve(this.#ended && this.replayable ? Buffer.concat(this.#kept) : undefined);
      this.#source.once('end', done);
      this.#source.once('error', done);
      this.#source.once('close', done);
    });
  }

  stream(): Readable {
    const previous = this.#current;
    const out = new PassThrough();
    this.#current = out;
    if (previous && !previous.destroyed) {
      previous.end();
      // A paused source waiting for the old stream's drain would wait forever.
      this.#source.resume();
    }
    for (const chunk of this.#kept) out.write(chunk);
    if (this.#failed) out.destroy(this.#failed);
    else if (this.#ended) out.end();
    if (!this.#started) this.#start();
    return out;
  }
}
