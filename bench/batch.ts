/**
 * One batch against single hires, paid with x402 on a real anvil, on PGlite and on Postgres in one
 * run (see bench/README.md, `batch.ts`):
 *
 *  (a) single: N hires spread over A instant webhook agents, each a paid `POST /v1/tasks` then a
 *      paid `POST /v1/tasks/{id}/fund` with the stock @x402/fetch client, from L lanes at once;
 *  (b) batch: one `POST /v1/batches` of the same N items over the same A agents, paid with ONE
 *      payment (escrows + PRICE_BATCH_FEE), max_concurrency M.
 *
 * Each: tasks/s from the first request until every task is completed and until every release is
 * confirmed on chain, the client's x402 payments and their settlement transactions, the USDC it
 * paid; then batch ÷ single. After each part the ledger must balance (checkLedger), the payers'
 * on-chain spend must equal what the service booked from them, and every agent's payout wallet
 * must hold its confirmed releases.
 *
 *   npx tsx bench/batch.ts [--quick] [--pglite-only]     (or: npm run bench:batch -- --quick)
 *
 * The app, its database, two dispatchers and the settlement worker run in a child process (this
 * file with `--serve`: bench/dispatch's app child, batch/child.ts); agents and clients run here.
 */
import { cpus } from 'node:os';
import { wrapFetchWithPayment } from '@x402/fetch';
import type { Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../src/chain/dev/devchain.js';
import { ask, serve, type LedgerResult, type PaidBy } from './batch/child.js';
import { InstantAgent } from './dispatch/agent.js';
import { checkPayout, checkTasks, checkWait, checkWarnings, Problems } from './dispatch/checks.js';
import { pgliteTarget, withChild, type Child, type DbTarget } from './dispatch/children.js';
import { BUDGET, type TaskReport, type WaitResult } from './dispatch/protocol.js';
import {
  createThrowawayDb,
  DEFAULT_PG_URL,
  databases,
  fmt,
  freshAddress,
  killChildren,
  positiveInt,
  printTable,
  removeTempDir,
  runBench,
  startWatchdog,
  tempDirs,
  x402ClientFor,
} from './lib.js';

const quick = process.argv.includes('--quick');
const S = {
  tasks: positiveInt('BENCH_BATCH_TASKS', quick ? 20 : 100, 100),
  agents: positiveInt('BENCH_BATCH_AGENTS', 10, 100),
  lanes: positiveInt('BENCH_BATCH_LANES', 8, 64),
  maxConcurrency: positiveInt('BENCH_BATCH_MAX_CONCURRENCY', 100, 100),
  dispatchConcurrency: positiveInt('BENCH_DISPATCH_CONCURRENCY', 16, 1000),
  poolMax: positiveInt('BENCH_DB_POOL_MAX', 10, 200),
  pgUrl: process.env.DATABASE_URL || DEFAULT_PG_URL,
};
/** USDC minted to each fresh paying wallet. */
const MINT = 1_000_000_000n;
const budgetSeconds = 600 + 8 * S.tasks;

interface Ctx {
  db: string;
  chain: DevChain;
  child: Child;
  agents: { id: string; server: InstantAgent; payout: Address }[];
  /** Tasks handed to each agent so far (the wait counts them all). */
  expected: Map<string, number>;
  problems: Problems;
}

interface Part {
  db: string;
  part: string;
  n: number;
  payments: number;
  txs: number;
  paid: bigint;
  /** Seconds from the first request to: the last payment answered, every task completed, every release confirmed. */
  paidS: number;
  completedS: number;
  releasedS: number;
  cpuMs: number;
}

const usdc = (atomic: bigint) => fmt(Number(atomic) / 1e6, 3);

/** `fetch` paying with `account` (stock @x402/fetch client, spend cap lifted: a batch pays N escrows at once). */
function payFetch(account: PrivateKeyAccount): typeof fetch {
  const client = x402ClientFor(account);
  client.setSpendControls({ maxAmountPerPayment: false });
  return wrapFetchWithPayment(fetch, client);
}

async function freshPayers(chain: DevChain, n: number): Promise<PrivateKeyAccount[]> {
  const accounts = Array.from({ length: n }, () => privateKeyToAccount(generatePrivateKey()));
  for (const a of accounts) await mintUsdc(chain, a.address, MINT);
  return accounts;
}

async function post(pay: typeof fetch, url: string, body: unknown, expected: number): Promise<Record<string, unknown>> {
  const res = await pay(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  if (res.status !== expected) throw new Error(`POST ${new URL(url).pathname}: ${res.status} ${text.slice(0, 400)}`);
  return JSON.parse(text) as Record<string, unknown>;
}

const budget = { amount: BUDGET.toString(), currency: 'USDC', chain: 'base' };

/** (a) `n` single hires over `lanes` fresh wallets, task i to agent i mod A: paid create, then paid fund. */
async function singles(ctx: Ctx, n: number, lanes: number) {
  const payers = await freshPayers(ctx.chain, Math.min(lanes, n));
  const tasks: { taskId: string; agentId: string }[] = [];
  let next = 0;
  const t0 = Date.now();
  await Promise.all(
    payers.map(async (payer) => {
      const pay = payFetch(payer);
      while (next < n) {
        const agentId = ctx.agents[next++ % ctx.agents.length]!.id;
        const created = await post(pay, `${ctx.child.base}/v1/tasks`, { agent_id: agentId, description: 'Write a blurb', budget }, 201);
        const taskId = String(created.task_id);
        await post(pay, `${ctx.child.base}/v1/tasks/${taskId}/fund`, { amount: BUDGET.toString() }, 200);
        tasks.push({ taskId, agentId });
      }
    }),
  );
  return { t0, paidAt: Date.now(), payers, tasks };
}

/** (b) one batch of `n` items, item i to agent i mod A, paid with one payment from one fresh wallet. */
async function batch(ctx: Ctx, n: number) {
  const payers = await freshPayers(ctx.chain, 1);
  const items = Array.from({ length: n }, (_, i) => ({ agent_id: ctx.agents[i % ctx.agents.length]!.id, description: `Write blurb ${i}`, budget }));
  const t0 = Date.now();
  const view = await post(payFetch(payers[0]!), `${ctx.child.base}/v1/batches`, { items, max_concurrency: Math.min(S.maxConcurrency, n) }, 201);
  const paidAt = Date.now();
  const tasks = (view.items as { task_id: string }[]).map((it, i) => ({ taskId: it.task_id, agentId: items[i]!.agent_id }));
  return { t0, paidAt, payers, tasks, declared: BigInt(String((view.totals as { paid: string }).paid)) };
}

/** Waits for every release of the part, checks tasks, payouts, ledger and money; the part's figures. */
async function finish(
  ctx: Ctx,
  part: string,
  run: { t0: number; paidAt: number; payers: PrivateKeyAccount[]; tasks: { taskId: string; agentId: string }[]; declared?: bigint },
  cpuBefore: number,
): Promise<Part> {
  const where = `${ctx.db} ${part}`;
  const { child, problems } = ctx;
  const rows: TaskReport[] = [];
  for (const a of ctx.agents) {
    const mine = new Set(run.tasks.filter((t) => t.agentId === a.id).map((t) => t.taskId));
    const expected = (ctx.expected.get(a.id) ?? 0) + mine.size;
    ctx.expected.set(a.id, expected);
    const wait = await child.call<WaitResult>({ type: 'wait', agentId: a.id, expected, until: 'released', timeoutMs: 60_000 + 2000 * mine.size });
    checkWait(`${where} ${a.id}`, wait, expected, problems);
    const all = await child.call<TaskReport[]>({ type: 'report', agentId: a.id });
    const ours = all.filter((r) => mine.has(r.id));
    checkTasks(`${where} ${a.id}`, ours, mine.size, a.server, problems, true);
    await checkPayout(`${where} ${a.id}`, ctx.chain, a.payout, all, problems);
    rows.push(...ours);
  }
  const cpuMs = (await child.call<number>({ type: 'cpu' })) - cpuBefore;
  const ledger = await ask<LedgerResult>(child, { type: 'ledger' });
  if (!ledger.ok) problems.add(where, `ledger does not balance: total ${ledger.total}, ${ledger.unbalanced} unbalanced movements`);
  // The money: what left the payers' wallets on chain = what the service booked from them.
  const byStatus = await ask<PaidBy[]>(child, { type: 'paid-by', payers: run.payers.map((p) => p.address) });
  const booked = byStatus.find((p) => p.status === 'booked') ?? { n: 0, amount: '0', txs: 0 };
  const other = byStatus.filter((p) => p.status !== 'booked');
  if (other.length) problems.add(where, `payments not booked: ${JSON.stringify(other)}`);
  let spent = 0n;
  for (const p of run.payers) spent += MINT - (await usdcBalance(ctx.chain.rpcUrl, p.address));
  if (spent !== BigInt(booked.amount)) problems.add(where, `payers spent ${spent} on chain, the service booked ${booked.amount}`);
  if (run.declared !== undefined && run.declared !== spent) problems.add(where, `the batch says it was paid ${run.declared}, the payer spent ${spent}`);
  const maxOf = (f: (r: TaskReport) => number | null) => Math.max(...rows.map((r) => f(r) ?? Number.NaN));
  return {
    db: ctx.db,
    part,
    n: run.tasks.length,
    payments: booked.n,
    txs: booked.txs,
    paid: spent,
    paidS: (run.paidAt - run.t0) / 1000,
    completedS: (maxOf((r) => r.finishedAt) - run.t0) / 1000,
    releasedS: (maxOf((r) => r.releaseConfirmedAt) - run.t0) / 1000,
    cpuMs,
  };
}

async function benchDb(chain: DevChain, target: DbTarget, problems: Problems): Promise<Part[]> {
  const env = { BENCH_RPC_URL: chain.rpcUrl, BENCH_X402: 'true', BENCH_DISPATCH_CONCURRENCY: String(S.dispatchConcurrency), BENCH_DB_POOL_MAX: String(S.poolMax) };
  return withChild(import.meta.url, target, env, async (child) => {
    const agents: Ctx['agents'] = [];
    for (let i = 0; i < S.agents; i++) {
      const server = await new InstantAgent().start();
      const payout = freshAddress();
      agents.push({ id: await server.register(child, `Instant agent ${i}`, payout), server, payout });
    }
    const ctx: Ctx = { db: target.label, chain, child, agents, expected: new Map(), problems };
    try {
      await child.call({ type: 'loops-start', dispatch: true, settle: true });
      console.log(`${target.label}: warm-up (${S.lanes} single hires, a batch of ${S.agents})`);
      await finish(ctx, 'warm-up single', await singles(ctx, S.lanes, S.lanes), 0);
      await finish(ctx, 'warm-up batch', await batch(ctx, S.agents), 0);
      const parts: Part[] = [];
      console.log(`${target.label}: (a) ${S.tasks} single hires over ${S.lanes} lanes`);
      let cpu = await child.call<number>({ type: 'cpu' });
      parts.push(await finish(ctx, 'single', await singles(ctx, S.tasks, S.lanes), cpu));
      console.log(`${target.label}: (b) one batch of ${S.tasks} items, max_concurrency ${Math.min(S.maxConcurrency, S.tasks)}`);
      cpu = await child.call<number>({ type: 'cpu' });
      parts.push(await finish(ctx, 'batch', await batch(ctx, S.tasks), cpu));
      await child.call({ type: 'loops-stop' });
      await checkWarnings(target.label, child, problems);
      for (const a of agents) {
        if (a.server.badSignatures || a.server.otherEvents) problems.add(target.label, `agent: ${a.server.badSignatures} bad signatures, ${a.server.otherEvents} other events`);
      }
      return parts;
    } finally {
      for (const a of agents) await a.server.stop();
    }
  });
}

let chainToStop: DevChain | undefined;

function killAll(): void {
  killChildren();
  void chainToStop?.stop();
  for (const dir of [...tempDirs]) removeTempDir(dir);
  for (const db of databases) void db.drop().catch(() => undefined);
}

async function main(): Promise<void> {
  startWatchdog(budgetSeconds * 1000, { kill: killAll, exitDelayMs: 2000, signals: ['SIGINT', 'SIGTERM'] });
  console.log(
    `bench:batch: ${S.tasks} tasks over ${S.agents} instant agents; single: ${S.lanes} lanes; batch: max_concurrency ${Math.min(S.maxConcurrency, S.tasks)}; ` +
      `2 dispatchers × ${S.dispatchConcurrency} slots; node ${process.version}, ${cpus().length} cpus; budget ${budgetSeconds} s`,
  );
  const problems = new Problems();
  const chain = await startDevChain({ silent: true, fundAccounts: 0 });
  chainToStop = chain;
  const targets: DbTarget[] = [pgliteTarget];
  if (process.argv.includes('--pglite-only')) console.log('postgres: skipped (--pglite-only)');
  else {
    const probe = await createThrowawayDb(S.pgUrl);
    if (typeof probe === 'string') console.log(`postgres: skipped — ${probe}`);
    else {
      await probe.drop();
      targets.push({
        label: 'Postgres',
        env: async () => {
          const db = await createThrowawayDb(S.pgUrl);
          if (typeof db === 'string') throw new Error(db);
          return { env: { BENCH_DB_URL: db.url, BENCH_DATA_DIR: '' }, cleanup: () => db.drop() };
        },
      });
    }
  }
  const parts: Part[] = [];
  try {
    for (const target of targets) parts.push(...(await benchDb(chain, target, problems)));
  } finally {
    await chain.stop();
    chainToStop = undefined;
  }

  console.log('');
  printTable(
    ['db', 'part', 'tasks', 'x402 payments', 'settlement txs', 'USDC paid', 'all paid s', 'completed s', 'tasks/s completed', 'released s', 'tasks/s released', 'app CPU ms/task'],
    parts.map((p) => [
      p.db,
      p.part,
      String(p.n),
      String(p.payments),
      String(p.txs),
      usdc(p.paid),
      fmt(p.paidS, 2),
      fmt(p.completedS, 2),
      fmt(p.n / p.completedS, 1),
      fmt(p.releasedS, 2),
      fmt(p.n / p.releasedS, 1),
      fmt(p.cpuMs / p.n, 1),
    ]),
    new Set([0, 1]),
  );
  console.log('');
  const ratio = (a: number, b: number) => `${fmt(a / b, a / b < 0.1 ? 3 : 2)}×`;
  const ratios = targets.flatMap((t) => {
    const s = parts.find((p) => p.db === t.label && p.part === 'single');
    const b = parts.find((p) => p.db === t.label && p.part === 'batch');
    if (!s || !b) return [];
    return [[t.label, ratio(b.n / b.completedS, s.n / s.completedS), ratio(b.n / b.releasedS, s.n / s.releasedS), ratio(b.payments, s.payments), ratio(Number(b.paid), Number(s.paid)), ratio(b.cpuMs, s.cpuMs)]];
  });
  printTable(['batch ÷ single', 'tasks/s completed', 'tasks/s released', 'x402 payments', 'USDC paid', 'app CPU'], ratios);
  if (problems.list.length) {
    for (const p of problems.list) console.error(`WARNING ${p}`);
    console.error('figures are not valid');
    process.exitCode = 1;
  }
}

runBench(process.argv.includes('--serve') ? serve : undefined, main, killAll);
