import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createNamespace, serviceAccountToken, startKubeEnv, type KubeEnv } from '../helpers/kube-env.ts';
import * as k8s from '@kubernetes/client-node';

let env: KubeEnv;
before(async () => {
  env = await startKubeEnv();
});
after(async () => {
  await env?.stop();
});

test('the API server issues ServiceAccount tokens that TokenReview accepts for their audience, and survives a restart', async () => {
  await createNamespace(env, 'shop', ['checkout']);
  const token = await serviceAccountToken(env, 'shop', 'checkout', 'trellis');
  const auth = env.kubeConfig.makeApiClient(k8s.AuthenticationV1Api);
  const review = await auth.createTokenReview({ body: { spec: { token, audiences: ['trellis'] } } });
  assert.equal(review.status?.authenticated, true);
  assert.equal(review.status?.user?.username, 'system:serviceaccount:shop:checkout');
  await env.stopApiServer();
  await env.startApiServer();
  const core = env.kubeConfig.makeApiClient(k8s.CoreV1Api);
  const ns = await core.readNamespace({ name: 'shop' });
  assert.equal(ns.metadata?.name, 'shop');
});
