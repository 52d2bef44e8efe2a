/**
 * Sidecar injection: what the mutating webhook and `trellis inject` add to a pod so that its
 * app talks through a Trellis sidecar. One pure function, `injectPod`, decides and builds;
 * the webhook turns its answer into a JSON Patch (`jsonPatch`), `trellis inject` into YAML
 * (`injectManifest` walks workloads to their pod templates).
 *
 * Which pods: the webhook configuration's selectors choose (namespaces labelled
 * `trellis.dev/inject: enabled`, and pods labelled so in other namespaces); here a pod (or
 * pod template) annotation or label `trellis.dev/inject: disabled` opts one out — an
 * annotation cannot be selected on, so it is honoured here. A pod that already has a
 * `trellis-proxy` container is returned unchanged, so a pod seen twice — by a reinvoked
 * webhook, by two webhook configurations, or injected offline and then admitted — gets
 * one sidecar.
 *
 * What it adds, on Kubernetes ≥ 1.29 (`nativeSidecars`): the proxy as the first init
 * container with `restartPolicy: Always` — a native sidecar — and a startupProbe on its
 * admin `/readyz`. The kubelet starts the next container only once that probe passes, so
 * the app starts with a configured proxy, and a Job's pod completes when its app exits (a
 * native sidecar does not keep it running). On older clusters the proxy is the first
 * regular container with a postStart hook (`trellis wait-ready`) that returns once the proxy
 * is ready: the kubelet starts containers in order and waits for each postStart hook, which
 * holds the app back the same way (Istio's `holdApplicationUntilProxyStarts`). Jobs then
 * never complete by themselves: their proxy keeps running (say so to users).
 *
 * The probe is an HTTP GET on the admin port, which the sidecar then binds on all addresses
 * (`--admin 0.0.0.0:15000 --admin-allow-remote`): the kubelet probes the pod's IP, never its
 * loopback. The admin listener refuses config writes without `--admin-token-file` (none is
 * given here), so the pod network sees only health, metrics, the running config and the
 * public certificate — what Linkerd's admin port 4191 shows too. An exec probe would fork a
 * Node process every second; a TCP probe would only say the port is open, not that a
 * config is applied.
 */
import { parseTcpUpstream } from '../sidecar/tcp-upstream.ts';
import { serviceKey } from '../spec/names.ts';

/** The injected container's name; its presence marks a pod as injected. */
export const PROXY_CONTAINER = 'trellis-proxy';
/** Namespace label and pod annotation/label that select injection. */
export const INJECT_LABEL = 'trellis.dev/inject';
/** Pod annotation naming the service (`NAME`, in the pod's namespace, or `NAMESPACE/NAME`). */
export const SERVICE_ANNOTATION = 'trellis.dev/service';
/** Pod annotation naming the app's port, when it is not the first container port. */
export const APP_PORT_ANNOTATION = 'trellis.dev/app-port';
/**
 * Pod annotation listing local ports that carry TCP service ports, for apps whose clients
 * cannot send CONNECT (`15432=ledger:7000, 15433=shop/db:5432`): the sidecar's
 * `--tcp-upstream` flags. Loopback only.
 */
export const TCP_UPSTREAMS_ANNOTATION = 'trellis.dev/tcp-upstreams';
/** Annotation written on injected pods: `native` or `classic`. */
export const INJECTED_ANNOTATION = 'trellis.dev/injected';

/** Where the projected ServiceAccount token (audience `trellis`) is mounted in the proxy. */
export const TOKEN_DIR = '/var/run/secrets/trellis';
export const TOKEN_PATH = `${TOKEN_DIR}/token`;
/** The audience the reconciler's TokenReview asks for. */
export const TOKEN_AUDIENCE = 'trellis';
/** An hour: the kubelet refreshes a projected token at 80 % of its life, and the sidecar re-reads the file on every control request. */
export const TOKEN_EXPIRATION_SECONDS = 3600;
/** Writable folder for the last accepted config (the root filesystem is read-only); an emptyDir survives proxy restarts within the pod. */
export const STATE_DIR = '/var/lib/trellis';

/** Default sidecar ports (DESIGN.md "Runtime topology"). */
export const OUTBOUND_PORT = 15001;
export const INBOUND_PORT = 15006;
export const ADMIN_PORT = 15000;
/** The port the reconciler serves sidecar streams on. */
export const CONTROL_PORT = 15010;
/** Non-root user the proxy runs as (the conventional `nonroot` of distroless images), explicit so `runAsNonRoot` can be checked by the kubelet even for an image that names its user. */
export const PROXY_UID = 65532;

/** The proxy is given this long to become ready before the kubelet restarts it (120 × 1 s). */
const STARTUP_FAILURE_THRESHOLD = 120;

/** A Kubernetes object as plain JSON; only the fields injection reads are typed. */
export type KubeObject = { apiVersion?: string; kind?: string; metadata?: ObjectMeta; spec?: unknown; [key: string]: unknown };
export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}
export interface Container {
  name: string;
  image?: string;
  ports?: { containerPort: number; name?: string; protocol?: string }[];
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  [key: string]: unknown;
}
export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; [key: string]: unknown }[];
  hostNetwork?: boolean;
  [key: string]: unknown;
}
/** A Pod, or a pod template (`metadata` + `spec`). */
export interface PodLike {
  metadata?: ObjectMeta;
  spec?: PodSpec;
  [key: string]: unknown;
}

export interface InjectOptions {
  /** The proxy image (the `trellis` image; its entrypoint runs `trellis`). */
  readonly image: string;
  /** The reconciler's sidecar stream address, such as `http://trellis.trellis-system.svc:15010`. */
  readonly controlUrl: string;
  /** Native sidecars (init container with `restartPolicy: Always`), Kubernetes ≥ 1.29. */
  readonly nativeSidecars: boolean;
  /** The pod's namespace when its metadata names none (the webhook's request namespace; `trellis inject --namespace`). */
  readonly namespace: string;
  /** Image pull policy of the proxy container; absent leaves Kubernetes' default. */
  readonly imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
}

/** Why a pod was left as it was. Stable codes. */
export type SkipReason =
  | 'already_injected'
  | 'opted_out'
  | 'host_network'
  | 'no_service'
  | 'invalid_service'
  | 'invalid_app_port'
  | 'invalid_tcp_upstream'
  | 'not_a_pod';

export type InjectResult =
  | { readonly injected: true; readonly pod: PodLike; readonly service: string; readonly mode: 'native' | 'classic' }
  | { readonly injected: false; readonly reason: SkipReason; readonly message: string };

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Kubernetes ≥ 1.29 runs native sidecars by default (the SidecarContainers feature is beta and on from 1.29). */
export function supportsNativeSidecars(version: { major: string; minor: string }): boolean {
  const major = Number.parseInt(version.major, 10);
  const minor = Number.parseInt(version.minor, 10); // "29+" on some distributions
  return major > 1 || (major === 1 && minor >= 29);
}

/** The reconciler's sidecar stream address inside the cluster, for `trellis install --namespace ns`. */
export function controlUrlFor(namespace: string): string {
  return `http://trellis.${namespace}.svc:${CONTROL_PORT}`;
}

function annotation(pod: PodLike, key: string): string | undefined {
  return pod.metadata?.annotations?.[key] ?? undefined;
}

/** The pod's own choice: an annotation wins over a label; `enabled`/`disabled`, else no choice. */
function podChoice(pod: PodLike): 'enabled' | 'disabled' | undefined {
  const value = annotation(pod, INJECT_LABEL) ?? pod.metadata?.labels?.[INJECT_LABEL];
  return value === 'enabled' || value === 'disabled' ? value : undefined;
}

/** The service key of a pod: the `trellis.dev/service` annotation, else its `app.kubernetes.io/name` or `app` label, in its namespace. */
export function podServiceKey(pod: PodLike, namespace: string): { key: string } | { reason: 'no_service' | 'invalid_service'; message: string } {
  const named = annotation(pod, SERVICE_ANNOTATION);
  const labels = pod.metadata?.labels ?? {};
  const raw = named ?? labels['app.kubernetes.io/name'] ?? labels.app;
  if (raw === undefined) {
    return { reason: 'no_service', message: `no service name: add the annotation ${SERVICE_ANNOTATION}: NAME (or the label app.kubernetes.io/name or app)` };
  }
  const slash = raw.indexOf('/');
  const [ns, name] = slash < 0 ? [namespace, raw] : [raw.slice(0, slash), raw.slice(slash + 1)];
  if (!DNS_LABEL.test(ns) || !DNS_LABEL.test(name)) {
    return { reason: 'invalid_service', message: `"${raw}" is not a service name (NAME or NAMESPACE/NAME, lower-case DNS labels)` };
  }
  return { key: serviceKey(ns, name) };
}

function appPort(pod: PodLike, spec: PodSpec): { port: number | undefined } | { message: string } {
  const named = annotation(pod, APP_PORT_ANNOTATION);
  if (named !== undefined) {
    const port = /^\d{1,5}$/.test(named) ? Number(named) : NaN;
    if (!(port >= 1 && port <= 65535)) return { message: `${APP_PORT_ANNOTATION}: "${named}" is not a port number` };
    return { port };
  }
  for (const c of spec.containers) {
    const first = c.ports?.find((p) => (p.protocol ?? 'TCP') === 'TCP');
    if (first) return { port: first.containerPort };
  }
  return { port: undefined };
}

/** The `--tcp-upstream` values of the pod's annotation, or why it cannot be used. */
function tcpUpstreams(pod: PodLike): { values: string[] } | { message: string } {
  const raw = annotation(pod, TCP_UPSTREAMS_ANNOTATION);
  if (raw === undefined || raw.trim() === '') return { values: [] };
  const values: string[] = [];
  for (const part of raw.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const parsed = parseTcpUpstream(part);
    if (typeof parsed === 'string') return { message: `${TCP_UPSTREAMS_ANNOTATION}: ${parsed}` };
    if (parsed.host !== '127.0.0.1' && parsed.host !== 'localhost') return { message: `${TCP_UPSTREAMS_ANNOTATION}: "${part}" must listen on 127.0.0.1 (whoever reaches it calls the mesh as this service)` };
    values.push(`${parsed.host}:${parsed.port}=${parsed.service}:${parsed.servicePort}`);
  }
  return { values };
}

function hasProxy(spec: PodSpec): boolean {
  return [...spec.containers, ...(spec.initContainers ?? [])].some((c) => c?.name === PROXY_CONTAINER);
}

/** The app's environment: its outbound calls go through the proxy; loopback stays direct. */
const APP_ENV: readonly { name: string; value: string }[] = [
  { name: 'HTTP_PROXY', value: `http://127.0.0.1:${OUTBOUND_PORT}` },
  // curl and many libraries read only the lower-case spelling.
  { name: 'http_proxy', value: `http://127.0.0.1:${OUTBOUND_PORT}` },
  { name: 'NO_PROXY', value: 'localhost,127.0.0.1,::1' },
  { name: 'no_proxy', value: 'localhost,127.0.0.1,::1' },
  { name: 'TRELLIS_OUTBOUND', value: `http://127.0.0.1:${OUTBOUND_PORT}` },
];

function withAppEnv(container: Container): Container {
  const env = [...(container.env ?? [])];
  // A variable the app already sets is its own decision (a proxy of its own, a wider NO_PROXY).
  for (const e of APP_ENV) if (!env.some((x) => x.name === e.name)) env.push({ ...e });
  return { ...container, env };
}

function proxyContainer(service: string, port: number | undefined, options: InjectOptions, tcp: readonly string[] = []): Container {
  const args = [
    'sidecar',
    '--control', options.controlUrl,
    '--service', service,
    '--control-token-file', TOKEN_PATH,
    '--app', port === undefined ? '127.0.0.1' : `127.0.0.1:${port}`,
    // Other pods' sidecars call this pod's IP on the inbound port.
    '--inbound', `0.0.0.0:${INBOUND_PORT}`,
    '--outbound', `127.0.0.1:${OUTBOUND_PORT}`,
    // The kubelet probes the pod IP; writes stay disabled (no --admin-token-file).
    '--admin', `0.0.0.0:${ADMIN_PORT}`,
    '--admin-allow-remote',
    '--state-dir', STATE_DIR,
    ...tcp.flatMap((t) => ['--tcp-upstream', t]),
  ];
  const probe = (path: string) => ({ httpGet: { path, port: ADMIN_PORT }, timeoutSeconds: 1 });
  return {
    name: PROXY_CONTAINER,
    image: options.image,
    ...(options.imagePullPolicy ? { imagePullPolicy: options.imagePullPolicy } : {}),
    args,
    ports: [
      { name: 'trellis-inbound', containerPort: INBOUND_PORT, protocol: 'TCP' },
      { name: 'trellis-admin', containerPort: ADMIN_PORT, protocol: 'TCP' },
    ],
    resources: {
      requests: { cpu: '50m', memory: '64Mi' },
      // Memory only: a CPU limit throttles the proxy on every burst and adds latency to each call.
      limits: { memory: '256Mi' },
    },
    securityContext: {
      runAsNonRoot: true,
      runAsUser: PROXY_UID,
      runAsGroup: PROXY_UID,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [
      { name: 'trellis-token', mountPath: TOKEN_DIR, readOnly: true },
      { name: 'trellis-state', mountPath: STATE_DIR },
    ],
    ...(options.nativeSidecars
      ? {
          restartPolicy: 'Always',
          startupProbe: { ...probe('/readyz'), periodSeconds: 1, failureThreshold: STARTUP_FAILURE_THRESHOLD },
        }
      : {
          lifecycle: {
            postStart: { exec: { command: ['trellis', 'wait-ready', '--admin', `127.0.0.1:${ADMIN_PORT}`, '--timeout', `${STARTUP_FAILURE_THRESHOLD}s`] } },
          },
        }),
    readinessProbe: { ...probe('/readyz'), periodSeconds: 5, failureThreshold: 3 },
    livenessProbe: { ...probe('/healthz'), periodSeconds: 10, failureThreshold: 3 },
  };
}

const VOLUMES = [
  {
    name: 'trellis-token',
    projected: { sources: [{ serviceAccountToken: { audience: TOKEN_AUDIENCE, expirationSeconds: TOKEN_EXPIRATION_SECONDS, path: 'token' } }] },
  },
  { name: 'trellis-state', emptyDir: {} },
];

/**
 * Adds the Trellis sidecar to `pod` (a Pod or a pod template). Pure: `pod` is not modified;
 * the answer is a new pod, or why it was left alone. `options.namespace` is used when the
 * pod's metadata names no namespace.
 */
export function injectPod(pod: PodLike, options: InjectOptions): InjectResult {
  const spec = pod.spec;
  if (!spec || !Array.isArray(spec.containers)) return { injected: false, reason: 'not_a_pod', message: 'no spec.containers' };
  if (hasProxy(spec)) return { injected: false, reason: 'already_injected', message: `already has a ${PROXY_CONTAINER} container` };
  if (podChoice(pod) === 'disabled') return { injected: false, reason: 'opted_out', message: `${INJECT_LABEL}: disabled` };
  if (spec.hostNetwork === true) {
    // The proxy's ports would be the node's: two injected pods on a node would collide.
    return { injected: false, reason: 'host_network', message: 'pods on the host network are not injected' };
  }
  const namespace = pod.metadata?.namespace || options.namespace;
  const key = podServiceKey(pod, namespace);
  if (!('key' in key)) return { injected: false, reason: key.reason, message: key.message };
  const port = appPort(pod, spec);
  if ('message' in port) return { injected: false, reason: 'invalid_app_port', message: port.message };

  const tcp = tcpUpstreams(pod);
  if ('message' in tcp) return { injected: false, reason: 'invalid_tcp_upstream', message: tcp.message };
  const proxy = proxyContainer(key.key, port.port, options, tcp.values);
  const volumes = [...(spec.volumes ?? []).filter((v) => !VOLUMES.some((t) => t.name === v.name)), ...VOLUMES.map((v) => structuredClone(v))];
  const containers = spec.containers.map(withAppEnv);
  const newSpec: PodSpec = options.nativeSidecars
    ? { ...spec, initContainers: [proxy, ...(spec.initContainers ?? [])], containers, volumes }
    : { ...spec, containers: [proxy, ...containers], volumes };
  const mode = options.nativeSidecars ? 'native' : 'classic';
  const metadata: ObjectMeta = { ...(pod.metadata ?? {}), annotations: { ...(pod.metadata?.annotations ?? {}), [INJECTED_ANNOTATION]: mode } };
  return { injected: true, pod: { ...pod, metadata, spec: newSpec }, service: key.key, mode };
}

/** One RFC 6902 operation. */
export type PatchOperation = { op: 'add' | 'replace'; path: string; value: unknown } | { op: 'remove'; path: string };

function pointer(segments: readonly string[]): string {
  return segments.map((s) => '/' + s.replace(/~/g, '~0').replace(/\//g, '~1')).join('');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A JSON Patch turning `before` into `after`: objects are compared key by key, an array that
 * differs is replaced whole (the webhook's patch applies to exactly the object it was sent,
 * so nothing is lost, and the patch stays small enough to read in an audit log).
 */
export function jsonPatch(before: unknown, after: unknown, path: string[] = []): PatchOperation[] {
  if (isObject(before) && isObject(after)) {
    const ops: PatchOperation[] = [];
    for (const key of Object.keys(before)) if (!(key in after)) ops.push({ op: 'remove', path: pointer([...path, key]) });
    for (const [key, value] of Object.entries(after)) {
      if (!(key in before)) ops.push({ op: 'add', path: pointer([...path, key]), value });
      else ops.push(...jsonPatch(before[key], value, [...path, key]));
    }
    return ops;
  }
  if (JSON.stringify(before) === JSON.stringify(after)) return [];
  return [{ op: 'replace', path: pointer(path), value: after }];
}

/** Workload kinds whose pod template `trellis inject` rewrites, and where the template is. */
const TEMPLATE_PATHS: Record<string, readonly string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
  Pod: [],
};

/** What `injectManifest` did to one object (and to each item of a List). */
export interface ManifestReport {
  readonly kind: string;
  readonly name: string;
  readonly outcome: 'injected' | 'skipped' | 'passed';
  readonly detail: string;
}

/**
 * Injects the pod template of a workload object (Deployment, StatefulSet, DaemonSet,
 * ReplicaSet, Job, CronJob, Pod; a `List` item by item). Other kinds come back as they were.
 * Pure. `changed` says whether anything was added.
 */
export function injectManifest(object: KubeObject, options: InjectOptions): { object: KubeObject; changed: boolean; reports: ManifestReport[] } {
  const kind = typeof object.kind === 'string' ? object.kind : '';
  const name = object.metadata?.name ?? object.metadata?.generateName ?? '';
  if (kind === 'List' || (kind.endsWith('List') && Array.isArray(object.items))) {
    const items = Array.isArray(object.items) ? (object.items as KubeObject[]) : [];
    const results = items.map((item) => injectManifest(item, options));
    const changed = results.some((r) => r.changed);
    return { object: changed ? { ...object, items: results.map((r) => r.object) } : object, changed, reports: results.flatMap((r) => r.reports) };
  }
  const path = TEMPLATE_PATHS[kind];
  if (!path || (kind === 'Pod' && object.apiVersion !== 'v1')) return { object, changed: false, reports: [{ kind, name, outcome: 'passed', detail: 'not a workload' }] };
  let template: unknown = object;
  for (const p of path) template = isObject(template) ? template[p] : undefined;
  if (!isObject(template)) return { object, changed: false, reports: [{ kind, name, outcome: 'skipped', detail: 'not_a_pod: no pod template' }] };
  // A template names no namespace: the workload's is the pods'.
  const result = injectPod(template as PodLike, { ...options, namespace: object.metadata?.namespace || options.namespace });
  if (!result.injected) return { object, changed: false, reports: [{ kind, name, outcome: 'skipped', detail: `${result.reason}: ${result.message}` }] };
  const replace = (node: unknown, rest: readonly string[]): unknown => (rest.length === 0 ? result.pod : { ...(node as Record<string, unknown>), [rest[0]!]: replace((node as Record<string, unknown>)[rest[0]!], rest.slice(1)) });
  return { object: replace(object, path) as KubeObject, changed: true, reports: [{ kind, name, outcome: 'injected', detail: `${result.mode} sidecar for service ${result.service}` }] };
}
