/**
 * The access decision for one call, from a service's compiled `inbound.access`: one
 * implementation for every place that needs it (the explain command today, the inbound
 * listener once callers are verified by mTLS).
 */
import { prefixTest } from './router.ts';
import type { InboundBody } from './types.ts';

export interface AccessDecision {
  /** Whether the call is let through (in audit mode, also calls that would be denied). */
  readonly allowed: boolean;
  /** Whether a deny was turned into an allow by audit mode. */
  readonly audited: boolean;
  /** Why: the mesh default, or the policy and rule that admitted the caller, or that none did. */
  readonly reason: string;
  /** The admitting rule's policy, when a rule decided. */
  readonly policy: string | null;
  /**
   * Index of the admitting rule in `access.rules` (0-based, counted across all policies on the
   * service in compiled order, not within its policy); null when no rule admitted the call.
   */
  readonly ruleIndex: number | null;
}

/** Whether an access rule's `from` entry admits `caller`: an exact identity, or a prefix written `…/*`. */
export function admitsCaller(from: string, caller: string): boolean {
  return from.endsWith('/*') ? caller.startsWith(from.slice(0, -1)) : from === caller;
}

/** Whether a path matches an access path (PathPrefix by whole segments, or Exact). */
function pathMatches(type: 'Exact' | 'PathPrefix', value: string, path: string): boolean {
  return type === 'Exact' ? path === value : prefixTest(value)(path);
}

/**
 * Decides a call by `caller` (the SPIFFE ID verified from the peer's mTLS certificate, or null
 * when the caller is unauthenticated: plaintext, or mTLS off) with `method` (compared
 * case-sensitively) and `path`, which must already be the output of `normalizePath`
 * (normalize-path.ts): rules compare it as is. The first rule in `access.rules` that admits
 * the call decides. `access.mode` applies to policy rules only; a mesh default is never
 * audited. Pure; the table it implements is in docs/access.md.
 */
export function decideAccess(access: InboundBody['access'], caller: string | null, method: string, path: string): AccessDecision {
  const plain = (allowed: boolean, reason: string): AccessDecision => ({ allowed, audited: false, reason, policy: null, ruleIndex: null });
  switch (access.default) {
    case 'allow':
      return plain(true, 'the mesh access default is allow');
    case 'all-authenticated':
      return caller ? plain(true, 'the mesh access default admits every authenticated caller') : plain(false, 'the mesh access default admits only authenticated callers');
    case 'deny':
      return plain(false, 'the service has no AccessPolicy and the mesh access default is deny');
    case 'policy':
      break;
  }
  const index = access.rules.findIndex(
    (r) =>
      caller !== null &&
      r.from.some((f) => admitsCaller(f, caller)) &&
      (r.to.length === 0 || r.to.some((t) => (t.methods.length === 0 || t.methods.includes(method as never)) && (t.paths.length === 0 || t.paths.some((p) => pathMatches(p.type, p.value, path))))),
  );
  if (index >= 0) {
    const rule = access.rules[index]!;
    return { allowed: true, audited: false, reason: `admitted by AccessPolicy "${rule.policy}"`, policy: rule.policy, ruleIndex: index };
  }
  const denied = caller === null ? 'no AccessPolicy rule admits unauthenticated callers' : `no AccessPolicy rule admits ${caller} for ${method} ${path}`;
  if (access.mode === 'audit') return { allowed: true, audited: true, reason: `${denied} (audit mode: let through and logged)`, policy: null, ruleIndex: null };
  return plain(false, denied);
}

/**
 * The access decision for a TCP connection (a `tcp` service port): it has no method or
 * path, so only rules without `to` admit it (docs/spec.md, Protocols; TRL4029 warns of the
 * others). The rule index returned counts among all of the inbound's rules.
 */
export function decideConnection(access: InboundBody['access'], caller: string | null): AccessDecision {
  const kept = access.rules.map((rule, index) => ({ rule, index })).filter((x) => x.rule.to.length === 0);
  const decision = decideAccess({ ...access, rules: kept.map((x) => x.rule) }, caller, 'CONNECT', '');
  return decision.ruleIndex === null ? decision : { ...decision, ruleIndex: kept[decision.ruleIndex]!.index };
}
