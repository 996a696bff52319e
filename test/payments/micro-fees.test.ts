import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePaymentRequiredHeader } from '@x402/core/http';
import { eq } from 'drizzle-orm';
import { createPublicClient, createWalletClient, http, parseAbi, type Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { BASE_USDC } from '../../src/chain/constants.js';
import { payments } from '../../src/db/schema.js';
import { RECEIVABLE_CALL_FEES, TREASURY_CALL_FEES } from '../../src/ledger/accounts.js';
import { accountBalance } from '../../src/ledger/ledger.js';
import { reconcile } from '../../src/ledger/reconcile.js';
import { fastExactStats } from '../../src/payments/fast-exact.js';
import { MicroFeeSettler, batchGasLimit } from '../../src/payments/micro-fee-settler.js';
import { startPaidApp, type PaidApp } from '../helpers/paid.js';

/**
 * Micro-fees served before settlement (issue 9 point 3), on a real app, a real anvil chain and the
 * stock @x402/fetch client: no chain transaction while calls are served, one Multicall3
 * transaction per batch afterwards, the per-payer cap, arrears and their payment, expiry.
 */
let p: PaidApp;
const PRICE = 1000n; // search_agents
const CAP = 5000n;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (res: Response): Promise<any> => res.json();

beforeAll(async () => {
  p = await startPaidApp({ MICRO_FEES_DEFERRED: 'true', MICRO_FEE_PAYER_CAP: CAP.toString(), MICRO_FEE_MIN_VALIDITY_SECONDS: '30', X402_MAX_TIMEOUT_SECONDS: '120' });
});
afterAll(() => p.close());

const chain = () => createPublicClient({ transport: http(p.chain.rpcUrl), cacheTime: 0 });
const blockNumber = () => chain().getBlockNumber({ cacheTime: 0 });
const search = (payer: PrivateKeyAccount) => p.payFetch(payer)(`${p.baseUrl}/v1/agents?query=writing`);
const receivable = () => accountBalance(p.app.db, RECEIVABLE_CALL_FEES);
const statusOf = async (payer: Address) =>
  (await p.app.db.select().from(payments).where(eq(payments.payerAddress, payer.toLowerCase()))).map((r) => r.status).sort();

function settler(gasLimit?: (n: number) => bigint): MicroFeeSettler {
  const micro = p.app.microFees!;
  return new MicroFeeSettler({
    ...(gasLimit ? { gasLimit } : {}),
    db: p.app.db,
    lifecycle: p.app.services.paymentLifecycle,
    operator: micro.operator,
    usdc: BASE_USDC,
    feeAddress: p.wallets.feeAddress,
    chain: p.app.escrow!.usdc,
    batchSize: 200,
    leaseMs: 60_000,
    onSettled: (payers) => payers.forEach((a) => micro.balances.forget(BASE_USDC, a)),
  });
}

/** A new wallet holding exactly `amount` test USDC (sent by demo wallet 5). */
async function walletWith(amount: bigint): Promise<PrivateKeyAccount> {
  const account = privateKeyToAccount(generatePrivateKey());
  const funder = createWalletClient({ account: p.demo(5), transport: http(p.chain.rpcUrl), chain: (await import('viem/chains')).base });
  const hash = await funder.writeContract({ address: BASE_USDC, abi: parseAbi(['function transfer(address,uint256) returns (bool)']), functionName: 'transfer', args: [account.address, amount] });
  await chain().waitForTransactionReceipt({ hash, pollingInterval: 20 });
  return account;
}

async function booksBalance(): Promise<void> {
  const r = await reconcile(p.app.db, { escrow: p.app.escrow!.custody, feeWallet: p.app.escrow!.feeWallet });
  expect(r.ledger.ok).toBe(true);
  for (const w of r.wallets) expect({ wallet: w.wallet, difference: w.difference }).toEqual({ wallet: w.wallet, difference: 0n });
}

describe('micro-fees served before settlement', () => {
  it('serves stock-client polls with no transaction, then settles them all in one Multicall3 transaction', async () => {
    const payer = await walletWith(1_000_000n);
    const feeBefore = await p.balance(p.wallets.feeAddress);
    const treasuryBefore = await accountBalance(p.app.db, TREASURY_CALL_FEES);
    const blocksBefore = await blockNumber();
    const localBefore = fastExactStats.localValid;

    const answers = await Promise.all(Array.from({ length: 5 }, () => search(payer)));
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    for (const res of answers) {
      expect(res.headers.get('x-payment-settlement')).toBe('deferred');
      expect(res.headers.get('payment-response')).toBeNull();
    }
    // Served without the chain: no block, no transfer, verified locally (no simulation per call).
    expect(await blockNumber()).toBe(blocksBefore);
    expect(await p.balance(payer.address)).toBe(1_000_000n);
    expect(fastExactStats.localValid - localBefore).toBe(5);
    expect(await statusOf(payer.address)).toEqual(Array(5).fill('deferred'));
    expect(await receivable()).toBe(5n * PRICE);

    // The receipts list them as deferred, with no transaction yet.
    const listed = await json(await fetch(`${p.baseUrl}/v1/receipts`, { headers: { authorization: await p.signIn(payer) } }));
    expect(listed.receipts.map((r: { status: string; tx_hash: string }) => [r.status, r.tx_hash])).toEqual(Array(5).fill(['deferred', '']));

    const run = await settler().runOnce();
    expect(run).toMatchObject({ collected: 5, defaulted: 0, expired: 0 });
    expect(await blockNumber()).toBe(blocksBefore + 1n); // one transaction for all five
    // Its gas limit was set for five transfers, not estimated (an estimate can starve the inner calls).
    expect((await chain().getTransaction({ hash: run.txHash! })).gas).toBe(batchGasLimit(5));
    expect(await p.balance(payer.address)).toBe(1_000_000n - 5n * PRICE);
    expect(await p.balance(p.wallets.feeAddress)).toBe(feeBefore + 5n * PRICE);
    const rows = await p.app.db.select().from(payments).where(eq(payments.payerAddress, payer.address.toLowerCase()));
    expect(new Set(rows.map((r) => r.status))).toEqual(new Set(['booked']));
    expect(new Set(rows.map((r) => r.txHash))).toEqual(new Set([run.txHash]));
    expect(await receivable()).toBe(0n);
    expect((await accountBalance(p.app.db, TREASURY_CALL_FEES)) - treasuryBefore).toBe(5n * PRICE);
    await booksBalance();
  });

  it('keeps a payer within the cap: past it, a call settles first as any payment', async () => {
    const payer = await walletWith(1_000_000n);
    for (let i = 0; i < Number(CAP / PRICE); i++) expect((await search(payer)).headers.get('x-payment-settlement')).toBe('deferred');
    const blocksBefore = await blockNumber();
    const over = await search(payer);
    expect(over.status).toBe(200);
    expect(over.headers.get('x-payment-settlement')).toBeNull();
    expect(over.headers.get('payment-response')).not.toBeNull(); // settled before the answer
    expect(await blockNumber()).toBe(blocksBefore + 1n);
    expect(await p.balance(payer.address)).toBe(1_000_000n - PRICE);
    expect(await statusOf(payer.address)).toEqual([...Array(5).fill('deferred'), 'booked'].sort());
    await settler().runOnce();
    expect(await p.balance(payer.address)).toBe(1_000_000n - 6n * PRICE);
    await booksBalance();
  });

  it('defers a paid write too: the task and its owed fee commit together', async () => {
    const payer = await walletWith(1_000_000n);
    const owner = p.demo(4);
    const agent = await json(
      await fetch(`${p.baseUrl}/v1/agents`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
        body: JSON.stringify({ name: 'Micro writer', capabilities: ['writing'], pricing: { base_rate: '100000' }, payout_address: owner.address }),
      }),
    );
    const res = await p.payFetch(payer)(`${p.baseUrl}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ agent_id: agent.id, description: 'one line', budget: { amount: '100000', currency: 'USDC', chain: 'base' } }),
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('x-payment-settlement')).toBe('deferred');
    const task = await json(res);
    const [row] = await p.app.db.select().from(payments).where(eq(payments.payerAddress, payer.address.toLowerCase()));
    expect(row).toMatchObject({ status: 'deferred', taskId: task.task_id, amount: 5000n, purpose: 'create_task' });
    await settler().runOnce();
    expect(await statusOf(payer.address)).toEqual(['booked']);
    expect(await p.balance(payer.address)).toBe(1_000_000n - 5000n);
  });

  it('a payer whose authorization fails at settlement is in arrears: refused until it pays them, then served again', async () => {
    // 1 500 covers one poll when seen; the second (past the balance seen) settles first, leaving 500 for the owed 1 000.
    const payer = await walletWith(1_500n);
    expect((await search(payer)).headers.get('x-payment-settlement')).toBe('deferred');
    const second = await search(payer);
    expect(second.status).toBe(200);
    expect(second.headers.get('x-payment-settlement')).toBeNull();
    expect(await p.balance(payer.address)).toBe(500n);

    const run = await settler().runOnce();
    expect(run).toMatchObject({ collected: 0, defaulted: 1, expired: 0 });
    const [defaulted] = await p.app.db.select().from(payments).where(eq(payments.status, 'defaulted'));
    expect(defaulted!.payerAddress).toBe(payer.address.toLowerCase());
    expect(defaulted!.failureReason).toMatch(/exceeds balance/);
    expect(await receivable()).toBe(0n);
    await booksBalance();

    // Refused on any priced route, with a valid payment, and charged nothing.
    await topUp(payer, 100_000n);
    const blocks = await blockNumber();
    const refused = await search(payer);
    expect(refused.status).toBe(402);
    const body = await json(refused);
    expect(body.error).toMatchObject({ code: 'payment_in_arrears', details: { owed: '1000', pay_at: `/v1/payers/${payer.address}/arrears` } });
    expect(await blockNumber()).toBe(blocks);
    expect(await p.balance(payer.address)).toBe(100_500n);

    // The arrears route is priced at what is owed, paid by the stock client, settled first.
    const quote = await fetch(`${p.baseUrl}/v1/payers/${payer.address}/arrears`, { method: 'POST' });
    expect(quote.status).toBe(402);
    expect(decodePaymentRequiredHeader(quote.headers.get('payment-required')!).accepts[0]).toMatchObject({ amount: '1000', payTo: p.wallets.feeAddress });
    const paid = await p.payFetch(payer)(`${p.baseUrl}/v1/payers/${payer.address}/arrears`, { method: 'POST' });
    expect(paid.status).toBe(200);
    expect(await json(paid)).toMatchObject({ payer: payer.address, repaid: '1000' });
    expect(await p.balance(payer.address)).toBe(99_500n);
    expect(await statusOf(payer.address)).toEqual(['booked', 'booked', 'repaid']);

    // Nothing owed now: the route says so before any challenge, and the payer is served again.
    const none = await fetch(`${p.baseUrl}/v1/payers/${payer.address}/arrears`, { method: 'POST' });
    expect(none.status).toBe(409);
    expect((await json(none)).error.code).toBe('invalid_state');
    expect((await search(payer)).status).toBe(200);
    await settler().runOnce();
    await booksBalance();
  });

  it('settles an authorization an earlier crashed run already sent: found where it was used, charged once', async () => {
    const payer = await walletWith(1_000_000n);
    for (let i = 0; i < 3; i++) expect((await search(payer)).status).toBe(200);
    // An earlier run's batch: the same authorizations, sent and mined, but never booked (its process died).
    const rows = await p.app.db.select().from(payments).where(eq(payments.payerAddress, payer.address.toLowerCase()));
    const lost = new MicroFeeSettler({
      db: p.app.db,
      lifecycle: p.app.services.paymentLifecycle,
      operator: p.app.microFees!.operator,
      usdc: BASE_USDC,
      feeAddress: p.wallets.feeAddress,
      chain: p.app.escrow!.usdc,
      batchSize: 200,
      leaseMs: 1,
    });
    const taken = await p.app.services.paymentLifecycle.takeDeferred(lost.owner, 200, 1);
    expect(taken.map((r) => r.id).sort()).toEqual(rows.map((r) => r.id).sort());
    await sendBatchOf(taken);
    expect(await p.balance(payer.address)).toBe(1_000_000n - 3n * PRICE);
    await new Promise((r) => setTimeout(r, 20)); // its lease (1 ms) runs out

    const run = await settler().runOnce();
    expect(run).toMatchObject({ collected: 3, defaulted: 0, expired: 0 });
    expect(await p.balance(payer.address)).toBe(1_000_000n - 3n * PRICE);
    expect(await statusOf(payer.address)).toEqual(['booked', 'booked', 'booked']);
    await booksBalance();
  });

  // Last: it moves the chain's clock ten minutes ahead.
  it('an authorization that expired before the batch is written off: our loss, the payer owes nothing', async () => {
    const payer = await walletWith(100_000n);
    expect((await search(payer)).headers.get('x-payment-settlement')).toBe('deferred');
    await chain().request({ method: 'evm_increaseTime' as never, params: [600] as never });
    await chain().request({ method: 'evm_mine' as never, params: [] as never });
    const run = await settler().runOnce();
    expect(run).toMatchObject({ collected: 0, defaulted: 0, expired: 1 });
    expect(await statusOf(payer.address)).toEqual(['failed']);
    expect(await p.balance(payer.address)).toBe(100_000n);
    expect(await receivable()).toBe(0n);
    await booksBalance();
  });
});

async function topUp(account: PrivateKeyAccount, amount: bigint): Promise<void> {
  const funder = createWalletClient({ account: p.demo(5), transport: http(p.chain.rpcUrl), chain: (await import('viem/chains')).base });
  const hash = await funder.writeContract({ address: BASE_USDC, abi: parseAbi(['function transfer(address,uint256) returns (bool)']), functionName: 'transfer', args: [account.address, amount] });
  await chain().waitForTransactionReceipt({ hash, pollingInterval: 20 });
}

/** Sends the stored authorizations of `rows` one by one from demo wallet 5 (anyone may submit them). */
async function sendBatchOf(rows: { payload: unknown }[]): Promise<void> {
  const { eip3009ABI } = await import('@x402/evm');
  const { parseSignature, getAddress } = await import('viem');
  const sender = createWalletClient({ account: p.demo(5), transport: http(p.chain.rpcUrl), chain: (await import('viem/chains')).base });
  for (const row of rows) {
    const { authorization: a, signature } = (row.payload as { payload: { payload: { authorization: Record<string, string>; signature: `0x${string}` } } }).payload.payload;
    const { v, r, s } = parseSignature(signature);
    const hash = await sender.writeContract({
      address: BASE_USDC,
      abi: eip3009ABI,
      functionName: 'transferWithAuthorization',
      args: [getAddress(a.from!), getAddress(a.to!), BigInt(a.value!), BigInt(a.validAfter!), BigInt(a.validBefore!), a.nonce as `0x${string}`, Number(v), r, s],
    });
    await chain().waitForTransactionReceipt({ hash, pollingInterval: 20 });
  }
}
