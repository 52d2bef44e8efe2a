/**
 * The mesh root shared by reconciler replicas, kept in a Kubernetes Secret (type
 * `kubernetes.io/tls`: `tls.crt`, `tls.key`) that the first replica to start creates.
 *
 * Every replica signs workload certificates, so they must all sign with one root, or sidecars
 * served by different replicas would not trust each other. The root is made in the cluster,
 * on first start, rather than by `trellis install`: install output is meant to be committed
 * (GitOps), and a root key printed into it would sit in a repository forever.
 *
 * On start a replica:
 *   1. reads the Secret; if it is there, uses it (a restart or a new replica: no write at all);
 *   2. otherwise takes the Lease `trellis-ca-bootstrap` in the Secret's namespace, reads again
 *      (another replica may have just finished), and if still absent generates a root and
 *      creates the Secret, then releases the Lease;
 *   3. a replica that finds the Lease held waits for its holder — reading the Secret every
 *      `pollMs` — and uses what the holder created.
 * The Secret's create is the arbiter in the end: should two replicas ever both generate (a
 * holder too slow to renew its Lease), the API server accepts one create and refuses the
 * other with 409, whose replica then reads and uses the winner's. The Lease keeps the others
 * waiting instead of making roots that would be thrown away.
 *
 * An existing Secret is never overwritten: one that does not hold a usable root is an error
 * for the operator to fix (replacing a root cuts sidecars off from each other).
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { MeshCertificateAuthority } from '../identity/ca.ts';
import { CA_BOOTSTRAP_LEASE } from '../kubernetes/install.ts';
import { LeaseLock, leaseHolderIdentity } from '../kubernetes/lease.ts';

/** A Secret that exists but holds no usable root (stable code `ca_secret_invalid`); not retried. */
export class CaSecretError extends Error {
  readonly code = 'ca_secret_invalid';
}

export interface CaSecretOptions {
  readonly kubeConfig: k8s.KubeConfig;
  readonly namespace: string;
  readonly name: string;
  /** Trust domain named in a generated root's subject. */
  readonly trustDomain: string;
  /** More roots sidecars should trust (`--trust-bundle`). */
  readonly extraRoots?: readonly string[];
  readonly log: Logger;
  /** Lease holder identity (default `leaseHolderIdentity()`). */
  readonly holder?: string;
  readonly leaseDurationSeconds?: number;
  /** How often a waiting replica looks again; also the first retry after an API error. */
  readonly pollMs?: number;
  readonly signal?: AbortSignal;
}

/** `[NAMESPACE/]NAME` of `--ca-secret`, or undefined when it is not one. */
export function parseSecretRef(value: string, defaultNamespace: string): { namespace: string; name: string } | undefined {
  const m = /^(?:([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/)?([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$/.exec(value);
  return m ? { namespace: m[1] ?? defaultNamespace, name: m[3]! } : undefined;
}

const statusOf = (err: unknown) => (err as { code?: unknown }).code;

/** Why an API call failed, in words, with the permission it needs. */
function describe(err: unknown, what: string): string {
  const status = statusOf(err);
  if (status === 401 || status === 403) return `the API server refused to ${what} (${status}): the reconciler's Role needs get on Secret and get/update on Lease by name, and create on both`;
  const cause = (err as { cause?: { code?: string } }).cause?.code;
  return `could not ${what}: ${cause ?? (err as Error).message}`;
}

/** The mesh CA from the Secret, created under the Lease on first start. Resolves once every replica would agree on it. */
export async function loadOrCreateCaSecret(o: CaSecretOptions): Promise<MeshCertificateAuthority> {
  const core = o.kubeConfig.makeApiClient(k8s.CoreV1Api);
  const { namespace, name } = o;
  const where = `Secret ${namespace}/${name}`;
  const holder = o.holder ?? leaseHolderIdentity();
  const lease = new LeaseLock({ kubeConfig: o.kubeConfig, namespace, name: CA_BOOTSTRAP_LEASE, holder, ...(o.leaseDurationSeconds ? { durationSeconds: o.leaseDurationSeconds } : {}) });
  const pollMs = o.pollMs ?? 500;
  let failures = 0;
  let waitingFor: string | undefined;

  const read = async (): Promise<MeshCertificateAuthority | undefined> => {
    let secret: k8s.V1Secret;
    try {
      secret = await core.readNamespacedSecret({ name, namespace });
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw Object.assign(new Error(describe(err, `read ${where}`)), { retry: true });
    }
    const pem = (key: string) => (secret.data?.[key] ? Buffer.from(secret.data[key], 'base64').toString('utf8') : undefined);
    const cert = pem('tls.crt');
    const key = pem('tls.key');
    if (!cert || !key) throw new CaSecretError(`${where} exists but has no tls.crt and tls.key; fix or delete it (a new root cuts sidecars off from each other until every one has renewed)`);
    try {
      return await MeshCertificateAuthority.load(cert, key, o.extraRoots ?? []);
    } catch (err) {
      throw new CaSecretError(`${where} does not hold a usable mesh root: ${(err as Error).message}`);
    }
  };

  const create = async (): Promise<MeshCertificateAuthority> => {
    const ca = await MeshCertificateAuthority.generate(o.trustDomain, o.extraRoots ?? []);
    const body: k8s.V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/tls',
      metadata: {
        name,
        namespace,
        labels: { 'app.kubernetes.io/name': 'trellis', 'app.kubernetes.io/component': 'ca', 'app.kubernetes.io/part-of': 'trellis' },
        annotations: { 'trellis.dev/created-by': holder },
      },
      data: { 'tls.crt': Buffer.from(ca.rootPem).toString('base64'), 'tls.key': Buffer.from(await ca.exportPrivateKeyPem()).toString('base64') },
    };
    try {
      await core.createNamespacedSecret({ namespace, body });
    } catch (err) {
      if (statusOf(err) !== 409) throw Object.assign(new Error(describe(err, `create ${where}`)), { retry: true });
      // Someone else's create got there first: theirs is the root.
      o.log.info({ type: 'ca_secret_conflict', secretName: `${namespace}/${name}` }, `${where} was created by another replica meanwhile; using it`);
      const theirs = await read();
      if (!theirs) throw Object.assign(new Error(`${where} was created and is gone again`), { retry: true });
      return theirs;
    }
    o.log.info({ type: 'ca_secret_created', secretName: `${namespace}/${name}`, holder }, `made a new mesh root and stored it in ${where}`);
    return ca;
  };

  for (;;) {
    if (o.signal?.aborted) throw new Error('stopped while waiting for the mesh root');
    try {
      const existing = await read();
      if (existing) {
        o.log.info({ type: 'ca_secret_loaded', secretName: `${namespace}/${name}` }, `mesh root from ${where}`);
        return existing;
      }
      let attempt;
      try {
        attempt = await lease.tryAcquire();
      } catch (err) {
        throw Object.assign(new Error(describe(err, `take Lease ${namespace}/${CA_BOOTSTRAP_LEASE}`)), { retry: true });
      }
      if (attempt.acquired) {
        try {
          return (await read()) ?? (await create());
        } finally {
          await lease.release();
        }
      }
      if (waitingFor !== attempt.holder) {
        waitingFor = attempt.holder;
        o.log.info({ type: 'ca_secret_waiting', secretName: `${namespace}/${name}`, holder: attempt.holder }, `${where} is being created by ${attempt.holder}; waiting for it`);
      }
      failures = 0;
    } catch (err) {
      if (!(err as { retry?: boolean }).retry) throw err;
      failures++;
      o.log.warn({ type: 'ca_secret_error', error: (err as Error).message, failures }, `the mesh root: ${(err as Error).message}; retrying`);
    }
    // Jittered so replicas that started together do not keep asking in step.
    const wait = Math.min(pollMs * 2 ** Math.min(failures, 4), 5000) * (0.5 + Math.random() / 2);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, wait);
      o.signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
    });
  }
}
