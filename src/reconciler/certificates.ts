/**
 * The reconciler's certificate endpoint: signs a sidecar's certificate request with the
 * mesh CA for the identity the sidecar is entitled to, never for the request's own subject;
 * a service the applied revision does not mesh gets none.
 *
 * - A ServiceAccount (a Kubernetes pod's token, checked by TokenReview) gets
 *   `spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>` of the TOKEN, and only for
 *   a service it may act for (`authorizeService`): a token for A never yields B's certificate.
 * - The shared control token gets the identity the applied revision gives the service
 *   (its `inbound` resource).
 */
import type { Logger } from 'pino';
import { CertificateRequestError, type MeshCertificateAuthority } from '../identity/ca.ts';
import type { CertificateRequest, CertificateResponse } from '../config/control-protocol.ts';
import type { InboundBody } from '../config/types.ts';
import type { ReconcilerMetrics } from './metrics.ts';
import type { Reconciler } from './reconciler.ts';
import { authorizeService, certificateIdentity, type Principal } from './auth.ts';
import { isServiceKey } from '../spec/names.ts';

/** A P-256 request is about 500 bytes of PEM; RSA-4096 about 1.7 KB. */
export const MAX_CSR_BYTES = 16 * 1024;

export interface CertificateIssuerOptions {
  readonly ca: MeshCertificateAuthority;
  /** Lifetime of issued certificates, in ms. */
  readonly ttlMs: number;
  readonly reconciler: Reconciler;
  readonly metrics: ReconcilerMetrics;
  readonly log: Logger;
}

export type IssueResult = { readonly status: 200; readonly body: CertificateResponse } | { readonly status: 400 | 403 | 404 | 503; readonly body: { readonly error: string; readonly message: string } };

function isCertificateRequest(v: unknown): v is CertificateRequest {
  const r = v as CertificateRequest;
  return typeof r === 'object' && r !== null && typeof r.service === 'string' && isServiceKey(r.service) && typeof r.node === 'string' && r.node.length > 0 && r.node.length <= 253 && typeof r.csr === 'string';
}

export class CertificateIssuer {
  readonly #o: CertificateIssuerOptions;

  constructor(options: CertificateIssuerOptions) {
    this.#o = options;
  }

  /** Roots sidecars should trust. */
  get trustBundle(): readonly string[] {
    return this.#o.ca.trustBundle;
  }

  /** Issues a certificate for the authenticated `principal`; the body's `service` only selects which of its services. */
  async issue(body: unknown, principal: Principal): Promise<IssueResult> {
    const refuse = (status: 400 | 403 | 404 | 503, error: string, message: string): IssueResult => {
      this.#o.metrics.certificates.inc({ result: 'refused' });
      return { status, body: { error, message } };
    };
    if (!isCertificateRequest(body)) return refuse(400, 'invalid_request', 'need service, node and csr (PEM)');
    // The namespace first, so a ServiceAccount learns nothing of other namespaces' services.
    const inNamespace = authorizeService(principal, body.service, undefined);
    if (!inNamespace.ok) return refuse(403, inNamespace.code, inNamespace.message);
    const applied = this.#o.reconciler.applied;
    if (!applied) return refuse(503, 'not_ready', 'no revision is applied yet, so no trust domain is known');
    const config = applied.mesh.configs.get(body.service);
    if (!config) return refuse(404, 'unknown_service', `service "${body.service}" is not a meshed service of revision ${applied.revision.id}`);
    const inbound = config.resources.find((r) => r.name === 'inbound')!.body as InboundBody;
    const allowed = authorizeService(principal, body.service, inbound.identity);
    if (!allowed.ok) return refuse(403, allowed.code, allowed.message);
    const identity = certificateIdentity(principal, inbound.trustDomain, inbound.identity);
    try {
      const issued = await this.#o.ca.issue(body.csr, identity, this.#o.ttlMs);
      this.#o.metrics.certificates.inc({ result: 'issued' });
      this.#o.log.info({ type: 'certificate_issued', identity, service: body.service, node: body.node, principal: principal.kind === 'shared' ? 'shared' : principal.username, notAfter: issued.notAfter.toISOString() }, 'certificate issued');
      return { status: 200, body: { identity, certificate: issued.certificatePem, trustBundle: this.#o.ca.trustBundle, notAfter: issued.notAfter.toISOString() } };
    } catch (err) {
      if (err instanceof CertificateRequestError) return refuse(400, err.code, err.message);
      throw err;
    }
  }
}
