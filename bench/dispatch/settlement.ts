/**
 * Part 2, the settlement: the releases the dispatch left pending, paid out on anvil by one
 * settlement worker (`app.escrow.createWorker`) looping `runOnce()` in the child (automine,
 * 1 confirmation). Rate = N / (last release confirmed_at − the loop's start).
 */
import type { Address } from 'viem';
import { fmt } from '../lib.js';
import { checkPayout, checkTasks, checkWait } from './checks.js';
import type { Child } from './children.js';
import type { TaskReport, WaitResult } from './protocol.js';
import type { Row } from './report.js';
import type { BenchRun } from './settings.js';

/** The settlement worker's loop until every one of the agent's `n` tasks has a final transfer. */
export async function settleRun(child: Child, agentId: string, n: number) {
  await child.call({ type: 'loops-start', dispatch: false, settle: true });
  const wait = await child.call<WaitResult>({ type: 'wait', agentId, expected: n, until: 'released', timeoutMs: 60_000 + n * 500 });
  await child.call({ type: 'loops-stop' });
  const rows = await child.call<TaskReport[]>({ type: 'report', agentId });
  return { wait, rows };
}

/**
 * The measured settlement of the run's N releases to `agentId` (paying out to `payout`): every
 * release confirmed and the payout wallet holding them on chain; printed, and its table row.
 */
export async function measureSettlement(
  run: BenchRun,
  child: Child,
  label: string,
  where: string,
  agentId: string,
  payout: Address,
): Promise<{ rate: number; row: Row }> {
  const { s, chain, agent, problems } = run;
  const settle = await settleRun(child, agentId, s.tasks);
  checkWait(`${where} settlement`, settle.wait, s.tasks, problems);
  checkTasks(`${where} settlement`, settle.rows, s.tasks, agent, problems, true);
  await checkPayout(`${where} settlement`, chain, payout, settle.rows, problems);
  const lastConfirm = Math.max(...settle.rows.map((r) => r.releaseConfirmedAt ?? 0));
  const seconds = (lastConfirm - settle.wait.startedAt) / 1000;
  const rate = s.tasks / seconds;
  console.log(`  ${fmt(rate)} releases/s (${fmt(seconds, 2)} s)`);
  return {
    rate,
    row: {
      measure: 'settlement of those releases, 1 worker',
      db: label,
      n: s.tasks,
      seconds,
      rate,
      // The releases waited for this worker since the dispatch (raw-claim rounds ran in between): no latency.
      latency: '',
      p50: NaN,
      p99: NaN,
      cpuPerItem: settle.wait.cpuMs / s.tasks,
      cpuPct: (settle.wait.cpuMs / (settle.wait.endedAt - settle.wait.startedAt)) * 100,
    },
  };
}
