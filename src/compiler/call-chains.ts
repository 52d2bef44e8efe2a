/**
 * The worst retry amplification along call chains of the known call graph (the edges
 * AccessPolicies declare), for the TRL4021 check in check.ts. Kept apart from the checker
 * so the walk can be tested on its own against a plain recursive reference.
 *
 * The walk is iterative: a call chain may be as long as the mesh has services (10 000 in
 * the benchmark mesh), and a recursion per hop overflowed V8's stack there. Chains are
 * shared linked lists (each link points at the rest of the chain), so memoising the best
 * chain of every service costs one link per service, not a copy of the chain per hop.
 */

/** The best chain from one service: the service, then the rest (null at the chain's end). */
export interface ChainLink {
  /** The product of the hop factors along the chain (1 for a chain of one service). */
  readonly factor: number;
  readonly service: string;
  readonly next: ChainLink | null;
  /** How many services the chain has, and its last TAIL_KEPT (or fewer): what a message shows of a long chain without walking it. */
  readonly length: number;
  readonly tail: readonly string[];
}

/** Services kept at the end of each link's chain (`tail`). */
export const TAIL_KEPT = 5;

function link(factor: number, service: string, next: ChainLink | null): ChainLink {
  const tail = next === null ? [service] : next.length < TAIL_KEPT ? [service, ...next.tail] : next.tail;
  return { factor, service, next, length: next === null ? 1 : next.length + 1, tail };
}

/** The first `n` services of a chain (all of them with `chain.length`), in call order. */
export function chainHead(chain: ChainLink, n: number): string[] {
  const out: string[] = [];
  for (let l: ChainLink | null = chain; l && out.length < n; l = l.next) out.push(l.service);
  return out;
}

/**
 * Returns `worst(service)`: the chain from `service` whose product of `hopFactor(target)`
 * over its hops is largest (the first such chain in `calls` order on ties). Results are
 * memoised across calls of the returned function, so asking for every entry service costs
 * one walk of the graph in all.
 *
 * Cycles count once, exactly as a depth-first recursion with a "visiting" set would: a hop
 * back to a service still on the current path ends the chain there with factor 1, and
 * that result is not memoised for the service (its own walk, when finished, is). So which
 * chain a service in a cycle gets can depend on where the walk entered the cycle; the
 * checker asks in a fixed order (entries in service order), which keeps results stable.
 *
 * `calls` maps a caller to the services it calls (in a fixed order); it is not modified.
 */
export function worstChains(calls: ReadonlyMap<string, readonly string[]>, hopFactor: (target: string) => number): (service: string) => ChainLink {
  const memo = new Map<string, ChainLink>();
  const visiting = new Set<string>();
  /** What the recursion would return at once for `service`, or undefined when it has to walk it. */
  const known = (service: string): ChainLink | undefined => memo.get(service) ?? (visiting.has(service) ? link(1, service, null) : undefined);

  interface Frame {
    readonly service: string;
    readonly targets: readonly string[];
    /** The next target to consider. */
    index: number;
    best: ChainLink;
  }
  const open = (service: string): Frame => {
    visiting.add(service);
    return { service, targets: calls.get(service) ?? [], index: 0, best: link(1, service, null) };
  };
  /** Folds target `frame.targets[frame.index]`'s result into the frame and moves on. */
  const consider = (frame: Frame, next: ChainLink): void => {
    const target = frame.targets[frame.index]!;
    const factor = hopFactor(target) * next.factor;
    if (factor > frame.best.factor) frame.best = link(factor, frame.service, next);
    frame.index++;
  };

  return (service: string): ChainLink => {
    const ready = known(service);
    if (ready) return ready;
    const stack: Frame[] = [open(service)];
    for (;;) {
      const frame = stack[stack.length - 1]!;
      if (frame.index < frame.targets.length) {
        const target = frame.targets[frame.index]!;
        const result = known(target);
        if (result) consider(frame, result);
        else stack.push(open(target));
        continue;
      }
      stack.pop();
      visiting.delete(frame.service);
      memo.set(frame.service, frame.best);
      const parent = stack[stack.length - 1];
      if (!parent) return frame.best;
      consider(parent, frame.best);
    }
  };
}
