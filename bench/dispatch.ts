/**
 * What the dispatcher costs per task, against the bare `FOR UPDATE SKIP LOCKED` claim it is built
 * on, and what a whole paid hire costs end to end, on PGlite and on Postgres, in one run
 * (see bench/README.md):
 *
 *  1. raw claim (dispatch/raw-claim.ts): the dispatcher's claim statement (same WHERE / ORDER BY /
 *     FOR UPDATE SKIP LOCKED) plus the UPDATE that leases the rows, by 2 concurrent claimers over
 *     pre-inserted queued rows;
 *  2. dispatch (dispatch/dispatch-run.ts): N funded tasks (markFunded, x402 off), 2 dispatchers
 *     (`createDispatcher`) looping `runOnce()` against an instant webhook agent (dispatch/agent.ts)
 *     until every task is completed; then the settlement worker pays the N releases out on the
 *     embedded anvil (dispatch/settlement.ts, a separate figure); both in dispatch/unpaid.ts;
 *  3. paid (dispatch/paid.ts): create → fund (stock @x402/fetch client, x402 on, anvil) →
 *     dispatch → complete → release confirmed by the settlement worker.
 *
 *   npx tsx bench/dispatch.ts   (BENCH_TASKS, BENCH_PAID_TASKS, BENCH_CLAIM_ROWS, BENCH_CLAIM_REPEAT,
 *                                BENCH_WARMUP_TASKS, BENCH_DISPATCH_CONCURRENCY, BENCH_PAID_LANES,
 *                                BENCH_DB_POOL_MAX, DATABASE_URL; dispatch/settings.ts)
 *
 * The app, its database and the dispatchers run in a child process (this file with `--serve`,
 * dispatch/child.ts); the webhook agent, the paying clients and the orchestration run here.
 */
import { cpus } from 'node:os';
import { DEV_ROLES } from '../src/chain/constants.js';
import { startDevChain, type DevChain } from '../src/chain/dev/devchain.js';
import { InstantAgent } from './dispatch/agent.js';
import { Problems } from './dispatch/checks.js';
import { serve } from './dispatch/child.js';
import { pgliteTarget, postgresTarget, type DbTarget } from './dispatch/children.js';
import { benchPaid } from './dispatch/paid.js';
import { DISPATCHERS } from './dispatch/protocol.js';
import { printIncluded, printRatios, printTable, type DbResult, type Row } from './dispatch/report.js';
import { budgetSeconds, readSettings, type BenchRun } from './dispatch/settings.js';
import { benchUnpaid } from './dispatch/unpaid.js';
import { databases, killChildren, postgresAdmin, redactUrl, removeTempDir, runBench, startWatchdog, tempDirs } from './lib.js';

let chainToStop: DevChain | undefined;

function killAll(): void {
  killChildren();
  void chainToStop?.stop();
  for (const dir of [...tempDirs]) removeTempDir(dir);
  for (const db of databases) void db.drop().catch(() => undefined);
}

async function main(): Promise<void> {
  const s = readSettings();
  startWatchdog(budgetSeconds(s) * 1000, { kill: killAll, exitDelayMs: 2000, signals: ['SIGINT', 'SIGTERM'] });
  console.log(
    `bench: ${s.tasks} tasks (warm-up ${s.warmupTasks}), raw claim over ${s.claimRows} rows (${2 * s.claimRepeat} runs at k=1, ${8 * s.claimRepeat} at k=${s.concurrency}), ` +
      `${s.paidTasks} paid hires; ${DISPATCHERS} dispatchers × ${s.concurrency} slots; node ${process.version}, ${cpus().length} cpus; ` +
      `budget ${budgetSeconds(s)} s`,
  );
  const problems = new Problems();
  const agent = await new InstantAgent().start();
  const t0 = Date.now();
  const chain = await startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] });
  chainToStop = chain;
  console.log(`anvil ${chain.rpcUrl} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; agent ${agent.url}`);
  const run: BenchRun = { script: import.meta.url, s, chain, agent, problems };

  const admin = await postgresAdmin(s.pgUrl);
  try {
    const targets: DbTarget[] = [pgliteTarget];
    if (typeof admin === 'string') console.log(`postgres: skipped — ${admin}`);
    else {
      console.log(`postgres: throwaway databases on ${redactUrl(s.pgUrl)}`);
      targets.push(postgresTarget(admin.create));
    }
    const results: DbResult[] = [];
    const rows: Row[] = [];
    for (const target of targets) {
      const r = await benchUnpaid(run, target);
      const paid = await benchPaid(run, target);
      r.paid = paid.summary;
      results.push(r);
      rows.push(...r.rows, paid.row);
    }
    if (agent.badSignatures || agent.otherEvents) {
      problems.add('agent', `${agent.badSignatures} requests with a bad signature, ${agent.otherEvents} other events (cancellations?)`);
    }
    console.log('');
    printTable(rows);
    printRatios(results, s);
    printIncluded(s);
  } finally {
    if (typeof admin !== 'string') {
      for (const db of [...databases]) await db.drop().catch((err: unknown) => problems.add('cleanup', String(err)));
      await admin.end().catch(() => undefined);
    }
    await agent.stop();
    await chain.stop();
    chainToStop = undefined;
  }
  if (problems.list.length) {
    for (const p of problems.list) console.error(`WARNING ${p}`);
    console.error('figures are not valid');
    process.exitCode = 1;
  }
}

runBench(process.argv.includes('--serve') ? serve : undefined, main, killAll);
