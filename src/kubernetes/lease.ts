/**
 * A `coordination.k8s.io/v1` Lease used as a lock between reconciler replicas, the way
 * client-go's leader election uses one: a replica holds it by writing its identity into
 * `holderIdentity` with a `leaseDurationSeconds`, renews it while it works, and clears the
 * holder when done. Every write carries the `resourceVersion` it read, so two replicas that
 * race for the same Lease cannot both win: the API server refuses the second write (409).
 *
 * Expiry is judged on this replica's own clock — "the record has not changed for
 * leaseDurationSeconds since I first saw it" — never by comparing the holder's `renewTime`
 * with local time, so clock skew between nodes cannot hand the Lease to two replicas.
 * (A holder that crashed is therefore waited out for one duration after a replica first
 * sees it.)
 *
 * Only writes take a Lease: every replica serves sidecars without one.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';

/** client-go's default for leader election: long enough for a slow API server, short enough that a crashed holder is waited out quickly. */
export const DEFAULT_LEASE_DURATION_SECONDS = 15;

/**
 * This process's identity as a Lease holder: its host name (a pod's host name is the pod
 * name) and a random suffix, as client-go does, so two processes on one host (tests, or
 * a restarted container whose old process still runs) are never taken for each other.
 */
export function leaseHolderIdentity(): string {
  return `${hostname()}_${randomBytes(4).toString('hex')}`;
}

export interface LeaseLockOptions {
  readonly kubeConfig: k8s.KubeConfig;
  readonly namespace: string;
  readonly name: string;
  /** Written into `holderIdentity`; unique per process (`leaseHolderIdentity()`). */
  readonly holder: string;
  readonly durationSeconds?: number;
  /** Epoch milliseconds; injected by tests. */
  readonly now?: () => number;
}

/** What `tryAcquire` found: held by us now, or by someone else (named) for now. */
export type AcquireResult = { readonly acquired: true } | { readonly acquired: false; readonly holder: string };

const isStatus = (err: unknown, code: number) => (err as { code?: unknown }).code === code;

export class LeaseLock {
  readonly #o: LeaseLockOptions;
  readonly #api: k8s.CoordinationV1Api;
  readonly #durationMs: number;
  /** The record last read (by resourceVersion) and when this process first saw it. */
  #observed: { resourceVersion: string; at: number } | undefined;
  /** The Lease as we last wrote it, while we hold it. */
  #held: k8s.V1Lease | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;

  constructor(options: LeaseLockOptions) {
    this.#o = options;
    this.#api = options.kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    this.#durationMs = (options.durationSeconds ?? DEFAULT_LEASE_DURATION_SECONDS) * 1000;
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  /** Lease times are MicroTime: the API server refuses a plain Date's millisecond form (`.123Z`). */
  #microTime(): k8s.V1MicroTime {
    return new k8s.V1MicroTime(this.#now());
  }

  /** Whether this process holds the Lease (as far as its last write knows). */
  get held(): boolean {
    return this.#held !== undefined;
  }

  /**
   * One attempt: creates the Lease, or takes it over when it has no holder or its holder has
   * not renewed it for a whole duration since this process first saw that record. Never
   * waits. @throws API errors other than a lost race (404 on read, 409 on write).
   */
  async tryAcquire(): Promise<AcquireResult> {
    if (this.#held) return { acquired: true };
    const { namespace, name, holder } = this.#o;
    let current: k8s.V1Lease | undefined;
    try {
      current = await this.#api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
    const now = this.#microTime();
    const spec = { holderIdentity: holder, leaseDurationSeconds: this.#durationMs / 1000, acquireTime: now, renewTime: now };
    if (!current) {
      try {
        this.#held = await this.#api.createNamespacedLease({ namespace, body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec: { ...spec, leaseTransitions: 0 } } });
      } catch (err) {
        if (isStatus(err, 409)) return { acquired: false, holder: '(another replica, just now)' };
        throw err;
      }
      this.#startRenewing();
      return { acquired: true };
    }
    const rv = current.metadata?.resourceVersion ?? '';
    if (this.#observed?.resourceVersion !== rv) this.#observed = { resourceVersion: rv, at: this.#now() };
    const other = current.spec?.holderIdentity;
    const durationMs = (current.spec?.leaseDurationSeconds ?? this.#durationMs / 1000) * 1000;
    if (other && other !== holder && this.#now() < this.#observed.at + durationMs) return { acquired: false, holder: other };
    try {
      this.#held = await this.#api.replaceNamespacedLease({
        name,
        namespace,
        body: { ...current, spec: { ...spec, leaseTransitions: (current.spec?.leaseTransitions ?? 0) + (other === holder ? 0 : 1) } },
      });
    } catch (err) {
      if (isStatus(err, 409)) return { acquired: false, holder: '(another replica, just now)' };
      throw err;
    }
    this.#startRenewing();
    return { acquired: true };
  }

  /** Renews a third of a duration apart, as client-go does, so two renewals can fail before it lapses. */
  #startRenewing(): void {
    clearInterval(this.#renewTimer);
    this.#renewTimer = setInterval(() => {
      this.#renewing ??= this.#renew().finally(() => (this.#renewing = undefined));
    }, this.#durationMs / 3);
    this.#renewTimer.unref();
  }

  async #renew(): Promise<void> {
    const held = this.#held;
    if (!held) return;
    try {
      this.#held = await this.#api.replaceNamespacedLease({ name: this.#o.name, namespace: this.#o.namespace, body: { ...held, spec: { ...held.spec, renewTime: this.#microTime() } } });
    } catch (err) {
      // A conflict means someone took it over (we were too slow): we no longer hold it.
      if (isStatus(err, 409)) this.#stopHolding();
      // Anything else: try again at the next tick; the Lease lapses on its own if we cannot.
    }
  }

  #stopHolding(): void {
    clearInterval(this.#renewTimer);
    this.#renewTimer = undefined;
    this.#held = undefined;
  }

  /**
   * Gives the Lease up at once (clears the holder) so a waiting replica need not wait out the
   * duration. Best effort: if the write fails, the Lease lapses after its duration.
   */
  async release(): Promise<void> {
    await this.#renewing;
    const held = this.#held;
    this.#stopHolding();
    if (!held) return;
    const now = this.#microTime();
    await this.#api
      .replaceNamespacedLease({ name: this.#o.name, namespace: this.#o.namespace, body: { ...held, spec: { leaseDurationSeconds: 1, leaseTransitions: held.spec?.leaseTransitions ?? 0, acquireTime: now, renewTime: now } } })
      .catch(() => undefined);
  }
}
