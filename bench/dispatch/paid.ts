/**
 * Part 3, the paid hire end to end, on one database: an app child with x402 on (in-process
 * facilitator settling on anvil), two dispatchers and one settlement worker looping all along;
 * paying wallets with the stock @x402/fetch client, each hire a paid create and a paid fund, then
 * dispatched, completed and its release confirmed. Rate = M / (last release confirmed_at − first
 * create request).
 */
import { wrapFetchWithPayment } from '@x402/fetch';
import type { PrivateKeyAccount } from 'viem/accounts';
import { demo, fmt, freshAddress, x402ClientFor } from '../lib.js';
import { checkPayout, checkTasks, checkWait, checkWarnings } from './checks.js';
import { withChild, type Child, type DbTarget } from './children.js';
import { BUDGET, type TaskReport, type WaitResult } from './protocol.js';
import { mean, percentile, type PaidSummary, type Row } from './report.js';
import { childEnv, type BenchRun } from './settings.js';

/** `fetch` paying with `account` (stock @x402/fetch client, spend cap lifted). */
function payFetch(account: PrivateKeyAccount): typeof fetch {
  const client = x402ClientFor(account);
  client.setSpendControls({ maxAmountPerPayment: false });
  return wrapFetchWithPayment(fetch, client);
}

interface ClientTiming {
  taskId: string;
  createStart: number;
  createMs: number;
  fundMs: number;
}

/** `count` hires over `lanes` concurrent paying wallets: paid create, then paid fund. */
async function hire(base: string, agentId: string, count: number, lanes: number, failures: string[]): Promise<ClientTiming[]> {
  const timings: ClientTiming[] = [];
  let next = 0;
  const body = JSON.stringify({ agent_id: agentId, description: 'Write a blurb', budget: { amount: BUDGET.toString(), currency: 'USDC', chain: 'base' } });
  await Promise.all(
    Array.from({ length: Math.min(lanes, count) }, async (_, lane) => {
      const pay = payFetch(demo(lane));
      while (next < count) {
        next++;
        const createStart = Date.now();
        const created = await pay(`${base}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        const createdText = await created.text();
        const createEnd = Date.now();
        if (created.status !== 201) {
          failures.push(`create ${created.status}: ${createdText.slice(0, 300)}`);
          continue;
        }
        const taskId = String((JSON.parse(createdText) as { task_id: string }).task_id);
        const funded = await pay(`${base}/v1/tasks/${taskId}/fund`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ amount: BUDGET.toString() }),
        });
        const fundedText = await funded.text();
        if (funded.status !== 200) {
          failures.push(`fund ${funded.status}: ${fundedText.slice(0, 300)}`);
          continue;
        }
        timings.push({ taskId, createStart, createMs: createEnd - createStart, fundMs: Date.now() - createEnd });
      }
    }),
  );
  return timings;
}

/** `count` hires, then the wait until every release is final; every request answered, every task completed once and released. */
async function paidRun(run: BenchRun, child: Child, agentId: string, count: number, lanes: number, where: string) {
  const { agent, problems } = run;
  const failures: string[] = [];
  const timings = await hire(child.base, agentId, count, lanes, failures);
  for (const f of failures.slice(0, 5)) problems.add(where, f);
  if (failures.length) problems.add(where, `${failures.length} paid requests failed`);
  const wait = await child.call<WaitResult>({ type: 'wait', agentId, expected: count, until: 'released', timeoutMs: 60_000 + count * 2000 });
  checkWait(where, wait, count, problems);
  const rows = await child.call<TaskReport[]>({ type: 'report', agentId });
  checkTasks(where, rows, count, agent, problems, true);
  return { timings, rows };
}

/** Exactly one booked call fee (create) and one booked escrow funding per hire, nothing left claimed. */
async function checkPayments(run: BenchRun, child: Child, hires: number, where: string): Promise<void> {
  const paymentsByKind = await child.call<Record<string, number>>({ type: 'payments' });
  if ((paymentsByKind['call_fee:booked'] ?? 0) !== hires || (paymentsByKind['escrow_funding:booked'] ?? 0) !== hires) {
    run.problems.add(where, `payments ${JSON.stringify(paymentsByKind)}, expected ${hires} settled call fees (create) and ${hires} settled escrow fundings`);
  }
  if (Object.keys(paymentsByKind).some((k) => k.endsWith(':claimed'))) run.problems.add(where, `payments left claimed: ${JSON.stringify(paymentsByKind)}`);
}

/** Part 3 on one database: the whole hire, paid with the stock @x402/fetch client. */
export async function benchPaid(run: BenchRun, target: DbTarget): Promise<{ row: Row; summary: PaidSummary }> {
  const { s, chain, agent, problems } = run;
  const where = `${target.label} paid`;
  return withChild(run.script, target, childEnv(run, true), async (child) => {
    const lanes = Math.min(s.paidLanes, s.paidTasks);
    await child.call({ type: 'loops-start', dispatch: true, settle: true });

    console.log(`${target.label}: paid warm-up (${lanes} hires)`);
    const warmPayout = freshAddress();
    const warmAgent = await agent.register(child, 'Paid warm-up agent', warmPayout);
    const warm = await paidRun(run, child, warmAgent, lanes, lanes, `${where} warm-up`);
    await checkPayout(`${where} warm-up`, chain, warmPayout, warm.rows, problems);

    console.log(`${target.label}: ${s.paidTasks} paid hires over ${lanes} wallets (create → fund → dispatch → complete → release confirmed)`);
    const payout = freshAddress();
    const mainAgent = await agent.register(child, 'Paid instant agent', payout);
    const cpuBefore = await child.call<number>({ type: 'cpu' });
    const main = await paidRun(run, child, mainAgent, s.paidTasks, lanes, where);
    const appCpuMs = (await child.call<number>({ type: 'cpu' })) - cpuBefore;
    await child.call({ type: 'loops-stop' });
    await checkPayout(where, chain, payout, main.rows, problems);
    await checkPayments(run, child, s.paidTasks + lanes, where);
    await checkWarnings(where, child, problems);

    const byId = new Map(main.rows.map((r) => [r.id, r]));
    const t0 = Math.min(...main.timings.map((t) => t.createStart));
    const lastConfirm = Math.max(...main.rows.map((r) => r.releaseConfirmedAt ?? 0));
    const seconds = (lastConfirm - t0) / 1000;
    const segments = main.timings.flatMap((t) => {
      const r = byId.get(t.taskId);
      if (!r?.fundedAt || !r.finishedAt || !r.releaseConfirmedAt) return [];
      return [{ payment: r.fundedAt - t.createStart, dispatch: r.finishedAt - r.fundedAt, settlement: r.releaseConfirmedAt - r.finishedAt, total: r.releaseConfirmedAt - t.createStart }];
    });
    const summary: PaidSummary = {
      rate: s.paidTasks / seconds,
      payment: mean(segments.map((x) => x.payment)),
      dispatch: mean(segments.map((x) => x.dispatch)),
      settlement: mean(segments.map((x) => x.settlement)),
      createMs: mean(main.timings.map((t) => t.createMs)),
      fundMs: mean(main.timings.map((t) => t.fundMs)),
    };
    console.log(`  ${fmt(summary.rate, 1)} hires/s end to end (${fmt(seconds, 2)} s)`);
    const totals = segments.map((x) => x.total);
    return {
      row: {
        measure: `paid hire end to end, ${lanes} wallets`,
        db: target.label,
        n: s.paidTasks,
        seconds,
        rate: summary.rate,
        latency: 'create→release confirmed',
        p50: percentile(totals, 50),
        p99: percentile(totals, 99),
        cpuPerItem: appCpuMs / s.paidTasks,
        cpuPct: (appCpuMs / (seconds * 1000)) * 100,
      },
      summary,
    };
  });
}
