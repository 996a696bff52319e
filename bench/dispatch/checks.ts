/**
 * Parent side: what makes a run invalid. Every problem is printed when found and again at the
 * end; a run with any exits 1.
 */
import type { Address } from 'viem';
import { usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import type { InstantAgent } from './agent.js';
import type { Child } from './children.js';
import type { TaskReport, WaitResult } from './protocol.js';

export class Problems {
  readonly list: string[] = [];
  add(where: string, what: string): void {
    this.list.push(`${where}: ${what}`);
    console.error(`  WARNING ${where}: ${what}`);
  }
}

/**
 * Every task of the phase ended completed exactly once (one `completed` event, first attempt,
 * no dispatch error) and the agent saw each id exactly once; with `released`, every release is
 * confirmed on chain, without it every completed task has its release planned.
 */
export function checkTasks(where: string, rows: TaskReport[], expected: number, agent: InstantAgent, problems: Problems, released: boolean): void {
  if (rows.length !== expected) problems.add(where, `${rows.length} tasks in the database, expected ${expected}`);
  const bad = rows.filter((r) => r.status !== 'completed' || r.completedEvents !== 1 || r.attempts !== 1 || r.lastError !== null || r.finishedAt === null);
  if (bad.length) {
    const r = bad[0]!;
    problems.add(where, `${bad.length} tasks not completed exactly once on the first attempt (e.g. ${r.id}: ${r.status}, ${r.completedEvents} completed events, attempt ${r.attempts}, error ${r.lastError ?? 'none'})`);
  }
  const seen = rows.map((r) => agent.assigned.get(r.id) ?? 0);
  const notOnce = seen.filter((n) => n !== 1).length;
  if (notOnce) problems.add(where, `${notOnce} tasks not seen exactly once by the agent (${seen.filter((n) => n === 0).length} never, ${seen.filter((n) => n > 1).length} more than once)`);
  if (released) {
    const unpaid = rows.filter((r) => r.releaseStatus !== 'confirmed' || r.releaseConfirmedAt === null);
    if (unpaid.length) problems.add(where, `${unpaid.length} releases not confirmed (e.g. ${unpaid[0]!.releaseStatus ?? 'none'})`);
  } else {
    const missing = rows.filter((r) => r.releaseStatus === null);
    if (missing.length) problems.add(where, `${missing.length} completed tasks have no release planned`);
  }
}

/** The wait ended with everything done, and no loop threw. */
export function checkWait(where: string, w: WaitResult, expected: number, problems: Problems): void {
  if (w.timedOut) problems.add(where, `timed out with ${w.done}/${expected} done`);
  for (const e of w.stats.errors.slice(0, 5)) problems.add(where, e);
}

/** The payout wallet holds on chain exactly the releases confirmed to it. */
export async function checkPayout(where: string, chain: DevChain, payout: Address, rows: TaskReport[], problems: Problems): Promise<void> {
  const booked = rows.reduce((sum, r) => sum + (r.releaseStatus === 'confirmed' ? BigInt(r.releaseAmount ?? '0') : 0n), 0n);
  const onChain = await usdcBalance(chain.rpcUrl, payout);
  if (onChain !== booked) problems.add(where, `payout wallet holds ${onChain} on chain, releases confirmed ${booked}`);
}

/** The app logged no warning or error. */
export async function checkWarnings(where: string, child: Child, problems: Problems): Promise<void> {
  const warnings = await child.call<string[]>({ type: 'warnings' });
  if (warnings.length) problems.add(where, `${warnings.length} warn/error log lines, first: ${warnings.slice(0, 3).join(' | ')}`);
}
