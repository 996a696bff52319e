/**
 * DbChannelStorage as the channel storage of the stock x402 `batch-settlement` server scheme, end to
 * end on the dev chain: the stock @x402/evm client (through @x402/fetch), server scheme and
 * facilitator, against this project's channel contracts on anvil (placed by
 * src/chain/dev/batch-settlement-contracts.ts), with the server's channels in our database.
 *
 * - One resource server on Postgres and on PGlite: a deposit, then vouchers only; the channel
 *   manager claims and settles; balances move exactly as the vouchers say and the stored channel
 *   follows (charged amount, balance, total claimed); a cooperative refund returns the rest and the
 *   channel leaves the table.
 * - Two resource servers ("API processes", each with its own connection pool) sharing one Postgres
 *   database: one client's vouchers alternate between them and are all accepted in order; the same
 *   voucher sent to both at once is accepted once; a replayed voucher is refused by both; either
 *   server's channel manager claims exactly what was charged.
 */
import { x402Client } from '@x402/core/client';
import { toClientEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme as BatchSettlementClientScheme } from '@x402/evm/batch-settlement/client';
import type { BatchSettlementChannelManager, Channel } from '@x402/evm/batch-settlement/server';
import { decodePaymentResponseHeader, wrapFetchWithPayment } from '@x402/fetch';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANVIL_ACCOUNTS, BASE_NETWORK, BASE_USDC, BATCH_SETTLEMENT_ADDRESS, type DevAccount } from '../../src/chain/constants.js';
import { batchSettlementAbi } from '../../src/chain/dev/contracts.js';
import { startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';
import { DbChannelStorage } from '../../src/payments/channels/storage.js';
import { chainClients } from '../chain/batch-settlement-helpers.js';
import { startPaidRoute, type PaidRouteServer } from '../chain/batch-settlement-stack.js';
import { openPgliteDatabase } from '../helpers/pglite.js';
import { scratchDatabase, type ScratchDatabase } from '../helpers/service-process.js';

const operator = ANVIL_ACCOUNTS[2]!; // the facilitator's wallet: sends every transaction
const receiver = ANVIL_ACCOUNTS[3]!; // the route's payTo
const receiverAuthorizer = ANVIL_ACCOUNTS[7]!; // the facilitator signs claims and refunds with it
const postgresPayer = ANVIL_ACCOUNTS[4]!;
const sharedPayer = ANVIL_ACCOUNTS[5]!;
const pglitePayer = ANVIL_ACCOUNTS[6]!;

const PRICE = 1_000n; // $0.001
const DEPOSIT = 20n * PRICE; // the route's minDeposit hint: 20 calls
const ROUTE = { price: '$0.001', minDeposit: '$0.02' };

let chain: DevChain;
let rpcUrl: string;

beforeAll(async () => {
  chain = await startDevChain({ silent: true, fundIndices: [4, 5, 6] });
  rpcUrl = chain.rpcUrl;
}, 120_000);
afterAll(async () => {
  await chain?.stop();
});

const balances = async (payer: DevAccount) => ({
  payer: await usdcBalance(rpcUrl, payer.address),
  receiver: await usdcBalance(rpcUrl, receiver.address),
  contract: await usdcBalance(rpcUrl, BATCH_SETTLEMENT_ADDRESS),
});

/** The channel contract's view of a channel: [balance, totalClaimed]. */
const onchainChannel = (channelId: string) =>
  chainClients(rpcUrl).publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: batchSettlementAbi, functionName: 'channels', args: [channelId as `0x${string}`] });

/** A stock client paying with `payer`'s wallet, whose requests go through `transport` (default: fetch). */
function clientFor(payer: DevAccount, transport: typeof fetch = fetch) {
  const scheme = new BatchSettlementClientScheme(toClientEvmSigner(privateKeyToAccount(payer.privateKey), chainClients(rpcUrl).publicClient));
  return { scheme, pay: wrapFetchWithPayment(transport, new x402Client().register(BASE_NETWORK, scheme)) };
}

interface PaymentResponse {
  success: boolean;
  transaction: string;
  amount?: string;
  extra?: { chargedAmount?: string; channelState?: { chargedCumulativeAmount?: string } };
}

/** One paid poll of `url`; the settlement response the server sent back. */
async function poll(pay: typeof fetch, url: string): Promise<PaymentResponse> {
  const response = await pay(url);
  expect(response.status, await response.clone().text()).toBe(200);
  const header = response.headers.get('payment-response');
  expect(header).toBeTruthy();
  return decodePaymentResponseHeader(header!) as PaymentResponse;
}

/** The one stored channel of `payer`. */
async function channelOf(storage: DbChannelStorage, payer: DevAccount): Promise<Channel> {
  const mine = (await storage.list()).filter((c) => c.channelConfig.payer.toLowerCase() === payer.address.toLowerCase());
  expect(mine).toHaveLength(1);
  return mine[0]!;
}

describe.each([
  ['Postgres', postgresPayer],
  ['PGlite', pglitePayer],
] as const)('stock batch-settlement server scheme on DbChannelStorage (%s)', (name, payer) => {
  let database: Database;
  let cleanup: () => Promise<void>;
  let storage: DbChannelStorage;
  let route: PaidRouteServer;
  let manager: BatchSettlementChannelManager;
  let client: ReturnType<typeof clientFor>;
  let channelId: string;
  let before: Awaited<ReturnType<typeof balances>>;
  const CALLS_BEFORE_CLAIM = 6;
  const CALLS_AFTER_CLAIM = 2;

  beforeAll(async () => {
    if (name === 'Postgres') {
      const scratch: ScratchDatabase = await scratchDatabase('channels_e2e');
      database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 5 });
      await runMigrations(database);
      cleanup = async () => {
        await database.close();
        await scratch.drop();
      };
    } else {
      const pglite = await openPgliteDatabase();
      database = pglite.database;
      cleanup = pglite.destroy;
    }
    storage = new DbChannelStorage(database.db, { receiver: receiver.address });
    route = await startPaidRoute({ rpcUrl, storage, receiver, operator, receiverAuthorizer, ...ROUTE });
    manager = route.scheme.createChannelManager(route.facilitator, BASE_NETWORK, BASE_USDC);
    client = clientFor(payer);
    before = await balances(payer);
  }, 60_000);
  afterAll(async () => {
    await route?.close();
    await cleanup?.();
  });

  it('deposits once, then takes vouchers only; the stored channel counts every call', { timeout: 60_000 }, async () => {
    const first = await poll(client.pay, route.url);
    expect(first.transaction).toMatch(/^0x[0-9a-f]{64}$/); // the deposit
    expect(BigInt(first.amount!)).toBe(DEPOSIT);
    channelId = (await channelOf(storage, payer)).channelId;
    expect(await storage.get(channelId)).toMatchObject({ chargedCumulativeAmount: String(PRICE), balance: String(DEPOSIT), totalClaimed: '0' });

    for (let call = 2; call <= CALLS_BEFORE_CLAIM; call++) {
      const paid = await poll(client.pay, route.url);
      expect(paid.transaction).toBe(''); // a voucher: no transaction
      // What the later ledger booking will read: the fee of this call and the channel's new cumulative.
      expect(paid.extra?.chargedAmount).toBe(String(PRICE));
      expect(paid.extra?.channelState?.chargedCumulativeAmount).toBe(String(BigInt(call) * PRICE));
      const stored = await storage.get(channelId);
      expect(stored?.chargedCumulativeAmount).toBe(String(BigInt(call) * PRICE));
      expect(stored?.signedMaxClaimable).toBe(String(BigInt(call) * PRICE));
      expect(stored?.pendingRequest).toBeUndefined();
    }
    expect(route.served()).toBe(CALLS_BEFORE_CLAIM);
    expect((await balances(payer)).contract - before.contract).toBe(DEPOSIT);
  });

  it('claims and settles what the vouchers say; the stored channel records the claimed amount', { timeout: 60_000 }, async () => {
    const charged = BigInt(CALLS_BEFORE_CLAIM) * PRICE;
    const { claims, settle } = await manager.claimAndSettle();
    expect(claims).toEqual([{ vouchers: 1, transaction: expect.stringMatching(/^0x[0-9a-f]{64}$/) }]);
    expect(settle?.transaction).toMatch(/^0x[0-9a-f]{64}$/);

    const after = await balances(payer);
    expect(after.receiver - before.receiver).toBe(charged);
    expect(before.payer - after.payer).toBe(DEPOSIT);
    expect(after.contract - before.contract).toBe(DEPOSIT - charged);
    expect(await storage.get(channelId)).toMatchObject({ chargedCumulativeAmount: String(charged), totalClaimed: String(charged), balance: String(DEPOSIT) });
    expect(await onchainChannel(channelId)).toEqual([DEPOSIT, charged]);
    // nothing left to claim
    expect(await manager.getClaimableVouchers()).toEqual([]);
  });

  it('keeps taking vouchers after the claim, and a cooperative refund returns the rest and removes the channel', { timeout: 60_000 }, async () => {
    for (let i = 0; i < CALLS_AFTER_CLAIM; i++) expect((await poll(client.pay, route.url)).transaction).toBe('');
    const calls = BigInt(CALLS_BEFORE_CLAIM + CALLS_AFTER_CLAIM);
    expect((await storage.get(channelId))?.chargedCumulativeAmount).toBe(String(calls * PRICE));

    const refunded = await client.scheme.refund(route.url);
    expect(refunded.success).toBe(true);
    expect(BigInt(refunded.amount!)).toBe(DEPOSIT - calls * PRICE);
    await manager.settle(); // the last calls were claimed inside the refund
    expect(await storage.get(channelId)).toBeUndefined();

    const after = await balances(payer);
    expect(before.payer - after.payer).toBe(calls * PRICE); // net spend: exactly the calls
    expect(after.receiver - before.receiver).toBe(calls * PRICE);
    expect(after.contract).toBe(before.contract);
  });
});

describe('two server scheme instances ("API processes", one pool each) sharing one Postgres channel table', () => {
  let scratch: ScratchDatabase;
  const databases: Database[] = [];
  let servers: PaidRouteServer[];
  let observer: DbChannelStorage;
  let before: Awaited<ReturnType<typeof balances>>;
  let channelId: string;
  /** Paid requests (carrying PAYMENT-SIGNATURE) the client sent, and the last one's header. */
  const sent = { paid: 0, lastSignature: '' };
  let client: ReturnType<typeof clientFor>;
  /** When set, every paid request goes to both servers at once; the statuses each got. */
  let duplicate: { statuses: Array<[number, number]> } | undefined;
  let calls = 0;

  /** The client's transport: counts paid requests, remembers the last voucher, duplicates it to both servers when asked. */
  const transport = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const signature = request.headers.get('payment-signature');
    if (!signature) return fetch(request);
    sent.paid++;
    sent.lastSignature = signature;
    if (!duplicate) return fetch(request);
    const responses = await Promise.all(servers.map((s) => fetch(s.url, { headers: request.headers })));
    duplicate.statuses.push([responses[0]!.status, responses[1]!.status]);
    return responses.find((r) => r.status === 200) ?? responses[0]!;
  };

  beforeAll(async () => {
    scratch = await scratchDatabase('channels_shared');
    databases.push(await openDatabase({ url: scratch.url, dataDir: '', poolMax: 5 }));
    await runMigrations(databases[0]!);
    databases.push(await openDatabase({ url: scratch.url, dataDir: '', poolMax: 5 }));
    servers = await Promise.all(
      databases.map((d) => startPaidRoute({ rpcUrl, storage: new DbChannelStorage(d.db, { receiver: receiver.address }), receiver, operator, receiverAuthorizer, ...ROUTE })),
    );
    observer = new DbChannelStorage(databases[0]!.db);
    client = clientFor(sharedPayer, transport);
    before = await balances(sharedPayer);
  }, 60_000);
  afterAll(async () => {
    await Promise.allSettled((servers ?? []).map((s) => s.close()));
    await Promise.allSettled(databases.map((d) => d.close()));
    await scratch?.drop();
  });

  const charged = async () => BigInt((await observer.get(channelId))!.chargedCumulativeAmount);

  it('accepts one client\'s vouchers alternating between the two servers, in order, each counted once', { timeout: 60_000 }, async () => {
    const ALTERNATING = 8;
    for (let i = 0; i < ALTERNATING; i++) {
      const paid = await poll(client.pay, servers[i % 2]!.url);
      calls++;
      expect(paid.transaction).toEqual(i === 0 ? expect.stringMatching(/^0x[0-9a-f]{64}$/) : '');
      if (i === 0) channelId = (await channelOf(observer, sharedPayer)).channelId;
      expect(await charged()).toBe(BigInt(calls) * PRICE);
      expect(paid.extra?.channelState?.chargedCumulativeAmount).toBe(String(BigInt(calls) * PRICE));
    }
    expect(servers.map((s) => s.served())).toEqual([ALTERNATING / 2, ALTERNATING / 2]);
    // one paid request per call: no server ever answered with a corrective 402 (it always saw the other's vouchers)
    expect(sent.paid).toBe(ALTERNATING);
  });

  it('accepts a voucher sent to both servers at once exactly once', { timeout: 60_000 }, async () => {
    const DUPLICATED = 4;
    duplicate = { statuses: [] };
    try {
      for (let i = 0; i < DUPLICATED; i++) {
        await poll(client.pay, servers[i % 2]!.url);
        calls++;
        expect(await charged()).toBe(BigInt(calls) * PRICE);
      }
    } finally {
      const { statuses } = duplicate;
      duplicate = undefined;
      expect(statuses).toHaveLength(DUPLICATED);
      for (const pair of statuses) expect([...pair].sort()).toEqual([200, 402]);
    }
    expect(servers[0]!.served() + servers[1]!.served()).toBe(calls);
  });

  it('refuses a replayed voucher on both servers', async () => {
    const chargedBefore = await charged();
    for (const s of servers) {
      const replay = await fetch(s.url, { headers: { 'payment-signature': sent.lastSignature } });
      expect(replay.status).toBe(402);
    }
    expect(await charged()).toBe(chargedBefore);
  });

  it('claims exactly what was charged, from either server\'s channel manager', { timeout: 60_000 }, async () => {
    const managers = servers.map((s) => s.scheme.createChannelManager(s.facilitator, BASE_NETWORK, BASE_USDC));
    const first = await managers[0]!.claimAndSettle();
    expect(first.claims).toEqual([{ vouchers: 1, transaction: expect.stringMatching(/^0x[0-9a-f]{64}$/) }]);
    let total = BigInt(calls) * PRICE;
    expect((await balances(sharedPayer)).receiver - before.receiver).toBe(total);
    expect(await observer.get(channelId)).toMatchObject({ chargedCumulativeAmount: String(total), totalClaimed: String(total) });
    // the other server sees the claim: nothing for it to claim again
    expect(await managers[1]!.getClaimableVouchers()).toEqual([]);

    // one more call on the second server, claimed by the second server's manager
    await poll(client.pay, servers[1]!.url);
    calls++;
    total += PRICE;
    const second = await managers[1]!.claimAndSettle();
    expect(second.claims).toEqual([{ vouchers: 1, transaction: expect.stringMatching(/^0x[0-9a-f]{64}$/) }]);
    const after = await balances(sharedPayer);
    expect(after.receiver - before.receiver).toBe(total);
    expect(before.payer - after.payer).toBe(DEPOSIT);
    expect(after.contract - before.contract).toBe(DEPOSIT - total);
    expect(await onchainChannel(channelId)).toEqual([DEPOSIT, total]);
    expect(await observer.get(channelId)).toMatchObject({ chargedCumulativeAmount: String(total), totalClaimed: String(total) });
  });
});
