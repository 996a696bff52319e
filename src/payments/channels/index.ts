import { BatchSettlementEvmScheme as BatchSettlementServerScheme } from '@x402/evm/batch-settlement/server';
import type { Address } from 'viem';
import type { Db, Tx } from '../../db/client.js';
import type { PaymentRow } from '../../db/schema.js';
import type { ChannelCharges } from '../lifecycle.js';
import type { ChannelContractReader } from '../../chain/channels.js';
import type { ChannelsProbe } from '../../ledger/reconcile.js';
import { DbChannelStorage } from './storage.js';
import { channelPaymentOf, minDepositFor } from './vouchers.js';

/**
 * x402 `batch-settlement` channels paying this service's fee wallet: the stock server scheme of
 * @x402/evm on our channel storage, the route's deposit hint, and the refund of a charge. The
 * worker's channel settler (settler.ts) claims, settles and refunds them on chain.
 */
export interface Channels {
  storage: DbChannelStorage;
  /** The stock server scheme (registered on the resource server beside `exact`). */
  scheme: BatchSettlementServerScheme;
  receiver: Address;
  minDeposit(price: bigint): bigint;
  /** Refunds of channel payments (PaymentLifecycle.channels). */
  charges: ChannelCharges;
}

export interface ChannelsOptions {
  db: Db;
  /** The fee wallet: every channel's receiver. */
  receiver: Address;
  withdrawDelaySeconds: number;
  depositCalls: number;
  depositMax: bigint;
}

export function createChannels(opts: ChannelsOptions): Channels {
  const storage = new DbChannelStorage(opts.db, { receiver: opts.receiver });
  return {
    storage,
    scheme: new BatchSettlementServerScheme(opts.receiver, { storage, withdrawDelay: opts.withdrawDelaySeconds }),
    receiver: opts.receiver,
    minDeposit: (price) => minDepositFor(price, opts.depositCalls, opts.depositMax),
    charges: {
      uncharge: async (tx: Tx, row: PaymentRow) => {
        const paid = paymentOfRow(row);
        return paid ? storage.uncharge(tx, paid.channelId, paid.maxClaimable, row.amount) : false;
      },
      release: async (row: PaymentRow) => {
        if (row.channelId) await storage.releaseRequest(row.channelId);
      },
      chargedElseRelease: async (row: PaymentRow) => {
        const paid = paymentOfRow(row);
        return paid ? storage.chargedElseRelease(paid.channelId, paid.maxClaimable) : false;
      },
    },
  };
}

/** The channel payment a recorded payment row was made with (its stored payload). */
export function paymentOfRow(row: PaymentRow) {
  const stored = row.payload?.payload as { accepted?: { scheme?: string }; payload?: unknown } | undefined;
  return channelPaymentOf(stored?.accepted?.scheme, stored?.payload);
}

/** Reconciliation's view of the channels: the stored ones read on the contract, and the fee wallet's totals there. */
export function channelsProbe(channels: Channels, contract: ChannelContractReader, token: Address): ChannelsProbe {
  return {
    held: async () => {
      const stored = await channels.storage.list();
      const onchain = await contract.channels(stored.map((c) => c.channelId as `0x${string}`));
      let balance = 0n;
      let unclaimed = 0n;
      for (const [i, channel] of stored.entries()) {
        const truth = onchain[i]!;
        balance += truth.balance;
        const beyond = BigInt(channel.chargedCumulativeAmount) - truth.totalClaimed;
        if (beyond > 0n) unclaimed += beyond;
      }
      return { channels: stored.length, balance, unclaimed };
    },
    receiver: () => contract.receiver(channels.receiver, token),
  };
}
