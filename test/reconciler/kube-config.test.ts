/** Which cluster configuration `--kubernetes` uses: --kubeconfig, KUBECONFIG, in-cluster, ~/.kube/config, else a stable error. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { KubernetesConfigError, loadKubeConfig } from '../../src/kubernetes/client.ts';

const dir = mkdtempSync(join(tmpdir(), 'trellis-kubeconfig-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function kubeconfig(name: string, server: string): string {
  const path = join(dir, name);
  writeFileSync(
    path,
    `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: "${server}" } }]
users: [{ name: u, user: { token: t } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`,
  );
  return path;
}

const server = (r: ReturnType<typeof loadKubeConfig>) => r.kubeConfig.getCurrentCluster()?.server;
const emptyHome = join(dir, 'home');
mkdirSync(emptyHome);
const noToken = join(dir, 'no-token');

describe('loadKubeConfig', () => {
  test('--kubeconfig wins over KUBECONFIG and in-cluster credentials', () => {
    const flag = kubeconfig('flag', 'https://flag.example:6443');
    const env = kubeconfig('env', 'https://env.example:6443');
    const r = loadKubeConfig({ kubeconfig: flag, env: { KUBECONFIG: env, KUBERNETES_SERVICE_HOST: '10.0.0.1' }, home: emptyHome });
    assert.equal(server(r), 'https://flag.example:6443');
    assert.equal(r.from, `kubeconfig ${flag}`);
  });

  test('KUBECONFIG is honoured, and a missing --kubeconfig file is an error with a stable code', () => {
    const env = kubeconfig('env2', 'https://env2.example:6443');
    assert.equal(server(loadKubeConfig({ env: { KUBECONFIG: `${join(dir, 'absent')}:${env}` }, home: emptyHome })), 'https://env2.example:6443');
    assert.throws(() => loadKubeConfig({ kubeconfig: join(dir, 'absent'), env: {} }), (err: KubernetesConfigError) => err.code === 'kubernetes_config_missing');
  });

  test('in a pod (service host set, token mounted) the pod\'s ServiceAccount is used', () => {
    const token = join(dir, 'token');
    writeFileSync(token, 'x');
    const r = loadKubeConfig({ env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, inClusterTokenPath: token, home: emptyHome });
    assert.equal(r.from, 'in-cluster ServiceAccount');
    assert.equal(server(r), 'https://10.96.0.1:443');
  });

  test('~/.kube/config is the last resort; with nothing at all the error says what to give', () => {
    const home = join(dir, 'home2');
    mkdirSync(join(home, '.kube'), { recursive: true });
    writeFileSync(join(home, '.kube', 'config'), '');
    kubeconfig(join('home2', '.kube', 'config'), 'https://home.example:6443');
    assert.equal(server(loadKubeConfig({ env: {}, inClusterTokenPath: noToken, home })), 'https://home.example:6443');
    assert.throws(
      () => loadKubeConfig({ env: { KUBERNETES_SERVICE_HOST: '10.96.0.1' }, inClusterTokenPath: noToken, home: emptyHome }),
      (err: KubernetesConfigError) => err.code === 'kubernetes_config_missing' && /--kubeconfig/.test(err.message),
    );
  });
});
