/**
 * Parent side: the figures of a run and how they are printed (the table, the ratios, the paid
 * hire's time shares, what the figures include).
 */
import { fmt, printTable as printMarkdownTable } from '../lib.js';
import { AT_CAPACITY_SLEEP_MS, EMPTY_CLAIM_SLEEP_MS } from './protocol.js';
import type { Settings } from './settings.js';

/** One line of the table. */
export interface Row {
  measure: string;
  db: string;
  n: number;
  seconds: number;
  rate: number;
  latency: string;
  p50: number;
  p99: number;
  cpuPerItem: number;
  /** CPU of the app process over the measured window, in % of one core. */
  cpuPct: number;
}

export interface PaidSummary {
  rate: number;
  /** Mean ms per hire: create start → funded_at, funded_at → finished_at, finished_at → release confirmed_at. */
  payment: number;
  dispatch: number;
  settlement: number;
  createMs: number;
  fundMs: number;
}

/** The figures of one database. */
export interface DbResult {
  label: string;
  /** Raw claim rates (rows/s) over all runs, and before / after the dispatch. */
  rawK1: number;
  rawKb: number;
  rawK1Sides: number[];
  rawKbSides: number[];
  dispatchRate: number;
  meanClaimBatch: number;
  settleRate: number;
  rows: Row[];
  paid?: PaidSummary;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export const mean = (values: number[]) => (values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN);

export function printTable(rows: Row[]): void {
  const head = ['measure', 'database', 'n', 'seconds', 'per s', 'latency', 'p50 ms', 'p99 ms', 'app CPU ms/item', 'app CPU %'];
  const body = rows.map((r) => [
    r.measure,
    r.db,
    String(r.n),
    fmt(r.seconds, 2),
    fmt(r.rate, r.rate < 100 ? 1 : 0),
    r.latency || '-',
    fmt(r.p50, 1),
    fmt(r.p99, 1),
    fmt(r.cpuPerItem, 2),
    fmt(r.cpuPct),
  ]);
  printMarkdownTable(head, body, new Set([0, 1, 5]));
}

export function printRatios(results: DbResult[], s: Settings): void {
  console.log('\ndispatcher vs bare claim (same run; raw rate = all raw runs, before and after the dispatch, pooled):');
  for (const r of results) {
    const raw1 = r.rawK1;
    const rawB = r.rawKb;
    const over = (raw: number) => (1 / r.dispatchRate - 1 / raw) * 1000;
    console.log(
      `  ${r.label.padEnd(8)} raw k=1 ${fmt(raw1)}/s (before ${fmt(r.rawK1Sides[0]!)}, after ${fmt(r.rawK1Sides[1]!)}), dispatch ${fmt(r.dispatchRate)} tasks/s → ` +
        `dispatch/raw ${fmt(r.dispatchRate / raw1, 3)}, overhead ${fmt(over(raw1), 2)} ms/task`,
    );
    console.log(
      `  ${''.padEnd(8)} raw k=${s.concurrency} ${fmt(rawB)}/s (before ${fmt(r.rawKbSides[0]!)}, after ${fmt(r.rawKbSides[1]!)}) → dispatch/raw ${fmt(r.dispatchRate / rawB, 4)}, ` +
        `overhead ${fmt(over(rawB), 2)} ms/task; the dispatchers claimed ${fmt(r.meanClaimBatch, 2)} tasks per non-empty claim`,
    );
  }
  const [a, b] = results;
  if (a && b) {
    console.log(
      `\n${b.label}/${a.label}: raw k=1 ${fmt(b.rawK1 / a.rawK1, 2)}, raw k=${s.concurrency} ${fmt(b.rawKb / a.rawKb, 2)}, ` +
        `dispatch ${fmt(b.dispatchRate / a.dispatchRate, 2)}, settlement ${fmt(b.settleRate / a.settleRate, 2)}` +
        (a.paid && b.paid ? `, paid hire ${fmt(b.paid.rate / a.paid.rate, 2)}` : ''),
    );
  }
  const paid = results.filter((r) => r.paid);
  if (paid.length) {
    console.log('\npaid hire, where the time goes (mean per task; payment = create start → funded_at, dispatch = funded_at → finished_at, settlement = finished_at → release confirmed_at):');
    for (const r of paid) {
      const p = r.paid!;
      const total = p.payment + p.dispatch + p.settlement;
      const pct = (x: number) => `${fmt((x / total) * 100)} %`;
      console.log(
        `  ${r.label.padEnd(8)} payment ${fmt(p.payment)} ms (${pct(p.payment)}; create call ${fmt(p.createMs)} ms, fund call ${fmt(p.fundMs)} ms), ` +
          `dispatch ${fmt(p.dispatch)} ms (${pct(p.dispatch)}), settlement ${fmt(p.settlement)} ms (${pct(p.settlement)}); ` +
          `dispatch rate / paid rate ${fmt(r.dispatchRate / p.rate, 1)}×`,
      );
    }
  }
}

export function printIncluded(s: Settings): void {
  console.log(
    `\nincluded: the dispatch figure runs from the dispatchers' start to the last finished_at: claim (candidates + per-agent lock and count + markStarted), ` +
      `agent row read, SSRF check, the signed POST to the agent and its answer, markCompleted (transition, agent stats, release planned in the outbox with its ledger ` +
      `movements). Not included: funding (all ${s.tasks} were funded before, so funded→completed includes waiting in that backlog) and the chain ` +
      `(x402 off; the releases stay pending until the separate settlement row pays them on anvil, 1 worker, automine, 1 confirmation). ` +
      `The paid row includes everything: two x402 payments settled on anvil per hire, dispatch, release confirmed. ` +
      `Loops: runOnce again at once after a claim, ${AT_CAPACITY_SLEEP_MS} ms sleep when all slots are busy, ${EMPTY_CLAIM_SLEEP_MS} ms after an empty claim; ` +
      `pool ${s.poolMax} connections on Postgres. app CPU: the child process running the app, its database client (PGlite: the database ` +
      `itself) and the dispatchers, in % of one core over the measured window; Postgres's own CPU is not counted.`,
  );
}
