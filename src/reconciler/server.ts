/**
 * The reconciler's HTTP listener (default 127.0.0.1:15010):
 *
 *   POST /v1/stream    sidecar subscribes (bearer token) → NDJSON stream of config messages
 *   POST /v1/ack       sidecar acknowledges or rejects a version (bearer token) → 204
 *   POST /v1/certificate  sidecar asks the mesh CA for its certificate (bearer token) → 200 PEM
 *
 * The bearer is the mesh's shared control token or, on Kubernetes, the pod's projected
 * ServiceAccount token (see auth.ts); a ServiceAccount acts only for its own services.
 *   POST /hooks/git    GitHub-style push webhook (HMAC-SHA256 signature, X-GitHub-Delivery id) → 202, fetch
 *                      soon (coalesced, never during a fetch backoff); a delivery id seen before → 409
 *   POST /v1/stats     a sidecar's traffic aggregates since its last report (bearer token) → 204
 *   GET  /v1/stats     golden metrics per service, edge and route (?window=1m&from=&to=&route=&namespace=), JSON
 *   GET  /dashboard    the dashboard page; GET /v1/dashboard and /v1/explain its data (dashboard/endpoints.ts)
 *   GET  /v1/prometheus/targets  sidecar admin listeners for Prometheus HTTP service discovery; /v1/prometheus/config a prometheus.yml using it
 *   GET  /status       what is attempted, applied, and where every sidecar stands (JSON)
 *   GET  /metrics      Prometheus text
 *   GET  /healthz      200 while serving;  GET /readyz  200 once a revision is applied and (with discovery) its endpoints are listed
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ACK_PATH, CERTIFICATE_PATH, PING_INTERVAL_MS, STREAM_PATH, type Ack, type ControlMessage, type Subscribe } from '../config/control-protocol.ts';
import type { ProxyConfig, InboundBody, Resource } from '../config/types.ts';
import { bearerOf, readJsonBody, sendJson, webhookSignatureValid } from '../http/json-server.ts';
import { isServiceKey } from '../spec/names.ts';
import { authorizeService, controlAuthenticator, type Authenticator, type AuthRefusal, type Principal } from './auth.ts';
import { MAX_CSR_BYTES, type CertificateIssuer } from './certificates.ts';
import type { Logger } from 'pino';
import { DashboardEndpoints } from '../dashboard/endpoints.ts';
import { isStatsReport, MeshStats, parseWindow, type StatsQuery, type StatsView } from '../dashboard/mesh-stats.ts';
import { httpServiceDiscovery, prometheusConfig, type PrometheusStats, type ScrapeTarget } from '../dashboard/prometheus.ts';
import { STATS_PATH } from '../sidecar/stats-report.ts';
import type { ReconcilerMetrics } from './metrics.ts';
import type { AppliedRevision, Reconciler, SidecarRecord } from './reconciler.ts';

/** A subscribe lists every resource version a sidecar holds: generous for large configs. */
const MAX_SUBSCRIBE_BYTES = 8 * 1024 * 1024;
const MAX_WEBHOOK_BYTES = 1024 * 1024;
/** A stats report holds one entry per series a sidecar has seen: a few thousand at most. */
const MAX_STATS_BYTES = 2 * 1024 * 1024;

/**
 * How many webhook delivery ids are remembered, and for how long: a replayed delivery is
 * refused within this window. 10 000 ids cost about 1 MB; an hour is longer than any forge
 * retries a delivery on its own, and a replay after that still triggers at most one coalesced
 * fetch that respects the backoff (the delivery id is not covered by the signature, so this is
 * a first line only: the source's coalescing is what bounds the cost of a replay).
 */
export const WEBHOOK_DELIVERY_MEMORY = { maxIds: 10_000, ttlMs: 3_600_000 } as const;

/** A delivery id as forges send them (GitHub: a UUID): printable, at most 128 characters. */
const DELIVERY_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Webhook delivery ids seen within the last `ttlMs` (on the injected clock), at most `maxIds`
 * of them: the oldest is forgotten first, so memory stays bounded whatever a caller sends.
 */
export class RecentDeliveries {
  /** id → when it was seen, in insertion (so time) order. */
  readonly #seen = new Map<string, number>();
  readonly #maxIds: number;
  readonly #ttlMs: number;
  readonly #now: () => number;

  constructor(options: { maxIds: number; ttlMs: number; now: () => number }) {
    this.#maxIds = options.maxIds;
    this.#ttlMs = options.ttlMs;
    this.#now = options.now;
  }

  /** Records `id`; false when it was recorded already within the window (a replay). */
  admit(id: string): boolean {
    const now = this.#now();
    for (const [old, at] of this.#seen) {
      if (now - at < this.#ttlMs) break;
      this.#seen.delete(old);
    }
    if (this.#seen.has(id)) return false;
    this.#seen.set(id, now);
    if (this.#seen.size > this.#maxIds) this.#seen.delete(this.#seen.keys().next().value!);
    return true;
  }

  get size(): number {
    return this.#seen.size;
  }
}

export interface ReconcilerServerOptions {
  readonly reconciler: Reconciler;
  readonly metrics: ReconcilerMetrics;
  /** The shared control token (meshes outside Kubernetes): whoever presents it may act for every service. */
  readonly token?: string;
  /**
   * ServiceAccount authentication (a TokenReviewAuthenticator) for sidecars in a cluster; tried
   * after the shared token when both are given. At least one of the two is required.
   */
  readonly authenticator?: Authenticator;
  /** Secret for webhook signatures; webhooks are refused without one. */
  readonly webhookSecret?: string;
  /** The mesh CA's endpoint; without it sidecars get no certificates (and no trust bundle). */
  readonly certificates?: CertificateIssuer;
  /** Where refused control requests are logged (the code and why, never the token): the operator's view of a misconfigured pod or RBAC. */
  readonly log?: Logger;
  /** Clock for the webhook delivery window, epoch ms; default Date.now. */
  readonly now?: () => number;
  /** Where sidecar stats reports are kept; default a MeshStats on `now`. */
  readonly stats?: MeshStats;
  /** Read the traffic from this Prometheus instead of the sidecars' reports (`trellis stat` and the dashboard). */
  readonly prometheus?: PrometheusStats;
  /** Sidecar admin listeners Prometheus should scrape, when the reconciler's embedding knows them (`trellis up`). */
  readonly scrapeTargets?: () => readonly ScrapeTarget[];
}

function isSubscribe(v: unknown): v is Subscribe {
  const s = v as Subscribe;
  return (
    typeof s === 'object' && s !== null && typeof s.service === 'string' && isServiceKey(s.service) && typeof s.node === 'string' && s.node.length > 0 && s.node.length <= 253 &&
    (s.version === null || typeof s.version === 'string') && typeof s.resources === 'object' && s.resources !== null &&
    Object.values(s.resources).every((x) => typeof x === 'string')
  );
}

function isAck(v: unknown): v is Ack {
  const a = v as Ack;
  return typeof a === 'object' && a !== null && typeof a.service === 'string' && isServiceKey(a.service) && typeof a.node === 'string' && typeof a.revision === 'string' && typeof a.ok === 'boolean' && (a.version === null || typeof a.version === 'string');
}

/** The identity the applied revision gives `service` (its `inbound` resource); undefined when it does not mesh it. */
function appliedIdentity(applied: AppliedRevision | null, service: string): string | undefined {
  return inboundIdentity(applied?.mesh.configs.get(service)?.resources);
}

function inboundIdentity(resources: readonly Resource[] | undefined): string | undefined {
  return (resources?.find((r) => r.name === 'inbound')?.body as InboundBody | undefined)?.identity;
}

/** The inbound identity a config message carries for its service, if it carries the inbound resource. */
function identityInMessage(m: ControlMessage): string | undefined {
  if (m.type === 'config') return inboundIdentity((m.config as ProxyConfig).resources);
  if (m.type === 'delta') return inboundIdentity(m.delta.resources);
  return undefined;
}


export class ReconcilerServer {
  readonly #o: ReconcilerServerOptions;
  readonly #server: Server;
  readonly #streams = new Set<{ record: SidecarRecord; ping: NodeJS.Timeout }>();
  readonly #auth: Authenticator;
  readonly #deliveries: RecentDeliveries;
  /** The traffic sidecars report, for `trellis stat` and the dashboard. */
  readonly stats: MeshStats;
  readonly #dashboard: DashboardEndpoints;
  /** `host:port` once listening (for the generated Prometheus config). */
  #listening: string | undefined;

  constructor(options: ReconcilerServerOptions) {
    this.#o = options;
    this.stats = options.stats ?? new MeshStats({ now: options.now ?? Date.now });
    this.#dashboard = new DashboardEndpoints({ reconciler: options.reconciler, view: (q) => this.#view(q), metrics: options.metrics });
    this.#deliveries = new RecentDeliveries({ ...WEBHOOK_DELIVERY_MEMORY, now: options.now ?? Date.now });
    this.#auth = controlAuthenticator({ ...(options.token !== undefined ? { sharedToken: options.token } : {}), ...(options.authenticator ? { serviceAccounts: options.authenticator } : {}) });
    this.#server = createServer({ requestTimeout: 0, headersTimeout: 10_000, keepAliveTimeout: 5000 }, (req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const route = `${req.method} ${path}`;
      const r = this.#o.reconciler;
      void (async () => {
        switch (route) {
          case `POST ${STREAM_PATH}`: {
            const who = await this.#auth.authenticate(bearerOf(req));
            if (!who.ok) return this.#refuse(res, path, who);
            const body = await readJsonBody(req, MAX_SUBSCRIBE_BYTES);
            if (!body.ok) return sendJson(res, body.status, { error: body.error });
            if (!isSubscribe(body.value)) return sendJson(res, 400, { error: 'invalid_subscribe', message: 'need service, node, version and resources' });
            const service = body.value.service;
            const allowed = authorizeService(who.principal, service, appliedIdentity(r.applied, service));
            if (!allowed.ok) return this.#refuse(res, path, allowed, who.principal, service);
            res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
            res.flushHeaders();
            const send = (m: ControlMessage) => {
              // A later revision may give the service another ServiceAccount: its config then
              // goes to no one else, and the sidecar, reconnecting, hears identity_mismatch.
              if (!this.#stillAllowed(who.principal, service, m)) {
                if (!res.writableEnded) this.#logRefusal(path, { status: 403, code: 'identity_mismatch', message: `a new revision gives service "${service}" another ServiceAccount; its stream is closed` }, who.principal, service);
                res.end();
                return 0;
              }
              const line = `${JSON.stringify(m)}\n`;
              res.write(line);
              return Buffer.byteLength(line);
            };
            if (this.#o.certificates) send({ type: 'trust-bundle', roots: this.#o.certificates.trustBundle });
            const record = r.subscribe(body.value, { send, close: () => res.end() });
            const stream = { record, ping: setInterval(() => send({ type: 'ping' }), PING_INTERVAL_MS) };
            this.#streams.add(stream);
            res.on('close', () => {
              clearInterval(stream.ping);
              this.#streams.delete(stream);
              r.disconnect(record);
            });
            return;
          }
          case `POST ${ACK_PATH}`: {
            const who = await this.#auth.authenticate(bearerOf(req));
            if (!who.ok) return this.#refuse(res, path, who);
            const body = await readJsonBody(req, 1024 * 1024);
            if (!body.ok) return sendJson(res, body.status, { error: body.error });
            if (!isAck(body.value)) return sendJson(res, 400, { error: 'invalid_ack' });
            const allowed = authorizeService(who.principal, body.value.service, appliedIdentity(r.applied, body.value.service));
            if (!allowed.ok) return this.#refuse(res, path, allowed, who.principal, body.value.service);
            if (!r.ack(body.value)) return sendJson(res, 404, { error: 'unknown_sidecar', message: 'subscribe before acknowledging' });
            res.writeHead(204).end();
            return;
          }
          case `POST ${CERTIFICATE_PATH}`: {
            const who = await this.#auth.authenticate(bearerOf(req));
            if (!who.ok) return this.#refuse(res, path, who);
            if (!this.#o.certificates) return sendJson(res, 404, { error: 'no_ca', message: 'this reconciler runs no certificate authority' });
            const body = await readJsonBody(req, MAX_CSR_BYTES);
            if (!body.ok) return sendJson(res, body.status, { error: body.error });
            const issued = await this.#o.certificates.issue(body.value, who.principal);
            // Joining make-before-break: callers of this service may be waiting for it to serve.
            const asked = body.value as { node?: unknown; service?: unknown };
            if (typeof asked.node === 'string') {
              if (issued.status === 200 && typeof asked.service === 'string') r.certificateIssued(asked.node, asked.service);
              else if (issued.status === 404 || issued.status === 503) r.certificateRefused(asked.node);
            }
            if (issued.status === 403) this.#logRefusal(path, { status: 403, code: issued.body.error, message: issued.body.message }, who.principal);
            return sendJson(res, issued.status, issued.body);
          }
          case 'POST /hooks/git': {
            if (!this.#o.webhookSecret) return sendJson(res, 403, { error: 'webhooks_disabled', message: 'start the reconciler with --webhook-secret-file' });
            const raw = await readJsonBody(req, MAX_WEBHOOK_BYTES);
            if (!raw.ok) return sendJson(res, raw.status, { error: raw.error });
            const hooks = this.#o.metrics.webhooks;
            if (!webhookSignatureValid(raw.raw, req.headers['x-hub-signature-256'], this.#o.webhookSecret)) {
              hooks.inc({ result: 'bad_signature' });
              return sendJson(res, 401, { error: 'bad_signature' });
            }
            // Checked after the signature, so that only the forge can fill the delivery memory.
            const delivery = req.headers['x-github-delivery'];
            if (typeof delivery !== 'string' || !DELIVERY_ID.test(delivery)) {
              hooks.inc({ result: 'delivery_missing' });
              return sendJson(res, 400, { error: 'webhook_delivery_missing', message: 'a webhook needs an X-GitHub-Delivery id (letters, digits and ._:-, at most 128)' });
            }
            if (!this.#deliveries.admit(delivery)) {
              hooks.inc({ result: 'replayed' });
              this.#o.log?.warn({ type: 'webhook_replayed', delivery }, 'webhook delivery seen before; ignored');
              return sendJson(res, 409, { error: 'webhook_replayed', message: `delivery ${delivery} was received before` });
            }
            hooks.inc({ result: 'accepted' });
            r.poke();
            return sendJson(res, 202, { accepted: true });
          }
          case `POST ${STATS_PATH}`: {
            const who = await this.#auth.authenticate(bearerOf(req));
            if (!who.ok) return this.#refuse(res, path, who);
            const body = await readJsonBody(req, MAX_STATS_BYTES);
            if (!body.ok) return sendJson(res, body.status, { error: body.error });
            if (!isStatsReport(body.value)) return sendJson(res, 400, { error: 'invalid_stats', message: 'need service, node, intervalMs, bounds, requests, latencies, access and tls' });
            const allowed = authorizeService(who.principal, body.value.service, appliedIdentity(r.applied, body.value.service));
            if (!allowed.ok) return this.#refuse(res, path, allowed, who.principal, body.value.service);
            this.stats.record(body.value);
            res.writeHead(204).end();
            return;
          }
          case `GET ${STATS_PATH}`: {
            const q = new URL(req.url ?? '/', 'http://reconciler').searchParams;
            const windowMs = parseWindow(q.get('window') ?? '1m');
            if (windowMs === undefined || windowMs <= 0) return sendJson(res, 400, { error: 'invalid_window', message: 'window is a duration such as 30s, 1m or 5m' });
            const opt = (name: string) => (q.get(name) ? { [name]: q.get(name)! } : {});
            let view: StatsView;
            try {
              view = await this.#view({ windowMs, ...opt('from'), ...opt('to'), ...opt('route'), ...opt('namespace') });
            } catch (err) {
              return sendJson(res, 502, { error: 'stats_unavailable', message: (err as Error).message });
            }
            return sendJson(res, 200, view);
          }
          case 'GET /v1/prometheus/targets':
            return sendJson(res, 200, httpServiceDiscovery(this.#o.scrapeTargets?.() ?? []));
          case 'GET /v1/prometheus/config': {
            const text = prometheusConfig(`http://${this.#listening ?? '127.0.0.1:15010'}`);
            res.writeHead(200, { 'content-type': 'text/yaml; charset=utf-8', 'content-length': Buffer.byteLength(text) });
            return res.end(text);
          }
          case 'GET /status':
            return sendJson(res, 200, r.status());
          case 'GET /metrics': {
            const text = await this.#o.metrics.registry.metrics();
            res.writeHead(200, { 'content-type': this.#o.metrics.registry.contentType });
            return res.end(text);
          }
          case 'GET /healthz':
            return sendJson(res, 200, { status: 'ok' });
          case 'GET /readyz':
            return sendJson(res, r.ready ? 200 : 503, { ready: r.ready, revision: r.applied?.revision.id ?? null });
          default:
            if (this.#dashboard.handle(req.method ?? 'GET', new URL(req.url ?? '/', 'http://reconciler'), res)) return;
            return sendJson(res, 404, { error: 'not_found' });
        }
      })().catch((err: Error) => (res.headersSent ? res.destroy() : sendJson(res, 500, { error: 'internal', message: err.message })));
    });
  }

  /** The traffic over a window, from Prometheus when one is configured, else from the sidecars' reports. */
  async #view(q: StatsQuery): Promise<StatsView> {
    if (!this.#o.prometheus) return this.stats.query(q);
    try {
      return await this.#o.prometheus.query(q);
    } catch (err) {
      throw new Error(`cannot read Prometheus at ${this.#o.prometheus.url}: ${(err as Error).message}`);
    }
  }

  #refuse(res: ServerResponse, path: string | undefined, refusal: AuthRefusal, principal?: Principal, service?: string): void {
    this.#logRefusal(path, refusal, principal, service);
    sendJson(res, refusal.status, { error: refusal.code, message: refusal.message });
  }

  #logRefusal(path: string | undefined, refusal: Pick<AuthRefusal, 'status' | 'code' | 'message'>, principal?: Principal, service?: string): void {
    // 503: the reconciler cannot check tokens at all (API server away, RBAC): every cluster sidecar is affected.
    const level = refusal.status === 503 ? 'error' : 'warn';
    this.#o.log?.[level]({ type: 'control_refused', path, status: refusal.status, code: refusal.code, ...(principal?.kind === 'serviceAccount' ? { principal: principal.username } : {}), ...(service ? { service } : {}) }, refusal.message);
  }

  /** Whether `principal` may still receive message `m` for `service` (its inbound identity may have changed). */
  #stillAllowed(principal: Principal, service: string, m: ControlMessage): boolean {
    if (principal.kind === 'shared') return true;
    const identity = identityInMessage(m);
    return identity === undefined || authorizeService(principal, service, identity).ok;
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        const a = this.#server.address() as AddressInfo;
        this.#listening = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
        resolve(a);
      });
    });
  }

  async close(): Promise<void> {
    this.#dashboard.close();
    for (const s of this.#streams) clearInterval(s.ping);
    this.#server.closeAllConnections();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}
