/**
 * x402 `batch-settlement` on the service's own priced routes (issue 9 point 1), on a real app, a
 * real anvil chain with this project's channel contracts, and the stock @x402/fetch client with the
 * stock batch-settlement client scheme of @x402/evm:
 * - 100 paid polls cost one on-chain transaction (the deposit), then the client's cooperative
 *   refund and the channel settler's settle: 3 transactions in all; the client's net spend is
 *   exactly 100 × the price; the ledger books each call as owed by the channel, then as paid into
 *   the fee wallet; reconciliation agrees;
 * - every fixed-price route offers both schemes, a stock client that knows only `exact` still pays
 *   with `exact`, and funding stays `exact` only;
 * - a paid call that fails is not charged: the voucher's charge never happens and the channel is
 *   free for the next call at once.
 * (A charge taken back: channels-storage.test.ts `uncharge`, and the recovery sweep after a real
 * kill in channel-kill.test.ts.)
 */
import { x402Client } from '@x402/core/client';
import { decodePaymentRequiredHeader } from '@x402/core/http';
import { toClientEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme as BatchSettlementClientScheme } from '@x402/evm/batch-settlement/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import { and, eq, isNotNull } from 'drizzle-orm';
import { createPublicClient, createWalletClient, http, parseAbi } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { base } from 'viem/chains';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_NETWORK, BASE_USDC, BATCH_SETTLEMENT_ADDRESS } from '../../src/chain/constants.js';
import { paymentChannels, payments } from '../../src/db/schema.js';
import { RECEIVABLE_CHANNEL_FEES, TREASURY_CALL_FEES } from '../../src/ledger/accounts.js';
import { accountBalance } from '../../src/ledger/ledger.js';
import { reconcile } from '../../src/ledger/reconcile.js';
import { ChannelSettler } from '../../src/payments/channels/settler.js';
import { createChannelSettler } from '../../src/workers/index.js';
import { channelsProbe } from '../../src/payments/channels/index.js';
import { startPaidApp, type PaidApp } from '../helpers/paid.js';

let p: PaidApp;
const PRICE = 1000n; // search_agents, task_status
const MIN_DEPOSIT = 1000n * PRICE; // CHANNEL_DEPOSIT_CALLS (default 1000) calls

beforeAll(async () => {
  p = await startPaidApp({ MICRO_FEES_DEFERRED: 'false' });
});
afterAll(() => p.close());

const chain = () => createPublicClient({ transport: http(p.chain.rpcUrl), cacheTime: 0 });
const blockNumber = () => chain().getBlockNumber({ cacheTime: 0 });

/** A new wallet holding exactly `amount` test USDC (sent by demo wallet 5). */
async function walletWith(amount: bigint): Promise<PrivateKeyAccount> {
  const account = privateKeyToAccount(generatePrivateKey());
  const funder = createWalletClient({ account: p.demo(5), transport: http(p.chain.rpcUrl), chain: base });
  const hash = await funder.writeContract({ address: BASE_USDC, abi: parseAbi(['function transfer(address,uint256) returns (bool)']), functionName: 'transfer', args: [account.address, amount] });
  await chain().waitForTransactionReceipt({ hash, pollingInterval: 20 });
  return account;
}

/** The stock client paying with a batch-settlement channel only. */
function channelClient(payer: PrivateKeyAccount) {
  const scheme = new BatchSettlementClientScheme(toClientEvmSigner(payer, chain()));
  return { scheme, pay: wrapFetchWithPayment(fetch, new x402Client().register(BASE_NETWORK, scheme)) };
}

/** The app's channel settler, claiming only when told (runOnce's force). */
const settler = (): ChannelSettler => createChannelSettler(p.app, { claimThreshold: 10n ** 12n, claimIntervalMs: 3_600_000, idleRefundMs: 3_600_000 })!;

/** Reconciliation, channels included: everything agrees; the channels' side as found. */
async function booksBalance() {
  const channels = channelsProbe(p.app.channels!, p.app.channels!.contract, BASE_USDC);
  const r = await reconcile(p.app.db, { escrow: p.app.escrow!.custody, feeWallet: p.app.escrow!.feeWallet, channels });
  expect(r.ledger.ok).toBe(true);
  for (const w of r.wallets) expect({ wallet: w.wallet, difference: w.difference }).toEqual({ wallet: w.wallet, difference: 0n });
  expect(r.channels!.difference).toBe(0n);
  expect(r.ok).toBe(true);
  return r.channels!;
}

const channelRows = (payer: PrivateKeyAccount) =>
  p.app.db.select().from(payments).where(and(eq(payments.payerAddress, payer.address.toLowerCase()), isNotNull(payments.channelId)));

describe('batch-settlement channels on the priced routes', () => {
  it('offers exact and batch-settlement on a fixed-price route, exact only on funding', async () => {
    const res = await fetch(`${p.baseUrl}/v1/agents?query=writing`);
    expect(res.status).toBe(402);
    const challenge = decodePaymentRequiredHeader(res.headers.get('payment-required')!);
    expect(challenge.accepts.map((a) => a.scheme)).toEqual(['exact', 'batch-settlement']);
    const channel = challenge.accepts[1]!;
    expect(channel.payTo.toLowerCase()).toBe(p.wallets.feeAddress.toLowerCase());
    expect(channel.amount).toBe(PRICE.toString());
    expect(channel.extra.minDeposit).toBe(MIN_DEPOSIT.toString());
    expect(channel.extra.receiverAuthorizer).toBeDefined();
  });

  it('pays 100 polls with one deposit, then a refund and a settle: 3 transactions, net spend 100 × price, books agree', { timeout: 120_000 }, async () => {
    const start = 2_000_000n;
    const payer = await walletWith(start);
    const client = channelClient(payer);
    const feeBefore = await p.balance(p.wallets.feeAddress);
    const treasuryBefore = await accountBalance(p.app.db, TREASURY_CALL_FEES);
    const receivableBefore = await accountBalance(p.app.db, RECEIVABLE_CHANNEL_FEES);
    const blocksBefore = await blockNumber();

    for (let i = 0; i < 100; i++) {
      const res = await client.pay(`${p.baseUrl}/v1/agents?query=writing`);
      expect(res.status).toBe(200);
      expect(res.headers.get('payment-response')).not.toBeNull();
    }
    expect(await blockNumber()).toBe(blocksBefore + 1n); // the deposit only
    expect(await p.balance(BATCH_SETTLEMENT_ADDRESS)).toBeGreaterThanOrEqual(MIN_DEPOSIT);
    const rows = await channelRows(payer);
    expect(rows).toHaveLength(100);
    expect(new Set(rows.map((r) => r.status))).toEqual(new Set(['booked']));
    expect(new Set(rows.map((r) => r.purpose))).toEqual(new Set(['search_agents']));
    expect((await accountBalance(p.app.db, RECEIVABLE_CHANNEL_FEES)) - receivableBefore).toBe(100n * PRICE);
    const [stored] = await p.app.db.select().from(paymentChannels).where(eq(paymentChannels.payer, payer.address.toLowerCase()));
    expect(stored!.channel!.chargedCumulativeAmount).toBe((100n * PRICE).toString());
    // The books: 100 calls owed by the channel, charged and not yet claimed on the contract.
    expect(await booksBalance()).toMatchObject({ channels: 1, ledger: receivableBefore + 100n * PRICE, unbooked: 0n });

    // The client's cooperative refund: the last voucher is claimed and the rest comes back.
    const refunded = await client.scheme.refund(`${p.baseUrl}/v1/agents?query=writing`);
    expect(refunded.success).toBe(true);
    expect(await blockNumber()).toBe(blocksBefore + 2n);
    expect(await p.balance(payer.address)).toBe(start - 100n * PRICE);
    // Claimed for the fee wallet on the contract, not yet paid out: still owed, still agreeing.
    expect(await booksBalance()).toMatchObject({ channels: 0, ledger: receivableBefore + 100n * PRICE });

    // The channel settler pays what was claimed into the fee wallet and books it.
    const run = await settler().runOnce();
    expect(run.settled).toBe(true);
    expect(run.booked).toBe(100n * PRICE);
    expect(await blockNumber()).toBe(blocksBefore + 3n);
    expect(await p.balance(p.wallets.feeAddress)).toBe(feeBefore + 100n * PRICE);
    expect(await accountBalance(p.app.db, RECEIVABLE_CHANNEL_FEES)).toBe(receivableBefore);
    expect((await accountBalance(p.app.db, TREASURY_CALL_FEES)) - treasuryBefore).toBe(100n * PRICE);
    expect(await p.balance(payer.address)).toBe(start - 100n * PRICE); // net spend exactly 100 × price
    expect(await p.app.db.select().from(paymentChannels).where(eq(paymentChannels.payer, payer.address.toLowerCase()))).toHaveLength(0);
    await booksBalance();

    // Nothing is left to do: a second run sends nothing and books nothing.
    const again = await settler().runOnce();
    expect(again).toMatchObject({ claimed: 0, settled: false, booked: 0n, refunded: 0 });
    expect(await blockNumber()).toBe(blocksBefore + 3n);
  });

  it('pays a paid write with a voucher: the task and its booked fee commit together, on the same channel as the reads', { timeout: 60_000 }, async () => {
    const payer = await walletWith(1_000_000n);
    const client = channelClient(payer);
    const owner = p.demo(4);
    const agentRes = await fetch(`${p.baseUrl}/v1/agents`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
      body: JSON.stringify({ name: 'Channel writer', capabilities: ['writing'], pricing: { base_rate: '100000' }, payout_address: owner.address }),
    });
    const agent = (await agentRes.json()) as { id: string };
    expect((await client.pay(`${p.baseUrl}/v1/agents?query=writing`)).status).toBe(200); // deposits
    const blocks = await blockNumber();
    const res = await client.pay(`${p.baseUrl}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ agent_id: agent.id, description: 'one line', budget: { amount: '100000', currency: 'USDC', chain: 'base' } }),
    });
    expect(res.status).toBe(201);
    const task = (await res.json()) as { task_id: string };
    expect(await blockNumber()).toBe(blocks); // a voucher: no transaction
    const rows = await channelRows(payer);
    expect(rows.find((r) => r.purpose === 'create_task')).toMatchObject({ status: 'booked', taskId: task.task_id, amount: 5000n });
    const [stored] = await p.app.db.select().from(paymentChannels).where(eq(paymentChannels.payer, payer.address.toLowerCase()));
    expect(stored!.channel!.chargedCumulativeAmount).toBe((PRICE + 5000n).toString());
    // The receipt names the task; a voucher has no transaction of its own.
    const listed = (await (await fetch(`${p.baseUrl}/v1/receipts`, { headers: { authorization: await p.signIn(payer) } })).json()) as {
      receipts: { status: string; tx_hash: string; task_id: string | null }[];
    };
    expect(listed.receipts.map((r) => [r.status, r.tx_hash === '' ? 'none' : 'tx', r.task_id])).toEqual([
      ['booked', 'none', task.task_id],
      ['booked', 'tx', null], // the deposit's call carries the deposit transaction
    ]);
  });

  it('an idle refund holds the channel: a call arriving while the refund is sent is refused, not served for free; the stale client then deposits anew', { timeout: 60_000 }, async () => {
    const payer = await walletWith(3_000_000n);
    const client = channelClient(payer);
    for (let i = 0; i < 2; i++) expect((await client.pay(`${p.baseUrl}/v1/agents?query=writing`)).status).toBe(200);
    const feeBefore = await p.balance(p.wallets.feeAddress);
    const receivableBefore = await accountBalance(p.app.db, RECEIVABLE_CHANNEL_FEES);
    // A call lands just as the settler's refund is about to go on chain.
    let during: Response | undefined;
    const facilitator = p.app.facilitator!;
    const racing = {
      verify: facilitator.verify.bind(facilitator),
      getSupported: facilitator.getSupported.bind(facilitator),
      settle: async (...args: Parameters<typeof facilitator.settle>) => {
        const refund = args[0].payload as { type?: string; channelConfig?: { payer?: string } };
        if (refund.type === 'refund' && refund.channelConfig?.payer?.toLowerCase() === payer.address.toLowerCase()) {
          during = await client.pay(`${p.baseUrl}/v1/agents?query=writing`);
        }
        return facilitator.settle(...args);
      },
    };
    const channels = p.app.channels!;
    const run = await new ChannelSettler({
      db: p.app.db,
      clock: p.app.clock,
      channels,
      lifecycle: p.app.services.paymentLifecycle,
      facilitator: racing,
      network: BASE_NETWORK,
      token: BASE_USDC,
      contract: channels.contract,
      claimThreshold: 10n ** 12n,
      claimIntervalMs: 3_600_000,
      idleRefundMs: 0,
    }).runOnce();
    expect(run.refunded).toBeGreaterThanOrEqual(1);
    expect(during!.status).toBe(402); // the channel was held: refused, nothing charged
    const rows = await channelRows(payer);
    expect(rows.filter((r) => r.status === 'booked')).toHaveLength(2);
    // The payer paid exactly the two calls it was served. Every idle channel was refunded (idleRefundMs 0, the
    // earlier tests' too) and everything charged on them settled: the fee wallet got exactly what was owed.
    expect(await p.balance(payer.address)).toBe(3_000_000n - 2n * PRICE);
    const channelId = rows[0]!.channelId as `0x${string}`;
    const [payerChannel] = await channels.contract.channels([channelId]);
    expect(payerChannel).toEqual({ balance: 2n * PRICE, totalClaimed: 2n * PRICE });
    expect(await accountBalance(p.app.db, RECEIVABLE_CHANNEL_FEES)).toBe(0n);
    expect((await p.balance(p.wallets.feeAddress)) - feeBefore).toBe(receivableBefore);
    await booksBalance();

    // The client still believes in the balance the refund took back. Its next voucher exceeds the
    // channel's balance; the service, which dropped the refunded channel, tells it to resync
    // (cumulative_amount_mismatch): it reads the channel from the contract, deposits anew in the
    // same call, and is served. Without that it is refused on every call.
    const again = await client.pay(`${p.baseUrl}/v1/agents?query=writing`);
    expect(again.status).toBe(200);
    const afterRows = await channelRows(payer);
    expect(afterRows.filter((r) => r.status === 'booked')).toHaveLength(3);
    const [redeposited] = await channels.contract.channels([channelId]);
    expect(redeposited!.balance).toBeGreaterThan(3n * PRICE);
    // What left the payer's wallet is exactly the new deposit; the channel holds the three calls plus the rest of it.
    expect(await p.balance(payer.address)).toBe(3_000_000n - redeposited!.balance);
    const [stored] = await p.app.db.select().from(paymentChannels).where(eq(paymentChannels.channelId, channelId));
    expect(stored!.channel!.chargedCumulativeAmount).toBe((3n * PRICE).toString());
  });

  it('a served call whose answer was lost, then an idle refund that drops the channel: the client pays on, no stored channel below what the contract claimed, the books agree', { timeout: 60_000 }, async () => {
    const payer = await walletWith(3_000_000n);
    // The stock client over a fetch that loses the answer of one served call (the connection cut
    // after the service booked it, as a kill would).
    let loseNext = false;
    const lossy: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      const paid = new Headers(init?.headers).has('payment-signature') || (input instanceof Request && input.headers.has('payment-signature'));
      if (!loseNext || !paid || res.status !== 200) return res;
      loseNext = false;
      await res.text();
      throw new TypeError('fetch failed: the connection was reset'); // served and booked, the answer lost
    };
    const scheme = new BatchSettlementClientScheme(toClientEvmSigner(payer, chain()));
    const pay = wrapFetchWithPayment(lossy, new x402Client().register(BASE_NETWORK, scheme));
    for (let i = 0; i < 2; i++) expect((await pay(`${p.baseUrl}/v1/agents?query=writing`)).status).toBe(200);
    loseNext = true;
    await expect(pay(`${p.baseUrl}/v1/agents?query=writing`)).rejects.toThrow(/connection was reset/); // served and booked; the client never learns it
    expect(loseNext).toBe(false);
    expect((await channelRows(payer)).filter((r) => r.status === 'booked')).toHaveLength(3);
    const [first] = await channelRows(payer);
    const channelId = first!.channelId as `0x${string}`;
    // The settler claims the three calls, refunds the rest and drops the channel.
    const refunded = await settler().runOnce({ refundIdleMs: 0 });
    expect(refunded.refunded).toBeGreaterThanOrEqual(1);
    expect(await p.app.channels!.contract.channels([channelId])).toEqual([{ balance: 3n * PRICE, totalClaimed: 3n * PRICE }]);
    expect(await p.app.channels!.storage.get(channelId)).toBeUndefined();

    // The client, two calls into its view of the channel, pays on.
    const consistent = async () => {
      const booked = (await channelRows(payer)).filter((r) => r.status === 'booked').reduce((n, r) => n + r.amount, 0n);
      const stored = await p.app.channels!.storage.get(channelId);
      const [onChain] = await p.app.channels!.contract.channels([channelId]);
      if (stored) {
        expect(BigInt(stored.chargedCumulativeAmount)).toBeGreaterThanOrEqual(onChain!.totalClaimed);
        expect(BigInt(stored.chargedCumulativeAmount)).toBe(booked);
      } else expect(onChain!.totalClaimed).toBe(booked);
    };
    const next = await pay(`${p.baseUrl}/v1/agents?query=writing`);
    await consistent();
    if (next.status !== 200) expect((await pay(`${p.baseUrl}/v1/agents?query=writing`)).status).toBe(200);
    await consistent();
    const rows = await channelRows(payer);
    expect(rows.filter((r) => r.status === 'booked')).toHaveLength(4);
    await booksBalance();
  });

  it('does not charge a paid call that fails, and the channel takes the next call at once', { timeout: 60_000 }, async () => {
    const payer = await walletWith(1_000_000n);
    const client = channelClient(payer);
    expect((await client.pay(`${p.baseUrl}/v1/agents?query=writing`)).status).toBe(200);
    const missing = await client.pay(`${p.baseUrl}/v1/tasks/task_doesnotexist`);
    expect(missing.status).toBe(404);
    expect((await client.pay(`${p.baseUrl}/v1/agents?query=writing`)).status).toBe(200);
    const rows = await channelRows(payer);
    expect(rows.map((r) => r.status).sort()).toEqual(['booked', 'booked']);
    const [stored] = await p.app.db.select().from(paymentChannels).where(eq(paymentChannels.payer, payer.address.toLowerCase()));
    expect(stored!.channel!.chargedCumulativeAmount).toBe((2n * PRICE).toString());
  });
  it('refunds a channel whose calls were all claimed already without a settle of nothing, and forgets a drained channel whose copy matches the contract', { timeout: 60_000 }, async () => {
    const payer = await walletWith(2_000_000n);
    const client = channelClient(payer);
    for (let i = 0; i < 2; i++) expect((await client.pay(`${p.baseUrl}/v1/agents?query=writing`)).status).toBe(200);
    const s = settler();
    // Everything charged on every channel is claimed and paid out first.
    const claimed = await s.runOnce({ claim: true });
    expect(claimed.claimed).toBeGreaterThanOrEqual(1);
    const [row] = await channelRows(payer);
    const channelId = row!.channelId as `0x${string}`;
    expect(await p.app.channels!.contract.channels([channelId])).toEqual([{ balance: MIN_DEPOSIT, totalClaimed: 2n * PRICE }]);
    // The idle refund then has nothing left to claim: it returns the rest and sends no settle (the
    // contract refuses a settle of nothing; the run used to throw on it).
    const blocks = await blockNumber();
    const refunded = await s.runOnce({ refundIdleMs: 0 });
    expect(refunded.refunded).toBeGreaterThanOrEqual(1);
    expect(refunded.settled).toBe(false);
    expect(await blockNumber()).toBe(blocks + BigInt(refunded.refunded));
    expect(await p.balance(payer.address)).toBe(2_000_000n - 2n * PRICE);
    await booksBalance();

    // A channel drained on chain whose stored copy already says so (balance == claimed == charged,
    // no request on it), as the scheme leaves one it claimed in full: the next run forgets it.
    const drained = `0x${'d7'.repeat(32)}`; // never opened: 0 / 0 on the contract
    await p.app.channels!.storage.updateChannel(drained, () => ({
      channelId: drained,
      channelConfig: { payer: payer.address, payerAuthorizer: payer.address, receiver: p.app.channels!.receiver, receiverAuthorizer: p.app.channels!.receiver, token: BASE_USDC, withdrawDelay: 86_400, salt: `0x${'00'.repeat(32)}` },
      chargedCumulativeAmount: '0',
      signedMaxClaimable: '0',
      signature: '0x',
      balance: '0',
      totalClaimed: '0',
      withdrawRequestedAt: 0,
      refundNonce: 0,
      lastRequestTimestamp: Date.now(),
    }));
    expect(await p.app.channels!.storage.get(drained)).toBeDefined();
    const forgot = await s.runOnce();
    expect(forgot.dropped).toBe(1);
    expect(await p.app.channels!.storage.get(drained)).toBeUndefined();
  });
});
