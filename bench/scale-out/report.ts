/**
 * The figures of each configuration (hires/s, p50/p99 of a whole hire, errors by code, the CPU
 * split per process and what bounds it), the ratios the issue asks for, the phase-3 kills and the
 * invariants, printed as text.
 */
import { fmt, printTable } from '../lib.js';
import { mean, percentile } from '../dispatch/report.js';
import type { LogFigures } from '../soak/service.js';
import type { Check } from './checks.js';
import { CORES, whatBounds } from './cpu.js';
import type { Hire } from './hires.js';
import type { PhaseResult } from './phases.js';

export interface PhaseFigures {
  label: string;
  /** Hires that ended in the measured window without an error (terminal: completed or failed). */
  done: Hire[];
  rate: number;
  p50: number;
  p99: number;
  meanS: number;
  started: number;
  errors: Hire[];
  serviceMade: number;
  byKill: number;
}

export function figuresOf(p: PhaseResult): PhaseFigures {
  const windowS = (p.windowEnd - p.windowStart) / 1000;
  const done = p.hires.filter((h) => !h.error && h.ended >= p.windowStart && h.ended <= p.windowEnd);
  const seconds = done.map((h) => (h.ended - h.started) / 1000);
  const errors = p.hires.filter((h) => h.error);
  return {
    label: p.label,
    done,
    rate: done.length / windowS,
    p50: percentile(seconds, 50),
    p99: percentile(seconds, 99),
    meanS: mean(seconds),
    started: p.hires.length,
    errors,
    serviceMade: errors.filter((h) => h.error!.serviceMade).length,
    byKill: errors.filter((h) => h.error!.byKill).length,
  };
}

const count = <T>(items: T[], key: (t: T) => string) => {
  const out: Record<string, number> = {};
  for (const i of items) out[key(i)] = (out[key(i)] ?? 0) + 1;
  return out;
};

export function printConfigurations(phases: PhaseResult[], figures: PhaseFigures[]): void {
  console.log('\n### Per configuration (whole hire = paid create + paid fund + paid status polls until terminal)\n');
  printTable(
    ['configuration', 'hires in window', 'hires/s', 'p50 s', 'p99 s', 'completed / failed', 'hires started', 'errors: service / kill / other'],
    figures.map((f) => {
      const completed = f.done.filter((h) => h.outcome === 'completed').length;
      return [
        f.label,
        String(f.done.length),
        fmt(f.rate, 2),
        fmt(f.p50, 2),
        fmt(f.p99, 2),
        `${completed} / ${f.done.length - completed}`,
        String(f.started),
        `${f.serviceMade} / ${f.byKill} / ${f.errors.length - f.serviceMade - f.byKill}`,
      ];
    }),
  );
  for (const [i, f] of figures.entries()) {
    console.log(`\nErrors by code, ${f.label} (failed hires; the step that failed in brackets):`);
    if (f.errors.length === 0) console.log('    none');
    const byKey = count(f.errors, (h) => `${h.error!.key} [${h.error!.step}]${h.error!.byKill ? '  — caused by the kill' : h.error!.serviceMade ? '  — the service' : ''}`);
    for (const [k, n] of Object.entries(byKey).sort(([, a], [, b]) => b - a)) console.log(`    ${String(n).padStart(5)}  ${k}`);
    const reasons = count(f.errors.filter((h) => h.error!.message && h.error!.status === 402), (h) => h.error!.message!.slice(0, 140));
    const top = Object.entries(reasons).sort(([, a], [, b]) => b - a).slice(0, 5);
    if (top.length > 0) console.log('  402 causes (the service\'s message):', ...top.map(([m, n]) => `\n    ${String(n).padStart(5)}  ${m}`));
    const others = Object.entries(phases[i]!.stats.failedWhileAlive);
    if (others.length > 0) console.log('  no answer from an API in rotation:', ...others.map(([m, n]) => `\n    ${String(n).padStart(5)}  ${m}`));
  }
}

export function printCpu(phases: PhaseResult[], figures: PhaseFigures[], inFlight: number): void {
  console.log(`\n### CPU split over each measured window (/proc/<pid>/stat utime+stime; % of one core; this machine has ${CORES} cores = ${CORES * 100} %)\n`);
  const names = [...new Set(phases.flatMap((p) => Object.keys(p.cpu.byName)))].sort();
  const head = ['process', ...phases.map((p) => `${p.short} %`), ...phases.map((p) => `${p.short} ms/hire done`)];
  const rows = names.map((name) => [
    name,
    ...phases.map((p) => fmt(p.cpu.byName[name]?.pct ?? NaN)),
    ...phases.map((p, i) => fmt(((p.cpu.byName[name]?.cpuS ?? NaN) * 1000) / Math.max(1, figures[i]!.done.length))),
  ]);
  rows.push(['(outside the bench)', ...phases.map((p) => fmt(p.cpu.otherPct)), ...phases.map(() => '')]);
  rows.push(['machine, all', ...phases.map((p) => fmt(p.cpu.machinePct)), ...phases.map(() => '')]);
  printTable(head, rows);
  console.log(
    '\nbench = this process: the load generator (x402 signing of every payment), the agents and the callback receiver; ' +
      'postgres = the server and all its backends; a killed process counts up to its last sample (1 s). ms/hire done = CPU ÷ hires done in the window.',
  );
  for (const [i, p] of phases.entries()) {
    const f = figures[i]!;
    console.log(`What bounds ${p.label}: ${whatBounds(p.cpu, inFlight / f.meanS, f.rate)}`);
  }
}

export function printRatios(figures: PhaseFigures[]): void {
  const [one, two] = figures;
  if (!one || !two) return;
  console.log('\n### Targets (ratios within this run)\n');
  console.log(`  errors of the service's making at ${two.label}: ${two.serviceMade} of ${two.started} hires (target 0)`);
  console.log(`  hires/s ${two.label} ÷ ${one.label}: ${fmt(two.rate / one.rate, 2)} (${fmt(two.rate, 2)} ÷ ${fmt(one.rate, 2)})`);
  console.log(`  p50 of a hire ${two.label} ÷ ${one.label}: ${fmt(two.p50 / one.p50, 2)}`);
}

export function printKill(p: PhaseResult, f: PhaseFigures): void {
  const k = p.kill;
  if (!k) return;
  const t = k.takeover;
  console.log(`\n### Phase 3: kills under load\n`);
  console.log(`  killed ${k.worker.name} (pid ${k.worker.pid}) and ${k.api.name} (pid ${k.api.pid}) with SIGKILL at ${((k.worker.at - p.windowStart) / 1000).toFixed(1)} s into the window`);
  console.log(`  restarts: ${k.worker.name} ${fmt(k.restartMs.worker / 1000, 1)} s, ${k.api.name} ${fmt(k.restartMs.api / 1000, 1)} s (until it listened / its workers ran)`);
  console.log(
    `  takeover: ${k.worker.name} held ${t.held} task${t.held === 1 ? '' : 's'}; ` +
      (t.held === 0
        ? 'nothing to take over'
        : `all leased by a live worker ${fmt(t.takenOverMs / 1000, 1)} s after the SIGKILL (target ≤ 5 s); ` +
          (t.finished ? `all finished ${fmt(t.ms / 1000, 1)} s after it (by the other worker or the restarted one)` : 'NOT all finished')) +
      ` (${JSON.stringify(t.statuses)}${t.briefs !== undefined ? `, ${t.briefs} briefs to the agents for them` : ''})`,
  );
  console.log(`  hires failed by the kill (a request in flight to ${k.api.name}): ${f.byKill}; errors of the service's making: ${f.serviceMade}`);
}

export function printChecks(checks: Check[], phases: PhaseResult[], logs: LogFigures): void {
  console.log('\n### Invariants (after the last configuration quiesced; one database for the whole run)\n');
  for (const p of phases) {
    console.log(`  quiesce after ${p.label}: ${p.quiesce.quiet ? `${fmt(p.quiesce.ms / 1000, 1)} s` : `NOT QUIET after ${fmt(p.quiesce.ms / 1000, 0)} s`}, callbacks pending ${p.callbacksPending}`);
    for (const r of p.quiesce.remaining.slice(0, 10)) console.log(`      ${r}`);
  }
  for (const c of checks) {
    console.log(`  ${c.ok ? 'ok  ' : 'FAIL'}  ${c.name}: ${c.detail}`);
    for (const problem of c.problems.slice(0, 15)) console.log(`          ${problem}`);
  }
  const errors = Object.entries(logs.errors);
  if (errors.length > 0) {
    console.log('\n  service log lines at level error or above, by message:');
    for (const [m, n] of errors.sort(([, a], [, b]) => b - a).slice(0, 15)) console.log(`    ${String(n).padStart(5)}  ${m}`);
  }
}
