/**
 * The runtime state of one upstream instance, shared by the balancer (load and
 * latency), outlier detection (failures and ejection) and the connection pool.
 * Mutable by design: it is the sidecar's live view of an instance, kept across config
 * swaps for as long as the instance stays in its service's endpoints.
 */
export class Endpoint {
  /** `address:port`, unique within a cluster. */
  readonly key: string;
  readonly address: string;
  readonly port: number;
  /** Relative weight from the config (≥ 1). */
  weight: number;
  zone: string | null;
  /**
   * Shutting down but still serving (config `terminating`): gets no new attempts while any
   * other instance can take them (see `servingCandidates` in clusters.ts). Updated in place
   * when a config marks a listed instance, so its in-flight count and health carry over.
   */
  terminating = false;

  /** Requests sent and not yet finished. */
  inFlight = 0;

  /**
   * Peak-EWMA: latency estimate in ms, and when it was last updated (clock ms). Without a
   * sample yet (`rttSampled` false) the estimate means nothing: the picker then prices the
   * endpoint as new (see `PeakEwmaPicker.estimateMs`).
   */
  rttEstimateMs: number;
  rttUpdatedAt: number;
  rttSampled: boolean;

  /** Outlier detection: current runs of failures. */
  consecutive5xx = 0;
  consecutiveGatewayErrors = 0;
  /** Clock ms until which the endpoint is (or last was) ejected; 0 when never. Ask OutlierDetector.isEjected, not this field. */
  ejectedUntil = 0;
  /** How many times it has been ejected; each ejection lasts base × this count. */
  ejections = 0;

  /** `rttMs`: a latency sample taken at `now`, or null for an instance not measured yet (what the sidecar creates). */
  constructor(address: string, port: number, weight: number, zone: string | null, rttMs: number | null, now: number) {
    this.key = `${address.includes(':') ? `[${address}]` : address}:${port}`;
    this.address = address;
    this.port = port;
    this.weight = weight;
    this.zone = zone;
    this.rttEstimateMs = rttMs ?? 0;
    this.rttUpdatedAt = now;
    this.rttSampled = rttMs !== null;
  }
}
