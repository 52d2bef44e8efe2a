/**
 * The objects that run Trellis in a cluster, as `trellis install` prints them and `deploy/`
 * keeps them: one pure function from options (and, for the webhook, a generated serving
 * certificate) to Kubernetes objects, and one renderer to YAML. `deploy/` is this output
 * with a placeholder repository and without the webhook's key-holding parts, checked by a
 * test so the two cannot drift.
 *
 * The mesh root is not among them: the reconciler creates the Secret `trellis-ca` on its
 * first start (`--ca-secret`, under the Lease `trellis-ca-bootstrap`), so no root key is ever
 * printed into output that teams commit. The webhook's serving key is: it must match the
 * caBundle printed into the webhook configuration.
 *
 * Least privilege, rule by rule (each has its reason in the rendered YAML):
 *   cluster-wide: read EndpointSlices, Services and Pods (discovery), create TokenReviews
 *   (sidecar authentication) — nothing else;
 *   in its own namespace: the Lease `trellis-ca-bootstrap` (only writes take one), and the mesh
 *   root Secret `trellis-ca`, which it creates on first start.
 */
import { Document, isMap, isScalar, isSeq, visit, type Node } from 'yaml';
import { CONTROL_PORT, INJECT_LABEL, controlUrlFor, type KubeObject } from './inject.ts';

export const DEFAULT_NAMESPACE = 'trellis-system';
/** The ServiceAccount, ClusterRole, Role and their bindings share this name. */
export const RECONCILER_ACCOUNT = 'trellis-reconciler';
/** The Service, Deployment and PodDisruptionBudget. */
export const SERVICE_NAME = 'trellis';
export const WEBHOOK_CONFIGURATION = 'trellis-sidecar-injector';
/** The mesh root (type kubernetes.io/tls: tls.crt, tls.key), shared by every replica; created by the first reconciler to start. */
export const CA_SECRET = 'trellis-ca';
/** The Lease a reconciler holds while it creates the mesh root (src/reconciler/ca-secret.ts). */
export const CA_BOOTSTRAP_LEASE = 'trellis-ca-bootstrap';
/** The injection webhook's serving certificate (type kubernetes.io/tls). */
export const WEBHOOK_SECRET = 'trellis-webhook-tls';
/** Where the reconciler serves the injection webhook; the Service maps 443 to it. */
export const WEBHOOK_PORT = 15443;
/** Placeholder repository of `deploy/`: replace it (deploy/README.md says how). */
export const PLACEHOLDER_REPO = 'https://github.com/YOUR-ORG/YOUR-MESH-SPEC.git';
/** Namespaces the webhook never sees: the control plane's own and Kubernetes' system ones. */
export const NEVER_INJECTED = ['kube-system', 'kube-public', 'kube-node-lease'] as const;
/** Non-root user of the reconciler. */
const RECONCILER_UID = 65532;

export interface InstallOptions {
  readonly namespace: string;
  readonly repo: string;
  readonly branch: string;
  /** Spec folder inside the repo; absent: its root. */
  readonly path?: string;
  /** The trellis image for the reconciler and the injected sidecars. */
  readonly image: string;
}

/** Key material `trellis install` generates: absent parts are left out (as in deploy/). */
export interface InstallSecrets {
  /** The webhook's CA (for caBundle) and serving certificate. */
  readonly webhook?: { caPem: string; certificatePem: string; privateKeyPem: string };
}

/** Which objects to print: everything, or only the webhook's key-holding ones (to rotate its certificate). */
export type InstallPart = 'all' | 'webhook';

/** A rendered object with comments for its YAML: `comment` above it, `comments` above a path inside. */
export interface InstallObject {
  readonly object: KubeObject;
  readonly comment?: string;
  readonly comments?: readonly { path: readonly (string | number)[]; text: string }[];
  /** `deploy/` file that keeps it; absent for objects holding generated keys. */
  readonly file?: 'namespace.yaml' | 'rbac.yaml' | 'reconciler.yaml';
}

const labels = (component: string) => ({ 'app.kubernetes.io/name': 'trellis', 'app.kubernetes.io/component': component, 'app.kubernetes.io/part-of': 'trellis' });
const selector = { 'app.kubernetes.io/name': 'trellis', 'app.kubernetes.io/component': 'reconciler' };

const b64 = (text: string) => Buffer.from(text).toString('base64');

/** The reconciler's command line, as the Deployment runs it. */
export function reconcilerArgs(options: InstallOptions): string[] {
  return [
    'reconcile',
    '--kubernetes',
    '--repo', options.repo,
    '--branch', options.branch,
    ...(options.path ? ['--path', options.path] : []),
    '--listen', `0.0.0.0:${CONTROL_PORT}`,
    '--cache-dir', '/var/cache/trellis/repos',
    '--ca-secret', `${options.namespace}/${CA_SECRET}`,
    '--webhook-listen', `0.0.0.0:${WEBHOOK_PORT}`,
    '--webhook-cert', '/var/run/trellis/webhook/tls.crt',
    '--webhook-key', '/var/run/trellis/webhook/tls.key',
    '--inject-image', options.image,
    '--inject-control-url', controlUrlFor(options.namespace),
  ];
}

function deployment(options: InstallOptions): KubeObject {
  const probe = (path: string) => ({ httpGet: { path, port: 'control' }, timeoutSeconds: 2 });
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: SERVICE_NAME, namespace: options.namespace, labels: labels('reconciler') },
    spec: {
      replicas: 2,
      selector: { matchLabels: selector },
      // One replica at a time, never fewer than two serving: sidecars move to the other while one restarts.
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: {
          // The reconciler never gets a sidecar of its own (the webhook's objectSelector skips this label).
          labels: { ...labels('reconciler'), [INJECT_LABEL]: 'disabled' },
        },
        spec: {
          serviceAccountName: RECONCILER_ACCOUNT,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: RECONCILER_UID,
            runAsGroup: RECONCILER_UID,
            fsGroup: RECONCILER_UID,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          topologySpreadConstraints: [
            { maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway', labelSelector: { matchLabels: selector } },
            { maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'ScheduleAnyway', labelSelector: { matchLabels: selector } },
          ],
          containers: [
            {
              name: 'reconciler',
              image: options.image,
              args: reconcilerArgs(options),
              env: [{ name: 'HOME', value: '/tmp' }],
              ports: [
                { name: 'control', containerPort: CONTROL_PORT, protocol: 'TCP' },
                { name: 'webhook', containerPort: WEBHOOK_PORT, protocol: 'TCP' },
              ],
              resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
              startupProbe: { ...probe('/healthz'), periodSeconds: 2, failureThreshold: 60 },
              livenessProbe: { ...probe('/healthz'), periodSeconds: 10, failureThreshold: 3 },
              readinessProbe: { ...probe('/readyz'), periodSeconds: 5, failureThreshold: 2 },
              securityContext: {
                runAsNonRoot: true,
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
                seccompProfile: { type: 'RuntimeDefault' },
              },
              volumeMounts: [
                { name: 'repos', mountPath: '/var/cache/trellis' },
                { name: 'tmp', mountPath: '/tmp' },
                { name: 'webhook-tls', mountPath: '/var/run/trellis/webhook', readOnly: true },
              ],
            },
          ],
          volumes: [
            { name: 'repos', emptyDir: { sizeLimit: '1Gi' } },
            { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
            { name: 'webhook-tls', secret: { secretName: WEBHOOK_SECRET, defaultMode: 0o440 } },
          ],
        },
      },
    },
  };
}

function webhookConfiguration(options: InstallOptions, caBundle: string | undefined): InstallObject {
  const excluded = { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: [...NEVER_INJECTED, options.namespace] };
  const common = {
    clientConfig: { service: { name: SERVICE_NAME, namespace: options.namespace, path: '/inject', port: 443 }, ...(caBundle ? { caBundle } : {}) },
    rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }],
    failurePolicy: 'Ignore',
    matchPolicy: 'Equivalent',
    sideEffects: 'None',
    admissionReviewVersions: ['v1'],
    reinvocationPolicy: 'Never',
    timeoutSeconds: 5,
  };
  return {
    object: {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name: WEBHOOK_CONFIGURATION, labels: labels('injector') },
      webhooks: [
        {
          name: 'namespace.inject.trellis.dev',
          ...common,
          namespaceSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: 'In', values: ['enabled'] }, excluded] },
          objectSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: 'NotIn', values: ['disabled'] }] },
        },
        {
          name: 'pod.inject.trellis.dev',
          ...common,
          namespaceSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: 'NotIn', values: ['enabled', 'disabled'] }, excluded] },
          objectSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: 'In', values: ['enabled'] }] },
        },
      ],
    },
    comment:
      ' Sidecar injection. Pods in namespaces labelled trellis.dev/inject=enabled, and pods labelled so\n' +
      ' elsewhere; a pod label or annotation trellis.dev/inject=disabled opts out.\n' +
      ' failurePolicy Ignore: a reconciler that is down or slow never stops a pod from being created\n' +
      ' (the cluster keeps working; at worst a pod starts without a sidecar, and restarting it\n' +
      ' injects it). The system namespaces and Trellis\'s own are\n' +
      ' excluded by name as well, so not even a misplaced label sends them here.',
    comments: [{ path: ['webhooks', 1], text: ' Opt in one pod (label trellis.dev/inject=enabled) in a namespace that is not labelled.' }],
  };
}

function tlsSecret(name: string, namespace: string, certificatePem: string, keyPem: string, component: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace, labels: labels(component) },
    type: 'kubernetes.io/tls',
    data: { 'tls.crt': b64(certificatePem), 'tls.key': b64(keyPem) },
  };
}

/**
 * Every object of an install, in the order `kubectl apply` should create them. Objects that
 * hold keys are included only when `secrets` has them; `part` narrows the list to the
 * key-holding objects alone (`ca`: the mesh root; `webhook`: its Secret and the webhook
 * configuration carrying its caBundle).
 */
export function installObjects(options: InstallOptions, secrets: InstallSecrets = {}, part: InstallPart = 'all'): InstallObject[] {
  const ns = options.namespace;
  const out: InstallObject[] = [];
  const all = part === 'all';
  if (all) {
    out.push({
      object: {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: ns, labels: { ...labels('control-plane'), 'pod-security.kubernetes.io/enforce': 'restricted' } },
      },
      comment: ' The control plane. Its pods meet the "restricted" Pod Security Standard, so it is enforced.',
      file: 'namespace.yaml',
    });
    out.push({ object: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: RECONCILER_ACCOUNT, namespace: ns, labels: labels('reconciler') } }, file: 'rbac.yaml' });
    out.push({
      object: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRole',
        metadata: { name: RECONCILER_ACCOUNT, labels: labels('reconciler') },
        rules: [
          { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
          { apiGroups: [''], resources: ['services', 'pods'], verbs: ['get', 'list', 'watch'] },
          { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
        ],
      },
      comment: ' What the reconciler reads across the cluster, and nothing it does not use.',
      comments: [
        { path: ['rules', 0], text: ' Endpoints of services with endpoints.kubernetes (a list, then a watch).' },
        { path: ['rules', 1], text: ' Services and Pods (the Service behind a slice; the pod a sidecar\'s token names). Read-only;\n this version reads neither yet, and runs without this rule.' },
        { path: ['rules', 2], text: ' Sidecars authenticate with their projected ServiceAccount token (audience trellis).' },
      ],
      file: 'rbac.yaml',
    });
    out.push({
      object: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRoleBinding',
        metadata: { name: RECONCILER_ACCOUNT, labels: labels('reconciler') },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: RECONCILER_ACCOUNT },
        subjects: [{ kind: 'ServiceAccount', name: RECONCILER_ACCOUNT, namespace: ns }],
      },
      file: 'rbac.yaml',
    });
    out.push({
      object: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'Role',
        metadata: { name: RECONCILER_ACCOUNT, namespace: ns, labels: labels('reconciler') },
        rules: [
          { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: [CA_BOOTSTRAP_LEASE], verbs: ['get', 'update'] },
          { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
          { apiGroups: [''], resources: ['secrets'], resourceNames: [CA_SECRET], verbs: ['get'] },
          { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
        ],
      },
      comment: ' Writes stay in the control plane\'s namespace.',
      comments: [
        { path: ['rules', 0], text: ' Only writes take a Lease (today: creating the mesh root on first start); every replica\n serves sidecars without one. This Lease and no other.' },
        {
          path: ['rules', 1],
          text: ' Kubernetes cannot limit create by resourceNames (the name is not known when the request is\n authorised), so create is granted on Leases of this namespace; get and update only on ours.',
        },
        { path: ['rules', 2], text: ' The mesh root, and no other Secret.' },
        {
          path: ['rules', 3],
          text:
            ' The first replica creates the root (trellis reconcile --ca-secret). As for Leases, create\n' +
            ' cannot be limited by name: this allows creating any Secret in this namespace, and reading\n' +
            ' none but trellis-ca. The root is never printed here, nor committed to deploy/.',
        },
      ],
      file: 'rbac.yaml',
    });
    out.push({
      object: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: RECONCILER_ACCOUNT, namespace: ns, labels: labels('reconciler') },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: RECONCILER_ACCOUNT },
        subjects: [{ kind: 'ServiceAccount', name: RECONCILER_ACCOUNT, namespace: ns }],
      },
      file: 'rbac.yaml',
    });
  }
  if ((all || part === 'webhook') && secrets.webhook) {
    out.push({
      object: tlsSecret(WEBHOOK_SECRET, ns, secrets.webhook.certificatePem, secrets.webhook.privateKeyPem, 'injector'),
      comment:
        ` Serving certificate of the injection webhook (${SERVICE_NAME}.${ns}.svc), signed by the CA in the\n` +
        ` webhook's caBundle, so it is made here with the configuration (rotate both: trellis install --only webhook).`,
    });
  }
  if (all) {
    out.push({
      object: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: SERVICE_NAME, namespace: ns, labels: labels('reconciler') },
        spec: {
          selector,
          ports: [
            { name: 'control', port: CONTROL_PORT, targetPort: 'control', protocol: 'TCP', appProtocol: 'http' },
            { name: 'webhook', port: 443, targetPort: 'webhook', protocol: 'TCP', appProtocol: 'https' },
          ],
        },
      },
      comment: ` Sidecar streams (${CONTROL_PORT}) and the injection webhook (443).`,
      file: 'reconciler.yaml',
    });
    out.push({
      object: deployment(options),
      comment:
        ' The reconciler: two replicas, each serving sidecar streams, certificates and the webhook from\n' +
        ' its own clone of the spec repo plus the API server.',
      file: 'reconciler.yaml',
    });
    out.push({
      object: {
        apiVersion: 'policy/v1',
        kind: 'PodDisruptionBudget',
        metadata: { name: SERVICE_NAME, namespace: ns, labels: labels('reconciler') },
        spec: { minAvailable: 1, selector: { matchLabels: selector } },
      },
      comment: ' A node drain never takes both replicas at once.',
      file: 'reconciler.yaml',
    });
  }
  if ((all || part === 'webhook') && secrets.webhook) out.push(webhookConfiguration(options, b64(secrets.webhook.caPem)));
  return out;
}

/**
 * What removes an install: every object's kind and name, in the order to delete them (the
 * webhook first, the namespace last), including what the reconciler created itself (the mesh
 * root Secret and its bootstrap Lease).
 */
export function uninstallObjects(namespace: string): KubeObject[] {
  const installed = installObjects({ namespace, repo: PLACEHOLDER_REPO, branch: 'main', image: 'unused' }, { webhook: { caPem: '', certificatePem: '', privateKeyPem: '' } }).map(({ object }) => object);
  const created: KubeObject[] = [
    { apiVersion: 'v1', kind: 'Secret', metadata: { name: CA_SECRET, namespace } },
    { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: CA_BOOTSTRAP_LEASE, namespace } },
  ];
  // Right after the namespace (deleted last), so they go before everything the install made.
  const objects = [installed[0]!, ...created, ...installed.slice(1)].map((object) => ({
    apiVersion: object.apiVersion,
    kind: object.kind,
    metadata: { name: object.metadata!.name!, ...(object.metadata!.namespace ? { namespace: object.metadata!.namespace } : {}) },
  }));
  return objects.reverse();
}

function addComments(doc: Document, item: InstallObject): void {
  if (item.comment) doc.commentBefore = item.comment;
  for (const c of item.comments ?? []) {
    const node = doc.getIn(c.path, true) as Node | undefined;
    if (node && (isMap(node) || isSeq(node) || 'commentBefore' in node)) (node as Node).commentBefore = c.text;
  }
}

/** YAML documents separated by `---`, each with its comments. `header` goes above the first. */
export function renderObjects(items: readonly InstallObject[], header?: string): string {
  return items
    .map((item, i) => {
      // No anchors for objects used twice (the webhooks' shared settings): kubectl users read these.
      const doc = new Document(item.object, { aliasDuplicateObjects: false });
      // Lists of plain values on one line (`verbs: [get, list, watch]`), as people write them.
      visit(doc, { Seq: (_, node) => void (node.items.length <= 4 && node.items.every((i) => isScalar(i) && String(i.value).length <= 30) && (node.flow = true)) });
      addComments(doc, item);
      const text = doc.toString({ lineWidth: 0, flowCollectionPadding: false });
      return (i === 0 && header ? header : '') + text;
    })
    .join('---\n');
}
