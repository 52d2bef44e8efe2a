/** Reconciler metrics, in Prometheus base units. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class ReconcilerMetrics {
  readonly registry = new Registry();
  readonly reconcileDuration = new Histogram({
    name: 'trellis_reconcile_duration_seconds',
    help: 'Time to compile a revision, in seconds',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly compileErrors = new Counter({ name: 'trellis_reconcile_compile_errors_total', help: 'Revisions that did not compile (nothing was pushed)', registers: [this.registry] });
  readonly pushes = new Counter({ name: 'trellis_reconcile_pushes_total', help: 'Config messages sent to sidecars, by kind (config, delta)', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly rejections = new Counter({ name: 'trellis_reconcile_rejections_total', help: 'Configs sidecars refused', labelNames: ['service'] as const, registers: [this.registry] });
  readonly connected = new Gauge({ name: 'trellis_reconcile_connected_sidecars', help: 'Sidecars with an open control stream', registers: [this.registry] });
  readonly propagation = new Histogram({
    name: 'trellis_reconcile_propagation_seconds',
    help: 'From a revision being seen to a sidecar acknowledging it, in seconds',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly sourceErrors = new Counter({ name: 'trellis_reconcile_source_errors_total', help: 'Source failures (fetch, read), by kind (transient, permanent)', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly forcePushes = new Counter({ name: 'trellis_reconcile_force_pushes_total', help: 'Times the watched branch was rewritten', registers: [this.registry] });
  readonly unverified = new Counter({ name: 'trellis_reconcile_unverified_commits_total', help: 'Commits not applied because their signature did not verify', registers: [this.registry] });
  readonly certificates = new Counter({ name: 'trellis_ca_certificates_total', help: 'Certificate requests to the mesh CA, by result (issued, refused)', labelNames: ['result'] as const, registers: [this.registry] });
  readonly discoveryErrors = new Counter({ name: 'trellis_discovery_errors_total', help: 'Failed lists and watches of the endpoint discovery, by code (the last known endpoints stay)', labelNames: ['code'] as const, registers: [this.registry] });
  readonly discoverySynced = new Gauge({ name: 'trellis_discovery_synced', help: '1 once the endpoint discovery has read its first full list (pushes wait for it)', registers: [this.registry] });
  readonly endpointSnapshots = new Counter({ name: 'trellis_reconcile_endpoint_snapshots_total', help: 'Snapshots rebuilt because discovered endpoints changed (no commit involved)', registers: [this.registry] });
  readonly webhooks = new Counter({ name: 'trellis_reconcile_webhooks_total', help: 'Webhook calls, by result (accepted, replayed, bad_signature, delivery_missing)', labelNames: ['result'] as const, registers: [this.registry] });
  readonly appliedInfo = new Gauge({ name: 'trellis_reconcile_applied_info', help: 'The applied revision (value 1, revision in a label)', labelNames: ['revision'] as const, registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'trellis_' });
  }
}
