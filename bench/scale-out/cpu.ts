/**
 * CPU per process from /proc: utime + stime of `/proc/<pid>/stat`, sampled every second so that a
 * process killed mid-phase still counts up to its last sample, and the machine's busy time from
 * `/proc/stat`. Named processes are the bench's (API and worker slots, anvil, this process: the
 * load generator, the agents and the callback receiver); every process whose command is
 * `postgres` (the server and its backends, found at each sample) counts as `postgres`.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';

export const CORES = cpus().length;
const TICKS_PER_S = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** `[command, utime + stime in ticks]` of a pid, or undefined when it is gone. */
function readStat(pid: number): [string, number] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const open = raw.indexOf('(');
    const close = raw.lastIndexOf(')');
    const fields = raw.slice(close + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15
    return [raw.slice(open + 1, close), Number(fields[11]) + Number(fields[12])];
  } catch {
    return undefined;
  }
}

/** Busy and total ticks of all CPUs (busy = total − idle − iowait). */
function readMachine(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - (v[3] ?? 0) - (v[4] ?? 0), total };
}

export interface CpuMark {
  at: number;
  ticks: Map<number, number>;
  machine: { busy: number; total: number };
}

export interface CpuSplit {
  seconds: number;
  /** Per process name: CPU seconds used, and in % of one core over the span. */
  byName: Record<string, { cpuS: number; pct: number }>;
  /** The whole machine, in % of one core (at most CORES × 100). */
  machinePct: number;
  /** Machine busy time not used by any process above (other users of this shared machine, the kernel). */
  otherPct: number;
}

export class CpuSampler {
  private readonly names = new Map<number, string>();
  private readonly ticks = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;

  /** Counts `pid` as `name` (several pids may share a name: a restarted slot). */
  track(name: string, pid: number): void {
    this.names.set(pid, name);
  }

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), 1000);
    this.timer.unref();
    return this;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  sample(): void {
    for (const pid of this.names.keys()) {
      const s = readStat(pid);
      if (s) this.ticks.set(pid, s[1]);
    }
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      if (this.names.has(pid) && this.names.get(pid) !== 'postgres') continue;
      const s = readStat(pid);
      if (s?.[0] !== 'postgres') continue;
      this.names.set(pid, 'postgres');
      this.ticks.set(pid, s[1]);
    }
  }

  mark(): CpuMark {
    this.sample();
    return { at: Date.now(), ticks: new Map(this.ticks), machine: readMachine() };
  }

  /** CPU per name between two marks (a pid first seen after `from` counts from 0: it started in between). */
  split(from: CpuMark, to: CpuMark): CpuSplit {
    const seconds = (to.at - from.at) / 1000;
    const byName: CpuSplit['byName'] = {};
    for (const [pid, end] of to.ticks) {
      const name = this.names.get(pid) ?? `pid ${pid}`;
      const cpuS = (end - (from.ticks.get(pid) ?? 0)) / TICKS_PER_S;
      const row = (byName[name] ??= { cpuS: 0, pct: 0 });
      row.cpuS += cpuS;
      row.pct = (row.cpuS / seconds) * 100;
    }
    const busy = to.machine.busy - from.machine.busy;
    const total = to.machine.total - from.machine.total;
    const machinePct = total > 0 ? (busy / total) * CORES * 100 : NaN;
    const ours = Object.values(byName).reduce((sum, r) => sum + r.pct, 0);
    return { seconds, byName, machinePct, otherPct: Math.max(0, machinePct - ours) };
  }
}

/** One sentence on what bounds the throughput of a configuration, from its CPU split. */
export function whatBounds(split: CpuSplit, littleRate: number, measuredRate: number): string {
  const top = Object.entries(split.byName).sort(([, a], [, b]) => b.pct - a.pct);
  const named = top.slice(0, 3).map(([n, r]) => `${n} ${r.pct.toFixed(0)} %`).join(', ');
  if (split.machinePct >= 0.85 * CORES * 100) {
    return (
      `CPU: the machine's ${CORES} cores were ${split.machinePct.toFixed(0)} % busy (of ${CORES * 100} %); biggest users ${named}` +
      (split.otherPct >= 20 ? `; ${split.otherPct.toFixed(0)} % went to processes outside the bench` : '') +
      '. More processes on this machine only share the same cores.'
    );
  }
  const [hot, hotRow] = top[0] ?? ['-', { pct: 0 }];
  if (hotRow.pct >= 85) return `one event loop: ${hot} used ${hotRow.pct.toFixed(0)} % of a core (machine ${split.machinePct.toFixed(0)} % of ${CORES * 100} %).`;
  const little = Number.isFinite(littleRate) && measuredRate > 0 ? ` in-flight ÷ mean hire time = ${littleRate.toFixed(1)} hires/s against ${measuredRate.toFixed(1)} measured` : '';
  return `not CPU (machine ${split.machinePct.toFixed(0)} % of ${CORES * 100} %, top ${named}): latency — the hires in flight wait on polls, the dispatch interval and the agents;${little}.`;
}
