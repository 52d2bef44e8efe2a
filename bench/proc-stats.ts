/**
 * What Linux says about a process tree and the CPUs, read from /proc: CPU time (user +
 * system, all threads), resident memory, and per-core busy time. Used by bench/proxy.ts to
 * measure each proxy the same way, whatever it is written in.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`; 100 on Linux in practice). */
export const CLOCK_TICKS: number = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Fields of /proc/<pid>/stat after the command name (field 3, `state`, is index 0). */
function statFields(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** User + system CPU time of one process, all its threads, in seconds (0 once it is gone). */
export function cpuSeconds(pid: number): number {
  const f = statFields(pid);
  return f ? (Number(f[11]) + Number(f[12])) / CLOCK_TICKS : 0;
}

/** The process and every descendant process (not threads), found by parent pid. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (!f) continue;
    const ppid = Number(f[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const visit = (pid: number) => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) visit(c);
  };
  visit(root);
  return out;
}

/** `VmRSS` and `VmHWM` (peak RSS) of one process, in bytes; zeros once it is gone. */
export function memory(pid: number): { rss: number; hwm: number; anon: number } {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
    // RssAnon: the process's own pages; the rest of VmRSS is mostly the executable's file pages, shared by every process that runs it.
    return { rss: kib('VmRSS') * 1024, hwm: kib('VmHWM') * 1024, anon: kib('RssAnon') * 1024 };
  } catch {
    return { rss: 0, hwm: 0, anon: 0 };
  }
}

/** Busy and total ticks per core from /proc/stat (busy = all but idle and iowait). */
export function coreTicks(): Array<{ busy: number; total: number }> {
  const out: Array<{ busy: number; total: number }> = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (!m) continue;
    const v = m[2]!.trim().split(/\s+/).map(Number);
    // user nice system idle iowait irq softirq steal (guest times are already in user/nice)
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    out[Number(m[1])] = { busy: total - v[3]! - v[4]!, total };
  }
  return out;
}

/** Fraction of each core that was busy between two `coreTicks()` readings. */
export function coreBusy(before: ReadonlyArray<{ busy: number; total: number }>, after: ReadonlyArray<{ busy: number; total: number }>): number[] {
  return after.map((a, i) => {
    const b = before[i] ?? { busy: 0, total: 0 };
    return a.total > b.total ? (a.busy - b.busy) / (a.total - b.total) : 0;
  });
}

/** `PF_KTHREAD` in /proc/<pid>/stat `flags`: a kernel thread. */
const PF_KTHREAD = 0x00200000;

/**
 * CPU seconds of every user-space process on the machine, by pid (a snapshot; see
 * `foreignCpu`). Kernel threads are left out: under loopback load they do the bench's own
 * network work (softirq), which is not someone else's.
 */
export function allProcessCpu(): Map<number, number> {
  const out = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (f && (Number(f[6]) & PF_KTHREAD) === 0) out.set(Number(entry), (Number(f[11]) + Number(f[12])) / CLOCK_TICKS);
  }
  return out;
}

/**
 * CPU seconds that processes outside `ours` used between two `allProcessCpu()` snapshots:
 * other people's work on a shared machine, which competes with a benchmark for cores.
 * Processes that ended in between are missed; ones that started count in full.
 */
export function foreignCpu(before: ReadonlyMap<number, number>, after: ReadonlyMap<number, number>, ours: ReadonlySet<number>): number {
  let sum = 0;
  for (const [pid, cpu] of after) {
    if (ours.has(pid)) continue;
    sum += Math.max(0, cpu - (before.get(pid) ?? 0));
  }
  return sum;
}
