/**
 * The sidecar injection webhook: the API server sends `POST /inject` an AdmissionReview
 * (admission.k8s.io/v1) for each Pod created in a selected namespace, and gets back the
 * same review with a JSON Patch that adds the proxy (`injectPod`).
 *
 * It never blocks a pod because of itself: input it cannot read, a pod it will not inject,
 * or a bug while building the patch all answer `allowed: true` without a patch, with a
 * warning the user sees (`kubectl` prints admission warnings) where there is something to
 * fix. A pod is refused only by other admission plugins, never by Trellis. HTTP errors are
 * reserved for requests that are not admission reviews at all (wrong path or method), which
 * the API server never sends.
 *
 * The handler is a plain `(req, res)` so the reconciler can serve it on its own HTTPS
 * listener; `startWebhookServer` runs it alone (tests, or a separate process).
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { injectPod, jsonPatch, type InjectOptions, type PodLike } from './inject.ts';

/** An AdmissionReview body is the whole pod twice at most; Kubernetes caps objects at 1.5 MiB in etcd, so 3 MiB is ample. */
const MAX_BODY_BYTES = 3 * 1024 * 1024;
/** The API server gives up after the configuration's timeoutSeconds (5 s): answer well before. */
const BODY_TIMEOUT_MS = 4_000;

/** What the webhook needs to inject: `InjectOptions` minus the namespace, which each request names. */
export type WebhookOptions = Omit<InjectOptions, 'namespace'>;

/** One decision, for logs and metrics: `injected`, a skip reason, or `invalid_review`/`internal_error`. */
export interface WebhookEvent {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly outcome: string;
  readonly message?: string;
}

interface AdmissionRequest {
  uid?: unknown;
  kind?: { group?: string; version?: string; kind?: string };
  resource?: { group?: string; resource?: string };
  subResource?: string;
  operation?: string;
  namespace?: string;
  name?: string;
  object?: unknown;
  dryRun?: boolean;
}

/** The AdmissionReview answered for `request` (pure; exported for tests and other servers). */
export function reviewResponse(review: unknown, options: WebhookOptions): { body: object; event: WebhookEvent } {
  const apiVersion = 'admission.k8s.io/v1';
  const request = (typeof review === 'object' && review !== null ? (review as { request?: unknown }).request : undefined) as AdmissionRequest | undefined;
  const uid = typeof request?.uid === 'string' ? request.uid : '';
  const namespace = typeof request?.namespace === 'string' ? request.namespace : '';
  const pod = request?.object as PodLike | undefined;
  const name = pod?.metadata?.name || pod?.metadata?.generateName || request?.name || '';
  const answer = (outcome: string, response: Record<string, unknown>, message?: string) => ({
    body: { apiVersion, kind: 'AdmissionReview', response: { uid, allowed: true, ...response } },
    event: { uid, namespace, name, outcome, ...(message ? { message } : {}) },
  });
  const r = review as { apiVersion?: unknown; kind?: unknown };
  if (!request || r.apiVersion !== apiVersion || r.kind !== 'AdmissionReview' || uid === '') {
    const message = 'trellis: the injection webhook got something other than an admission.k8s.io/v1 AdmissionReview; the pod was admitted without a sidecar';
    return answer('invalid_review', { warnings: [message] }, message);
  }
  const isPod = request.kind?.kind === 'Pod' && (request.kind.group ?? '') === '' && request.subResource === undefined;
  if (!isPod || request.operation !== 'CREATE' || typeof pod !== 'object' || pod === null) {
    // The configuration asks only for pod creations; anything else is let through untouched.
    return answer('not_a_pod_create', {});
  }
  try {
    const result = injectPod(pod, { ...options, namespace: namespace || pod.metadata?.namespace || 'default' });
    if (!result.injected) {
      // Opting out and a second look are normal; the rest is something the user should fix.
      const quiet = result.reason === 'opted_out' || result.reason === 'already_injected';
      const warning = `trellis: pod not injected (${result.reason}): ${result.message}`;
      return answer(result.reason, { ...(quiet ? {} : { warnings: [warning] }), auditAnnotations: { inject: result.reason } }, result.message);
    }
    const patch = jsonPatch(pod, result.pod);
    return answer('injected', { patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(patch)).toString('base64'), auditAnnotations: { inject: result.mode } }, `${result.mode} sidecar for ${result.service}`);
  } catch (err) {
    const message = `trellis: injection failed (${(err as Error).message}); the pod was admitted without a sidecar`;
    return answer('internal_error', { warnings: [message] }, message);
  }
}

function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => done(undefined), BODY_TIMEOUT_MS);
    const done = (v: Buffer | undefined) => {
      clearTimeout(timer);
      resolve(v);
    };
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        req.destroy();
        done(undefined);
      } else chunks.push(c);
    });
    req.on('end', () => done(Buffer.concat(chunks)));
    req.on('error', () => done(undefined));
  });
}

/**
 * The HTTP handler: `POST /inject` (AdmissionReview in, AdmissionReview out); `GET /healthz`;
 * 404/405 for the rest. `onEvent` hears every decision (log it).
 */
export function createWebhookHandler(options: WebhookOptions, onEvent: (e: WebhookEvent) => void = () => {}): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: object) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    if (path === '/healthz' && req.method === 'GET') return send(200, { status: 'ok' });
    if (path !== '/inject') return send(404, { error: 'not_found' });
    if (req.method !== 'POST') return send(405, { error: 'method_not_allowed' });
    void readBody(req).then((body) => {
      let review: unknown;
      try {
        review = body === undefined ? undefined : JSON.parse(body.toString('utf8'));
      } catch {
        review = undefined;
      }
      const { body: answer, event } = reviewResponse(review, options);
      onEvent(event);
      if (!res.destroyed) send(200, answer);
    });
  };
}

export interface WebhookServer {
  readonly port: number;
  readonly server: Server;
  /** Serves a renewed certificate to new connections, without a restart. */
  setCertificate(tls: { cert: string; key: string }): void;
  close(): Promise<void>;
}

/** Serves the handler over HTTPS on `host:port` (port 0: any free one). */
export async function startWebhookServer(config: { cert: string; key: string; port: number; host?: string; options: WebhookOptions; onEvent?: (e: WebhookEvent) => void }): Promise<WebhookServer> {
  const server = createServer({ cert: config.cert, key: config.key, minVersion: 'TLSv1.2' }, createWebhookHandler(config.options, config.onEvent));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host ?? '0.0.0.0', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    server,
    setCertificate: (tls) => server.setSecureContext({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
