/**
 * A real Kubernetes API server with etcd on loopback, for the cluster suite
 * (`npm run test:kubernetes`). It runs `kube-test-env.sh` (etcd + kube-apiserver, no kubelet:
 * tests create Namespaces, ServiceAccounts, Pods and EndpointSlices themselves).
 *
 * The script is found at `TRELLIS_KUBE_TEST_ENV`, else `../shared/k8s/kube-test-env.sh`
 * beside the repository; its binaries at `KUBE_APISERVER` / `ETCD` or on PATH (the same
 * binaries controller-runtime's `setup-envtest` downloads).
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { main } from '../../src/cli/main.ts';

const run = promisify(execFile);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** The environment script, or null when this machine has none. */
export function kubeTestEnvScript(): string | null {
  const candidates = [process.env.TRELLIS_KUBE_TEST_ENV, join(repo, '../shared/k8s/kube-test-env.sh')].filter((p): p is string => !!p);
  return candidates.find((p) => existsSync(p)) ?? null;
}

export interface KubeEnv {
  readonly dir: string;
  /** Path of a kubeconfig with an admin (system:masters) user as current context. */
  readonly kubeconfigPath: string;
  readonly apiUrl: string;
  /** Admin bearer token. */
  readonly adminToken: string;
  /** A user with no RBAC rights (`kte-user`). */
  readonly userToken: string;
  /** PEM of the cluster CA (the API server's serving certificate chains to it). */
  readonly caPem: string;
  /** An admin client configuration. */
  readonly kubeConfig: k8s.KubeConfig;
  /** Stops the API server process alone (etcd keeps the data), for watch-resumption tests. */
  stopApiServer(): Promise<void>;
  /** Starts the API server again with the flags it had; resolves once it is ready. */
  startApiServer(): Promise<void>;
  /** Stops everything and removes the folder. */
  stop(): Promise<void>;
}

function parseEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0 && !line.startsWith('#')) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitReady(apiUrl: string, caPem: string, pid: () => number, deadlineMs: number): Promise<void> {
  const { Agent, request } = await import('undici');
  const agent = new Agent({ connect: { ca: caPem } });
  const until = Date.now() + deadlineMs;
  try {
    for (;;) {
      try {
        const res = await request(`${apiUrl}/readyz`, { dispatcher: agent });
        const body = await res.body.text();
        if (res.statusCode === 200 && body === 'ok') return;
      } catch {
        // not listening yet
      }
      if (!alive(pid())) throw new Error('kube-apiserver exited while starting');
      if (Date.now() > until) throw new Error(`kube-apiserver not ready within ${deadlineMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await agent.close();
  }
}

/** Starts a fresh API server with etcd (3–5 s). Throws when this machine has none. */
export async function startKubeEnv(): Promise<KubeEnv> {
  const script = kubeTestEnvScript();
  if (!script) throw new Error('no kube-test-env.sh: set TRELLIS_KUBE_TEST_ENV (see docs/kubernetes.md)');
  const dir = mkdtempSync(join(tmpdir(), 'trellis-kube-'));
  await run('bash', [script, 'start', dir], { timeout: 150_000 });
  const env = parseEnv(readFileSync(join(dir, 'env'), 'utf8'));
  const caPem = readFileSync(env.KUBE_CA_FILE!, 'utf8');
  const kubeConfig = new k8s.KubeConfig();
  kubeConfig.loadFromFile(env.KUBECONFIG!);
  let apiPid = Number(readFileSync(join(dir, 'apiserver.pid'), 'utf8'));
  // Read the command line while the process runs, so it can be started again the same way.
  const argv = readFileSync(`/proc/${apiPid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
  const stopPid = async (pid: number) => {
    if (!alive(pid)) return;
    process.kill(pid, 'SIGTERM');
    const until = Date.now() + 15_000;
    while (alive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  };
  return {
    dir,
    kubeconfigPath: env.KUBECONFIG!,
    apiUrl: env.KUBE_API_URL!,
    adminToken: env.KUBE_TOKEN!,
    userToken: env.KUBE_USER_TOKEN!,
    caPem,
    kubeConfig,
    async stopApiServer() {
      await stopPid(apiPid);
    },
    async startApiServer() {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore', detached: true });
      child.unref();
      apiPid = child.pid!;
      await waitReady(env.KUBE_API_URL!, caPem, () => apiPid, 120_000);
    },
    async stop() {
      await stopPid(apiPid);
      await run('bash', [script, 'stop', dir], { timeout: 30_000 }).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A client configuration that acts with `token` (a ServiceAccount's, say) against `env`. */
export function kubeConfigWithToken(env: KubeEnv, token: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'kte', server: env.apiUrl, caData: Buffer.from(env.caPem).toString('base64') }],
    users: [{ name: 'u', token }],
    contexts: [{ name: 'c', cluster: 'kte', user: 'u' }],
    currentContext: 'c',
  });
  return kc;
}

/** A ServiceAccount token for `namespace/serviceAccount` with `audience`, made by TokenRequest. */
export async function serviceAccountToken(env: KubeEnv, namespace: string, serviceAccount: string, audience: string, expirationSeconds = 3600): Promise<string> {
  const core = env.kubeConfig.makeApiClient(k8s.CoreV1Api);
  const res = await core.createNamespacedServiceAccountToken({
    name: serviceAccount,
    namespace,
    body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: [audience], expirationSeconds } },
  });
  return res.status!.token!;
}

/** Creates a namespace and, in it, ServiceAccounts (no controller does that here). */
export async function createNamespace(env: KubeEnv, namespace: string, serviceAccounts: readonly string[] = ['default']): Promise<void> {
  const core = env.kubeConfig.makeApiClient(k8s.CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  for (const name of serviceAccounts) await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
}

/** An object as the API takes it: kind and metadata, and whatever else it has. */
export type KubeObject = k8s.KubernetesObject & Record<string, unknown>;

/** Runs `trellis <args>` in-process (no environment): its exit code and what it wrote. */
export async function trellisCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io = { stdout: { write: (s: string) => ((out += s), true) }, stderr: { write: (s: string) => ((err += s), true) }, env: {} } as never;
  const code = await main(args, io);
  return { code, out, err };
}

/** Runs `trellis <args>` in-process, asserting exit 0 (stderr as the message); returns stdout. */
export async function trellisOutput(args: string[]): Promise<string> {
  const { code, out, err } = await trellisCli(args);
  assert.equal(code, 0, err);
  return out;
}

/** The documents of a YAML stream, as objects. */
export function yamlObjects(text: string): KubeObject[] {
  return (parseAllDocuments(text) as { toJS(): unknown }[]).map((d) => d.toJS() as KubeObject);
}

/** What `trellis install --repo https://example.com/mesh.git --namespace <namespace>` prints, as objects (it must exit 0). */
export async function installObjects(namespace: string): Promise<KubeObject[]> {
  return yamlObjects(await trellisOutput(['install', '--repo', 'https://example.com/mesh.git', '--namespace', namespace]));
}

/** Creates `objs` through `env`'s API, one after the other in order. */
export async function createObjects(env: KubeEnv, objs: readonly KubeObject[]): Promise<void> {
  const api = k8s.KubernetesObjectApi.makeApiClient(env.kubeConfig);
  for (const o of objs) await api.create(o);
}

/**
 * The spec of a cluster test: Mesh `mesh` in trust domain cluster.test (access allowed by
 * default) and Service `api` (in `namespace`, or the default one when null) whose spec is
 * the flow mapping `{ <apiSpec> }`.
 */
export function clusterSpec(mesh: string, namespace: string | null, apiSpec: string): string {
  return `apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: { name: ${mesh} }
spec: { trustDomain: cluster.test, access: { default: allow } }
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: { name: api${namespace ? `, namespace: ${namespace}` : ''} }
spec: { ${apiSpec} }
`;
}
