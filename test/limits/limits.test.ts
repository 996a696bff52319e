/**
 * Spending limits (src/limits): a wallet sets its own caps with a SIWE-signed PUT, reads them back,
 * and every paid write that would break one is refused with `spending_limit_exceeded` naming the
 * cap, before anything is created or funded. x402 is off here (the wallet signs instead of paying);
 * limits-payment.test.ts shows the same refusals with the stock x402 client on anvil, money unmoved.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { withTransaction } from '../../src/db/client.js';
import { batches, spendingLimits, tasks } from '../../src/db/schema.js';
import { fundingWrite } from '../../src/escrow/funding.js';
import { breachOf, fundingSpend, utcDay } from '../../src/limits/rules.js';
import { LimitsView, PutLimitsBody } from '../../src/limits/schemas.js';
import { runUnpaid } from '../../src/payments/paid-write.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, createTask, expectError, registerAgent, rowCount } from '../helpers/fixtures.js';

const owner = wallet(1);
const payer = wallet(3);
const stranger = wallet(4);
let t: TestApp;
let agentId: string;

beforeAll(async () => {
  t = await buildTestApp();
  agentId = (await registerAgent(t, owner, { pricing: { base_rate: '1000' } })).id;
});
afterAll(() => t.close());

const put = async (body: unknown, headers: Record<string, string> = {}) => {
  const res = await t.app.inject({ method: 'PUT', url: '/v1/limits', headers, payload: body as object });
  return { status: res.statusCode, body: res.json() };
};
const putSigned = async (who: typeof payer, body: unknown) => put(body, await t.auth(who));
const budget = (amount: string) => ({ amount, currency: 'USDC', chain: 'base' });
const item = (amount: string, extra: Record<string, unknown> = {}) => ({ agent_id: agentId, description: `item of ${amount}`, budget: budget(amount), ...extra });
const NO_CAPS = { max_per_task: null, max_per_batch: null, max_per_day: null };

describe('setting and reading limits', () => {
  it('starts with no caps and today’s count', async () => {
    const res = await call(t, payer, 'GET', '/v1/limits');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      payer: payer.address,
      ...NO_CAPS,
      spent_today: '0',
      remaining_today: null,
      resets_at: '2026-11-22T00:00:00.000Z',
      updated_at: null,
    });
  });

  it('sets the caps with a wallet signature and reads them back', async () => {
    const res = await putSigned(payer, { max_per_task: '2000000', max_per_batch: '5000000', max_per_day: '9000000' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ payer: payer.address, max_per_task: '2000000', max_per_batch: '5000000', max_per_day: '9000000', remaining_today: '9000000' });
    expect(res.body.updated_at).toBe('2026-11-21T12:00:00.000Z');
    const read = await call(t, payer, 'GET', '/v1/limits');
    expect(read.body).toEqual(res.body);
    // PUT replaces: null removes a cap.
    const cleared = await putSigned(payer, { ...NO_CAPS, max_per_task: '3000000' });
    expect(cleared.body).toMatchObject({ max_per_task: '3000000', max_per_batch: null, max_per_day: null, remaining_today: null });
    await putSigned(payer, NO_CAPS);
  });

  it('needs a signature: none is 401, a session token is refused for PUT (not for GET)', async () => {
    expectError(await put(NO_CAPS), 401, 'authentication_required');
    expectError(await call(t, null, 'GET', '/v1/limits'), 401, 'authentication_required');
    const session = await t.app.inject({ method: 'POST', url: '/v1/auth/session', headers: await t.auth(payer) });
    expect(session.statusCode, session.body).toBe(201);
    const bearer = { authorization: `Bearer ${session.json().token}` };
    const refused = await put({ ...NO_CAPS, max_per_day: '1' }, bearer);
    expectError(refused, 401, 'authentication_required');
    expect(refused.body.error.message).toContain('fresh wallet signature');
    const read = await t.app.inject({ method: 'GET', url: '/v1/limits', headers: bearer });
    expect(read.statusCode).toBe(200);
    expect(read.json().max_per_day).toBeNull();
  });

  it('refuses malformed caps (all three stated, atomic integers)', async () => {
    expectError(await putSigned(payer, { max_per_task: '1000' }), 400, 'validation_error');
    expectError(await putSigned(payer, { ...NO_CAPS, max_per_day: '-1' }), 400, 'validation_error');
    expectError(await putSigned(payer, { ...NO_CAPS, max_per_day: 5 }), 400, 'validation_error');
    expectError(await putSigned(payer, { ...NO_CAPS, other: '1' }), 400, 'validation_error');
  });

  it('is per wallet: another wallet neither reads nor changes yours', async () => {
    await putSigned(payer, { max_per_task: '111', max_per_batch: null, max_per_day: null });
    const theirs = await call(t, stranger, 'GET', '/v1/limits');
    expect(theirs.body).toMatchObject({ payer: stranger.address, ...NO_CAPS, updated_at: null });
    // Their PUT sets their own caps only: there is no way to name another wallet.
    expect((await putSigned(stranger, { ...NO_CAPS, max_per_day: '0' })).status).toBe(200);
    expect((await call(t, payer, 'GET', '/v1/limits')).body).toMatchObject({ max_per_task: '111', max_per_day: null });
    expect((await call(t, stranger, 'GET', '/v1/limits')).body).toMatchObject({ max_per_task: null, max_per_day: '0' });
    const rows = await t.app.db.select().from(spendingLimits);
    expect(rows.map((r) => r.payerAddress).sort()).toEqual([payer.address.toLowerCase(), stranger.address.toLowerCase()].sort());
    await putSigned(payer, NO_CAPS);
    await putSigned(stranger, NO_CAPS);
  });

  it('documents examples that validate against their schemas', () => {
    for (const [schema, name] of [
      [PutLimitsBody, 'PutLimits'],
      [LimitsView, 'SpendingLimits'],
    ] as const) {
      const meta = schema.meta() as { id?: string; examples?: unknown[] };
      expect(meta.id).toBe(name);
      expect(meta.examples?.length).toBeGreaterThan(0);
      for (const example of meta.examples ?? []) expect(schema.safeParse(example).success, `${name} example`).toBe(true);
    }
  });
});

describe('each cap refuses before anything happens', () => {
  it('max_per_task: a task’s budget', async () => {
    await putSigned(payer, { ...NO_CAPS, max_per_task: '500000' });
    const before = await rowCount(t, tasks);
    const res = await call(t, payer, 'POST', '/v1/tasks', { agent_id: agentId, description: 'too dear', budget: budget('500001') });
    expectError(res, 422, 'spending_limit_exceeded');
    expect(res.body.error.type).toBe('invalid_request_error');
    expect(res.body.error.param).toBe('budget.amount');
    expect(res.body.error.details).toEqual({ cap: 'max_per_task', limit: '500000', requested: '500001', remaining: '500000' });
    expect(res.body.error.message).toContain('max_per_task');
    expect(await rowCount(t, tasks)).toBe(before);
    expect((await call(t, payer, 'POST', '/v1/tasks', { agent_id: agentId, description: 'fits', budget: budget('500000') })).status).toBe(201);
    await putSigned(payer, NO_CAPS);
  });

  it('max_per_task: each batch item, named', async () => {
    await putSigned(payer, { ...NO_CAPS, max_per_task: '200000' });
    const before = [await rowCount(t, tasks), await rowCount(t, batches)];
    const res = await call(t, payer, 'POST', '/v1/batches', { items: [item('200000'), item('200001')] });
    expectError(res, 422, 'spending_limit_exceeded');
    expect(res.body.error.param).toBe('items.1.budget.amount');
    expect(res.body.error.details).toMatchObject({ cap: 'max_per_task', limit: '200000', requested: '200001' });
    expect([await rowCount(t, tasks), await rowCount(t, batches)]).toEqual(before);
    await putSigned(payer, NO_CAPS);
  });

  it('max_per_batch: the escrows plus the batch fee', async () => {
    const fee = t.config.PRICE_BATCH_FEE;
    await putSigned(payer, { ...NO_CAPS, max_per_batch: String(300_000n + fee - 1n) });
    const before = [await rowCount(t, tasks), await rowCount(t, batches)];
    const res = await call(t, payer, 'POST', '/v1/batches', { items: [item('100000'), item('200000')] });
    expectError(res, 422, 'spending_limit_exceeded');
    expect(res.body.error.details).toEqual({
      cap: 'max_per_batch',
      limit: String(300_000n + fee - 1n),
      requested: String(300_000n + fee),
      remaining: String(300_000n + fee - 1n),
    });
    expect([await rowCount(t, tasks), await rowCount(t, batches)]).toEqual(before);
    // The batch's own max_spend keeps its own code.
    await putSigned(payer, NO_CAPS);
    expectError(await call(t, payer, 'POST', '/v1/batches', { items: [item('100000')], max_spend: '100000' }), 422, 'spend_limit_exceeded');
  });
});

describe('the daily cap', () => {
  const fundedToday = async () => BigInt((await call(t, payer, 'GET', '/v1/limits')).body.spent_today);

  it('counts earlier fundings of the same UTC day, single and batch, and starts again at midnight', async () => {
    // Yesterday: a task funded at 23:00 UTC does not count today.
    t.clock.set(new Date('2026-11-21T23:00:00.000Z'));
    const yesterday = await createTask(t, payer, agentId, { budget: budget('700000') });
    await t.app.services.taskLifecycle.markFunded(yesterday, { amount: 700_000n, txHash: null, actor: 'test' });
    t.clock.set(new Date('2026-11-22T09:00:00.000Z'));
    expect(await fundedToday()).toBe(0n);

    await putSigned(payer, { ...NO_CAPS, max_per_day: '1000000' });
    // Today: a single task funded (as POST /v1/tasks/{id}/fund does) and a batch of two.
    const single = await createTask(t, payer, agentId, { budget: budget('300000') });
    await t.app.services.taskLifecycle.markFunded(single, { amount: 300_000n, txHash: null, actor: 'test' });
    expect((await call(t, payer, 'POST', '/v1/batches', { items: [item('200000'), item('200000')] })).status).toBe(201);
    expect(await fundedToday()).toBe(700_000n);
    expect((await call(t, payer, 'GET', '/v1/limits')).body).toMatchObject({ remaining_today: '300000', resets_at: '2026-11-23T00:00:00.000Z' });

    // 700 000 + 400 000 > 1 000 000: refused with what remains.
    const before = [await rowCount(t, tasks), await rowCount(t, batches)];
    const res = await call(t, payer, 'POST', '/v1/batches', { items: [item('200000'), item('200000')] });
    expectError(res, 422, 'spending_limit_exceeded');
    expect(res.body.error.details).toEqual({
      cap: 'max_per_day',
      limit: '1000000',
      requested: '400000',
      remaining: '300000',
      spent_today: '700000',
      resets_at: '2026-11-23T00:00:00.000Z',
    });
    expect(res.body.error.message).toMatch(/max_per_day.*700000 funded today.*asks 400000.*300000 remains/);
    expect([await rowCount(t, tasks), await rowCount(t, batches)]).toEqual(before);
    // Exactly up to the cap is allowed; creating a task (no escrow yet) does not count.
    expect((await call(t, payer, 'POST', '/v1/batches', { items: [item('300000')] })).status).toBe(201);
    expect((await call(t, payer, 'POST', '/v1/tasks', { agent_id: agentId, description: 'later', budget: budget('50000') })).status).toBe(201);
    expect(await fundedToday()).toBe(1_000_000n);
    expectError(await call(t, payer, 'POST', '/v1/batches', { items: [item('1000')] }), 422, 'spending_limit_exceeded');
    // Another wallet's fundings are its own.
    expect((await call(t, stranger, 'POST', '/v1/batches', { items: [item('100000')] })).status).toBe(201);
    expect(await fundedToday()).toBe(1_000_000n);

    // Next UTC day: the count starts again.
    t.clock.set(new Date('2026-11-23T00:00:00.000Z'));
    expect(await fundedToday()).toBe(0n);
    expect((await call(t, payer, 'POST', '/v1/batches', { items: [item('500000'), item('500000')] })).status).toBe(201);
    await putSigned(payer, NO_CAPS);
  });

  it('a funding is checked before payment and again in its transaction (a concurrent funding counts)', async () => {
    t.clock.set(new Date('2026-11-24T10:00:00.000Z'));
    await putSigned(payer, { ...NO_CAPS, max_per_day: '500000' });
    const first = await createTask(t, payer, agentId, { budget: budget('300000') });
    const second = await createTask(t, payer, agentId, { budget: budget('300000') });
    const { tasks: client, taskLifecycle: lifecycle, limits } = t.app.services;
    const write = (id: string) => limits.guard(payer.address, fundingSpend(300_000n), fundingWrite({ client, lifecycle }, 0n, payer.address, id, 300_000n));

    // Both pass their check (nothing funded yet); the first commits; the second is refused in its transaction.
    const a = write(first);
    const b = write(second);
    await a.check();
    await b.check();
    await withTransaction(t.app.db, (tx) => a.apply(tx, { txHash: null, paymentId: null }));
    const refused = await withTransaction(t.app.db, (tx) => b.apply(tx, { txHash: null, paymentId: null })).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'spending_limit_exceeded', details: { cap: 'max_per_day', remaining: '200000', spent_today: '300000' } });
    const [row] = await t.app.db.select().from(tasks).where(eq(tasks.id, second));
    expect(row).toMatchObject({ status: 'created', escrowStatus: 'none', fundedAmount: null });
    // And a funding over the cap is refused at its check.
    await expect(runUnpaid(t.app.db, write(second))).rejects.toMatchObject({ code: 'spending_limit_exceeded' });
    await putSigned(payer, NO_CAPS);
  });
});

describe('the rule', () => {
  const caps = { maxPerTask: 100n, maxPerBatch: null, maxPerDay: 1000n };
  it('names the first cap broken, with what remains', () => {
    expect(breachOf(caps, fundingSpend(100n), 900n)).toBeNull();
    expect(breachOf(caps, fundingSpend(101n), 0n)).toMatchObject({ cap: 'max_per_task', param: 'amount' });
    expect(breachOf(caps, fundingSpend(100n), 901n)).toMatchObject({ cap: 'max_per_day', remaining: 99n, spentToday: 901n });
    expect(breachOf(caps, fundingSpend(1n), 1200n)).toMatchObject({ cap: 'max_per_day', remaining: 0n });
    expect(breachOf({ ...caps, maxPerDay: 0n }, fundingSpend(0n), 0n)).toBeNull();
  });
  it('counts the UTC day', () => {
    expect(utcDay(new Date('2026-11-21T23:59:59.999Z'))).toEqual({ start: new Date('2026-11-21T00:00:00.000Z'), end: new Date('2026-11-22T00:00:00.000Z') });
  });
});
