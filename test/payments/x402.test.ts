import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePaymentRequiredHeader, decodePaymentResponseHeader, encodePaymentSignatureHeader } from '@x402/core/http';
import type { PaymentRequired } from '@x402/core/types';
import { eq } from 'drizzle-orm';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { AUTHORIZATION_FIELDS, BASE_USDC } from '../../src/chain/constants.js';
import { payments } from '../../src/db/schema.js';
import { fastExactStats } from '../../src/payments/fast-exact.js';
import { startPaidApp, x402ClientFor, type PaidApp } from '../helpers/paid.js';

let p: PaidApp;
let agentId: string;
beforeAll(async () => {
  p = await startPaidApp();
  const owner = p.demo(5);
  const res = await fetch(`${p.baseUrl}/v1/agents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
    body: JSON.stringify({ name: 'Writer', capabilities: ['copywriting'], pricing: { base_rate: '100000' }, payout_address: owner.address }),
  });
  expect(res.status).toBe(201);
  agentId = (await json(res)).id;
});
afterAll(() => p.close());

async function challenge(path: string, init?: RequestInit): Promise<PaymentRequired> {
  const res = await fetch(`${p.baseUrl}${path}`, init);
  expect(res.status).toBe(402);
  return decodePaymentRequiredHeader(res.headers.get('payment-required')!);
}

/** A PAYMENT-SIGNATURE for `path` signed by `account`, with the requirements changed by `tamper`. */
async function signedHeader(path: string, account = p.demo(0), tamper: (r: PaymentRequired) => PaymentRequired = (r) => r) {
  const required = tamper(await challenge(path));
  const payload = await x402ClientFor(account).createPaymentPayload(required);
  return encodePaymentSignatureHeader(payload);
}

/** Response bodies are JSON the tests inspect freely. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (res: Response): Promise<any> => res.json();

const paidCount = async () => (await p.db.database.db.select().from(payments)).length;

describe('x402 on priced endpoints', () => {
  it('answers an unpaid request with 402 and a v2 challenge for the configured price', async () => {
    const res = await fetch(`${p.baseUrl}/v1/agents?query=copywriting`);
    expect(res.status).toBe(402);
    expect(res.headers.get('cache-control')).toContain('no-store');
    const body = await json(res);
    expect(body.error).toMatchObject({ type: 'payment_error', code: 'payment_required' });
    const required = decodePaymentRequiredHeader(res.headers.get('payment-required')!);
    expect(required.x402Version).toBe(2);
    expect(required.accepts.map((a) => a.scheme)).toEqual(['exact', 'batch-settlement']);
    expect(required.accepts[0]).toMatchObject({
      scheme: 'exact',
      network: 'eip155:8453',
      amount: '1000',
      asset: BASE_USDC,
      payTo: p.wallets.feeAddress,
      extra: { name: 'USD Coin', version: '2' },
    });
  });

  it('lets the stock @x402/fetch client pay: fee lands on the fee wallet, receipt is listed', async () => {
    const payer = p.demo(0);
    const [payerBefore, feeBefore] = await Promise.all([p.balance(payer.address), p.balance(p.wallets.feeAddress)]);
    const fastBefore = { ...fastExactStats };
    const res = await p.payFetch(payer)(`${p.baseUrl}/v1/agents?query=copywriting`);
    expect(res.status).toBe(200);
    // Verified on the fast path (payments/fast-exact.ts), settled by the stock settle without a second recovery.
    expect(fastExactStats.fastValid - fastBefore.fastValid).toBe(1);
    expect(fastExactStats.vouchedSettles - fastBefore.vouchedSettles).toBe(1);
    expect((await json(res)).agents.map((a: { id: string }) => a.id)).toEqual([agentId]);
    const settlement = decodePaymentResponseHeader(res.headers.get('payment-response')!);
    expect(settlement).toMatchObject({ success: true, network: 'eip155:8453', payer: payer.address });
    expect(await p.balance(payer.address)).toBe(payerBefore - 1000n);
    expect(await p.balance(p.wallets.feeAddress)).toBe(feeBefore + 1000n);

    const receipts = await fetch(`${p.baseUrl}/v1/receipts`, { headers: { authorization: await p.signIn(payer) } });
    const list = await json(receipts);
    expect(list.receipts[0]).toMatchObject({
      payer: payer.address,
      pay_to: p.wallets.feeAddress,
      amount: '1000',
      tx_hash: settlement.transaction,
      endpoint: 'GET /v1/agents',
      kind: 'call_fee',
    });
  });

  it('never charges a request that fails', async () => {
    const payer = p.demo(1);
    const before = await p.balance(payer.address);
    const rowsBefore = await paidCount();
    const pay = p.payFetch(payer);
    const notFound = await pay(`${p.baseUrl}/v1/agents/agent_00000000000000000000`);
    expect(notFound.status).toBe(404);
    const invalid = await pay(`${p.baseUrl}/v1/agents?limit=1000`);
    expect(invalid.status).toBe(400);
    const refused = await pay(`${p.baseUrl}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ agent_id: agentId, description: 'x', budget: { amount: '1', currency: 'USDC', chain: 'base' } }),
    });
    expect(refused.status).toBe(422);
    expect((await json(refused)).error.code).toBe('budget_too_low');
    expect(await p.balance(payer.address)).toBe(before);
    expect(await paidCount()).toBe(rowsBefore);
  });

  it('refuses a replayed payment', async () => {
    const header = await signedHeader('/v1/agents?query=copy');
    const first = await fetch(`${p.baseUrl}/v1/agents?query=copy`, { headers: { 'payment-signature': header } });
    expect(first.status).toBe(200);
    const again = await fetch(`${p.baseUrl}/v1/agents?query=copy`, { headers: { 'payment-signature': header } });
    expect(again.status).toBe(402);
    expect((await json(again)).error.code).toBe('payment_replayed');
  });

  it('refuses a wrong amount, a wrong payTo and an expired authorization, changing nothing', async () => {
    const payer = p.demo(2);
    const before = await p.balance(payer.address);
    const rowsBefore = await paidCount();
    const path = `/v1/agents/${agentId}`;
    const cases = {
      amount: (r: PaymentRequired) => ({ ...r, accepts: r.accepts.map((a) => ({ ...a, amount: '1' })) }),
      payTo: (r: PaymentRequired) => ({ ...r, accepts: r.accepts.map((a) => ({ ...a, payTo: payer.address })) }),
    };
    for (const [name, tamper] of Object.entries(cases)) {
      const res = await fetch(`${p.baseUrl}${path}`, { headers: { 'payment-signature': await signedHeader(path, payer, tamper) } });
      expect(res.status, name).toBe(402);
      expect(['amount_mismatch', 'payment_invalid'], name).toContain((await json(res)).error.code);
    }
    // expired: a valid authorization whose validBefore has passed
    const required = await challenge(path);
    const payload = await x402ClientFor(payer).createPaymentPayload(required);
    const auth = (payload.payload as { authorization: Record<string, string> }).authorization;
    type Auth = { from: string; to: string; value: string; validAfter: string; validBefore: string; nonce: string };
    const expiredAuth = { ...auth, validAfter: '0', validBefore: String(Math.floor(Date.now() / 1000) - 60) } as Auth;
    const { signTypedData } = payer;
    const signature = await signTypedData({
      domain: { name: 'USD Coin', version: '2', chainId: 8453, verifyingContract: BASE_USDC },
      types: { TransferWithAuthorization: AUTHORIZATION_FIELDS },
      primaryType: 'TransferWithAuthorization',
      message: {
        from: expiredAuth.from as `0x${string}`,
        to: expiredAuth.to as `0x${string}`,
        value: BigInt(expiredAuth.value),
        validAfter: 0n,
        validBefore: BigInt(expiredAuth.validBefore),
        nonce: expiredAuth.nonce as `0x${string}`,
      },
    });
    const expired = encodePaymentSignatureHeader({ ...payload, payload: { authorization: expiredAuth, signature } });
    const res = await fetch(`${p.baseUrl}${path}`, { headers: { 'payment-signature': expired } });
    expect(res.status).toBe(402);
    expect((await json(res)).error.code).toBe('payment_invalid');

    expect(await p.balance(payer.address)).toBe(before);
    expect(await paidCount()).toBe(rowsBefore);
  });

  it('refuses a wallet without USDC with insufficient_funds', async () => {
    const empty = privateKeyToAccount(generatePrivateKey());
    const res = await p.payFetch(empty)(`${p.baseUrl}/v1/agents/${agentId}`);
    expect(res.status).toBe(402);
    expect((await json(res)).error.code).toBe('insufficient_funds');
  });

  it('settles 20 concurrent paid polls exactly once each', async () => {
    const payer = p.demo(3);
    const create = await p.payFetch(payer)(`${p.baseUrl}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ agent_id: agentId, description: 'Poll me', budget: { amount: '200000', currency: 'USDC', chain: 'base' } }),
    });
    expect(create.status).toBe(201);
    const taskId = (await json(create)).task_id;
    // the receipt of the creating call names the task it created
    const [createReceipt] = await p.db.database.db.select().from(payments).where(eq(payments.endpoint, 'POST /v1/tasks'));
    expect(createReceipt!.taskId).toBe(taskId);
    const [payerBefore, feeBefore] = await Promise.all([p.balance(payer.address), p.balance(p.wallets.feeAddress)]);
    const pay = p.payFetch(payer);
    const polls = await Promise.all(Array.from({ length: 20 }, () => pay(`${p.baseUrl}/v1/tasks/${taskId}/status`)));
    expect(polls.map((r) => r.status)).toEqual(Array(20).fill(200));
    const hashes = polls.map((r) => decodePaymentResponseHeader(r.headers.get('payment-response')!).transaction);
    expect(new Set(hashes).size).toBe(20);
    expect(await p.balance(payer.address)).toBe(payerBefore - 20n * 1000n);
    expect(await p.balance(p.wallets.feeAddress)).toBe(feeBefore + 20n * 1000n);
    const rows = await p.db.database.db.select().from(payments).where(eq(payments.taskId, taskId));
    expect(rows.filter((r) => r.endpoint === 'GET /v1/tasks/:id/status' && r.status === 'booked')).toHaveLength(20);
  });
});
