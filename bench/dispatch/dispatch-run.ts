/**
 * Part 2, the dispatch run: N tasks funded one by one (markFunded, x402 off), then DISPATCHERS
 * dispatchers in the child looping `runOnce()` against the instant agent until every task is
 * finished. Rate = N / (last finished_at − the loops' start).
 */
import { fmt } from '../lib.js';
import { checkTasks, checkWait } from './checks.js';
import type { Child } from './children.js';
import { DISPATCHERS, type TaskReport, type WaitResult } from './protocol.js';
import { percentile, type Row } from './report.js';
import type { BenchRun } from './settings.js';

/** One dispatch run: fund, then the loops until every task is finished. */
export async function dispatchRun(child: Child, agentId: string, n: number) {
  const funding = await child.call<{ seconds: number }>({ type: 'fund', agentId, tasks: n });
  await child.call({ type: 'loops-start', dispatch: true, settle: false });
  const wait = await child.call<WaitResult>({ type: 'wait', agentId, expected: n, until: 'finished', timeoutMs: 60_000 + n * 200 });
  await child.call({ type: 'loops-stop' });
  const rows = await child.call<TaskReport[]>({ type: 'report', agentId });
  return { funding, wait, rows };
}

export interface DispatchFigures {
  rate: number;
  /** Tasks the dispatchers claimed per non-empty claim. */
  meanClaimBatch: number;
  /** The dispatch row (funded→completed) and its claimed→completed line. */
  rows: Row[];
}

/** The measured dispatch of the run's N tasks to `agentId`: checked, printed, and its table rows. */
export async function measureDispatch(run: BenchRun, child: Child, label: string, where: string, agentId: string): Promise<DispatchFigures> {
  const { s, agent, problems } = run;
  const main = await dispatchRun(child, agentId, s.tasks);
  checkWait(where, main.wait, s.tasks, problems);
  checkTasks(where, main.rows, s.tasks, agent, problems, false);
  const lastFinish = Math.max(...main.rows.map((r) => r.finishedAt ?? 0));
  const seconds = (lastFinish - main.wait.startedAt) / 1000;
  const rate = s.tasks / seconds;
  const fundedToDone = main.rows.filter((r) => r.fundedAt && r.finishedAt).map((r) => r.finishedAt! - r.fundedAt!);
  const claimedToDone = main.rows.filter((r) => r.startedAt && r.finishedAt).map((r) => r.finishedAt! - r.startedAt!);
  const st = main.wait.stats;
  const cpuPct = (main.wait.cpuMs / (main.wait.endedAt - main.wait.startedAt)) * 100;
  console.log(
    `  ${fmt(rate)} tasks/s (${fmt(seconds, 2)} s, app CPU ${fmt(cpuPct)} %); ` +
      `funding before it: ${fmt(s.tasks / main.funding.seconds)} markFunded/s sequential; ` +
      `${st.claimCalls} claim transactions, ${st.nonEmptyClaims} non-empty, ${fmt(st.claimed / Math.max(1, st.nonEmptyClaims), 2)} tasks per non-empty claim, ` +
      `claimed per dispatcher ${Array.from({ length: DISPATCHERS }, (_, i) => st.claimedBy[i] ?? 0).join(' / ')}`,
  );
  return {
    rate,
    meanClaimBatch: st.claimed / Math.max(1, st.nonEmptyClaims),
    rows: [
      {
        measure: `dispatch, ${DISPATCHERS}×${s.concurrency} slots, instant agent`,
        db: label,
        n: s.tasks,
        seconds,
        rate,
        latency: 'funded→completed',
        p50: percentile(fundedToDone, 50),
        p99: percentile(fundedToDone, 99),
        cpuPerItem: main.wait.cpuMs / s.tasks,
        cpuPct,
      },
      {
        measure: '  (same run)',
        db: label,
        n: s.tasks,
        seconds: NaN,
        rate: NaN,
        latency: 'claimed→completed',
        p50: percentile(claimedToDone, 50),
        p99: percentile(claimedToDone, 99),
        cpuPerItem: NaN,
        cpuPct: NaN,
      },
    ],
  };
}
