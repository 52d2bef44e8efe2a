/**
 * How Trellis reaches the Kubernetes API server: one KubeConfig, built the same way for
 * every part that talks to the cluster (EndpointSlice discovery, TokenReview).
 *
 * Order, first that applies:
 *   1. `--kubeconfig FILE` (an operator's explicit choice wins);
 *   2. the `KUBECONFIG` environment variable (kubectl's convention; several files joined by `:`);
 *   3. in-cluster: running in a pod (`KUBERNETES_SERVICE_HOST` set and the mounted
 *      ServiceAccount token present), the pod's own ServiceAccount;
 *   4. `~/.kube/config` when it exists.
 * Otherwise it fails with `kubernetes_config_missing` rather than guessing
 * `http://localhost:8080` as the client library would.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { isIPv6 } from 'node:net';
import { dirname, join } from 'node:path';
import * as k8s from '@kubernetes/client-node';

/** Where the kubelet mounts a pod's ServiceAccount token. */
export const IN_CLUSTER_TOKEN_PATH = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/** A cluster configuration that cannot be built. `code` is stable: `kubernetes_config_missing`, `kubernetes_config_invalid`. */
export class KubernetesConfigError extends Error {
  readonly code: 'kubernetes_config_missing' | 'kubernetes_config_invalid';
  constructor(code: KubernetesConfigError['code'], message: string) {
    super(message);
    this.code = code;
  }
}

export interface KubeConfigOptions {
  /** `--kubeconfig`: a kubeconfig file. */
  readonly kubeconfig?: string;
  /** The process environment (KUBECONFIG, KUBERNETES_SERVICE_HOST). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** For tests: the in-cluster token path and home folder. */
  readonly inClusterTokenPath?: string;
  readonly home?: string;
}

/** The cluster configuration to use, and a line saying where it came from (for logs). */
export function loadKubeConfig(options: KubeConfigOptions): { readonly kubeConfig: k8s.KubeConfig; readonly from: string } {
  const kc = new k8s.KubeConfig();
  const check = (from: string) => {
    if (!kc.getCurrentCluster()) throw new KubernetesConfigError('kubernetes_config_invalid', `${from} names no current cluster (set current-context)`);
    return { kubeConfig: kc, from };
  };
  try {
    if (options.kubeconfig) {
      if (!existsSync(options.kubeconfig)) throw new KubernetesConfigError('kubernetes_config_missing', `--kubeconfig ${options.kubeconfig} does not exist`);
      kc.loadFromFile(options.kubeconfig);
      return check(`kubeconfig ${options.kubeconfig}`);
    }
    const fromEnv = options.env.KUBECONFIG;
    if (fromEnv) {
      const files = fromEnv.split(':').filter((f) => f !== '' && existsSync(f));
      if (files.length === 0) throw new KubernetesConfigError('kubernetes_config_missing', `KUBECONFIG=${fromEnv} names no existing file`);
      kc.loadFromFile(files[0]!);
      for (const f of files.slice(1)) {
        const more = new k8s.KubeConfig();
        more.loadFromFile(f);
        kc.mergeConfig(more, true);
      }
      return check(`KUBECONFIG ${files.join(':')}`);
    }
    const tokenFile = options.inClusterTokenPath ?? IN_CLUSTER_TOKEN_PATH;
    const host = options.env.KUBERNETES_SERVICE_HOST;
    if (host && existsSync(tokenFile)) {
      // As the client library's loadFromCluster, but from the given environment, and the
      // token re-read from its file (the kubelet rotates it) through the tokenFile provider.
      const server = `https://${isIPv6(host) ? `[${host}]` : host}:${options.env.KUBERNETES_SERVICE_PORT ?? '443'}`;
      kc.loadFromOptions({
        clusters: [{ name: 'in-cluster', server, caFile: join(dirname(tokenFile), 'ca.crt'), skipTLSVerify: false }],
        users: [{ name: 'in-cluster', authProvider: { name: 'tokenFile', config: { tokenFile } } }],
        contexts: [{ name: 'in-cluster', cluster: 'in-cluster', user: 'in-cluster' }],
        currentContext: 'in-cluster',
      });
      return check('in-cluster ServiceAccount');
    }
    const home = join(options.home ?? homedir(), '.kube', 'config');
    if (existsSync(home)) {
      kc.loadFromFile(home);
      return check(`kubeconfig ${home}`);
    }
  } catch (err) {
    if (err instanceof KubernetesConfigError) throw err;
    throw new KubernetesConfigError('kubernetes_config_invalid', (err as Error).message);
  }
  throw new KubernetesConfigError('kubernetes_config_missing', 'no cluster configuration: give --kubeconfig FILE, set KUBECONFIG, or run in a pod');
}
