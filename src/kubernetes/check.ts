/**
 * `trellis check`: is Trellis installed and working in this cluster? Each check answers one
 * question with `ok`, `warn` or `fail`, says in words what is wrong and how to fix it (like
 * `linkerd check`), and never changes the cluster.
 *
 * Two layers, as everywhere in Trellis: pure functions that judge what was read (a
 * certificate against a caBundle, a Deployment's status, pods against the reconciler's
 * `/status`) — tested on made-up inputs — and `runChecks`, which reads the cluster through a
 * `KubeReader` and calls them in order. A check that cannot run without an earlier one (no
 * API server, no namespace) is not run; everything else runs even after a failure, so one run
 * reports every problem.
 *
 * What "installed" means comes from `installObjects` itself: the RBAC rules checked are the
 * ones `trellis install` grants, so the two cannot drift.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import type * as k8s from '@kubernetes/client-node';
import { CA_SECRET, DEFAULT_NAMESPACE, RECONCILER_ACCOUNT, SERVICE_NAME, WEBHOOK_CONFIGURATION, WEBHOOK_SECRET, installObjects } from './install.ts';
import { CONTROL_PORT, INBOUND_PORT, PROXY_CONTAINER, supportsNativeSidecars, type KubeObject } from './inject.ts';

export type CheckStatus = 'ok' | 'warn' | 'fail';

/** One answered question. `name` is stable (docs and scripts refer to it); `hint` says how to fix what is not ok. */
export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  readonly message: string;
  readonly hint: string | null;
}

const DAY_MS = 24 * 3600_000;
/** The webhook's serving certificate should outlive a long weekend and a week of leave: below this, warn. */
export const WEBHOOK_CERT_MIN_VALIDITY_MS = 7 * DAY_MS;
/** Rotating the mesh root means every sidecar renewing against the new one: a month's notice. */
export const MESH_CA_MIN_VALIDITY_MS = 30 * DAY_MS;
/** Per request to the API server, the reconciler or the webhook: a check never hangs for the client's default. */
const REQUEST_TIMEOUT_MS = 5_000;
/** Problems listed by name in one message; the rest are counted. */
const LISTED = 10;

const ok = (name: string, message: string): CheckResult => ({ name, status: 'ok', message, hint: null });
const warn = (name: string, message: string, hint: string | null): CheckResult => ({ name, status: 'warn', message, hint });
const fail = (name: string, message: string, hint: string | null): CheckResult => ({ name, status: 'fail', message, hint });

function listed(items: readonly string[]): string {
  return items.slice(0, LISTED).join('; ') + (items.length > LISTED ? `; and ${items.length - LISTED} more` : '');
}

function day(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function installHint(namespace: string, only?: 'webhook'): string {
  const ns = namespace === DEFAULT_NAMESPACE ? '' : ` --namespace ${namespace}`;
  return only ? `trellis install${ns} --only ${only} | kubectl apply -f -` : `trellis install${ns} --repo URL | kubectl apply -f -`;
}

// ---------------------------------------------------------------------------------------------
// Version

/** The API server's `/version` answer, the fields read here. */
export interface VersionInfo {
  readonly major: string;
  readonly minor: string;
  readonly gitVersion?: string;
}

/** Native sidecars need Kubernetes ≥ 1.29; older clusters work with classic ones, so that is a warning. */
export function checkVersion(v: VersionInfo): CheckResult {
  const shown = v.gitVersion ?? `v${v.major}.${v.minor}`;
  if (supportsNativeSidecars(v)) return ok('kubernetes-version', `Kubernetes ${shown} runs native sidecars (1.29 or later)`);
  return warn(
    'kubernetes-version',
    `Kubernetes ${shown} is older than 1.29: no native sidecars, so pods get a classic sidecar (a first container that holds the app's start until it is ready; a Job's pod does not complete by itself)`,
    'upgrade the cluster to 1.29 or later for native sidecars; until then inject with trellis inject --no-native-sidecars',
  );
}

// ---------------------------------------------------------------------------------------------
// RBAC

/** One permission the reconciler's ServiceAccount needs, and the rule of the install that grants it. */
export interface Permission {
  readonly verb: string;
  readonly group: string;
  readonly resource: string;
  /** Absent: any name. */
  readonly name?: string;
  /** Absent: cluster-wide (a ClusterRole rule). */
  readonly namespace?: string;
  /** `ClusterRole trellis-reconciler` or `Role trellis-system/trellis-reconciler`, and the rule as YAML would read it. */
  readonly grantedBy: string;
  readonly rule: string;
}

type Rule = { apiGroups?: string[]; resources?: string[]; verbs?: string[]; resourceNames?: string[] };

function ruleText(r: Rule): string {
  const list = (xs: readonly string[] | undefined) => `[${(xs ?? []).map((x) => (x === '' ? '""' : x)).join(', ')}]`;
  return `{apiGroups: ${list(r.apiGroups)}, resources: ${list(r.resources)}${r.resourceNames ? `, resourceNames: ${list(r.resourceNames)}` : ''}, verbs: ${list(r.verbs)}}`;
}

/** Every permission `trellis install --namespace namespace` grants the reconciler, one per verb, resource and name. */
export function requiredPermissions(namespace: string): Permission[] {
  const objects = installObjects({ namespace, repo: 'unused', branch: 'main', image: 'unused' }).map((o) => o.object);
  const out: Permission[] = [];
  for (const o of objects) {
    if (o.kind !== 'ClusterRole' && o.kind !== 'Role') continue;
    const grantedBy = o.kind === 'ClusterRole' ? `ClusterRole ${o.metadata!.name}` : `Role ${namespace}/${o.metadata!.name}`;
    for (const rule of (o.rules as Rule[]) ?? []) {
      for (const group of rule.apiGroups ?? []) {
        for (const resource of rule.resources ?? []) {
          for (const verb of rule.verbs ?? []) {
            const names = rule.resourceNames ?? [undefined];
            for (const name of names) {
              out.push({ verb, group, resource, ...(name ? { name } : {}), ...(o.kind === 'Role' ? { namespace } : {}), grantedBy, rule: ruleText(rule) });
            }
          }
        }
      }
    }
  }
  return out;
}

/** How a permission reads in a message: `watch endpointslices.discovery.k8s.io (cluster-wide)`. */
export function permissionText(p: Permission): string {
  const resource = p.group === '' ? p.resource : `${p.resource}.${p.group}`;
  return `${p.verb} ${resource}${p.name ? ` named ${p.name}` : ''} ${p.namespace ? `in ${p.namespace}` : '(cluster-wide)'}`;
}

/** Judges the SubjectAccessReview answers: `allowed[i]` for `permissions[i]`. */
export function checkPermissions(namespace: string, permissions: readonly Permission[], allowed: readonly boolean[]): CheckResult {
  const missing = permissions.filter((_, i) => !allowed[i]);
  const account = `ServiceAccount ${namespace}/${RECONCILER_ACCOUNT}`;
  if (missing.length === 0) return ok('reconciler-rbac', `${account} has every permission trellis install grants (${permissions.length})`);
  const rules = [...new Map(missing.map((p) => [`${p.grantedBy} ${p.rule}`, p])).values()];
  return fail(
    'reconciler-rbac',
    `${account} may not ${listed(missing.map(permissionText))}`,
    `missing rule${rules.length === 1 ? '' : 's'}: ${rules.map((p) => `${p.grantedBy} needs ${p.rule}`).join('; ')}. Apply the install again: ${installHint(namespace)} (or deploy/rbac.yaml)`,
  );
}

// ---------------------------------------------------------------------------------------------
// The reconciler Deployment

/** The Deployment `trellis` and the pods it selects, as read from the API server. */
export function checkDeployment(namespace: string, deployment: k8s.V1Deployment | undefined, pods: readonly k8s.V1Pod[]): CheckResult {
  const name = 'reconciler-deployment';
  const what = `Deployment ${namespace}/${SERVICE_NAME}`;
  if (!deployment) return fail(name, `${what} does not exist: no reconciler runs, so sidecars get no config and pods are not injected`, installHint(namespace));
  const desired = deployment.spec?.replicas ?? 1;
  const st = deployment.status ?? {};
  const ready = st.readyReplicas ?? 0;
  const updated = st.updatedReplicas ?? 0;
  const total = st.replicas ?? 0;
  const problems: string[] = [];
  if ((st.observedGeneration ?? 0) < (deployment.metadata?.generation ?? 0)) problems.push('the deployment controller has not acted on its latest spec yet');
  if (ready < desired) problems.push(`${ready} of ${desired} replicas ready`);
  if (updated < total || total > desired) problems.push(`a rollout is under way: ${updated} of ${total} replicas run the current pod template`);
  // Pods: the replica sets' hashes and the images they run (a kubelet and a ReplicaSet controller maintain them).
  const live = pods.filter((p) => !p.metadata?.deletionTimestamp);
  const hashes = new Map<string, string[]>();
  for (const p of live) {
    const key = `${p.metadata?.labels?.['pod-template-hash'] ?? '?'} ${p.spec?.containers?.[0]?.image ?? '?'}`;
    hashes.set(key, [...(hashes.get(key) ?? []), p.metadata?.name ?? '?']);
  }
  if (hashes.size > 1) {
    problems.push(`its pods run ${hashes.size} revisions: ${[...hashes].map(([k, names]) => `${names.join(', ')} (template ${k.split(' ')[0]}, image ${k.split(' ')[1]})`).join('; ')}`);
  }
  const image = deployment.spec?.template?.spec?.containers?.[0]?.image;
  const stale = live.filter((p) => image && p.spec?.containers?.[0]?.image !== image).map((p) => p.metadata?.name ?? '?');
  if (stale.length > 0 && hashes.size <= 1) problems.push(`pods ${listed(stale)} run another image than ${image}`);
  const notReady = live.filter((p) => !(p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True')).map((p) => p.metadata?.name ?? '?');
  if (notReady.length > 0 && ready >= desired) problems.push(`pods not ready: ${listed(notReady)}`);
  if (problems.length > 0) {
    return fail(name, `${what}: ${problems.join('; ')}`, `kubectl -n ${namespace} rollout status deployment/${SERVICE_NAME}; kubectl -n ${namespace} describe pods -l app.kubernetes.io/component=reconciler; kubectl -n ${namespace} logs deployment/${SERVICE_NAME}`);
  }
  return ok(name, `${what}: ${ready} of ${desired} replicas ready, all on the current revision${image ? ` (${image})` : ''}`);
}

// ---------------------------------------------------------------------------------------------
// Certificates

/** The certificates in a PEM text, in order. Throws on text that is not PEM certificates. */
export function parseCertificates(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error('no PEM certificate');
  return blocks.map((b) => new X509Certificate(b));
}

function keyMatches(cert: X509Certificate, keyPem: string): boolean {
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    return false;
  }
  return cert.checkPrivateKey(key);
}

/** A distinguished name on one line (Node gives one attribute per line). */
function dn(name: string): string {
  return name.replace(/\n/g, ', ');
}

function subjectOf(cert: X509Certificate): string {
  return dn(cert.subject);
}

/**
 * The chain from `leaf` to a certificate of `roots`, through `intermediates` (the rest of
 * tls.crt); undefined when none chains. Signature and issuer name are checked, as a TLS client
 * would.
 */
function chainTo(leaf: X509Certificate, intermediates: readonly X509Certificate[], roots: readonly X509Certificate[]): X509Certificate[] | undefined {
  const chain = [leaf];
  for (let depth = 0; depth < 5; depth++) {
    const last = chain[chain.length - 1]!;
    const root = roots.find((r) => last.checkIssued(r) && last.verify(r.publicKey));
    if (root) return [...chain, root];
    const next = intermediates.find((c) => !chain.includes(c) && last.checkIssued(c) && last.verify(c.publicKey));
    if (!next) return undefined;
    chain.push(next);
  }
  return undefined;
}

/** Validity of every certificate of a chain at `now`: the first problem, or how long the whole chain still lasts. */
function validity(chain: readonly X509Certificate[], now: number): { problem: string } | { until: number; first: X509Certificate } {
  let until = Infinity;
  let first = chain[0]!;
  for (const c of chain) {
    const from = Date.parse(c.validFrom);
    const to = Date.parse(c.validTo);
    if (now < from) return { problem: `${subjectOf(c)} is not valid before ${new Date(from).toISOString()}` };
    if (now > to) return { problem: `${subjectOf(c)} expired on ${new Date(to).toISOString()}` };
    if (to < until) [until, first] = [to, c];
  }
  return { until, first };
}

/**
 * The webhook's serving certificate (Secret `trellis-webhook-tls`) against the caBundle the API
 * server trusts for it: it must chain to the bundle, name `trellis.<ns>.svc` (the name the API
 * server dials for the Service), hold its key, and be valid for a week more (less: a warning).
 */
export function checkWebhookCertificate(input: { namespace: string; caBundlePem: string | undefined; certificatePem: string | undefined; keyPem: string | undefined; now: number }): CheckResult {
  const name = 'webhook-certificate';
  const secret = `Secret ${input.namespace}/${WEBHOOK_SECRET}`;
  const rotate = `make a new one: ${installHint(input.namespace, 'webhook')}, then kubectl -n ${input.namespace} rollout restart deployment/${SERVICE_NAME}`;
  const consequence = 'the API server refuses the webhook\'s TLS, and pods are created without a sidecar (failurePolicy Ignore)';
  if (input.certificatePem === undefined || input.keyPem === undefined) return fail(name, `${secret} is missing or has no tls.crt and tls.key: the reconciler cannot serve the injection webhook`, rotate);
  let certs: X509Certificate[];
  try {
    certs = parseCertificates(input.certificatePem);
  } catch {
    return fail(name, `tls.crt of ${secret} is not a PEM certificate`, rotate);
  }
  const leaf = certs[0]!;
  if (!keyMatches(leaf, input.keyPem)) return fail(name, `tls.key of ${secret} is not the private key of its tls.crt`, rotate);
  let roots: X509Certificate[];
  try {
    roots = parseCertificates(input.caBundlePem ?? '');
  } catch {
    return fail(name, `the caBundle of MutatingWebhookConfiguration ${WEBHOOK_CONFIGURATION} holds no certificate: ${consequence}`, rotate);
  }
  const chain = chainTo(leaf, certs.slice(1), roots);
  if (!chain) {
    return fail(
      name,
      `the certificate in ${secret} (issued by ${dn(leaf.issuer)}) is not signed by the caBundle of MutatingWebhookConfiguration ${WEBHOOK_CONFIGURATION} (${roots.map(subjectOf).join('; ')}): ${consequence}`,
      rotate,
    );
  }
  const host = `${SERVICE_NAME}.${input.namespace}.svc`;
  if (leaf.checkHost(host) === undefined) {
    return fail(name, `the certificate in ${secret} does not name ${host} (it names ${leaf.subjectAltName ?? subjectOf(leaf)}): ${consequence}`, rotate);
  }
  const usages = leaf.keyUsage;
  if (usages && usages.length > 0 && !usages.includes('1.3.6.1.5.5.7.3.1')) return fail(name, `the certificate in ${secret} is not for TLS servers (extended key usage ${usages.join(', ')}): ${consequence}`, rotate);
  const valid = validity(chain, input.now);
  if ('problem' in valid) return fail(name, `the webhook certificate chain: ${valid.problem}: ${consequence}`, rotate);
  const days = Math.floor((valid.until - input.now) / DAY_MS);
  if (valid.until - input.now < WEBHOOK_CERT_MIN_VALIDITY_MS) {
    return warn(name, `${subjectOf(valid.first)} of the webhook's chain expires on ${new Date(valid.until).toISOString()}, in ${days} day${days === 1 ? '' : 's'}: then ${consequence}`, rotate);
  }
  return ok(name, `the webhook certificate names ${host}, is signed by its caBundle and is valid until ${day(valid.until)}`);
}

/** The mesh root (Secret `trellis-ca`): a CA certificate with its key, valid for 30 days more (less: a warning). */
export function checkMeshCa(input: { namespace: string; certificatePem: string | undefined; keyPem: string | undefined; now: number }): CheckResult {
  const name = 'mesh-ca';
  const secret = `Secret ${input.namespace}/${CA_SECRET}`;
  if (input.certificatePem === undefined || input.keyPem === undefined) {
    return fail(name, `${secret} is missing or has no tls.crt and tls.key: reconcilers cannot issue workload certificates, and replicas that made roots of their own do not trust each other's sidecars`, `a reconciler started with --ca-secret creates it: kubectl -n ${input.namespace} rollout restart deployment/${SERVICE_NAME} (its log says why it could not: ca_secret_error); to bring your own root, first kubectl -n ${input.namespace} create secret tls ${CA_SECRET} --cert=ca.crt --key=ca.key`);
  }
  const replace = 'a new root cuts sidecars off from each other until every one has renewed: see docs/kubernetes.md, "trellis check"';
  let cert: X509Certificate;
  try {
    cert = parseCertificates(input.certificatePem)[0]!;
  } catch {
    return fail(name, `tls.crt of ${secret} is not a PEM certificate`, replace);
  }
  if (!cert.ca) return fail(name, `the certificate in ${secret} (${subjectOf(cert)}) is not a CA certificate: it cannot sign workload certificates`, replace);
  if (!keyMatches(cert, input.keyPem)) return fail(name, `tls.key of ${secret} is not the private key of its tls.crt`, replace);
  const valid = validity([cert], input.now);
  if ('problem' in valid) return fail(name, `the mesh root ${valid.problem}: sidecars refuse every certificate it signed`, replace);
  const days = Math.floor((valid.until - input.now) / DAY_MS);
  if (valid.until - input.now < MESH_CA_MIN_VALIDITY_MS) return warn(name, `the mesh root expires on ${new Date(valid.until).toISOString()}, in ${days} day${days === 1 ? '' : 's'}`, replace);
  return ok(name, `the mesh root (${subjectOf(cert)}) is a CA with its key, valid until ${day(valid.until)}`);
}

// ---------------------------------------------------------------------------------------------
// The webhook configuration

interface WebhookEntry {
  name?: string;
  clientConfig?: { service?: { name?: string; namespace?: string; path?: string; port?: number }; url?: string; caBundle?: string };
}

/** The configuration `trellis-sidecar-injector`: present, sending to the Service `trellis` on 443 at /inject, with a caBundle. */
export function checkWebhookConfiguration(namespace: string, mwc: KubeObject | undefined): { result: CheckResult; caBundlePem: string | undefined } {
  const name = 'webhook-configuration';
  const what = `MutatingWebhookConfiguration ${WEBHOOK_CONFIGURATION}`;
  if (!mwc) return { result: fail(name, `${what} does not exist: no pod is injected`, installHint(namespace, 'webhook')), caBundlePem: undefined };
  const webhooks = (mwc.webhooks as WebhookEntry[] | undefined) ?? [];
  if (webhooks.length === 0) return { result: fail(name, `${what} has no webhooks: no pod is injected`, installHint(namespace, 'webhook')), caBundlePem: undefined };
  const problems: string[] = [];
  const notes: string[] = [];
  const bundles = new Set<string>();
  for (const w of webhooks) {
    const cc = w.clientConfig ?? {};
    if (cc.service) {
      const s = cc.service;
      if (s.name !== SERVICE_NAME || s.namespace !== namespace || (s.port ?? 443) !== 443 || s.path !== '/inject') {
        problems.push(`${w.name} sends to Service ${s.namespace}/${s.name}:${s.port ?? 443}${s.path ?? ''}, not ${namespace}/${SERVICE_NAME}:443/inject`);
      }
    } else if (cc.url) notes.push(`${w.name} sends to ${cc.url} instead of the Service`);
    if (!cc.caBundle) problems.push(`${w.name} has no caBundle`);
    else bundles.add(cc.caBundle);
  }
  if (bundles.size > 1) problems.push('its webhooks carry different caBundles');
  const caBundlePem = bundles.size >= 1 ? Buffer.from([...bundles][0]!, 'base64').toString('utf8') : undefined;
  if (problems.length > 0) return { result: fail(name, `${what}: ${problems.join('; ')}`, installHint(namespace, 'webhook')), caBundlePem };
  const base = `${what} has ${webhooks.length} webhook${webhooks.length === 1 ? '' : 's'}`;
  if (notes.length > 0) return { result: warn(name, `${base}; ${notes.join('; ')}`, `to restore the installed address: ${installHint(namespace, 'webhook')}`), caBundlePem };
  return { result: ok(name, `${base} sending to Service ${namespace}/${SERVICE_NAME}:443/inject, with a caBundle`), caBundlePem };
}

// ---------------------------------------------------------------------------------------------
// The reconcilers' /status and the sidecars of injected pods

/** The parts of the reconciler's `GET /status` read here (`ReconcilerStatus`). */
export interface StatusView {
  readonly applied: { readonly revision: string; readonly description: string } | null;
  readonly attempted: { readonly revision: string; readonly ok: boolean } | null;
  readonly discovery: { readonly synced: boolean; readonly error: string | null } | null;
  readonly sidecars: ReadonlyArray<{ readonly service: string; readonly node: string; readonly connected: boolean; readonly inSync: boolean; readonly version: string | null; readonly lastRejection: { readonly reasons: readonly string[] } | null }>;
}

/** One reconciler replica's status, or why it could not be read. */
export type ReplicaStatus = { readonly source: string; readonly status: StatusView } | { readonly source: string; readonly error: string };

/** Each replica answers, has applied a revision, has listed the cluster, and all applied the same revision. */
export function checkReconcilerStatus(namespace: string, replicas: readonly ReplicaStatus[]): CheckResult {
  const name = 'reconciler-status';
  const hint = `kubectl -n ${namespace} logs deployment/${SERVICE_NAME}; trellis status --url <a replica>`;
  if (replicas.length === 0) return fail(name, 'no reconciler replica to ask: none is running', hint);
  const problems: string[] = [];
  const warnings: string[] = [];
  const applied = new Map<string, string[]>();
  for (const r of replicas) {
    if ('error' in r) {
      problems.push(`${r.source}: ${r.error}`);
      continue;
    }
    const s = r.status;
    if (!s.applied) problems.push(`${r.source} has applied no revision yet`);
    else applied.set(s.applied.revision, [...(applied.get(s.applied.revision) ?? []), r.source]);
    if (s.discovery && !s.discovery.synced) problems.push(`${r.source} has not listed the cluster's EndpointSlices yet${s.discovery.error ? ` (${s.discovery.error})` : ''}: it pushes nothing until it has`);
    else if (s.discovery?.error) warnings.push(`${r.source}: discovery error ${s.discovery.error}; serving the last known endpoints`);
    if (s.attempted && !s.attempted.ok) warnings.push(`${r.source}: revision ${s.attempted.revision.slice(0, 12)} did not compile; the mesh stays on the applied one (trellis status shows the errors)`);
  }
  if (applied.size > 1) warnings.push(`replicas applied different revisions (${[...applied].map(([rev, who]) => `${rev.slice(0, 12)} on ${who.join(', ')}`).join('; ')}): normal for a moment after a commit, each fetches on its own`);
  if (problems.length > 0) return fail(name, listed([...problems, ...warnings]), hint);
  if (warnings.length > 0) return warn(name, listed(warnings), hint);
  const rev = [...applied.keys()][0]!;
  return ok(name, `${replicas.length} reconciler replica${replicas.length === 1 ? '' : 's'} answered, all on revision ${rev.slice(0, 12)}`);
}

/** A flag's value in a container's args (`--service shop/api` or `--service=shop/api`). */
function argValue(args: readonly string[], flag: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag) return args[i + 1];
    if (args[i]!.startsWith(`${flag}=`)) return args[i]!.slice(flag.length + 1);
  }
  return undefined;
}

/** What an injected pod's sidecar calls itself at the reconciler: its service key and node id (`--node`, else host name and inbound port). */
export function sidecarIdentity(pod: k8s.V1Pod): { service: string; node: string } | undefined {
  const proxy = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find((c) => c.name === PROXY_CONTAINER);
  if (!proxy) return undefined;
  const args = [...(proxy.command ?? []), ...(proxy.args ?? [])];
  const service = argValue(args, '--service') ?? '?';
  const explicit = argValue(args, '--node');
  if (explicit) return { service, node: explicit };
  const inbound = argValue(args, '--inbound');
  const port = inbound ? Number(inbound.slice(inbound.lastIndexOf(':') + 1)) : INBOUND_PORT;
  // A pod's host name is spec.hostname, else its name (at most 63 characters).
  const host = pod.spec?.hostname ?? (pod.metadata?.name ?? '').slice(0, 63);
  return { service, node: `${host}:${port}` };
}

/** Pods carrying a `trellis-proxy` container, against the sidecars the replicas report: each running one connected to some replica and in sync. */
export function checkSidecars(pods: readonly k8s.V1Pod[], replicas: readonly ReplicaStatus[]): CheckResult {
  const name = 'sidecars';
  const injected = pods.filter((p) => sidecarIdentity(p) && !p.metadata?.deletionTimestamp);
  const running = injected.filter((p) => p.status?.phase === 'Running');
  const waiting = injected.length - running.length;
  const later = waiting > 0 ? ` (${waiting} more not running yet)` : '';
  const reported = replicas.flatMap((r) => ('status' in r ? r.status.sidecars : []));
  const unknown = replicas.filter((r) => 'error' in r).length;
  if (injected.length === 0) return ok(name, 'no injected pods yet');
  const problems: string[] = [];
  for (const p of running) {
    const id = sidecarIdentity(p)!;
    const podName = `${p.metadata?.namespace}/${p.metadata?.name}`;
    const seen = reported.filter((s) => s.node === id.node && s.service === id.service);
    const connected = seen.filter((s) => s.connected);
    if (connected.length === 0) {
      const other = reported.find((s) => s.node === id.node && s.connected);
      problems.push(other ? `${podName} subscribes as ${other.service}, but its pod says ${id.service}` : `${podName} (${id.service}) is not connected to ${unknown > 0 ? 'any replica that answered' : 'any reconciler replica'}`);
    } else if (!connected.some((s) => s.inSync)) {
      const s = connected[0]!;
      problems.push(`${podName} (${id.service}) is not in sync${s.lastRejection ? `: it rejected the config (${s.lastRejection.reasons[0] ?? 'no reason'})` : ': it has not acknowledged the applied config'}`);
    }
  }
  if (problems.length > 0) {
    return fail(
      name,
      `${running.length - problems.length} of ${running.length} running injected pods have a connected sidecar in sync${later}; ${listed(problems)}`,
      'kubectl -n NAMESPACE logs POD -c trellis-proxy (refusal codes: docs/sidecar.md); the reconciler log names refused sidecars (control_refused)',
    );
  }
  if (running.length === 0) return ok(name, `${injected.length} injected pod${injected.length === 1 ? '' : 's'}, none running yet`);
  return ok(name, `${running.length} of ${running.length} running injected pods have a connected sidecar in sync${later}`);
}

// ---------------------------------------------------------------------------------------------
// Reading the cluster

/** A reply from the API server (or a proxied reconciler). */
export interface KubeReply {
  readonly status: number;
  readonly body: unknown;
}

/** The one seam to the API server: a JSON request on its path. Errors that mean "no answer" throw (`code` in the message). */
export interface KubeReader {
  request(method: 'GET' | 'POST', path: string, body?: unknown): Promise<KubeReply>;
  /** Where it talks to, for messages. */
  readonly server: string;
}

/** A `KubeReader` for a client configuration: its server, credentials and CA, with a 5 s limit per request. */
export async function kubeReader(kubeConfig: k8s.KubeConfig, timeoutMs = REQUEST_TIMEOUT_MS): Promise<KubeReader> {
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) throw new Error('the cluster configuration names no current cluster');
  const base = new URL(cluster.server);
  return {
    server: cluster.server,
    async request(method, path, body) {
      // Credentials may come from an exec plugin or a rotated token file: ask for them each time.
      const options: https.RequestOptions = {};
      await kubeConfig.applyToHTTPSOptions(options);
      const url = new URL(base.pathname.replace(/\/$/, '') + path, base);
      const text = body === undefined ? undefined : JSON.stringify(body);
      const mod = url.protocol === 'http:' ? http : https;
      return new Promise<KubeReply>((resolve, reject) => {
        const req = mod.request(
          url,
          {
            ...options,
            agent: undefined,
            method,
            headers: { ...(options.headers ?? {}), accept: 'application/json', ...(text ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } : {}) },
            timeout: timeoutMs,
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const raw = Buffer.concat(chunks).toString('utf8');
              let parsed: unknown = raw;
              try {
                parsed = JSON.parse(raw);
              } catch {
                // not JSON (a proxied error page): keep the text
              }
              resolve({ status: res.statusCode ?? 0, body: parsed });
            });
            res.on('error', reject);
          },
        );
        req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
        req.on('error', reject);
        req.end(text);
      });
    },
  };
}

/** A reconciler's `/status` at `base` (an http URL), directly. */
export async function fetchStatus(base: string, timeoutMs = REQUEST_TIMEOUT_MS): Promise<StatusView> {
  const res = await fetch(new URL('/status', base), { signal: AbortSignal.timeout(timeoutMs) });
  if (res.status !== 200) throw new Error(`answered ${res.status}`);
  return (await res.json()) as StatusView;
}

export interface CheckOptions {
  readonly namespace: string;
  /** Reconcilers to ask directly; absent: each reconciler pod through the API server's pod proxy (the Service's, when no pod is listed). */
  readonly reconcilerUrls?: readonly string[];
  /** The webhook's address to try (`https://…`); absent: not tried (the API server's network is not this machine's). */
  readonly webhookUrl?: string;
  readonly now?: () => number;
}

function reason(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e.code ?? e.cause?.code;
  const message = e.cause?.message ?? e.message ?? String(err);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

function statusText(reply: KubeReply): string {
  const b = reply.body as { message?: string; reason?: string } | string;
  const detail = typeof b === 'object' && b ? (b.message ?? b.reason ?? '') : String(b).slice(0, 200);
  return `${reply.status}${detail ? ` ${detail}` : ''}`;
}

/** GET that answers undefined for 404 and throws for any other failure. */
async function getObject<T>(kube: KubeReader, path: string): Promise<T | undefined> {
  const reply = await kube.request('GET', path);
  if (reply.status === 404) return undefined;
  if (reply.status !== 200) throw new Error(`GET ${path}: ${statusText(reply)}`);
  return reply.body as T;
}

async function listAll<T>(kube: KubeReader, path: string): Promise<T[]> {
  const items: T[] = [];
  let cont = '';
  do {
    const sep = path.includes('?') ? '&' : '?';
    const reply = await kube.request('GET', `${path}${sep}limit=500${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`);
    if (reply.status !== 200) throw new Error(`GET ${path}: ${statusText(reply)}`);
    const body = reply.body as { items?: T[]; metadata?: { continue?: string } };
    items.push(...(body.items ?? []));
    cont = body.metadata?.continue ?? '';
  } while (cont);
  return items;
}

function secretData(secret: k8s.V1Secret | undefined, key: string): string | undefined {
  const v = secret?.data?.[key];
  return v === undefined ? undefined : Buffer.from(v, 'base64').toString('utf8');
}

/** Runs one check; a thrown error (an API call that failed) becomes its failure. */
async function guarded(name: string, hint: string | null, body: () => Promise<CheckResult>): Promise<CheckResult> {
  try {
    return await body();
  } catch (err) {
    return fail(name, `could not be checked: ${reason(err)}`, hint);
  }
}

/**
 * `GET /healthz` on the webhook at `url`, trusting only the caBundle and checking the name the
 * API server checks (`trellis.<ns>.svc`), whatever host the URL names.
 */
async function tryWebhook(url: string, namespace: string, caBundlePem: string | undefined): Promise<CheckResult> {
  const name = 'webhook-reachable';
  const servername = `${SERVICE_NAME}.${namespace}.svc`;
  const hint = `kubectl -n ${namespace} get endpointslices -l kubernetes.io/service-name=${SERVICE_NAME}; kubectl -n ${namespace} logs deployment/${SERVICE_NAME}`;
  const checkServerIdentity = (_host: string, cert: { subjectaltname?: string }) =>
    cert.subjectaltname?.split(', ').includes(`DNS:${servername}`) ? undefined : new Error(`the certificate served does not name ${servername}`);
  return new Promise((resolve) => {
    const req = https.request(new URL('/healthz', url), { method: 'GET', ...(caBundlePem ? { ca: caBundlePem } : {}), servername, checkServerIdentity, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      res.resume();
      resolve(
        res.statusCode === 200
          ? ok(name, `the webhook at ${url} answers over TLS with a certificate the caBundle trusts for ${servername}`)
          : fail(name, `the webhook at ${url} answered ${res.statusCode} to GET /healthz`, hint),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', (err) => resolve(fail(name, `the webhook at ${url} cannot be reached with the caBundle's trust: ${reason(err)}`, hint)));
    req.end();
  });
}

const RECONCILER_SELECTOR = 'app.kubernetes.io/name=trellis,app.kubernetes.io/component=reconciler';

/**
 * Every check, in order, against the cluster `kube` reads. `onResult` hears each as soon as it
 * is known (the CLI prints it then, so a slow check shows where it is).
 */
export async function runChecks(kube: KubeReader, options: CheckOptions, onResult: (r: CheckResult) => void = () => {}): Promise<CheckResult[]> {
  const ns = options.namespace;
  const now = options.now ?? Date.now;
  const results: CheckResult[] = [];
  const add = (r: CheckResult) => {
    results.push(r);
    onResult(r);
    return r;
  };

  // The API server: nothing else can be checked without it.
  let version: VersionInfo;
  try {
    const reply = await kube.request('GET', '/version');
    if (reply.status !== 200) throw new Error(`GET /version answered ${statusText(reply)}`);
    version = reply.body as VersionInfo;
  } catch (err) {
    add(fail('kubernetes-api', `cannot reach the Kubernetes API server at ${kube.server}: ${reason(err)}`, 'check the kubeconfig (--kubeconfig, KUBECONFIG) and that kubectl version works'));
    return results;
  }
  add(ok('kubernetes-api', `the Kubernetes API server at ${kube.server} answers`));
  add(checkVersion(version));

  const namespace = await getObject<k8s.V1Namespace>(kube, `/api/v1/namespaces/${ns}`).catch((err: unknown) => err as Error);
  if (namespace instanceof Error || !namespace) {
    add(fail('namespace', namespace instanceof Error ? `namespace ${ns} could not be read: ${reason(namespace)}` : `namespace ${ns} does not exist: Trellis is not installed there`, namespace instanceof Error ? 'the checks need read access to the Trellis namespace, its Secrets and Deployment, pods in every namespace, and to create SubjectAccessReviews' : `${installHint(ns)} (or give --namespace)`));
    return results;
  }
  add(namespace.status?.phase === 'Terminating' ? fail('namespace', `namespace ${ns} is being deleted`, null) : ok('namespace', `namespace ${ns} exists`));

  add(
    await guarded('reconciler-rbac', null, async () => {
      const sa = await getObject(kube, `/api/v1/namespaces/${ns}/serviceaccounts/${RECONCILER_ACCOUNT}`);
      if (!sa) return fail('reconciler-rbac', `ServiceAccount ${ns}/${RECONCILER_ACCOUNT} does not exist: the reconciler cannot start`, installHint(ns));
      const permissions = requiredPermissions(ns);
      const user = `system:serviceaccount:${ns}:${RECONCILER_ACCOUNT}`;
      const allowed = await Promise.all(
        permissions.map(async (p) => {
          const reply = await kube.request('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
            apiVersion: 'authorization.k8s.io/v1',
            kind: 'SubjectAccessReview',
            spec: {
              user,
              groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'],
              resourceAttributes: { verb: p.verb, group: p.group, resource: p.resource, ...(p.name ? { name: p.name } : {}), ...(p.namespace ? { namespace: p.namespace } : {}) },
            },
          });
          if (reply.status === 403) throw Object.assign(new Error('you may not create SubjectAccessReviews (authorization.k8s.io), which checking another account\'s rights takes'), { code: 'forbidden' });
          if (reply.status !== 201 && reply.status !== 200) throw new Error(`SubjectAccessReview: ${statusText(reply)}`);
          return (reply.body as { status?: { allowed?: boolean } }).status?.allowed === true;
        }),
      );
      return checkPermissions(ns, permissions, allowed);
    }),
  );

  const reconcilerPods = await listAll<k8s.V1Pod>(kube, `/api/v1/namespaces/${ns}/pods?labelSelector=${encodeURIComponent(RECONCILER_SELECTOR)}`).catch(() => [] as k8s.V1Pod[]);
  add(
    await guarded('reconciler-deployment', null, async () => {
      const deployment = await getObject<k8s.V1Deployment>(kube, `/apis/apps/v1/namespaces/${ns}/deployments/${SERVICE_NAME}`);
      return checkDeployment(ns, deployment, reconcilerPods);
    }),
  );

  let caBundlePem: string | undefined;
  add(
    await guarded('webhook-configuration', null, async () => {
      const mwc = await getObject<KubeObject>(kube, `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${WEBHOOK_CONFIGURATION}`);
      const r = checkWebhookConfiguration(ns, mwc);
      caBundlePem = r.caBundlePem;
      return r.result;
    }),
  );
  add(
    await guarded('webhook-certificate', null, async () => {
      const secret = await getObject<k8s.V1Secret>(kube, `/api/v1/namespaces/${ns}/secrets/${WEBHOOK_SECRET}`);
      return checkWebhookCertificate({ namespace: ns, caBundlePem, certificatePem: secretData(secret, 'tls.crt'), keyPem: secretData(secret, 'tls.key'), now: now() });
    }),
  );
  if (options.webhookUrl) add(await tryWebhook(options.webhookUrl, ns, caBundlePem));
  add(
    await guarded('mesh-ca', null, async () => {
      const secret = await getObject<k8s.V1Secret>(kube, `/api/v1/namespaces/${ns}/secrets/${CA_SECRET}`);
      return checkMeshCa({ namespace: ns, certificatePem: secretData(secret, 'tls.crt'), keyPem: secretData(secret, 'tls.key'), now: now() });
    }),
  );

  // Each replica holds only the sidecars connected to it: ask every one and take the union.
  const replicas: ReplicaStatus[] = [];
  if (options.reconcilerUrls && options.reconcilerUrls.length > 0) {
    for (const url of options.reconcilerUrls) replicas.push(await fetchStatus(url).then((status) => ({ source: url, status }), (err: unknown) => ({ source: url, error: `cannot be reached: ${reason(err)}` })));
  } else {
    const running = reconcilerPods.filter((p) => p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp);
    const targets = running.length > 0 ? running.map((p) => ({ source: `pod ${p.metadata!.name}`, path: `/api/v1/namespaces/${ns}/pods/${p.metadata!.name}:${CONTROL_PORT}/proxy/status` })) : [{ source: `Service ${ns}/${SERVICE_NAME} (no reconciler pod is running)`, path: `/api/v1/namespaces/${ns}/services/${SERVICE_NAME}:${CONTROL_PORT}/proxy/status` }];
    for (const t of targets) {
      const r = await kube.request('GET', t.path).then(
        (reply): ReplicaStatus => (reply.status === 200 && typeof reply.body === 'object' ? { source: t.source, status: reply.body as StatusView } : { source: t.source, error: `answered ${statusText(reply)} through the API server's proxy` }),
        (err: unknown): ReplicaStatus => ({ source: t.source, error: `cannot be reached through the API server's proxy: ${reason(err)}` }),
      );
      replicas.push(r);
    }
  }
  add(checkReconcilerStatus(ns, replicas));
  add(
    await guarded('sidecars', null, async () => {
      const pods = await listAll<k8s.V1Pod>(kube, '/api/v1/pods');
      return checkSidecars(pods, replicas);
    }),
  );
  return results;
}
