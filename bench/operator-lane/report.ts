/** The tables and ratios of bench/operator-lane.ts. */
import { fmt, printTable } from '../lib.js';
import { CORES, type CpuSplit } from '../scale-out/cpu.js';
import type { LockFigures } from './lock-sampler.js';
import { SEND_OPTION_TEXT, turnFigures, type SendOption, type SendRun } from './sends.js';
import { failed, percentile, pool, rate, type RunFigures } from './stats.js';

export interface HttpPhase {
  figures: RunFigures;
  apis: string[];
  operatorKeys: number;
  /** Transactions the operator wallet(s) sent during the window (chain nonce delta). */
  operatorTxs: number;
  /** Warn+ log lines of the API processes during the window. */
  logs: Record<string, number>;
  cpu: CpuSplit;
  /** The chain_nonces row lock over the window, sampled from pg_stat_activity. */
  lock: LockFigures;
}

/** Mean turn (row lock held per transaction, ms) from sampled holders over a window of `seconds`. */
export const sampledTurnMs = (lock: LockFigures, seconds: number, txs: number): number => (lock.meanHolders * seconds * 1000) / txs;

const ms = (n: number) => fmt(n, n < 10 ? 1 : 0);
const pct = (n: number) => `${fmt(n * 100, 1)} %`;
const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a) ? `${fmt(a / b, 2)}×` : '-');

function printFailures(rows: ReadonlyArray<{ label: string; failures: Record<string, number>; extra?: Record<string, number> }>): void {
  for (const r of rows) {
    const entries = Object.entries(r.failures).sort(([, a], [, b]) => b - a);
    const extra = Object.entries(r.extra ?? {}).sort(([, a], [, b]) => b - a);
    if (entries.length === 0 && extra.length === 0) {
      console.log(`  ${r.label}: none`);
      continue;
    }
    console.log(`  ${r.label}:`);
    for (const [k, n] of entries) console.log(`    ${String(n).padStart(5)} × ${k}`);
    for (const [k, n] of extra) console.log(`    ${String(n).padStart(5)} × (server log) ${k}`);
  }
}

export function printHttp(phases: readonly HttpPhase[], concurrency: number): void {
  console.log(`\n### Paid calls through API processes (GET /v1/agents?query=x, stock x402 client, ${concurrency} in flight, round-robin)\n`);
  printTable(
    ['configuration', 'APIs', 'keys', 'calls', 'ok', 'failed', 'calls/s', 'p50 ms', 'p99 ms', 'operator txs', 'API CPU %', 'API CPU ms/call', 'anvil %', 'postgres %', 'bench %', 'machine %'],
    phases.map((p) => {
      const f = p.figures;
      const apiCpu = p.apis.reduce((s, n) => s + (p.cpu.byName[n]?.cpuS ?? 0), 0);
      const row = (n: string) => fmt(p.cpu.byName[n]?.pct ?? 0);
      return [
        f.label,
        String(p.apis.length),
        String(p.operatorKeys),
        String(f.attempted),
        String(f.ok),
        String(failed(f)),
        fmt(rate(f), 1),
        ms(percentile(f.latencies, 50)),
        ms(percentile(f.latencies, 99)),
        String(p.operatorTxs),
        `${fmt((apiCpu / p.cpu.seconds) * 100)} (${p.apis.map((n) => fmt(p.cpu.byName[n]?.pct ?? 0)).join('+')})`,
        fmt(f.ok > 0 ? (apiCpu * 1000) / f.ok : NaN, 1),
        row('anvil'),
        row('postgres'),
        row('bench'),
        `${fmt(p.cpu.machinePct)} / ${CORES * 100}`,
      ];
    }),
  );
  console.log('\n  failures (status code: message), and the API processes\' warn/error log lines, per configuration:');
  printFailures(phases.map((p) => ({ label: p.figures.label, failures: p.figures.failures, extra: p.logs })));
  console.log(
    '\n  The lanes\' chain_nonces row locks during the paid calls, sampled from pg_stat_activity (held from the turn\'s `select … for update` to its COMMIT;' +
      ' waiters: a lane statement waiting on a lock); the lane\'s cap = keys × 1000 ÷ mean turn:\n',
  );
  printTable(
    ['configuration', 'samples', 'some row locked, share of window', 'mean holders', 'mean waiters', 'mean turn ms (held time ÷ operator txs)', 'operator txs/s', 'lane cap txs/s'],
    phases.map((p) => {
      const turn = sampledTurnMs(p.lock, p.figures.seconds, p.operatorTxs);
      return [
        p.figures.label,
        String(p.lock.samples),
        pct(p.lock.heldShare),
        fmt(p.lock.meanHolders, 2),
        fmt(p.lock.meanWaiters, 2),
        ms(turn),
        fmt(p.operatorTxs / p.figures.seconds, 1),
        fmt((p.operatorKeys * 1000) / turn, 1),
      ];
    }),
  );
  console.log(
    '\n  CPU from /proc over the measured window, in % of one core; "postgres" is every postgres process on this machine (other users included),' +
      ' "bench" this process (the x402 clients signing, and the load).',
  );
}

export function pooledSends(runs: readonly SendRun[]): Map<SendOption, { figures: RunFigures; runs: SendRun[] }> {
  const by = new Map<SendOption, SendRun[]>();
  for (const r of runs) by.set(r.option, [...(by.get(r.option) ?? []), r]);
  return new Map([...by].map(([o, rs]) => [o, { figures: pool(o, rs.map((r) => r.figures)), runs: rs }]));
}

export function printSends(runs: readonly SendRun[], sends: number, concurrency: number, rounds: number): void {
  const pooled = pooledSends(runs);
  console.log(
    `\n### Send level: the operator's USDC transfers alone (up to ${sends} sends per option and round, ${rounds} round(s) pooled, ${concurrency} in flight, round-robin over the processes)\n`,
  );
  printTable(
    ['option', 'what', 'sends', 'ok', 'failed', 'ok sends/s', 'p50 ms', 'p99 ms', 'per round ok sends/s'],
    [...pooled].map(([o, { figures: f, runs: rs }]) => [
      o,
      SEND_OPTION_TEXT[o],
      String(f.attempted),
      String(f.ok),
      String(failed(f)),
      fmt(rate(f), 1),
      ms(percentile(f.latencies, 50)),
      ms(percentile(f.latencies, 99)),
      rs.map((r) => fmt(rate(r.figures))).join(' / '),
    ]),
    new Set([0, 1]),
  );
  console.log('\n  failures by error:');
  printFailures([...pooled].map(([, { figures }]) => ({ label: figures.label, failures: figures.failures })));

  const laneRows = [...pooled].filter(([o]) => o.includes('lane'));
  console.log('\n  The lane\'s turns, timed from outside (a wrapped Db: lock taken = the transaction\'s `update` call right after `select … for update`; released = COMMIT done):\n');
  printTable(
    ['option', 'turns', 'lock held p50 / p99 / mean ms', 'sign+broadcast p50 / p99 ms', 'wait for the turn p50 / p99 ms', 'row locked, share of window (per wallet)', 'one wallet ≤ 1000/mean hold', 'sampled: some row locked, mean turn ms'],
    laneRows.map(([o, { runs: rs }]) => {
      const t = turnFigures({ option: o, figures: pool(o, rs.map((r) => r.figures)), turns: rs.flatMap((r) => r.turns), window: [0, 1] })!;
      const busy = rs.map((r) => turnFigures(r)?.busyShare ?? NaN);
      return [
        o,
        String(t.turns),
        `${ms(t.hold[0])} / ${ms(t.hold[1])} / ${ms(t.hold[2])}`,
        `${ms(t.broadcast[0])} / ${ms(t.broadcast[1])}`,
        `${ms(t.wait[0])} / ${ms(t.wait[1])}`,
        busy.map((b) => pct(b)).join(' / '),
        `${fmt(1000 / t.hold[2])} sends/s`,
        rs.map((r) => (r.lock ? `${pct(r.lock.heldShare)}, ${ms(sampledTurnMs(r.lock, r.figures.seconds, r.turns.length))}` : '-')).join(' / '),
      ];
    }),
  );
}

export function printRatios(phases: readonly HttpPhase[], runs: readonly SendRun[]): void {
  const [one, two, keys] = phases;
  const s = pooledSends(runs);
  const r = (o: SendOption) => (s.get(o) ? rate(s.get(o)!.figures) : NaN);
  const failShare = (o: SendOption) => {
    const f = s.get(o)?.figures;
    return f ? pct(failed(f) / f.attempted) : '-';
  };
  console.log('\n### Ratios (within this run)\n');
  const lines: [string, string][] = [];
  if (one && two) {
    lines.push(['paid calls/s, lane: 2 APIs ÷ 1 API', ratio(rate(two.figures), rate(one.figures))]);
    lines.push(['p50 latency, lane: 2 APIs ÷ 1 API', ratio(percentile(two.figures.latencies, 50), percentile(one.figures.latencies, 50))]);
  }
  if (two && keys) {
    lines.push(['paid calls/s, 2 APIs: key pool ÷ lane (one key)', ratio(rate(keys.figures), rate(two.figures))]);
    lines.push(['p50 latency, 2 APIs: key pool ÷ lane', ratio(percentile(keys.figures.latencies, 50), percentile(two.figures.latencies, 50))]);
  }
  lines.push(['ok sends/s: lane (2 processes, one key) ÷ per-process counters (one key)', ratio(r('lane'), r('counters'))]);
  lines.push(['ok sends/s: lane, 2 processes ÷ 1 process', ratio(r('lane'), r('lane ×1'))]);
  lines.push(['ok sends/s: key pool (a nonce manager per key) ÷ lane (one key)', ratio(r('key pool'), r('lane'))]);
  lines.push(['ok sends/s: key pool + a lane per key ÷ lane (one key)', ratio(r('key pool + lane'), r('lane'))]);
  lines.push(['ok sends/s: key pool (nonce managers) ÷ key pool + lane', ratio(r('key pool'), r('key pool + lane'))]);
  lines.push(['failed sends: counters / lane / key pool / key pool + lane', `${failShare('counters')} / ${failShare('lane')} / ${failShare('key pool')} / ${failShare('key pool + lane')}`]);
  printTable(['ratio', 'value'], lines.map(([a, b]) => [a, b]));
}
