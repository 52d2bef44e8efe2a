/**
 * Where mesh specs come from. A source yields revisions: the spec files as of one commit
 * (git) or one state of a folder (development). The reconciler compiles each revision
 * and pushes the result; a source never compiles anything itself.
 */
import type { SourceFile } from '../diagnostics/source-file.ts';

/** The spec at one point in history. Immutable. */
export interface Revision {
  /** Opaque id: a commit sha for git, a content hash for a folder. Compared only for equality. */
  readonly id: string;
  /** Every `*.yaml`/`*.yml` file under the spec path at this revision (paths relative to it, `/`-separated, sorted; hidden folders skipped). */
  readonly files: readonly SourceFile[];
  /** One line for people: `3f2a1c9 Move 25% to checkout-v2 (Ana)`, or `folder examples/shop`. */
  readonly description: string;
  /** When the source saw it, epoch ms. */
  readonly seenAt: number;
}

/** How a failure should be handled: a transient one (network) is retried with backoff; a permanent one waits for a change. */
export type SourceErrorKind = 'transient' | 'permanent';

export type SourceEvent =
  /** A new revision (the first event after start is the current one). */
  | { readonly type: 'revision'; readonly revision: Revision }
  /** History was rewritten: the new head does not descend from the old one. A revision event follows. */
  | { readonly type: 'force-push'; readonly from: string; readonly to: string }
  /** A commit was not applied because its signature did not verify; the last verified revision stays. */
  | { readonly type: 'unverified'; readonly commit: string; readonly reason: string }
  /** Fetching or reading failed; the source keeps trying (transient) or waits (permanent). */
  | { readonly type: 'error'; readonly kind: SourceErrorKind; readonly message: string }
  /** A check succeeded after an error: the error no longer holds (a revision may or may not follow). */
  | { readonly type: 'recovered' };

/**
 * A source of revisions. Contract:
 * - `start` resolves once the first check is done; it emits the current revision (or an
 *   error) before resolving, then keeps watching until `stop`;
 * - a revision is emitted only when its id differs from the last one emitted;
 * - `poke` asks for a check now (a webhook arrived); it is cheap and may be called often;
 * - events are delivered one at a time, in order, never after `stop` resolved.
 */
export interface Source {
  readonly description: string;
  start(onEvent: (event: SourceEvent) => void): Promise<void>;
  poke(): void;
  stop(): Promise<void>;
}
