/**
 * Spending limits with real money: the stock @x402/fetch client on anvil. A request over one of the
 * wallet's caps is answered `422 spending_limit_exceeded` after its payment is verified and before
 * it is settled, so the payer's on-chain balance does not move; no payment row is left behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkLedger } from '../../src/ledger/ledger.js';
import { payments, tasks } from '../../src/db/schema.js';
import { startPaidApp, type PaidApp } from '../helpers/paid.js';

let p: PaidApp;
let agentId: string;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (res: Response): Promise<any> => res.json();
const budget = (amount: string) => ({ amount, currency: 'USDC', chain: 'base' });

beforeAll(async () => {
  p = await startPaidApp();
  const res = await fetch(`${p.baseUrl}/v1/agents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(p.demo(5)) },
    body: JSON.stringify({ name: 'Capped', capabilities: ['capped'], pricing: { base_rate: '1000' }, payout_address: p.demo(5).address }),
  });
  expect(res.status, await res.clone().text()).toBe(201);
  agentId = (await json(res)).id;
}, 60_000);
afterAll(async () => {
  await p?.close();
});

const post = (fetcher: typeof fetch, path: string, body: unknown) =>
  fetcher(`${p.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const item = (amount: string) => ({ agent_id: agentId, description: `item of ${amount}`, budget: budget(amount) });

async function setLimits(account: ReturnType<PaidApp['demo']>, caps: Record<string, string | null>) {
  const res = await fetch(`${p.baseUrl}/v1/limits`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(account) },
    body: JSON.stringify(caps),
  });
  expect(res.status, await res.clone().text()).toBe(200);
  return json(res);
}

async function expectRefused(res: Response, cap: string) {
  const body = await json(res);
  expect(res.status, JSON.stringify(body)).toBe(422);
  expect(body.error.code).toBe('spending_limit_exceeded');
  expect(body.error.details.cap).toBe(cap);
  return body.error;
}

describe('spending limits against the stock x402 client', () => {
  it('refuses each cap before the payment settles: the payer’s balance is unchanged', async () => {
    const client = p.demo(2);
    const pay = p.payFetch(client);
    await setLimits(client, { max_per_task: '500000', max_per_batch: '1000000', max_per_day: '800000' });
    const createFee = p.config.PRICE_CREATE_TASK;
    const fundFee = p.config.PRICE_FUND_FEE;
    const batchFee = p.config.PRICE_BATCH_FEE;

    // max_per_task on creation: nothing paid, not even the creation price.
    let before = await p.balance(client.address);
    await expectRefused(await post(pay, '/v1/tasks', { agent_id: agentId, description: 'too dear', budget: budget('500001') }), 'max_per_task');
    expect(await p.balance(client.address)).toBe(before);

    // A task within the caps is created and funded: 400 000 of today's 800 000.
    const created = await json(await post(pay, '/v1/tasks', { agent_id: agentId, description: 'fits', budget: budget('400000') }));
    const funded = await post(pay, `/v1/tasks/${created.task_id}/fund`, { amount: '400000' });
    expect(funded.status, await funded.clone().text()).toBe(200);
    expect(await p.balance(client.address)).toBe(before - createFee - 400_000n - fundFee);

    // max_per_task on funding (amount above the budget) and max_per_day: the escrow stays where it is.
    const second = await json(await post(pay, '/v1/tasks', { agent_id: agentId, description: 'second', budget: budget('450000') }));
    before = await p.balance(client.address);
    await expectRefused(await post(pay, `/v1/tasks/${second.task_id}/fund`, { amount: '500001' }), 'max_per_task');
    const daily = await expectRefused(await post(pay, `/v1/tasks/${second.task_id}/fund`, { amount: '450000' }), 'max_per_day');
    expect(daily.details).toMatchObject({ limit: '800000', requested: '450000', remaining: '400000', spent_today: '400000' });
    expect(await p.balance(client.address)).toBe(before);

    // A batch: max_per_batch (escrows + fee), then max_per_day.
    await expectRefused(await post(pay, '/v1/batches', { items: [item('300000'), item('300000'), item('400000')] }), 'max_per_batch');
    await expectRefused(await post(pay, '/v1/batches', { items: [item('300000'), item('200000')] }), 'max_per_day');
    expect(await p.balance(client.address)).toBe(before);

    // Up to the daily cap exactly is served.
    const batch = await post(pay, '/v1/batches', { items: [item('400000')] });
    expect(batch.status, await batch.clone().text()).toBe(201);
    expect(await p.balance(client.address)).toBe(before - 400_000n - batchFee);
    const limits = await json(await fetch(`${p.baseUrl}/v1/limits`, { headers: { authorization: await p.signIn(client) } }));
    expect(limits).toMatchObject({ spent_today: '800000', remaining_today: '0' });

    // The refusals left no payment behind: only what was served is booked.
    const rows = await p.app.db.select().from(payments);
    expect(rows.every((r) => r.status === 'booked')).toBe(true);
    expect(rows.filter((r) => r.payerAddress === client.address.toLowerCase()).map((r) => r.purpose).sort()).toEqual([
      'create_batch',
      'create_task',
      'create_task',
      'fund_task',
    ]);
  });

  it('concurrent fundings cannot together pass the daily cap; a loser after settlement is refunded in full', async () => {
    const client = p.demo(3);
    const pay = p.payFetch(client);
    await setLimits(client, { max_per_task: null, max_per_batch: null, max_per_day: '500000' });
    const ids: string[] = [];
    for (const n of [1, 2, 3]) ids.push((await json(await post(pay, '/v1/tasks', { agent_id: agentId, description: `race ${n}`, budget: budget('300000') }))).task_id);
    const before = await p.balance(client.address);
    const results = await Promise.all(ids.map((id) => post(pay, `/v1/tasks/${id}/fund`, { amount: '300000' })));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 422, 422]);
    for (const r of results.filter((x) => x.status === 422)) expect((await json(r)).error.code).toBe('spending_limit_exceeded');
    await p.settleAll(); // refunds of any loser refused after its settlement
    expect(await p.balance(client.address)).toBe(before - 300_000n - p.config.PRICE_FUND_FEE);
    const fundedRows = (await p.app.db.select().from(tasks)).filter((t) => ids.includes(t.id) && t.fundedAmount !== null);
    expect(fundedRows).toHaveLength(1);
    // One funding booked; a loser is either forgotten (refused at its check) or refunded (refused in its transaction).
    const rows = (await p.app.db.select().from(payments)).filter((r) => r.purpose === 'fund_task' && r.payerAddress === client.address.toLowerCase());
    expect(rows.filter((r) => r.status === 'booked')).toHaveLength(1);
    expect(rows.every((r) => r.status === 'booked' || r.status === 'refunded')).toBe(true);
  });

  it('keeps the books', async () => {
    expect(await checkLedger(p.app.db)).toMatchObject({ ok: true, total: 0n, unbalancedMovements: [] });
  });
});
