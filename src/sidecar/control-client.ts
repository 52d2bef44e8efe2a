/**
 * The sidecar's side of the control protocol (config/control-protocol.ts): subscribe to
 * the reconciler with what it holds, apply each config or delta through the config store
 * (validated like any other source), acknowledge or reject every version, and reconnect
 * with backoff and jitter when the stream breaks. The sidecar serves on its last config
 * the whole time; losing the reconciler costs updates, never traffic.
 *
 * Several reconcilers (replicas) may be given: the sidecar holds one stream, to the first
 * that answers, and when it breaks moves straight to the next in the list — every replica
 * serves every sidecar, so there is nothing to hand over. Only after every replica failed in
 * a row does it back off. The order is a preference: a sidecar stays where it is until that
 * replica fails (no fail-back), so a replica that comes back does not pull sidecars over.
 */
import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import { ACK_PATH, PING_INTERVAL_MS, STREAM_PATH, type Ack, type ControlMessage, type Subscribe } from '../config/control-protocol.ts';
import type { Random } from './clock.ts';
import type { ApplyResult, ConfigStore } from './config-store.ts';
import { bearer, ControlRefused, type ControlToken } from './control-token.ts';

/**
 * The reconciler base URLs of a `--control` value: one URL, or several separated by commas
 * (as the flag takes them), or a list of either. Empty entries are dropped.
 */
export function parseControlUrls(value: string | readonly string[]): string[] {
  return (typeof value === 'string' ? [value] : value).flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
}

export interface ControlClientOptions {
  /** Reconciler base URL, such as http://127.0.0.1:15010, or several (replicas; see `parseControlUrls`), in order of preference. */
  readonly url: string | readonly string[];
  /** The bearer, or a source of it asked on every request (a rotated token file). */
  readonly token: string | ControlToken;
  readonly service: string;
  /** This instance's id; stable across restarts of the same instance (host and inbound port). */
  readonly node: string;
  readonly store: ConfigStore;
  readonly log: Logger;
  readonly random: Random;
  /**
   * Awaited after a config is applied and before it is acknowledged: the reconciler sends
   * callers traffic to a sidecar once it acknowledges (make-before-break), so the sidecar
   * first gets what it needs to serve (its certificate, in an mTLS mesh).
   */
  readonly beforeAck?: () => Promise<void>;
  /** Called with the trust bundle the reconciler sends first on every stream. */
  readonly onTrustBundle?: (roots: readonly string[]) => void;
  /** Reconnect backoff: first wait and cap, in ms. */
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

export class ControlClient {
  readonly #o: ControlClientOptions;
  readonly #agent = new Agent({ keepAliveTimeout: 30_000 });
  #stopped = false;
  #controller = new AbortController();
  #loop: Promise<void> | undefined;
  #connected = false;
  #failures = 0;
  readonly #urls: readonly string[];
  /** Index in #urls of the replica this client streams from (or tries next). */
  #current = 0;

  constructor(options: ControlClientOptions) {
    this.#o = options;
    this.#urls = parseControlUrls(options.url);
    if (this.#urls.length === 0) throw new Error('the control client needs a reconciler URL');
  }

  /** Whether a stream is open now. */
  get connected(): boolean {
    return this.#connected;
  }

  /** The reconciler this client streams from, or tries next. */
  get url(): string {
    return this.#urls[this.#current]!;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#controller.abort();
    await this.#loop;
    await this.#agent.close();
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      let failed = false;
      const url = this.url;
      try {
        await this.#stream();
      } catch (err) {
        failed = true;
        if (this.#stopped) {
          // stopping: the abort is ours
        } else if (err instanceof ControlRefused) {
          this.#o.log.warn(
            { type: 'control_refused', url, status: err.status, code: err.code, failures: this.#failures + 1 },
            'the reconciler refused this sidecar\'s credentials; serving the current config and retrying (a token file is read again on every try)',
          );
        } else this.#o.log.warn({ type: 'control_disconnected', url, error: (err as Error).message, failures: this.#failures + 1 }, 'control stream failed; serving the current config and retrying');
      }
      this.#connected = false;
      if (this.#stopped) break;
      this.#failures++;
      if (failed && this.#urls.length > 1) {
        this.#current = (this.#current + 1) % this.#urls.length;
        // Another replica is there to try: at once, until each has failed once in this round.
        if (this.#failures % this.#urls.length !== 0) {
          this.#o.log.info({ type: 'control_failover', from: url, to: this.url }, 'trying the next reconciler');
          continue;
        }
      }
      const min = this.#o.minBackoffMs ?? 100;
      const max = this.#o.maxBackoffMs ?? 5000;
      // Exponential backoff with jitter (half to all of the step), so a reconciler restart
      // does not get every sidecar back in the same millisecond. Rounds over every replica count.
      const rounds = Math.ceil(this.#failures / this.#urls.length);
      const step = Math.min(max, min * 2 ** Math.min(rounds - 1, 20));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, step * (0.5 + this.#o.random() / 2));
        this.#controller.signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
      });
    }
  }

  #subscribe(): Subscribe {
    const snap = this.#o.store.current;
    return {
      service: this.#o.service,
      node: this.#o.node,
      version: snap?.version ?? null,
      resources: snap ? Object.fromEntries(snap.config.resources.map((r) => [r.name, r.version])) : {},
    };
  }

  async #stream(): Promise<void> {
    if (this.#controller.signal.aborted) return;
    const res = await request(new URL(STREAM_PATH, this.url), {
      method: 'POST',
      headers: { authorization: bearer(this.#o.token), 'content-type': 'application/json' },
      body: JSON.stringify(this.#subscribe()),
      signal: this.#controller.signal,
      dispatcher: this.#agent,
      headersTimeout: 10_000,
      // Pings arrive every PING_INTERVAL_MS; three missed ones mean the reconciler is gone.
      bodyTimeout: 3 * PING_INTERVAL_MS,
    });
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      if (res.statusCode === 401 || res.statusCode === 403) throw new ControlRefused('subscription', res.statusCode, text);
      throw new Error(`reconciler answered ${res.statusCode}: ${text.slice(0, 200)}`);
    }
    this.#connected = true;
    this.#failures = 0;
    this.#o.log.info({ type: 'control_connected', url: this.url }, 'subscribed to the reconciler');
    let buffer = '';
    for await (const chunk of res.body) {
      buffer += (chunk as Buffer).toString('utf8');
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.trim() === '') continue;
        const resubscribe = await this.#handle(JSON.parse(line) as ControlMessage);
        if (resubscribe) {
          res.body.destroy();
          return;
        }
      }
    }
    throw new Error('reconciler closed the stream');
  }

  /** Applies one message; returns true when the stream should be re-opened (our holdings and the reconciler's view differ). */
  async #handle(message: ControlMessage): Promise<boolean> {
    const store = this.#o.store;
    let result: ApplyResult;
    switch (message.type) {
      case 'ping':
        return false;
      case 'trust-bundle':
        this.#o.onTrustBundle?.(message.roots);
        return false;
      case 'unknown-service':
        this.#o.log.warn({ type: 'control_unknown_service', revision: message.revision }, message.message);
        return false;
      case 'config':
        result = store.apply(message.config, 'control');
        break;
      case 'delta':
        result = store.applyDelta(message.delta, 'control');
        break;
      default:
        return false;
    }
    if (result.ok) await this.#o.beforeAck?.();
    const ack: Ack = {
      service: this.#o.service,
      node: this.#o.node,
      version: store.current?.version ?? null,
      revision: message.revision,
      ok: result.ok,
      ...(result.ok ? {} : { reasons: result.reasons }),
    };
    await this.#ack(ack);
    return !result.ok && result.code === 'base_mismatch';
  }

  async #ack(ack: Ack): Promise<void> {
    try {
      // To the replica whose stream carried the message: only it knows this sidecar's state.
      const res = await request(new URL(ACK_PATH, this.url), {
        method: 'POST',
        headers: { authorization: bearer(this.#o.token), 'content-type': 'application/json' },
        body: JSON.stringify(ack),
        dispatcher: this.#agent,
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      if (res.statusCode === 401 || res.statusCode === 403) {
        const refused = new ControlRefused('acknowledgement', res.statusCode, await res.body.text());
        this.#o.log.warn({ type: 'control_ack_refused', status: refused.status, code: refused.code, version: ack.version }, 'the reconciler refused the acknowledgement; the next subscribe reports what runs');
        return;
      }
      await res.body.dump();
    } catch (err) {
      this.#o.log.warn({ type: 'control_ack_failed', error: (err as Error).message }, 'could not acknowledge; the next subscribe reports what runs');
    }
  }
}
