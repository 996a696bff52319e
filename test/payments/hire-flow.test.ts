import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePaymentRequiredHeader } from '@x402/core/http';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Address } from 'viem';
import { checkLedger } from '../../src/ledger/ledger.js';
import { startPaidApp, type PaidApp } from '../helpers/paid.js';
import { textResult } from '../helpers/fixtures.js';

const ADMIN_KEY = 'admin-key-for-tests-0123456789';
let p: PaidApp;
let agentId: string;
let payout: Address;
const client = () => p.demo(0);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (res: Response): Promise<any> => res.json();

beforeAll(async () => {
  p = await startPaidApp({ ADMIN_API_KEY: ADMIN_KEY, PLATFORM_FEE_BPS: '250', CANCELLATION_FEE_BPS: '1000' });
  payout = privateKeyToAccount(generatePrivateKey()).address;
  const owner = p.demo(5);
  const res = await fetch(`${p.baseUrl}/v1/agents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
    body: JSON.stringify({ name: 'Blurbs', capabilities: ['copywriting'], pricing: { base_rate: '500000' }, payout_address: payout }),
  });
  agentId = (await json(res)).id;
});
afterAll(() => p.close());

async function post(path: string, body: unknown): Promise<Response> {
  return p.payFetch(client())(`${p.baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

async function createFundedTask(amount = '1000000'): Promise<string> {
  const created = await post('/v1/tasks', { agent_id: agentId, description: 'A blurb', budget: { amount, currency: 'USDC', chain: 'base' } });
  expect(created.status).toBe(201);
  const taskId = (await json(created)).task_id;
  const funded = await post(`/v1/tasks/${taskId}/fund`, { amount });
  expect(funded.status, JSON.stringify(await funded.clone().json())).toBe(200);
  return taskId;
}

const settleAll = () => p.settleAll();

async function status(taskId: string) {
  return json(await p.payFetch(client())(`${p.baseUrl}/v1/tasks/${taskId}/status`));
}

async function reconciliation() {
  const res = await fetch(`${p.baseUrl}/v1/admin/reconciliation`, { headers: { 'x-admin-key': ADMIN_KEY } });
  expect(res.status).toBe(200);
  return json(res);
}

describe('the hire flow on chain, paid with @x402/fetch', () => {
  it('create → fund → complete → release: USDC lands where the rules say', async () => {
    const escrow = p.wallets.escrowAddress;
    const [clientBefore, escrowBefore] = await Promise.all([p.balance(client().address), p.balance(escrow)]);

    const created = await post('/v1/tasks', { agent_id: agentId, description: 'Write a blurb', budget: { amount: '1000000', currency: 'USDC', chain: 'base' } });
    const taskId = (await json(created)).task_id;
    // the 402 challenge of funding asks for escrow + fee, paid to the escrow wallet
    const challenge = await fetch(`${p.baseUrl}/v1/tasks/${taskId}/fund`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ amount: '1000000' }),
    });
    expect(challenge.status).toBe(402);
    expect(decodePaymentRequiredHeader(challenge.headers.get('payment-required')!).accepts[0]).toMatchObject({ amount: '1005000', payTo: escrow });

    const funded = await post(`/v1/tasks/${taskId}/fund`, { amount: '1000000' });
    expect(funded.status).toBe(200);
    const body = await json(funded);
    expect(body).toMatchObject({ task_id: taskId, escrow_funded: true, amount: '1000000', fee: '5000', escrow_address: escrow, status: 'in_progress', agent_notified: false });
    expect(body.tx_hash).toMatch(/^0x[0-9a-f]{64}$/);
    expect(await p.balance(escrow)).toBe(escrowBefore + 1_005_000n);
    // create (0.005) + fund (1.005) left the client's wallet
    expect(await p.balance(client().address)).toBe(clientBefore - 5000n - 1_005_000n);
    expect(await status(taskId)).toMatchObject({ status: 'in_progress', stage: 'queued', escrow_status: 'held' });

    // funding twice is refused before any money moves
    const clientMid = await p.balance(client().address);
    const again = await post(`/v1/tasks/${taskId}/fund`, { amount: '1000000' });
    expect(again.status).toBe(409);
    expect((await json(again)).error.code).toBe('invalid_state');

    await p.app.services.taskLifecycle.markStarted(taskId);
    await p.app.services.taskLifecycle.markCompleted(taskId, textResult());
    await settleAll();
    expect(await p.balance(payout)).toBe(975_000n); // 1 USDC − 2.5 % platform fee
    expect(await p.balance(escrow)).toBe(escrowBefore + 5000n + 25_000n); // funding fee + platform fee stay
    const done = await status(taskId);
    expect(done).toMatchObject({ status: 'completed', escrow_status: 'released' });
    expect(done.payouts).toEqual([expect.objectContaining({ kind: 'release', to: payout, amount: '975000', status: 'confirmed' })]);
    expect(done.payouts[0].tx_hash).toMatch(/^0x[0-9a-f]{64}$/);
    expect(await p.balance(client().address)).toBe(clientMid - 1000n); // the refused fund call was not charged; the one poll since was
    expect((await reconciliation()).ok).toBe(true);
  });

  it('cancel during work: the payer gets the escrow minus the cancellation fee, the agent the fee', async () => {
    const taskId = await createFundedTask();
    await p.app.services.taskLifecycle.markStarted(taskId);
    await p.app.services.taskLifecycle.reportProgress(taskId, { progress_percent: 20 });
    const payoutBefore = await p.balance(payout);
    const refused = await post(`/v1/tasks/${taskId}/cancel`, {});
    expect(refused.status).toBe(409);
    expect((await json(refused)).error.code).toBe('work_in_progress');
    const cancelled = await post(`/v1/tasks/${taskId}/cancel`, { accept_partial_refund: true });
    expect(await json(cancelled)).toMatchObject({ status: 'cancelled', refund: { amount: '800000', status: 'pending' }, cancellation_fee: '200000' });
    const clientBefore = await p.balance(client().address);
    await settleAll();
    expect(await p.balance(client().address)).toBe(clientBefore + 800_000n);
    expect(await p.balance(payout)).toBe(payoutBefore + 200_000n);
    const s = await status(taskId);
    expect(s.payouts.map((x: { kind: string; status: string }) => `${x.kind}:${x.status}`).sort()).toEqual(['refund:confirmed', 'release:confirmed']);
    expect((await reconciliation()).ok).toBe(true);
  });

  it('failure refunds the whole escrow', async () => {
    const taskId = await createFundedTask();
    await p.app.services.taskLifecycle.markStarted(taskId);
    await p.app.services.taskLifecycle.markFailed(taskId, 'the agent crashed');
    const before = await p.balance(client().address);
    await settleAll();
    expect(await p.balance(client().address)).toBe(before + 1_000_000n);
    expect(await status(taskId)).toMatchObject({ status: 'failed', escrow_status: 'refunded' });
  });

  it('a dispute freezes the escrow until an operator splits it', async () => {
    const taskId = await createFundedTask();
    await p.app.services.taskLifecycle.markStarted(taskId);
    const opened = await json(await post(`/v1/tasks/${taskId}/dispute`, { reason: 'Off brief' }));
    expect(opened.status).toBe('under_review');
    expect(await status(taskId)).toMatchObject({ status: 'disputed', escrow_status: 'frozen' });
    const resolve = (body: unknown, key = ADMIN_KEY) =>
      fetch(`${p.baseUrl}/v1/admin/disputes/${opened.dispute_id}/resolve`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-admin-key': key },
        body: JSON.stringify(body),
      });
    expect((await resolve({ payer_amount: '600000', agent_amount: '400000' }, 'wrong-key-wrong-key')).status).toBe(403);
    const bad = await resolve({ payer_amount: '600000', agent_amount: '300000' });
    expect(bad.status).toBe(422);
    expect((await json(bad)).error.code).toBe('amount_mismatch');
    const [clientBefore, payoutBefore] = await Promise.all([p.balance(client().address), p.balance(payout)]);
    const ok = await resolve({ payer_amount: '600000', agent_amount: '400000' });
    expect(await json(ok)).toMatchObject({ status: 'resolved', escrow_status: 'partially_refunded' });
    expect((await resolve({ payer_amount: '600000', agent_amount: '400000' })).status).toBe(409);
    await settleAll();
    expect(await p.balance(client().address)).toBe(clientBefore + 600_000n);
    expect(await p.balance(payout)).toBe(payoutBefore + 390_000n); // 400 000 − 2.5 %
  });

  it('keeps the books: every movement sums to zero and both wallets reconcile with the chain', async () => {
    expect(await checkLedger(p.app.db)).toMatchObject({ ok: true, total: 0n, unbalancedMovements: [] });
    const r = await reconciliation();
    expect(r.ok).toBe(true);
    expect(r.wallets.map((w: { wallet: string; difference: string }) => `${w.wallet}:${w.difference}`)).toEqual(['escrow:0', 'fee:0']);
  });
});
