/**
 * The control protocol between sidecars and the reconciler (HTTP/1.1, JSON, bearer token).
 *
 *   POST /v1/stream   body: Subscribe        → 200, a long-lived NDJSON stream of ControlMessage
 *   POST /v1/ack      body: Ack              → 204
 *   POST /v1/certificate  body: CertificateRequest → 200 CertificateResponse
 *
 * Like xDS, a sidecar subscribes with what it holds (its config version and the version of
 * each resource), so the reconciler can answer with just what changed, and keeps no state
 * it could not rebuild from git plus what sidecars tell it: a restarted or second
 * reconciler serves the same stream. Each config message names the revision it comes from;
 * the sidecar acknowledges every version it applies or rejects, with reasons.
 */
import type { ConfigDelta } from './delta.ts';
import type { ProxyConfig } from './types.ts';

export const STREAM_PATH = '/v1/stream';
export const ACK_PATH = '/v1/ack';
export const CERTIFICATE_PATH = '/v1/certificate';

/**
 * A sidecar asks the mesh CA for a certificate: a PKCS#10 request over a key it made
 * itself (the private key never leaves it). The CA decides the identity from the
 * authenticated service name and the applied revision's trust domain, not from the request.
 */
export interface CertificateRequest {
  readonly service: string;
  readonly node: string;
  /** PEM. */
  readonly csr: string;
}

export interface CertificateResponse {
  /** The SPIFFE ID the certificate names. */
  readonly identity: string;
  /** The workload certificate, PEM. */
  readonly certificate: string;
  /** Roots to trust (PEM each): the CA's own first, then any the operator added for a rollover. */
  readonly trustBundle: readonly string[];
  /** ISO 8601. */
  readonly notAfter: string;
}

/** What a sidecar sends when it (re)connects. */
export interface Subscribe {
  readonly service: string;
  /** Identifies the sidecar instance across reconnects (hostname-pid, say). */
  readonly node: string;
  /** The config version it runs, or null when it has none. */
  readonly version: string | null;
  /** Name → version of every resource it holds (empty when none). */
  readonly resources: Readonly<Record<string, string>>;
}

export type ControlMessage =
  /** A whole config: for a sidecar that holds none, or whose holdings the reconciler cannot diff against. */
  | { readonly type: 'config'; readonly revision: string; readonly config: ProxyConfig }
  /** What changed since the version the sidecar holds (`delta.base`). */
  | { readonly type: 'delta'; readonly revision: string; readonly delta: ConfigDelta }
  /** The service is not (or no longer) in the mesh: keep running on what you have. */
  | { readonly type: 'unknown-service'; readonly revision: string; readonly message: string }
  /** The roots peers' certificates must chain to; sent first on every stream, so a root rollover reaches sidecars without waiting for renewal. */
  | { readonly type: 'trust-bundle'; readonly roots: readonly string[] }
  /** Keeps the stream alive through idle periods and proves the reconciler is there. */
  | { readonly type: 'ping' };

/** A sidecar's answer to a config or delta message. */
export interface Ack {
  readonly service: string;
  readonly node: string;
  /** The version the sidecar runs after handling the message. */
  readonly version: string | null;
  /** The revision the message came from. */
  readonly revision: string;
  readonly ok: boolean;
  /** Why it was rejected (when `ok` is false). */
  readonly reasons?: readonly string[];
}

/** Seconds between pings on an idle stream; a sidecar that hears nothing for 3 periods reconnects. */
export const PING_INTERVAL_MS = 15_000;
