/** `trellis reconcile`: watch a git branch (or a folder), compile each revision, push deltas to sidecars. */
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../logger.ts';
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import chokidar from 'chokidar';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { MIN_CERT_TTL_MS, MAX_CERT_TTL_MS, MeshCertificateAuthority, splitPemCertificates } from '../identity/ca.ts';
import { CertificateIssuer } from '../reconciler/certificates.ts';
import { FolderSource } from '../reconciler/folder-source.ts';
import { GitSource } from '../reconciler/git-source.ts';
import { ReconcilerMetrics } from '../reconciler/metrics.ts';
import { Reconciler } from '../reconciler/reconciler.ts';
import { ReconcilerServer } from '../reconciler/server.ts';
import { kubernetesTokenReviewer, TokenReviewAuthenticator } from '../reconciler/auth.ts';
import type { Discovery } from '../reconciler/discovery.ts';
import { KubernetesDiscovery } from '../reconciler/kubernetes-discovery.ts';
import { IN_CLUSTER_TOKEN_PATH, loadKubeConfig } from '../kubernetes/client.ts';
import { loadOrCreateCaSecret, parseSecretRef } from '../reconciler/ca-secret.ts';
import { supportsNativeSidecars } from '../kubernetes/inject.ts';
import { startWebhookServer, type WebhookServer } from '../kubernetes/webhook.ts';
import type { Source } from '../reconciler/source.ts';
import type { ListenAddress } from './flags.ts';
import { EXIT, untilStopped, type CliIo } from './io.ts';
import { readSecret } from './sidecar.ts';

export interface ReconcileFlags {
  dir?: string;
  repo?: string;
  branch: string;
  path?: string;
  cacheDir?: string;
  interval: number;
  allowedSigners?: string;
  listen: ListenAddress;
  tokenFile?: string;
  webhookSecretFile?: string;
  caDir?: string;
  caCert?: string;
  caKey?: string;
  /** `[NAMESPACE/]NAME` of the Secret holding the mesh root shared by replicas, created under a Lease on first start (needs --kubernetes). */
  caSecret?: string;
  trustBundle?: string;
  certTtl: number;
  /** Endpoints from this cluster's EndpointSlices (`--kubernetes`), through `--kubeconfig` or the defaults of kubernetes/client.ts. */
  kubernetes?: boolean;
  kubeconfig?: string;
  kubernetesNamespace?: string[];
  /** Watch only the namespaces the applied spec takes endpoints from (`--kubernetes-namespaces-from-spec`). */
  kubernetesNamespacesFromSpec?: boolean;
  /** Serve the sidecar injection webhook over HTTPS here (`--webhook-listen`); the four below go with it. */
  webhookListen?: ListenAddress;
  /** PEM files of the webhook's serving certificate and key, reloaded when they change (a Secret volume). */
  webhookCert?: string;
  webhookKey?: string;
  /** Image of the injected sidecar, and the reconciler address it is given. */
  injectImage?: string;
  injectControlUrl?: string;
}

/** The mesh CA from flags: the operator's root, or one kept (made on first start) in --ca-dir. */
export async function loadCertificateAuthority(flags: Pick<ReconcileFlags, 'caDir' | 'caCert' | 'caKey' | 'trustBundle'>): Promise<MeshCertificateAuthority> {
  if ((flags.caCert === undefined) !== (flags.caKey === undefined)) throw new UsageError('--ca-cert and --ca-key go together');
  const extra = flags.trustBundle ? splitPemCertificates(readFileSync(flags.trustBundle, 'utf8')) : [];
  if (flags.trustBundle && extra.length === 0) throw new UsageError(`--trust-bundle ${flags.trustBundle} holds no PEM certificate`);
  if (flags.caCert) return MeshCertificateAuthority.load(readFileSync(flags.caCert, 'utf8'), readFileSync(flags.caKey!, 'utf8'), extra);
  return MeshCertificateAuthority.loadOrCreate(flags.caDir ?? join(homedir(), '.local', 'share', 'trellis', 'ca'), 'trellis', extra);
}

/** The namespace of the pod this runs in, from its ServiceAccount mount; undefined outside a pod. */
function inClusterNamespace(): string | undefined {
  try {
    return readFileSync(join(dirname(IN_CLUSTER_TOKEN_PATH), 'namespace'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** A flag combination that cannot work (exit 2). */
export class UsageError extends Error {}

export interface RunningReconciler {
  readonly reconciler: Reconciler;
  readonly port: number;
  /** The injection webhook's port, with --webhook-listen. */
  readonly webhookPort?: number;
  stop(): Promise<void>;
}

/** Builds and starts a reconciler from flags; undefined (after printing why) on a usage error. */
/**
 * `token`: the shared control token, or undefined when only ServiceAccount tokens are accepted
 * (`--kubernetes`: sidecars in the cluster present their projected token, checked by TokenReview).
 */
export async function startReconciler(flags: ReconcileFlags, io: CliIo, token: string | undefined): Promise<RunningReconciler | undefined> {
  if (Boolean(flags.dir) === Boolean(flags.repo)) {
    io.stderr.write('trellis reconcile: give exactly one source: --dir DIR (a local folder) or --repo URL (a git remote)\n');
    return undefined;
  }
  const log = createLogger({ component: 'reconciler' });
  let source: Source;
  try {
    source = flags.dir
      ? new FolderSource({ dir: flags.dir })
      : new GitSource({
          url: flags.repo!,
          branch: flags.branch,
          ...(flags.path ? { path: flags.path } : {}),
          cacheDir: flags.cacheDir ?? join(homedir(), '.cache', 'trellis', 'repos', createHash('sha256').update(flags.repo!).digest('hex').slice(0, 16)),
          intervalMs: flags.interval,
          ...(flags.allowedSigners ? { allowedSignersFile: flags.allowedSigners } : {}),
        });
  } catch (err) {
    io.stderr.write(`trellis reconcile: ${(err as Error).message}\n`);
    return undefined;
  }
  let webhookSecret = io.env.TRELLIS_WEBHOOK_SECRET;
  if (flags.webhookSecretFile) webhookSecret = readSecret(flags.webhookSecretFile, io, '--webhook-secret-file');
  if (flags.certTtl < MIN_CERT_TTL_MS || flags.certTtl > MAX_CERT_TTL_MS) {
    io.stderr.write('trellis reconcile: --cert-ttl must be between 1m and 720h\n');
    return undefined;
  }
  if (!flags.kubernetes && (flags.kubeconfig || flags.kubernetesNamespace || flags.kubernetesNamespacesFromSpec || flags.caSecret)) {
    io.stderr.write('trellis reconcile: --kubeconfig, --kubernetes-namespace, --kubernetes-namespaces-from-spec and --ca-secret need --kubernetes\n');
    return undefined;
  }
  if (flags.caSecret && (flags.caDir || flags.caCert || flags.caKey)) {
    io.stderr.write('trellis reconcile: give the mesh root one way: --ca-secret [NAMESPACE/]NAME, --ca-cert/--ca-key, or --ca-dir\n');
    return undefined;
  }
  let ca: MeshCertificateAuthority | undefined;
  if (!flags.caSecret) {
    try {
      ca = await loadCertificateAuthority(flags);
    } catch (err) {
      io.stderr.write(`trellis reconcile: the mesh CA: ${(err as Error).message}\n`);
      return undefined;
    }
  }
  if (flags.kubernetesNamespace && flags.kubernetesNamespacesFromSpec) {
    io.stderr.write('trellis reconcile: give --kubernetes-namespace NS… or --kubernetes-namespaces-from-spec, not both\n');
    return undefined;
  }
  const webhookProblem = webhookFlagsProblem(flags);
  if (webhookProblem) {
    io.stderr.write(`trellis reconcile: ${webhookProblem}\n`);
    return undefined;
  }
  const metrics = new ReconcilerMetrics();
  let discovery: Discovery | undefined;
  let serviceAccounts: TokenReviewAuthenticator | undefined;
  let kubeConfig: k8s.KubeConfig | undefined;
  if (flags.kubernetes) {
    try {
      const loaded = loadKubeConfig({ ...(flags.kubeconfig ? { kubeconfig: flags.kubeconfig } : {}), env: io.env });
      kubeConfig = loaded.kubeConfig;
      const from = loaded.from;
      discovery = new KubernetesDiscovery({ kubeConfig, log: log.child({ component: 'discovery' }), metrics, ...(flags.kubernetesNamespacesFromSpec ? { namespaces: 'spec' as const } : flags.kubernetesNamespace ? { namespaces: flags.kubernetesNamespace } : {}) });
      serviceAccounts = new TokenReviewAuthenticator({ review: kubernetesTokenReviewer(kubeConfig) });
      log.info({ type: 'kubernetes_config', from, server: kubeConfig.getCurrentCluster()?.server }, `endpoints from ${discovery.description} via ${from}`);
    } catch (err) {
      io.stderr.write(`trellis reconcile: --kubernetes: ${(err as Error).message}\n`);
      return undefined;
    }
  }
  if (flags.caSecret) {
    const namespace = kubeConfig!.getContextObject(kubeConfig!.getCurrentContext())?.namespace ?? inClusterNamespace() ?? 'default';
    const ref = parseSecretRef(flags.caSecret, namespace);
    if (!ref) {
      io.stderr.write(`trellis reconcile: --ca-secret takes [NAMESPACE/]NAME of a Secret, not "${flags.caSecret}"\n`);
      return undefined;
    }
    let extraRoots: string[];
    try {
      extraRoots = flags.trustBundle ? splitPemCertificates(readFileSync(flags.trustBundle, 'utf8')) : [];
      if (flags.trustBundle && extraRoots.length === 0) throw new Error(`--trust-bundle ${flags.trustBundle} holds no PEM certificate`);
    } catch (err) {
      io.stderr.write(`trellis reconcile: ${(err as Error).message}\n`);
      return undefined;
    }
    // Waits (under the bootstrap Lease) for the root every replica shares; API errors are retried, a Secret without a usable root is fatal.
    ca = await loadOrCreateCaSecret({ kubeConfig: kubeConfig!, ...ref, trustDomain: 'trellis', extraRoots, log: log.child({ component: 'ca' }) });
  }
  const reconciler = new Reconciler({ source, log, metrics, ...(discovery ? { discovery } : {}) });
  const certificates = new CertificateIssuer({ ca: ca!, ttlMs: flags.certTtl, reconciler, metrics, log });
  const server = new ReconcilerServer({ reconciler, metrics, ...(token ? { token } : {}), ...(serviceAccounts ? { authenticator: serviceAccounts } : {}), certificates, log, ...(webhookSecret ? { webhookSecret } : {}) });
  let webhook: RunningWebhook | undefined;
  if (flags.webhookListen) {
    try {
      webhook = await startInjectionWebhook(flags as WebhookFlags, kubeConfig, log.child({ component: 'webhook' }));
    } catch (err) {
      // Files that do not load are the flags' fault (exit 2); an API server that never answered is not (exit 1).
      if (err instanceof KubernetesVersionError) throw err;
      io.stderr.write(`trellis reconcile: the injection webhook: ${(err as Error).message}\n`);
      return undefined;
    }
  }
  const address = await server.listen(flags.listen.host, flags.listen.port);
  log.info({ type: 'listening', port: address.port, source: source.description }, 'reconciler listening');
  await reconciler.start();
  return {
    reconciler,
    port: address.port,
    ...(webhook ? { webhookPort: webhook.port } : {}),
    stop: async () => {
      await webhook?.close();
      await reconciler.stop();
      await server.close();
    },
  };
}

/** The webhook flags go together: what is wrong with them, or undefined. */
function webhookFlagsProblem(flags: ReconcileFlags): string | undefined {
  const needed = { '--webhook-cert': flags.webhookCert, '--webhook-key': flags.webhookKey, '--inject-image': flags.injectImage, '--inject-control-url': flags.injectControlUrl };
  if (!flags.webhookListen) {
    const given = Object.entries(needed).filter(([, v]) => v !== undefined).map(([k]) => k);
    return given.length > 0 ? `${given.join(', ')} configure the injection webhook: add --webhook-listen [HOST:]PORT, or leave them out` : undefined;
  }
  const missing = Object.entries(needed).filter(([, v]) => !v).map(([k]) => k);
  if (missing.length > 0) return `--webhook-listen needs ${missing.join(', ')} as well`;
  try {
    const url = new URL(flags.injectControlUrl!);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error();
  } catch {
    return `--inject-control-url takes the reconciler's http(s) URL as injected sidecars reach it, such as http://trellis.trellis-system.svc:15010, not "${flags.injectControlUrl}"`;
  }
  return undefined;
}

/** The API server's version could not be read, so native and classic sidecars cannot be told apart. */
class KubernetesVersionError extends Error {
  readonly code = 'kubernetes_version_unknown';
}

/**
 * GET /version, retried for about 8 s (250 ms doubling): a replica often starts while the
 * API server is briefly away, and guessing the sidecar form would inject pods the cluster
 * cannot run (a native sidecar on a cluster before 1.29 never lets the app start).
 */
async function serverVersion(kubeConfig: k8s.KubeConfig, log: Logger): Promise<k8s.VersionInfo> {
  const api = kubeConfig.makeApiClient(k8s.VersionApi);
  for (let attempt = 1, waitMs = 250; ; attempt++, waitMs *= 2) {
    try {
      return await api.getCode();
    } catch (err) {
      if (attempt === 6) throw new KubernetesVersionError(`kubernetes_version_unknown: could not read the API server's version to choose native or classic sidecars: ${(err as Error).message}`);
      log.warn({ type: 'kubernetes_version_error', attempt, error: (err as Error).message }, 'could not read the API server version; retrying');
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }
}

type WebhookFlags = ReconcileFlags & Required<Pick<ReconcileFlags, 'webhookListen' | 'webhookCert' | 'webhookKey' | 'injectImage' | 'injectControlUrl'>>;

interface RunningWebhook {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Serves the injection webhook beside the control listener. Native sidecars need
 * Kubernetes 1.29: the API server's version decides (with --kubernetes; without it the
 * webhook is assumed to serve a current cluster). The serving certificate is read again
 * whenever its files change — a mounted Secret is updated by swapping the `..data` symlink
 * the files point through, so their folders' `..` entries are watched too — and a pair that
 * does not load (a key written before its certificate) keeps the current one.
 */
async function startInjectionWebhook(flags: WebhookFlags, kubeConfig: k8s.KubeConfig | undefined, log: Logger): Promise<RunningWebhook> {
  const read = () => ({ cert: readFileSync(flags.webhookCert, 'utf8'), key: readFileSync(flags.webhookKey, 'utf8') });
  const tls = read();
  createSecureContext(tls); // throws now, at start, for a certificate and key that do not belong together
  let nativeSidecars = true;
  if (kubeConfig) {
    const version = await serverVersion(kubeConfig, log);
    nativeSidecars = supportsNativeSidecars(version);
    log.info({ type: 'kubernetes_version', version: version.gitVersion, nativeSidecars }, `Kubernetes ${version.gitVersion}: ${nativeSidecars ? 'native sidecars' : 'classic sidecars (before 1.29)'}`);
  }
  const server: WebhookServer = await startWebhookServer({
    ...tls,
    host: flags.webhookListen.host,
    port: flags.webhookListen.port,
    options: { image: flags.injectImage, controlUrl: flags.injectControlUrl, nativeSidecars },
    onEvent: (e) => log.info({ type: 'injection', ...e }, `pod ${e.namespace}/${e.name}: ${e.outcome}`),
  });
  // Not "listening": that line names the control port, which tools and tests read.
  log.info({ type: 'webhook_listening', port: server.port, nativeSidecars }, 'injection webhook listening');
  const files = [flags.webhookCert, flags.webhookKey].map((f) => resolve(f));
  const folders = [...new Set(files.map((f) => dirname(f)))];
  const watcher = chokidar.watch([...files, ...folders], {
    ignoreInitial: true,
    depth: 0,
    ignored: (path: string) => !files.includes(resolve(path)) && !folders.includes(resolve(path)) && !basename(path).startsWith('..'),
    awaitWriteFinish: { stabilityThreshold: 50, pollInterval: 20 },
  });
  watcher.on('all', () => {
    try {
      const next = read();
      createSecureContext(next);
      server.setCertificate(next);
      log.info({ type: 'webhook_certificate_reloaded' }, 'injection webhook certificate reloaded; new connections get it');
    } catch (err) {
      log.warn({ type: 'webhook_certificate_reload_failed', error: (err as Error).message }, 'the webhook certificate files changed but do not load; serving the current one');
    }
  });
  await new Promise<void>((done) => watcher.once('ready', () => done()));
  return {
    port: server.port,
    close: async () => {
      await watcher.close();
      await server.close();
    },
  };
}

export async function runReconcile(flags: ReconcileFlags, io: CliIo): Promise<number> {
  const token = flags.tokenFile ? readSecret(flags.tokenFile, io, '--token-file') : io.env.TRELLIS_CONTROL_TOKEN;
  // On Kubernetes sidecars prove their ServiceAccount instead; a shared token then serves only sidecars outside the cluster.
  if (!token && !flags.kubernetes) {
    io.stderr.write('trellis reconcile: sidecars must authenticate: give --token-file FILE or TRELLIS_CONTROL_TOKEN (or --kubernetes, where they present ServiceAccount tokens)\n');
    return EXIT.usage;
  }
  // Signals are handled from the start, as `trellis sidecar` does: a SIGTERM while it is
  // still starting (it already listens) waits for the start, then stops it cleanly.
  const starting = startReconciler(flags, io, token);
  const stopped = untilStopped(async () => {
    const started = await starting.catch(() => undefined);
    await started?.stop();
  });
  let running: RunningReconciler | undefined;
  try {
    running = await starting;
  } catch (err) {
    io.stderr.write(`trellis reconcile: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
  if (!running) return EXIT.usage;
  await stopped;
  return EXIT.ok;
}
