/**
 * The numbered catalog of compiler diagnostics. Codes are stable: once published a code
 * keeps its meaning forever (retire it, never reuse it). Ranges follow the pipeline:
 *   TRL1xxx load (files, YAML, kinds)   TRL2xxx schema   TRL3xxx references
 *   TRL4xxx meaning (semantic checks)   TRL5xxx traffic tests
 *   TRL9xxx the compiler itself (bugs reported instead of thrown, where a caller must survive them)
 * Every code is explained in docs/diagnostics.md and has a fixture under
 * test/fixtures/diagnostics/<code>/; a test holds both to this list.
 */

export type Severity = 'error' | 'warning' | 'info';

export interface CodeInfo {
  /** Short kebab-case name, stable like the number. */
  readonly name: string;
  readonly severity: Severity;
}

export const CODES = {
  // load
  TRL1001: { name: 'file-too-large', severity: 'error' },
  TRL1002: { name: 'yaml-syntax', severity: 'error' },
  TRL1003: { name: 'yaml-duplicate-key', severity: 'error' },
  TRL1004: { name: 'yaml-alias-limit', severity: 'error' },
  TRL1005: { name: 'yaml-too-deep', severity: 'error' },
  TRL1006: { name: 'yaml-warning', severity: 'error' },
  TRL1007: { name: 'not-a-document', severity: 'error' },
  TRL1008: { name: 'unknown-kind', severity: 'error' },
  TRL1009: { name: 'unknown-api-version', severity: 'error' },
  TRL1010: { name: 'unreadable-file', severity: 'error' },
  TRL1011: { name: 'no-documents', severity: 'error' },
  TRL1012: { name: 'invalid-encoding', severity: 'error' },
  // schema
  TRL2001: { name: 'missing-field', severity: 'error' },
  TRL2002: { name: 'unknown-field', severity: 'error' },
  TRL2003: { name: 'wrong-type', severity: 'error' },
  TRL2004: { name: 'value-not-allowed', severity: 'error' },
  TRL2005: { name: 'bad-format', severity: 'error' },
  TRL2006: { name: 'out-of-range', severity: 'error' },
  TRL2007: { name: 'schema-violation', severity: 'error' },
  // references
  TRL3001: { name: 'duplicate-name', severity: 'error' },
  TRL3002: { name: 'unknown-parent', severity: 'error' },
  TRL3003: { name: 'unknown-backend', severity: 'error' },
  TRL3004: { name: 'unknown-target', severity: 'error' },
  TRL3005: { name: 'unknown-caller', severity: 'error' },
  TRL3006: { name: 'duplicate-mesh', severity: 'error' },
  TRL3007: { name: 'no-mesh', severity: 'warning' },
  TRL3008: { name: 'unknown-port', severity: 'error' },
  TRL3009: { name: 'missing-reference-grant', severity: 'error' },
  // meaning
  TRL4001: { name: 'all-weights-zero', severity: 'error' },
  TRL4002: { name: 'shadowed-rule', severity: 'warning' },
  TRL4003: { name: 'backend-timeout-exceeds-request', severity: 'error' },
  TRL4004: { name: 'retry-amplification', severity: 'warning' },
  TRL4005: { name: 'conflicting-traffic-policies', severity: 'error' },
  TRL4006: { name: 'conflicting-access-modes', severity: 'error' },
  TRL4007: { name: 'unsafe-regex', severity: 'error' },
  TRL4008: { name: 'prefix-rewrite-without-prefix-match', severity: 'error' },
  TRL4009: { name: 'conflicting-filters', severity: 'error' },
  TRL4010: { name: 'no-backends', severity: 'warning' },
  TRL4011: { name: 'redirect-with-backends', severity: 'warning' },
  TRL4012: { name: 'duplicate-header-modification', severity: 'error' },
  TRL4013: { name: 'access-enforced-by-callers-only', severity: 'info' },
  TRL4014: { name: 'no-endpoints', severity: 'warning' },
  TRL4015: { name: 'duplicate-endpoint', severity: 'error' },
  TRL4016: { name: 'caller-denied-by-backend', severity: 'warning' },
  TRL4017: { name: 'zero-timeout', severity: 'warning' },
  TRL4018: { name: 'duplicate-port', severity: 'error' },
  TRL4019: { name: 'mirror-fraction-over-one', severity: 'error' },
  TRL4020: { name: 'zero-duration', severity: 'error' },
  TRL4021: { name: 'retry-amplification-chain', severity: 'warning' },
  TRL4022: { name: 'timeout-shorter-than-callee', severity: 'warning' },
  TRL4023: { name: 'fault-not-retried', severity: 'info' },
  TRL4024: { name: 'access-without-mtls', severity: 'warning' },
  TRL4025: { name: 'shared-identity', severity: 'warning' },
  TRL4026: { name: 'invalid-header-value', severity: 'error' },
  TRL4027: { name: 'route-on-tcp-port', severity: 'error' },
  TRL4028: { name: 'grpc-route-on-http1-port', severity: 'error' },
  TRL4029: { name: 'access-operations-on-tcp', severity: 'warning' },
  TRL4030: { name: 'backend-protocol-mismatch', severity: 'warning' },
  // traffic tests
  TRL5001: { name: 'traffic-test-failed', severity: 'error' },
  TRL5002: { name: 'traffic-test-invalid', severity: 'error' },
  // the compiler itself
  TRL9001: { name: 'internal-error', severity: 'error' },
} as const satisfies Record<string, CodeInfo>;

export type Code = keyof typeof CODES;

/** Codes in numeric order, for docs and tests. */
export const ALL_CODES = Object.keys(CODES).sort() as Code[];
