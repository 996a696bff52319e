import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { x402Client } from '@x402/core/client';
import { x402HTTPResourceServer, x402ResourceServer, type HTTPRequestContext } from '@x402/core/server';
import { toClientEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme as BatchSettlementClientScheme } from '@x402/evm/batch-settlement/client';
import { BatchSettlementEvmScheme as BatchSettlementServerScheme, InMemoryChannelStorage, type BatchSettlementChannelManager } from '@x402/evm/batch-settlement/server';
import { decodePaymentResponseHeader, wrapFetchWithPayment } from '@x402/fetch';
import { decodeFunctionData } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANVIL_ACCOUNTS, BASE_NETWORK, BASE_USDC, BATCH_SETTLEMENT_ADDRESS } from '../../src/chain/constants.js';
import { batchSettlementAbi } from '../../src/chain/dev/contracts.js';
import { startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { chainClients, WITHDRAW_DELAY } from './batch-settlement-helpers.js';
import { adapterFor, inProcessFacilitator, reply } from './batch-settlement-stack.js';

/**
 * Compatibility: the stock `batch-settlement` client, server and facilitator of @x402/evm, run end
 * to end against this project's contracts on anvil. A tiny node:http resource server sells one
 * route through x402HTTPResourceServer, an in-process facilitator settles from the operator
 * wallet, and a stock @x402/fetch client pays: one deposit, then vouchers only; the server's
 * channel manager claims and settles in batches, and the client takes its remainder back with a
 * cooperative refund (claim + refund in one multicall).
 */

const operator = ANVIL_ACCOUNTS[2]!; // facilitator: sends every transaction, pays the gas
const receiver = ANVIL_ACCOUNTS[3]!; // the route's payTo
const payer = ANVIL_ACCOUNTS[4]!; // the client's wallet
const secondPayer = ANVIL_ACCOUNTS[5]!; // another client, refunded by the server side
const receiverAuthorizer = ANVIL_ACCOUNTS[7]!; // the facilitator signs claims and refunds with it

const PRICE = 1_000n; // $0.001
/** The route's `extra.minDeposit` hint: the client deposits for 20 calls at once (the default hint is 10). */
const DEPOSIT = 20n * PRICE;
const CALLS_BEFORE_CLAIM = 5;
const CALLS_AFTER_SETTLE = 3;

/** A resource server with one paid route, GET /poll, as a framework middleware would run it. */
async function startResourceServer(httpServer: x402HTTPResourceServer): Promise<{ server: Server; url: string; served: () => number }> {
  let served = 0;
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const paymentHeader = req.headers['payment-signature'];
      const context: HTTPRequestContext = {
        adapter: adapterFor(req, url),
        path: url.pathname,
        method: req.method ?? 'GET',
        ...(typeof paymentHeader === 'string' ? { paymentHeader } : {}),
      };
      const result = await httpServer.processHTTPRequest(context);
      if (result.type === 'payment-error') return reply(res, result.response.status, result.response.headers, result.response.body);
      const body = { status: 'in_progress', poll: ++served };
      if (result.type === 'no-payment-required') return reply(res, 200, {}, body);
      const settled = await httpServer.processSettlement(
        result.paymentPayload,
        result.paymentRequirements,
        result.declaredExtensions,
        { request: context, responseBody: Buffer.from(JSON.stringify(body)) },
        undefined,
        result.beforeHandlerSettlement,
      );
      if (!settled.success) return reply(res, settled.response.status, settled.response.headers, settled.response.body);
      reply(res, 200, settled.headers, body);
    })().catch((error: unknown) => reply(res, 500, {}, { error: String(error) }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/poll`, served: () => served };
}

interface SentTransaction {
  readonly functionName: string;
  readonly gasUsed: bigint;
}

/** Every transaction mined after block `from`, named by the settlement-contract function it called. */
async function transactionsSince(rpcUrl: string, from: bigint): Promise<SentTransaction[]> {
  const { publicClient } = chainClients(rpcUrl);
  const latest = await publicClient.getBlockNumber();
  const sent: SentTransaction[] = [];
  for (let n = from + 1n; n <= latest; n++) {
    const block = await publicClient.getBlock({ blockNumber: n, includeTransactions: true });
    for (const tx of block.transactions) {
      const receipt = await publicClient.getTransactionReceipt({ hash: tx.hash });
      const functionName = tx.to?.toLowerCase() === BATCH_SETTLEMENT_ADDRESS.toLowerCase()
        ? decodeFunctionData({ abi: batchSettlementAbi, data: tx.input }).functionName
        : `other:${tx.to}`;
      sent.push({ functionName, gasUsed: receipt.gasUsed });
    }
  }
  return sent;
}

describe('x402 batch-settlement end to end on the dev chain (stock @x402/evm client, server, facilitator)', () => {
  let chain: DevChain;
  let rpcUrl: string;
  let resource: Awaited<ReturnType<typeof startResourceServer>>;
  let manager: BatchSettlementChannelManager;
  let clientScheme: BatchSettlementClientScheme;
  let paidFetch: typeof fetch;
  let startBlock: bigint;
  const before = { payer: 0n, receiver: 0n, contract: 0n };
  const balances = async () => ({
    payer: await usdcBalance(rpcUrl, payer.address),
    receiver: await usdcBalance(rpcUrl, receiver.address),
    contract: await usdcBalance(rpcUrl, BATCH_SETTLEMENT_ADDRESS),
  });

  beforeAll(async () => {
    chain = await startDevChain({ silent: true, fundIndices: [4, 5] });
    rpcUrl = chain.rpcUrl;
    const facilitator = inProcessFacilitator(rpcUrl, operator, receiverAuthorizer);

    const serverScheme = new BatchSettlementServerScheme(receiver.address, { storage: new InMemoryChannelStorage(), withdrawDelay: WITHDRAW_DELAY });
    const resourceServer = new x402ResourceServer(facilitator).register(BASE_NETWORK, serverScheme);
    const httpServer = new x402HTTPResourceServer(resourceServer, {
      'GET /poll': {
        accepts: { scheme: 'batch-settlement', network: BASE_NETWORK, payTo: receiver.address, price: '$0.001', extra: { minDeposit: '$0.02' } },
        description: 'one status poll',
      },
    });
    await httpServer.initialize();
    resource = await startResourceServer(httpServer);
    manager = serverScheme.createChannelManager(facilitator, BASE_NETWORK, BASE_USDC);

    const { publicClient } = chainClients(rpcUrl);
    clientScheme = new BatchSettlementClientScheme(toClientEvmSigner(privateKeyToAccount(payer.privateKey), publicClient));
    paidFetch = wrapFetchWithPayment(fetch, new x402Client().register(BASE_NETWORK, clientScheme));

    Object.assign(before, await balances());
    startBlock = await publicClient.getBlockNumber();
  });

  afterAll(async () => {
    resource?.server.closeAllConnections();
    await new Promise<void>((resolve) => resource?.server.close(() => resolve()) ?? resolve());
    await chain?.stop();
  });

  /** One paid poll; returns the settlement response the server sent back. */
  async function poll(pay: typeof fetch = paidFetch): Promise<{ transaction: string; amount?: string }> {
    const response = await pay(resource.url);
    expect(response.status, await response.clone().text()).toBe(200);
    const header = response.headers.get('payment-response');
    expect(header).toBeTruthy();
    return decodePaymentResponseHeader(header!) as { transaction: string; amount?: string };
  }

  it('deposits once, then pays each call with a voucher and no transaction', async () => {
    const first = await poll();
    expect(first.transaction).toMatch(/^0x[0-9a-f]{64}$/); // the deposit
    expect(BigInt(first.amount!)).toBe(DEPOSIT);
    for (let i = 1; i < CALLS_BEFORE_CLAIM; i++) expect((await poll()).transaction).toBe('');
    expect(resource.served()).toBe(CALLS_BEFORE_CLAIM);
    const sent = await transactionsSince(rpcUrl, startBlock);
    expect(sent.map((t) => t.functionName)).toEqual(['deposit']);
    expect((await balances()).contract - before.contract).toBe(DEPOSIT);
  });

  it('claims the vouchers in one transaction and settles them to the receiver in another', async () => {
    const claims = await manager.claim();
    expect(claims).toHaveLength(1);
    expect(claims[0]!.vouchers).toBe(1);
    const settled = await manager.settle();
    expect(settled.transaction).toMatch(/^0x[0-9a-f]{64}$/);
    expect((await balances()).receiver - before.receiver).toBe(PRICE * BigInt(CALLS_BEFORE_CLAIM));
  });

  it('pays more calls, then refunds the remainder cooperatively (outstanding claim + refund in one multicall)', async () => {
    for (let i = 0; i < CALLS_AFTER_SETTLE; i++) expect((await poll()).transaction).toBe('');
    const refunded = await clientScheme.refund(resource.url);
    expect(refunded.success).toBe(true);
    const calls = BigInt(CALLS_BEFORE_CLAIM + CALLS_AFTER_SETTLE);
    expect(BigInt(refunded.amount!)).toBe(DEPOSIT - PRICE * calls);
    // The last calls were claimed inside the refund; settle pays them out.
    await manager.settle();

    const after = await balances();
    expect(before.payer - after.payer).toBe(PRICE * calls); // net spend: exactly the calls
    expect(after.receiver - before.receiver).toBe(PRICE * calls);
    expect(after.contract).toBe(before.contract); // nothing left in escrow
    const { publicClient } = chainClients(rpcUrl);
    const [totalClaimed, totalSettled] = await publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: batchSettlementAbi, functionName: 'receivers', args: [receiver.address, BASE_USDC] });
    expect(totalClaimed).toBe(PRICE * calls);
    expect(totalSettled).toBe(totalClaimed);

    const sent = await transactionsSince(rpcUrl, startBlock);
    expect(sent.map((t) => t.functionName)).toEqual(['deposit', 'claimWithSignature', 'settle', 'multicall', 'settle']);
    // Gas of each step, for the record (the issue's note compares it with the reference contract).
    console.info(`batch-settlement gas on this project's contracts: ${sent.map((t) => `${t.functionName} ${t.gasUsed}`).join(', ')}`);
  });

  it('refunds an idle channel from the server side: the channel manager claims its last voucher and refunds the rest in one transaction', async () => {
    const { publicClient } = chainClients(rpcUrl);
    const scheme = new BatchSettlementClientScheme(toClientEvmSigner(privateKeyToAccount(secondPayer.privateKey), publicClient));
    const pay = wrapFetchWithPayment(fetch, new x402Client().register(BASE_NETWORK, scheme));
    const payerBefore = await usdcBalance(rpcUrl, secondPayer.address);
    const receiverBefore = await usdcBalance(rpcUrl, receiver.address);
    const fromBlock = await publicClient.getBlockNumber();
    expect((await poll(pay)).transaction).toMatch(/^0x[0-9a-f]{64}$/);
    expect((await poll(pay)).transaction).toBe('');

    const refunds = await manager.refundIdleChannels({ idleSecs: 0 });
    expect(refunds).toHaveLength(1);
    await manager.settle();
    expect(payerBefore - (await usdcBalance(rpcUrl, secondPayer.address))).toBe(2n * PRICE);
    expect((await usdcBalance(rpcUrl, receiver.address)) - receiverBefore).toBe(2n * PRICE);
    expect(await usdcBalance(rpcUrl, BATCH_SETTLEMENT_ADDRESS)).toBe(before.contract);
    const sent = await transactionsSince(rpcUrl, fromBlock);
    expect(sent.map((t) => t.functionName)).toEqual(['deposit', 'multicall', 'settle']);
    console.info(`server-side refund gas: ${sent.map((t) => `${t.functionName} ${t.gasUsed}`).join(', ')}`);
  });
});
