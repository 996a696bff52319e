import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePaymentRequiredHeader, encodePaymentSignatureHeader } from '@x402/core/http';
import { and, eq } from 'drizzle-orm';
import { createTestClient, http, type Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { mintUsdc } from '../../src/chain/dev/devchain.js';
import { chainTransfers, payments, tasks } from '../../src/db/schema.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import { checkLedger } from '../../src/ledger/ledger.js';
import { reconcile } from '../../src/ledger/reconcile.js';
import { PaymentRecovery } from '../../src/payments/recovery.js';
import { AgentServer } from '../helpers/agent-server.js';
import { startPaidApp, x402ClientFor, type PaidApp } from '../helpers/paid.js';

/**
 * The money path under races, drained wallets and abandoned payments, on a real anvil with the
 * stock x402 client: every payer ends served once or refunded in full, and the books reconcile.
 */
const SECRET = 'money-path-webhook-secret-0123456789';
const BUDGET = 100_000n;
const FEE = { create: 5000n, fund: 5000n, cancel: 2000n, dispute: 5000n };
let p: PaidApp;
let agentId: string;
let failingAgentId: string;
let failing: AgentServer;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (res: Response): Promise<any> => res.json();

beforeAll(async () => {
  failing = await new AgentServer(SECRET, () => ({ status: 503, body: { error: 'overloaded' } })).start();
  p = await startPaidApp({ DISPATCH_MAX_ATTEMPTS: '2', DISPATCH_BACKOFF_MS: '10', DISPATCH_HEARTBEAT_MS: '200', PAYMENT_LEASE_MS: '1000' });
  const owner = p.demo(5);
  const register = async (name: string, runtime?: unknown) => {
    const res = await fetch(`${p.baseUrl}/v1/agents`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
      body: JSON.stringify({
        name,
        capabilities: ['writing'],
        pricing: { base_rate: '1000' },
        payout_address: privateKeyToAccount(generatePrivateKey()).address,
        ...(runtime ? { runtime } : {}),
      }),
    });
    expect(res.status).toBe(201);
    return (await json(res)).id as string;
  };
  agentId = await register('Writer');
  failingAgentId = await register('Flaky', { kind: 'webhook', url: failing.url, secret: SECRET });
});
afterAll(async () => {
  await p.close();
  await failing.stop();
});

/** A new wallet holding exactly `usdc` (it pays with signatures only: no ETH needed). */
async function walletWith(usdc: bigint): Promise<PrivateKeyAccount> {
  const account = privateKeyToAccount(generatePrivateKey());
  if (usdc > 0n) await mintUsdc(p.chain, account.address, usdc);
  return account;
}

function post(account: PrivateKeyAccount, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return p.payFetch(account)(`${p.baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

/** A PAYMENT-SIGNATURE for one POST, signed now (each call a fresh authorization nonce). */
async function paymentHeader(account: PrivateKeyAccount, path: string, body: unknown): Promise<string> {
  const res = await fetch(`${p.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(402);
  const required = decodePaymentRequiredHeader(res.headers.get('payment-required')!);
  return encodePaymentSignatureHeader(await x402ClientFor(account).createPaymentPayload(required));
}

function sendSigned(path: string, body: unknown, header: string, extra: Record<string, string> = {}): Promise<Response> {
  return fetch(`${p.baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'payment-signature': header, ...extra },
    body: JSON.stringify(body),
  });
}

async function createTask(account: PrivateKeyAccount, agent = agentId): Promise<string> {
  const res = await post(account, '/v1/tasks', { agent_id: agent, description: 'A blurb', budget: { amount: BUDGET.toString(), currency: 'USDC', chain: 'base' } });
  expect(res.status).toBe(201);
  return (await json(res)).task_id;
}

const settleAll = () => p.settleAll();

async function expectBooksExact(): Promise<void> {
  const r = await reconcile(p.app.db, { escrow: p.app.escrow!.custody, feeWallet: p.app.escrow!.feeWallet });
  expect(r.ledger).toMatchObject({ ok: true, total: 0n });
  expect(r.wallets.map((w) => [w.wallet, w.difference])).toEqual([
    ['escrow', 0n],
    ['fee', 0n],
  ]);
}

const paymentsOf = (payer: Address) => p.app.db.select().from(payments).where(eq(payments.payerAddress, payer.toLowerCase()));

describe('concurrent fundings', () => {
  it('five concurrent fundings of one task charge exactly one; its failing agent is briefed at most DISPATCH_MAX_ATTEMPTS times and the escrow refunded', async () => {
    const payer = await walletWith(FEE.create + 5n * (BUDGET + FEE.fund));
    const taskId = await createTask(payer, failingAgentId);
    const path = `/v1/tasks/${taskId}/fund`;
    const body = { amount: BUDGET.toString() };
    const headers = await Promise.all([0, 1, 2, 3, 4].map(() => paymentHeader(payer, path, body)));
    const before = await p.balance(payer.address);
    const escrowBefore = await p.balance(p.wallets.escrowAddress);

    const answers = await Promise.all(headers.map((h) => sendSigned(path, body, h)));
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 409, 409, 409, 409]);
    for (const r of answers.filter((a) => a.status === 409)) expect((await json(r)).error.code).toMatch(/^(state_conflict|invalid_state)$/);
    expect(await p.balance(payer.address)).toBe(before - BUDGET - FEE.fund);
    expect(await p.balance(p.wallets.escrowAddress)).toBe(escrowBefore + BUDGET + FEE.fund);
    const funding = (await paymentsOf(payer.address)).filter((x) => x.purpose === 'fund_task');
    expect(funding.map((x) => x.status)).toEqual(['booked']);

    // the agent keeps failing: bounded attempts, then failed with the escrow refunded
    const dispatcher = createDispatcher(p.app, { publicBaseUrl: p.baseUrl });
    for (let i = 0; i < 100; i++) {
      await dispatcher.runOnce();
      await dispatcher.drain();
      const [row] = await p.app.db.select().from(tasks).where(eq(tasks.id, taskId));
      if (row!.status === 'failed') break;
      await new Promise((r) => setTimeout(r, 30));
    }
    await dispatcher.stop(0);
    const [task] = await p.app.db.select().from(tasks).where(eq(tasks.id, taskId));
    expect(task).toMatchObject({ status: 'failed', escrowStatus: 'refunded' });
    expect(failing.requestsFor(taskId).length).toBeGreaterThanOrEqual(1);
    expect(failing.requestsFor(taskId).length).toBeLessThanOrEqual(2);
    await settleAll();
    expect(await p.balance(payer.address)).toBe(before - FEE.fund);
    await expectBooksExact();
  }, 60_000);
});

describe('one paid write per task, for its owner', () => {
  it("a stranger's paid request on a task (refused, never charged) does not keep the owner's funding out", async () => {
    const owner = await walletWith(FEE.create + BUDGET + FEE.fund);
    const stranger = await walletWith(BUDGET + FEE.fund);
    const taskId = await createTask(owner);
    const path = `/v1/tasks/${taskId}/fund`;
    const body = { amount: BUDGET.toString() };
    // the stranger's request is in flight (verified, its check not yet run)
    const header = await paymentHeader(stranger, path, body);
    const decoded = JSON.parse(Buffer.from(header, 'base64').toString('utf8'));
    const inFlight = await p.app.services.paymentLifecycle.record({
      payer: stranger.address,
      payTo: decoded.accepted.payTo,
      amount: BigInt(decoded.accepted.amount),
      asset: decoded.accepted.asset,
      network: decoded.accepted.network,
      authorizationNonce: decoded.payload.authorization.nonce,
      endpoint: 'POST /v1/tasks/:id/fund',
      kind: 'escrow_funding',
      purpose: 'fund_task',
      taskId,
      headerHash: 'stranger-in-flight',
      payload: { payload: decoded, requirements: decoded.accepted },
      validBefore: null,
      owner: 'req_stranger_in_flight',
    });
    const funded = await post(owner, path, body);
    expect(funded.status).toBe(200);
    const refused = await sendSigned(path, body, await paymentHeader(stranger, path, body));
    expect(refused.status).toBe(403);
    expect(await p.balance(stranger.address)).toBe(BUDGET + FEE.fund);
    await p.app.services.paymentLifecycle.forget(inFlight.id, 'req_stranger_in_flight');
  }, 30_000);
});

describe('no effect without payment', () => {
  it('a wallet holding one create fee sends five creates at once: one task, one fee', async () => {
    const payer = await walletWith(FEE.create);
    const body = { agent_id: agentId, description: 'A blurb', budget: { amount: BUDGET.toString(), currency: 'USDC', chain: 'base' } };
    const answers = await Promise.all([0, 1, 2, 3, 4].map(() => post(payer, '/v1/tasks', body)));
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses).toEqual([201, 402, 402, 402, 402]);
    const mine = await p.app.db.select().from(tasks).where(eq(tasks.payerAddress, payer.address.toLowerCase()));
    expect(mine).toHaveLength(1);
    expect((await paymentsOf(payer.address)).filter((x) => x.status === 'booked')).toHaveLength(1);
    expect(await p.balance(payer.address)).toBe(0n);
    await expectBooksExact();
  }, 30_000);

  it('a drained wallet gets no cancellation and no dispute', async () => {
    const payer = await walletWith(FEE.create + BUDGET + FEE.fund);
    const taskId = await createTask(payer);
    expect((await post(payer, `/v1/tasks/${taskId}/fund`, { amount: BUDGET.toString() })).status).toBe(200);
    expect(await p.balance(payer.address)).toBe(0n);

    const cancel = await post(payer, `/v1/tasks/${taskId}/cancel`, { reason: 'changed my mind' });
    expect(cancel.status).toBe(402);
    expect((await json(cancel)).error.code).toBe('insufficient_funds');
    await p.app.services.taskLifecycle.markStarted(taskId);
    const dispute = await post(payer, `/v1/tasks/${taskId}/dispute`, { reason: 'not what I asked' });
    expect(dispute.status).toBe(402);

    const [task] = await p.app.db.select().from(tasks).where(eq(tasks.id, taskId));
    expect(task).toMatchObject({ status: 'in_progress', escrowStatus: 'held' });
    expect(await p.app.db.select().from(chainTransfers).where(eq(chainTransfers.taskId, taskId))).toHaveLength(0);
    await expectBooksExact();
  }, 30_000);

  it('an effect refused after its payment settled is refunded in full (cancel racing the start of work)', async () => {
    const payer = await walletWith(FEE.create + BUDGET + FEE.fund + FEE.cancel);
    const taskId = await createTask(payer);
    expect((await post(payer, `/v1/tasks/${taskId}/fund`, { amount: BUDGET.toString() })).status).toBe(200);
    const test = createTestClient({ mode: 'anvil', transport: http(p.chain.rpcUrl) });
    await test.setAutomine(false);
    try {
      // the cancel is checked (funded: full refund) and its fee sent; the work starts before the block is mined
      const pending = post(payer, `/v1/tasks/${taskId}/cancel`, {});
      for (let i = 0; i < 200; i++) {
        const [row] = await p.app.db.select().from(payments).where(and(eq(payments.taskId, taskId), eq(payments.purpose, 'cancel_task')));
        if (row?.status === 'settling') break;
        await new Promise((r) => setTimeout(r, 10));
      }
      await new Promise((r) => setTimeout(r, 300));
      await p.app.services.taskLifecycle.markStarted(taskId);
      await test.mine({ blocks: 1 });
      await test.setAutomine(true);
      const cancel = await pending;
      expect(cancel.status).toBe(409);
      const error = (await json(cancel)).error;
      expect(error.code).toBe('work_in_progress');
      expect(error.details.refunded).toBe(FEE.cancel.toString());
    } finally {
      await test.setAutomine(true);
    }
    const [payment] = await p.app.db.select().from(payments).where(and(eq(payments.taskId, taskId), eq(payments.purpose, 'cancel_task')));
    expect(payment!.status).toBe('refunded');
    const [task] = await p.app.db.select().from(tasks).where(eq(tasks.id, taskId));
    expect(task!.status).toBe('in_progress');
    await settleAll();
    expect(await p.balance(payer.address)).toBe(FEE.cancel);
    await expectBooksExact();
  }, 30_000);
});

describe('idempotent retries of paid calls', () => {
  it('the same Idempotency-Key and PAYMENT-SIGNATURE get the stored answer, charged once', async () => {
    const payer = await walletWith(FEE.create);
    const body = { agent_id: agentId, description: 'Once only', budget: { amount: BUDGET.toString(), currency: 'USDC', chain: 'base' } };
    const header = await paymentHeader(payer, '/v1/tasks', body);
    const first = await sendSigned('/v1/tasks', body, header, { 'idempotency-key': 'create-once-1' });
    expect(first.status).toBe(201);
    const firstBody = await json(first);
    const retry = await sendSigned('/v1/tasks', body, header, { 'idempotency-key': 'create-once-1' });
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(await json(retry)).toEqual(firstBody);
    expect(await p.balance(payer.address)).toBe(0n);
    // the same spent authorization with another key, or none, is a replayed payment
    const other = await sendSigned('/v1/tasks', body, header, { 'idempotency-key': 'create-once-2' });
    expect(other.status).toBe(402);
    expect((await json(other)).error.code).toBe('payment_replayed');
    // the same key with another body is refused
    const changed = await sendSigned('/v1/tasks', { ...body, description: 'Other' }, header, { 'idempotency-key': 'create-once-1' });
    expect(changed.status).toBe(422);
    const mine = await p.app.db.select().from(tasks).where(eq(tasks.payerAddress, payer.address.toLowerCase()));
    expect(mine).toHaveLength(1);
  }, 30_000);
});

describe('the recovery sweep', () => {
  it('releases a payment abandoned before settlement, and settles then refunds one abandoned while settling', async () => {
    const payer = await walletWith(2n * FEE.create);
    const body = { agent_id: agentId, description: 'Abandoned', budget: { amount: BUDGET.toString(), currency: 'USDC', chain: 'base' } };
    const lifecycle = p.app.services.paymentLifecycle;
    const claimOf = async (header: string, owner: string) => {
      const decoded = JSON.parse(Buffer.from(header, 'base64').toString('utf8'));
      const auth = decoded.payload.authorization;
      return lifecycle.record({
        payer: payer.address,
        payTo: decoded.accepted.payTo,
        amount: BigInt(decoded.accepted.amount),
        asset: decoded.accepted.asset,
        network: decoded.accepted.network,
        authorizationNonce: auth.nonce,
        endpoint: 'POST /v1/tasks',
        kind: 'call_fee',
        purpose: 'create_task',
        headerHash: `h-${owner}`,
        payload: { payload: decoded, requirements: decoded.accepted },
        validBefore: new Date(Number(auth.validBefore) * 1000),
        owner,
      });
    };
    // a request that died after verification, and one that died after marking its payment settling
    const neverSent = await claimOf(await paymentHeader(payer, '/v1/tasks', body), 'req_dead_1');
    const midSettle = await claimOf(await paymentHeader(payer, '/v1/tasks', body), 'req_dead_2');
    await lifecycle.beginSettling(midSettle.id, 'req_dead_2');
    const recovery = new PaymentRecovery({ lifecycle, chain: p.app.escrow!.usdc, facilitator: p.app.facilitator });
    expect(await recovery.runOnce()).toEqual({ released: 0, failed: 0, refunded: 0 }); // leases still held
    await new Promise((r) => setTimeout(r, 1100));
    expect(await recovery.runOnce()).toEqual({ released: 1, failed: 0, refunded: 1 });

    expect(await p.app.db.select().from(payments).where(eq(payments.id, neverSent.id))).toHaveLength(0);
    const [refunded] = await p.app.db.select().from(payments).where(eq(payments.id, midSettle.id));
    expect(refunded).toMatchObject({ status: 'refunded' });
    expect(refunded!.txHash).toMatch(/^0x[0-9a-f]{64}$/);
    expect(await p.balance(payer.address)).toBe(FEE.create);
    // the refund leaves from the wallet the fee was paid into, never from another payment's money
    const [refund] = await p.app.db.select().from(chainTransfers).where(eq(chainTransfers.paymentId, midSettle.id));
    expect(refund).toMatchObject({ kind: 'refund', fromAddress: p.wallets.feeAddress.toLowerCase(), amount: FEE.create });
    await settleAll();
    expect(await p.balance(payer.address)).toBe(2n * FEE.create);
    expect(await p.app.db.select().from(tasks).where(eq(tasks.payerAddress, payer.address.toLowerCase()))).toHaveLength(0);
    await expectBooksExact();
    expect(await checkLedger(p.app.db)).toMatchObject({ ok: true });
  }, 30_000);
});
