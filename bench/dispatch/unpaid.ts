/**
 * Parts 1 and 2 on one database, in one app child with x402 off: raw claim, dispatch warm-up and
 * the settlement of its releases, the measured dispatch, raw claim again, the settlement of the
 * measured releases.
 */
import { mintUsdc } from '../../src/chain/dev/devchain.js';
import { resolveWallets } from '../../src/chain/wallets.js';
import { loadConfig } from '../../src/config.js';
import { freshAddress } from '../lib.js';
import { checkPayout, checkTasks, checkWait, checkWarnings } from './checks.js';
import { withChild, type Child, type DbTarget } from './children.js';
import { dispatchRun, measureDispatch } from './dispatch-run.js';
import { BUDGET, CLAIMERS, DISPATCHERS } from './protocol.js';
import { rawRound, rawRow } from './raw-claim.js';
import type { DbResult } from './report.js';
import { childEnv, type BenchRun } from './settings.js';
import { measureSettlement, settleRun } from './settlement.js';

/** Warm-up tasks dispatched, then their releases settled (checked, not measured). */
async function warmUp(run: BenchRun, child: Child, where: string): Promise<void> {
  const { s, chain, agent, problems } = run;
  const warmPayout = freshAddress();
  const warmAgent = await run.agent.register(child, 'Warm-up agent', warmPayout);
  const warm = await dispatchRun(child, warmAgent, s.warmupTasks);
  checkWait(`${where} warm-up`, warm.wait, s.warmupTasks, problems);
  checkTasks(`${where} warm-up`, warm.rows, s.warmupTasks, agent, problems, false);
  // The settlement worker pays every pending transfer it finds: warm it up on these releases now,
  // before the measured dispatch leaves its own.
  const warmSettle = await settleRun(child, warmAgent, s.warmupTasks);
  checkWait(`${where} settlement warm-up`, warmSettle.wait, s.warmupTasks, problems);
  checkTasks(`${where} settlement warm-up`, warmSettle.rows, s.warmupTasks, agent, problems, true);
  await checkPayout(`${where} settlement warm-up`, chain, warmPayout, warmSettle.rows, problems);
}

export async function benchUnpaid(run: BenchRun, target: DbTarget): Promise<DbResult> {
  const { s, chain, problems } = run;
  const label = target.label;
  const where = `${label} dispatch`;
  // The releases of part 2 are paid from the escrow wallet: give it what markFunded booked (no x402 here).
  await mintUsdc(chain, resolveWallets(loadConfig({})).escrowAddress, BigInt(s.tasks + s.warmupTasks) * BUDGET);
  return withChild(run.script, target, childEnv(run, false), async (child) => {
    const rawAgent = await run.agent.register(child, 'Raw claim rows', freshAddress());
    const batch = s.concurrency;
    const raw = async () => [
      await rawRound(child, rawAgent, s.claimRows, 1, s.claimRepeat, where, problems),
      await rawRound(child, rawAgent, s.claimRows, batch, s.claimRepeat * 4, where, problems),
    ];

    console.log(`${label}: raw claim over ${s.claimRows} queued rows (warm-up, then measured), ${CLAIMERS} claimers`);
    await rawRound(child, rawAgent, s.claimRows, 1, 1, where, problems);
    const before = await raw();

    console.log(`${label}: dispatch warm-up (${s.warmupTasks} tasks), and the settlement of their releases`);
    await warmUp(run, child, where);

    console.log(`${label}: dispatch of ${s.tasks} funded tasks, ${DISPATCHERS} dispatchers × ${s.concurrency} slots`);
    const payout = freshAddress();
    const mainAgent = await run.agent.register(child, 'Instant agent', payout);
    const dispatch = await measureDispatch(run, child, label, where, mainAgent);

    console.log(`${label}: raw claim again (after the dispatch)`);
    const after = await raw();

    console.log(`${label}: settlement of the releases on anvil (1 worker)`);
    const settle = await measureSettlement(run, child, label, where, mainAgent, payout);
    await checkWarnings(where, child, problems);

    const rows = [rawRow(1, label, [before[0]!, after[0]!]), rawRow(batch, label, [before[1]!, after[1]!]), ...dispatch.rows, settle.row];
    return {
      label,
      rawK1: rows[0]!.rate,
      rawKb: rows[1]!.rate,
      rawK1Sides: [before[0]!, after[0]!].map((r) => r.rows / r.seconds),
      rawKbSides: [before[1]!, after[1]!].map((r) => r.rows / r.seconds),
      dispatchRate: dispatch.rate,
      meanClaimBatch: dispatch.meanClaimBatch,
      settleRate: settle.rate,
      rows,
    };
  });
}
