/**
 * Printed at the end of `npm test`: the cluster suite needs a real Kubernetes API server and
 * runs on its own (`npm run test:kubernetes`), so say whether this machine can run it.
 */
import { kubeTestEnvScript } from '../test/helpers/kube-env.ts';

const script = kubeTestEnvScript();
console.log(
  script
    ? `cluster suite (test/kubernetes) not run by npm test: run it with \`npm run test:kubernetes\` (API server from ${script})`
    : 'cluster suite (test/kubernetes) not run: it needs kube-apiserver and etcd; set TRELLIS_KUBE_TEST_ENV to kube-test-env.sh and run `npm run test:kubernetes` (docs/kubernetes.md)',
);
