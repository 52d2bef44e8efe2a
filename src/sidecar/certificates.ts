/**
 * Where a sidecar's certificate comes from, two ways:
 *
 * - `CertificateClient`: from the reconciler's mesh CA over the authenticated control
 *   connection. The sidecar makes a fresh key pair and sends a certificate request; it
 *   renews at about half of each certificate's remaining life (with jitter, so a mesh
 *   started together does not renew together), retries with backoff while the CA is away,
 *   and keeps serving on the certificate it has until it expires.
 * - `watchCredentialFiles`: standalone, from certificate, key and CA files on disk
 *   (cert-manager, Vault, `trellis ca issue`), reloaded whenever one of them changes.
 *
 * Either way the credential goes through `SidecarIdentity.offer` (validate → swap), and the
 * last accepted one is kept in the state folder (key 0600) for a restart while the
 * reconciler is unreachable.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import chokidar from 'chokidar';
import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import { CERTIFICATE_PATH, type CertificateRequest, type CertificateResponse } from '../config/control-protocol.ts';
import { splitPemCertificates } from '../identity/pem.ts';
import { systemWallClock, type Random, type WallClock } from './clock.ts';
import type { Credential, SidecarIdentity } from './identity.ts';
import type { SidecarMetrics } from './metrics.ts';
import { bearer, ControlRefused, type ControlToken } from './control-token.ts';
import { parseControlUrls } from './control-client.ts';

/** Share of a certificate's remaining life after which it is renewed (± RENEW_JITTER). */
const RENEW_AT = 0.5;
const RENEW_JITTER = 0.1;

/** Writes a file atomically with `mode` (a reader sees the old file or the new one, never half); a failed write leaves no temporary file. */
function writeFileAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, data, { mode });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** Keeps the last accepted credential in `<stateDir>/identity/`: the key 0600, certificate and bundle 0644. */
export function storeCredential(stateDir: string, c: Credential): void {
  const dir = join(stateDir, 'identity');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(join(dir, 'key.pem'), c.privateKeyPem, 0o600);
  writeFileAtomic(join(dir, 'cert.pem'), c.certificatePem, 0o644);
  writeFileAtomic(join(dir, 'bundle.pem'), c.trustBundle.join(''), 0o644);
}

/**
 * `storeCredential`, with a failure (read-only or full state folder) logged as
 * `credential_store_failed` instead of thrown: the credential is in use either way, and
 * only a restart while the CA is unreachable would miss it.
 */
export function storeCredentialOrWarn(stateDir: string, c: Credential, log: Logger): void {
  try {
    storeCredential(stateDir, c);
  } catch (err) {
    log.warn({ type: 'credential_store_failed', stateDir, error: (err as Error).message }, 'the certificate in use could not be written to the state folder');
  }
}

/** The stored credential's files, or undefined when there are none. */
export function loadStoredCredential(stateDir: string): { certificatePem: string; privateKeyPem: string; trustBundle: string[] } | undefined {
  const dir = join(stateDir, 'identity');
  if (!existsSync(join(dir, 'key.pem'))) return undefined;
  try {
    return {
      privateKeyPem: readFileSync(join(dir, 'key.pem'), 'utf8'),
      certificatePem: readFileSync(join(dir, 'cert.pem'), 'utf8'),
      trustBundle: splitPemCertificates(readFileSync(join(dir, 'bundle.pem'), 'utf8')),
    };
  } catch {
    return undefined;
  }
}

export interface CertificateClientOptions {
  /** The reconciler, or several replicas (a list or comma-separated, as `--control` takes them): any of them signs. */
  readonly url: string | readonly string[];
  /** The bearer, or a source of it asked on every request (a rotated token file). */
  readonly token: string | ControlToken;
  readonly service: string;
  readonly node: string;
  readonly identity: SidecarIdentity;
  readonly log: Logger;
  readonly random: Random;
  readonly metrics: SidecarMetrics;
  readonly stateDir?: string;
  /** Wall time for renewal and backoff (default: the system clock). */
  readonly wallClock?: WallClock;
  /** Retry backoff while the CA cannot be reached: first wait and cap, in ms. */
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

export class CertificateClient {
  readonly #o: CertificateClientOptions;
  readonly #agent = new Agent({ keepAliveTimeout: 10_000 });
  readonly #controller = new AbortController();
  #loop: Promise<void> | undefined;
  /** Epoch ms at which the current certificate is renewed; 0 asks for one at once. */
  #renewAt = 0;
  /** Ends the current wait early (see `requestNow`). */
  #wake: (() => void) | undefined;
  /** Set by `requestNow`: a request failing meanwhile is retried at once, not after backoff. */
  #asked = false;

  readonly #urls: readonly string[];
  /** Index in #urls of the replica asked first next time: the last one that answered. */
  #current = 0;

  constructor(options: CertificateClientOptions) {
    this.#o = options;
    this.#urls = parseControlUrls(options.url);
    if (this.#urls.length === 0) throw new Error('the certificate client needs a reconciler URL');
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /**
   * Asks for a certificate now, unless one is in use: the service may have just joined
   * the applied revision (the CA refuses services it does not mesh), so waiting out the
   * retry backoff would keep the sidecar from serving.
   */
  requestNow(options: { evenWithCertificate?: boolean } = {}): void {
    if (this.#o.identity.current && !options.evenWithCertificate) return;
    this.#asked = true;
    this.#renewAt = 0;
    this.#wake?.();
  }

  async stop(): Promise<void> {
    this.#controller.abort();
    await this.#loop;
    await this.#agent.close();
  }

  /** Waits `ms` of wall-clock time; `requestNow` and `stop` end the wait early. */
  async #wait(ms: number): Promise<void> {
    if (this.#controller.signal.aborted) return;
    const wake = new AbortController();
    this.#wake = () => wake.abort();
    await this.#clock.sleep(Math.max(0, ms), AbortSignal.any([this.#controller.signal, wake.signal]));
    this.#wake = undefined;
  }

  get #clock(): WallClock {
    return this.#o.wallClock ?? systemWallClock;
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#controller.signal.aborted) {
      await this.#wait(this.#renewAt - this.#clock.now());
      if (this.#controller.signal.aborted) return;
      this.#asked = false;
      try {
        const c = await this.#obtain();
        failures = 0;
        const now = this.#clock.now();
        this.#renewAt = now + (c.notAfter - now) * (RENEW_AT + RENEW_JITTER * (2 * this.#o.random() - 1));
        this.#o.metrics.certificateRenewals.inc({ result: 'ok' });
        this.#o.log.info({ type: 'certificate_renewed', identity: c.identity, serial: c.serialNumber, notAfter: new Date(c.notAfter).toISOString(), renewAt: new Date(this.#renewAt).toISOString() }, 'certificate obtained from the mesh CA');
      } catch (err) {
        if (this.#controller.signal.aborted) return;
        failures++;
        this.#o.metrics.certificateRenewals.inc({ result: 'failed' });
        const current = this.#o.identity.current;
        const step = Math.min(this.#o.maxBackoffMs ?? 30_000, (this.#o.minBackoffMs ?? 500) * 2 ** Math.min(failures - 1, 16));
        // Never wait past a fifth of what the current certificate has left; once it has
        // expired there is nothing left to save, so back off as without one (else every
        // sidecar of a mesh whose CA is down retries every 100 ms).
        const left = current ? current.notAfter - this.#clock.now() : 0;
        const cap = left > 0 ? Math.max(100, left / 5) : step;
        // Asked while this request was out (a config naming the service arrived): try again
        // at once, since the CA may know the service now.
        this.#renewAt = this.#asked ? 0 : this.#clock.now() + Math.min(step, cap) * (0.5 + this.#o.random() / 2);
        this.#o.log.warn(
          {
            type: 'certificate_renewal_failed',
            error: (err as Error).message,
            ...(err instanceof ControlRefused ? { status: err.status, code: err.code } : {}),
            failures,
            expiresAt: current ? new Date(current.notAfter).toISOString() : null,
          },
          'could not get a certificate from the mesh CA; retrying',
        );
      }
    }
  }

  /**
   * One request to the CA with a fresh key; the credential is validated and swapped in. With
   * several replicas, one that cannot be reached or answers 5xx is passed over for the next at
   * once (every replica signs with the same root); a refusal of the credentials is final.
   */
  async #obtain(): Promise<Credential> {
    // Loaded on the first request: the X.509 library is a fifth of an idle sidecar's memory, and a sidecar with certificate files never needs it.
    const { createCertificateRequest, generateKeyPair, privateKeyPem } = await import('../identity/keys.ts');
    const keys = await generateKeyPair();
    const body: CertificateRequest = { service: this.#o.service, node: this.#o.node, csr: await createCertificateRequest(keys, this.#o.service) };
    let lastError: unknown;
    for (let tried = 0; tried < this.#urls.length; tried++) {
      try {
        return await this.#obtainFrom(this.#urls[this.#current]!, body, keys.privateKey);
      } catch (err) {
        if (err instanceof ControlRefused || this.#controller.signal.aborted || (err as { final?: boolean }).final) throw err;
        lastError = err;
        this.#current = (this.#current + 1) % this.#urls.length;
      }
    }
    throw lastError;
  }

  async #obtainFrom(url: string, body: CertificateRequest, privateKey: CryptoKey): Promise<Credential> {
    const res = await request(new URL(CERTIFICATE_PATH, url), {
      method: 'POST',
      headers: { authorization: bearer(this.#o.token), 'content-type': 'application/json' },
      body: JSON.stringify(body),
      dispatcher: this.#agent,
      signal: this.#controller.signal,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    if (res.statusCode === 401 || res.statusCode === 403) throw new ControlRefused('certificate request', res.statusCode, await res.body.text());
    if (res.statusCode !== 200) {
      // 4xx (a service the CA does not mesh yet, a bad request) is the same answer everywhere; 5xx may be this replica alone.
      throw Object.assign(new Error(`the mesh CA answered ${res.statusCode}: ${(await res.body.text()).slice(0, 200)}`), { final: res.statusCode < 500 });
    }
    const answer = (await res.body.json()) as CertificateResponse;
    const result = this.#o.identity.offer({ certificatePem: answer.certificate, privateKeyPem: await (await import('../identity/keys.ts')).privateKeyPem(privateKey), trustBundle: answer.trustBundle });
    if (!result.ok) throw Object.assign(new Error(`the mesh CA's certificate was refused: ${result.reason}`), { final: true });
    if (this.#o.stateDir) storeCredentialOrWarn(this.#o.stateDir, result.credential, this.#o.log);
    return result.credential;
  }
}

export interface CredentialFiles {
  readonly cert: string;
  readonly key: string;
  /** PEM file with one or more trusted roots. */
  readonly ca: string;
}

/**
 * Loads the credential from files and reloads it whenever one changes. A change that does
 * not make a valid credential (a key written before its certificate, say) is logged and
 * the current credential stays; the next change is tried again. Resolves with the first
 * load's result and a function that stops watching.
 */
export async function watchCredentialFiles(files: CredentialFiles, identity: SidecarIdentity, log: Logger): Promise<{ readonly first: { ok: boolean; reason?: string }; close(): Promise<void> }> {
  const load = () => {
    try {
      return identity.offer({ certificatePem: readFileSync(files.cert, 'utf8'), privateKeyPem: readFileSync(files.key, 'utf8'), trustBundle: splitPemCertificates(readFileSync(files.ca, 'utf8')) });
    } catch (err) {
      return { ok: false as const, reason: (err as Error).message };
    }
  };
  const first = load();
  // A mounted Kubernetes secret is updated by swapping the `..data` symlink the files point
  // through, so the files themselves never change: watch their folders' `..` entries too.
  const paths = new Set([files.cert, files.key, files.ca].map((f) => resolve(f)));
  const folders = [...new Set([...paths].map((f) => dirname(f)))];
  const watcher = chokidar.watch([...paths, ...folders], {
    ignoreInitial: true,
    depth: 0,
    ignored: (path: string) => !paths.has(resolve(path)) && !folders.includes(resolve(path)) && !basename(path).startsWith('..'),
    awaitWriteFinish: { stabilityThreshold: 50, pollInterval: 20 },
  });
  watcher.on('all', () => {
    const result = load();
    if (result.ok) log.info({ type: 'certificate_reloaded', identity: result.credential.identity, serial: result.credential.serialNumber, notAfter: new Date(result.credential.notAfter).toISOString() }, 'certificate files reloaded');
    else log.warn({ type: 'certificate_reload_failed', reason: result.reason }, 'certificate files changed but do not make a valid identity; keeping the current one');
  });
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  return { first: first.ok ? { ok: true } : { ok: false, reason: first.reason }, close: () => watcher.close() };
}
