import * as x402Evm from '@x402/evm';
import { computeChannelId } from '@x402/evm/batch-settlement/client';
import { domainSeparator, encodeFunctionData, hashTypedData, type Address, type Hex } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANVIL_ACCOUNTS, BASE_CHAIN_ID, BASE_USDC, BATCH_SETTLEMENT_ADDRESS, ERC3009_DEPOSIT_COLLECTOR_ADDRESS } from '../../src/chain/constants.js';
import { createDevClient } from '../../src/chain/dev/client.js';
import { depositCollectorRuntimeCode } from '../../src/chain/dev/batch-settlement-contracts.js';
import { batchSettlementAbi, batchSettlementArtifact, erc3009DepositCollectorAbi } from '../../src/chain/dev/contracts.js';
import { startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import {
  chainClients,
  channelConfig,
  depositCollectorData,
  revertOf,
  SETTLEMENT_DOMAIN,
  sendSettlement,
  signClaimBatch,
  signRefund,
  signVoucher,
  WITHDRAW_DELAY,
  ZERO_ADDRESS,
  type ChannelConfig,
  type VoucherClaim,
} from './batch-settlement-helpers.js';

/**
 * The project's own batch-settlement contracts (contracts/BatchSettlement.sol and
 * Erc3009DepositCollector.sol) at @x402/evm's addresses on a real anvil: where they are, that
 * they hash and sign exactly as the package does, and the channel rules themselves.
 */

const operator = ANVIL_ACCOUNTS[2]!; // relays transactions (the facilitator's role)
const receiver = ANVIL_ACCOUNTS[3]!; // receives the fees
const payer = ANVIL_ACCOUNTS[4]!; // opens channels and signs vouchers
const stranger = ANVIL_ACCOUNTS[5]!; // anybody else
const receiverAuthorizer = ANVIL_ACCOUNTS[6]!; // signs claims and refunds for the receiver
const DEPOSIT = 1_000_000n; // 1 USDC

describe('batch-settlement contracts on the dev chain', () => {
  let chain: DevChain;
  let rpcUrl: string;

  beforeAll(async () => {
    chain = await startDevChain({ silent: true, fundIndices: [4, 5] });
    rpcUrl = chain.rpcUrl;
  });

  afterAll(async () => {
    await chain?.stop();
  });

  const read = <T>(functionName: string, args: readonly unknown[] = []): Promise<T> =>
    chainClients(rpcUrl).publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: batchSettlementAbi, functionName, args } as never) as Promise<T>;
  const channelId = (config: ChannelConfig): Hex => computeChannelId(config, BASE_CHAIN_ID);
  /** Every channel this file opened (one receiver, one token). */
  const opened: ChannelConfig[] = [];
  const channelState = async (config: ChannelConfig) => {
    const [balance, totalClaimed] = await read<[bigint, bigint]>('channels', [channelId(config)]);
    return { balance, totalClaimed };
  };
  const receiverTotals = async () => {
    const [totalClaimed, totalSettled] = await read<[bigint, bigint]>('receivers', [receiver.address, BASE_USDC]);
    return { totalClaimed, totalSettled };
  };

  /** A fresh channel from `payer` to `receiver` holding `amount`, deposited by the operator. */
  async function openChannel(amount = DEPOSIT, overrides: Partial<ChannelConfig> = {}): Promise<ChannelConfig> {
    const config = channelConfig(payer, receiver.address, receiverAuthorizer.address, overrides);
    const data = await depositCollectorData(payer, channelId(config), amount);
    await sendSettlement(rpcUrl, operator, 'deposit', [config, amount, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, data]);
    opened.push(config);
    return config;
  }

  async function voucherClaim(config: ChannelConfig, maxClaimableAmount: bigint, totalClaimed = maxClaimableAmount, signerAccount = payer): Promise<VoucherClaim> {
    return { voucher: { channel: config, maxClaimableAmount }, signature: await signVoucher(signerAccount, channelId(config), maxClaimableAmount), totalClaimed };
  }

  async function claimWithSignature(claims: VoucherClaim[]) {
    const entries = claims.map((c) => ({ channelId: channelId(c.voucher.channel), maxClaimableAmount: c.voucher.maxClaimableAmount, totalClaimed: c.totalClaimed }));
    return sendSettlement(rpcUrl, operator, 'claimWithSignature', [claims, await signClaimBatch(receiverAuthorizer, entries)]);
  }

  /** Sets the dev chain's clock `seconds` ahead and mines a block there. */
  async function advanceTime(seconds: number): Promise<void> {
    const { publicClient } = chainClients(rpcUrl);
    await publicClient.request({ method: 'evm_increaseTime' as never, params: [seconds] as never });
    await publicClient.request({ method: 'evm_mine' as never, params: [] as never });
  }

  describe('placement and compatibility with @x402/evm', () => {
    it('sits at the addresses the package exports, the collector bound to the settlement contract', async () => {
      expect(BATCH_SETTLEMENT_ADDRESS).toBe(x402Evm.BATCH_SETTLEMENT_ADDRESS);
      expect(ERC3009_DEPOSIT_COLLECTOR_ADDRESS).toBe(x402Evm.ERC3009_DEPOSIT_COLLECTOR_ADDRESS);
      const { publicClient } = chainClients(rpcUrl);
      expect(await publicClient.getCode({ address: BATCH_SETTLEMENT_ADDRESS })).toBe(batchSettlementArtifact().deployedBytecode);
      expect(await publicClient.getCode({ address: ERC3009_DEPOSIT_COLLECTOR_ADDRESS })).toBe(await depositCollectorRuntimeCode(createDevClient(rpcUrl)));
      expect(
        await publicClient.readContract({ address: ERC3009_DEPOSIT_COLLECTOR_ADDRESS, abi: erc3009DepositCollectorAbi, functionName: 'settlement' }),
      ).toBe(BATCH_SETTLEMENT_ADDRESS);
      // Nothing in storage: setCode copied code only, and the contract needs none.
      expect(await publicClient.getStorageAt({ address: BATCH_SETTLEMENT_ADDRESS, slot: '0x0' })).toMatch(/^0x0*$/);
    });

    it('hashes channel ids, vouchers, refunds and claim batches exactly as the package signs them', async () => {
      const config = channelConfig(payer, receiver.address, receiverAuthorizer.address);
      const id = channelId(config);
      expect(await read<Hex>('DOMAIN_SEPARATOR')).toBe(domainSeparator({ domain: SETTLEMENT_DOMAIN }));
      expect(await read<Hex>('getChannelId', [config])).toBe(id);
      expect(await read<Hex>('getVoucherDigest', [id, 1234n])).toBe(
        hashTypedData({ domain: SETTLEMENT_DOMAIN, types: x402Evm.voucherTypes, primaryType: 'Voucher', message: { channelId: id, maxClaimableAmount: 1234n } }),
      );
      expect(await read<Hex>('getRefundDigest', [id, 3n, 99n])).toBe(
        hashTypedData({ domain: SETTLEMENT_DOMAIN, types: x402Evm.refundTypes, primaryType: 'Refund', message: { channelId: id, nonce: 3n, amount: 99n } }),
      );
      const claims = [await voucherClaim(config, 500n, 400n), await voucherClaim({ ...config, salt: `0x${'11'.repeat(32)}` }, 7n)];
      const entries = claims.map((c) => ({ channelId: channelId(c.voucher.channel), maxClaimableAmount: c.voucher.maxClaimableAmount, totalClaimed: c.totalClaimed }));
      expect(await read<Hex>('getClaimBatchDigest', [claims])).toBe(
        hashTypedData({ domain: SETTLEMENT_DOMAIN, types: x402Evm.claimBatchTypes, primaryType: 'ClaimBatch', message: { claims: entries } }),
      );
      expect(await read<Hex>('CHANNEL_CONFIG_TYPEHASH')).toMatch(/^0x[0-9a-f]{64}$/);
    });
  });

  describe('deposit through the ERC-3009 collector', () => {
    it('moves the payer\'s USDC into the channel once per authorization', async () => {
      const payerBefore = await usdcBalance(rpcUrl, payer.address);
      const contractBefore = await usdcBalance(rpcUrl, BATCH_SETTLEMENT_ADDRESS);
      const config = channelConfig(payer, receiver.address, receiverAuthorizer.address);
      const data = await depositCollectorData(payer, channelId(config), DEPOSIT);
      await sendSettlement(rpcUrl, operator, 'deposit', [config, DEPOSIT, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, data]);
      opened.push(config);
      expect(await channelState(config)).toEqual({ balance: DEPOSIT, totalClaimed: 0n });
      expect(await usdcBalance(rpcUrl, payer.address)).toBe(payerBefore - DEPOSIT);
      expect(await usdcBalance(rpcUrl, BATCH_SETTLEMENT_ADDRESS)).toBe(contractBefore + DEPOSIT);
      // The same authorization again: the token refuses a used nonce.
      expect(await revertOf(rpcUrl, operator, 'deposit', [config, DEPOSIT, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, data])).toContain('authorization is used');
    });

    it('refuses an authorization aimed at another channel, or signed by someone else than the payer', async () => {
      const config = channelConfig(payer, receiver.address, receiverAuthorizer.address);
      const other = channelConfig(payer, receiver.address, receiverAuthorizer.address);
      const forOther = await depositCollectorData(payer, channelId(other), DEPOSIT);
      expect(await revertOf(rpcUrl, operator, 'deposit', [config, DEPOSIT, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, forOther])).toContain('invalid signature');
      const byStranger = await depositCollectorData(payer, channelId(config), DEPOSIT, { signer: stranger });
      expect(await revertOf(rpcUrl, operator, 'deposit', [config, DEPOSIT, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, byStranger])).toContain('invalid signature');
    });

    it('refuses bad channel terms and a collector that delivers nothing', async () => {
      const data = '0x';
      const tooShort = channelConfig(payer, receiver.address, receiverAuthorizer.address, { withdrawDelay: WITHDRAW_DELAY - 1 });
      expect(await revertOf(rpcUrl, operator, 'deposit', [tooShort, DEPOSIT, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, data])).toBe('WithdrawDelayOutOfRange');
      const noAuthorizer = channelConfig(payer, receiver.address, ZERO_ADDRESS);
      expect(await revertOf(rpcUrl, operator, 'deposit', [noAuthorizer, DEPOSIT, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, data])).toBe('InvalidChannel');
      const config = channelConfig(payer, receiver.address, receiverAuthorizer.address);
      expect(await revertOf(rpcUrl, operator, 'deposit', [config, 0n, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, data])).toBe('ZeroAmount');
      expect(await revertOf(rpcUrl, operator, 'deposit', [config, DEPOSIT, ZERO_ADDRESS, data])).toBe('InvalidCollector');
      // A collector whose collect() succeeds without moving a token (code: STOP) credits nothing.
      const idle: Address = `0x${'5e'.repeat(20)}`;
      await createDevClient(rpcUrl).setCode({ address: idle, bytecode: '0x00' });
      expect(await revertOf(rpcUrl, operator, 'deposit', [config, DEPOSIT, idle, data])).toBe('DepositNotReceived');
    });

    it('lets only the settlement contract call the collector', async () => {
      const { publicClient } = chainClients(rpcUrl);
      const data = await depositCollectorData(payer, `0x${'22'.repeat(32)}`, DEPOSIT);
      await expect(
        publicClient.simulateContract({
          account: stranger.address,
          address: ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
          abi: erc3009DepositCollectorAbi,
          functionName: 'collect',
          args: [payer.address, BASE_USDC, DEPOSIT, `0x${'22'.repeat(32)}`, data],
        }),
      ).rejects.toThrow(/NotSettlement/);
    });
  });

  describe('claims', () => {
    it('never claims an amount twice: a replayed or older voucher changes nothing', async () => {
      const config = await openChannel();
      const before = await receiverTotals();
      const latest = await voucherClaim(config, 300n);
      await claimWithSignature([latest]);
      await claimWithSignature([latest]); // the same voucher again
      await claimWithSignature([await voucherClaim(config, 100n)]); // an older one
      expect(await channelState(config)).toEqual({ balance: DEPOSIT, totalClaimed: 300n });
      expect((await receiverTotals()).totalClaimed - before.totalClaimed).toBe(300n);
      // Settlement pays the claimed total once; a second settle has nothing to pay.
      const receiverBefore = await usdcBalance(rpcUrl, receiver.address);
      const first = await sendSettlement(rpcUrl, stranger, 'settle', [receiver.address, BASE_USDC]);
      const second = await sendSettlement(rpcUrl, stranger, 'settle', [receiver.address, BASE_USDC]);
      expect(await usdcBalance(rpcUrl, receiver.address)).toBe(receiverBefore + (before.totalClaimed - before.totalSettled) + 300n);
      expect(first.logs).toHaveLength(2); // Transfer + Settled
      expect(second.logs).toHaveLength(0);
    });

    it('refuses vouchers not signed by the payer (or its payer authorizer)', async () => {
      const config = await openChannel();
      const forged = await voucherClaim(config, 500n, 500n, stranger);
      const entries = [{ channelId: channelId(config), maxClaimableAmount: 500n, totalClaimed: 500n }];
      expect(await revertOf(rpcUrl, operator, 'claimWithSignature', [[forged], await signClaimBatch(receiverAuthorizer, entries)])).toBe('InvalidSignature');
      expect(await revertOf(rpcUrl, receiver, 'claim', [[forged]])).toBe('InvalidSignature');
      // A payer-signed voucher of another channel does not fit this one.
      const other = await openChannel();
      const misplaced = { ...(await voucherClaim(other, 500n)), voucher: { channel: config, maxClaimableAmount: 500n } };
      expect(await revertOf(rpcUrl, receiver, 'claim', [[misplaced]])).toBe('InvalidSignature');
      // With no payer authorizer the payer's own key signs.
      const direct = await openChannel(DEPOSIT, { payerAuthorizer: ZERO_ADDRESS });
      await sendSettlement(rpcUrl, receiver, 'claim', [[await voucherClaim(direct, 10n)]]);
      expect((await channelState(direct)).totalClaimed).toBe(10n);
      expect(await revertOf(rpcUrl, receiver, 'claim', [[await voucherClaim(direct, 20n, 20n, stranger)]])).toBe('InvalidSignature');
    });

    it('caps a claim at its voucher and at the balance, and takes claims only from the receiver side', async () => {
      const config = await openChannel(500n);
      expect(await revertOf(rpcUrl, receiver, 'claim', [[await voucherClaim(config, 200n, 201n)]])).toBe('ClaimAboveVoucher');
      expect(await revertOf(rpcUrl, receiver, 'claim', [[await voucherClaim(config, 501n)]])).toBe('ClaimAboveBalance');
      expect(await revertOf(rpcUrl, stranger, 'claim', [[await voucherClaim(config, 100n)]])).toBe('NotReceiverSide');
      expect(await revertOf(rpcUrl, payer, 'claim', [[await voucherClaim(config, 100n)]])).toBe('NotReceiverSide');
      const row = await voucherClaim(config, 100n);
      const byStranger = await signClaimBatch(stranger, [{ channelId: channelId(config), maxClaimableAmount: 100n, totalClaimed: 100n }]);
      expect(await revertOf(rpcUrl, operator, 'claimWithSignature', [[row], byStranger])).toBe('InvalidSignature');
      expect(await revertOf(rpcUrl, operator, 'claimWithSignature', [[], byStranger])).toBe('EmptyBatch');
      await sendSettlement(rpcUrl, receiverAuthorizer, 'claim', [[row]]);
      expect((await channelState(config)).totalClaimed).toBe(100n);
    });
  });

  describe('timed withdrawal (payer side)', () => {
    it('pays the payer only after the delay, capped to what the receiver has not claimed meanwhile', async () => {
      const config = await openChannel();
      expect(await revertOf(rpcUrl, stranger, 'initiateWithdraw', [config, DEPOSIT])).toBe('NotPayerSide');
      expect(await revertOf(rpcUrl, payer, 'initiateWithdraw', [config, DEPOSIT + 1n])).toBe('AmountAboveAvailable');
      await sendSettlement(rpcUrl, payer, 'initiateWithdraw', [config, DEPOSIT]);
      expect(await revertOf(rpcUrl, payer, 'initiateWithdraw', [config, 1n])).toBe('WithdrawalPending');
      expect(await revertOf(rpcUrl, payer, 'finalizeWithdraw', [config])).toBe('WithdrawDelayNotElapsed');
      // The receiver claims its voucher within the window.
      await claimWithSignature([await voucherClaim(config, 250n)]);
      await advanceTime(WITHDRAW_DELAY - 60);
      expect(await revertOf(rpcUrl, payer, 'finalizeWithdraw', [config])).toBe('WithdrawDelayNotElapsed');
      await advanceTime(60);
      const payerBefore = await usdcBalance(rpcUrl, payer.address);
      await sendSettlement(rpcUrl, payer, 'finalizeWithdraw', [config]);
      expect(await usdcBalance(rpcUrl, payer.address)).toBe(payerBefore + DEPOSIT - 250n);
      expect(await channelState(config)).toEqual({ balance: 250n, totalClaimed: 250n });
      expect(await read<[bigint, number]>('pendingWithdrawals', [channelId(config)])).toEqual([0n, 0]);
      expect(await revertOf(rpcUrl, payer, 'finalizeWithdraw', [config])).toBe('NoWithdrawalPending');
    });
  });

  describe('cooperative refund (receiver side)', () => {
    it('refunds the unclaimed remainder, no more, and advances the refund nonce', async () => {
      const config = await openChannel();
      await claimWithSignature([await voucherClaim(config, 400n)]);
      expect(await revertOf(rpcUrl, payer, 'refund', [config, DEPOSIT])).toBe('NotReceiverSide');
      const payerBefore = await usdcBalance(rpcUrl, payer.address);
      await sendSettlement(rpcUrl, receiver, 'refund', [config, DEPOSIT * 10n]);
      expect(await usdcBalance(rpcUrl, payer.address)).toBe(payerBefore + DEPOSIT - 400n);
      expect(await channelState(config)).toEqual({ balance: 400n, totalClaimed: 400n });
      expect(await read<bigint>('refundNonce', [channelId(config)])).toBe(1n);
      // Nothing left to refund: no transfer, the nonce still moves.
      const empty = await sendSettlement(rpcUrl, receiver, 'refund', [config, 1n]);
      expect(empty.logs).toHaveLength(0);
      expect(await read<bigint>('refundNonce', [channelId(config)])).toBe(2n);
    });

    it('takes a relayed refund only with the receiver authorizer\'s signature at the current nonce', async () => {
      const config = await openChannel();
      const id = channelId(config);
      expect(await revertOf(rpcUrl, stranger, 'refundWithSignature', [config, 300n, 0n, await signRefund(stranger, id, 0n, 300n)])).toBe('InvalidSignature');
      expect(await revertOf(rpcUrl, stranger, 'refundWithSignature', [config, 300n, 1n, await signRefund(receiverAuthorizer, id, 1n, 300n)])).toBe('InvalidRefundNonce');
      const signature = await signRefund(receiverAuthorizer, id, 0n, 300n);
      expect(await revertOf(rpcUrl, stranger, 'refundWithSignature', [config, 301n, 0n, signature])).toBe('InvalidSignature');
      const payerBefore = await usdcBalance(rpcUrl, payer.address);
      await sendSettlement(rpcUrl, stranger, 'refundWithSignature', [config, 300n, 0n, signature]);
      expect(await usdcBalance(rpcUrl, payer.address)).toBe(payerBefore + 300n);
      // The same signature cannot be replayed.
      expect(await revertOf(rpcUrl, stranger, 'refundWithSignature', [config, 300n, 0n, signature])).toBe('InvalidRefundNonce');
    });

    it('shrinks a pending withdrawal by what it refunds', async () => {
      const config = await openChannel();
      await sendSettlement(rpcUrl, payer, 'initiateWithdraw', [config, 600n]);
      await sendSettlement(rpcUrl, receiver, 'refund', [config, 200n]);
      expect((await read<[bigint, number]>('pendingWithdrawals', [channelId(config)]))[0]).toBe(400n);
      await sendSettlement(rpcUrl, receiver, 'refund', [config, 500n]);
      expect(await read<[bigint, number]>('pendingWithdrawals', [channelId(config)])).toEqual([0n, 0]);
    });

    it('claims and refunds in one multicall, all or nothing', async () => {
      const config = await openChannel();
      const row = await voucherClaim(config, 700n);
      const claimSig = await signClaimBatch(receiverAuthorizer, [{ channelId: channelId(config), maxClaimableAmount: 700n, totalClaimed: 700n }]);
      const claimCall = encodeFunctionData({ abi: batchSettlementAbi, functionName: 'claimWithSignature', args: [[row], claimSig] });
      const badRefund = encodeFunctionData({ abi: batchSettlementAbi, functionName: 'refundWithSignature', args: [config, 300n, 5n, await signRefund(receiverAuthorizer, channelId(config), 5n, 300n)] });
      expect(await revertOf(rpcUrl, operator, 'multicall', [[claimCall, badRefund]])).toBe('InvalidRefundNonce');
      expect((await channelState(config)).totalClaimed).toBe(0n);
      const refundCall = encodeFunctionData({ abi: batchSettlementAbi, functionName: 'refundWithSignature', args: [config, 300n, 0n, await signRefund(receiverAuthorizer, channelId(config), 0n, 300n)] });
      await sendSettlement(rpcUrl, operator, 'multicall', [[claimCall, refundCall]]);
      expect(await channelState(config)).toEqual({ balance: DEPOSIT - 300n, totalClaimed: 700n });
    });
  });

  it('holds exactly its channels\' balances less what it settled', async () => {
    await sendSettlement(rpcUrl, stranger, 'settle', [receiver.address, BASE_USDC]);
    const balances = await Promise.all(opened.map(async (config) => (await channelState(config)).balance));
    const { totalClaimed, totalSettled } = await receiverTotals();
    expect(totalSettled).toBe(totalClaimed);
    expect(await usdcBalance(rpcUrl, BATCH_SETTLEMENT_ADDRESS)).toBe(balances.reduce((a, b) => a + b, 0n) - totalSettled);
  });
});
