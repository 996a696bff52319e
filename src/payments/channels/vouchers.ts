import { encodeAbiParameters, getAddress, keccak256, type Address, type Hex } from 'viem';
import { z } from 'zod';

/**
 * What this service reads from an x402 `batch-settlement` payment payload (`@x402/evm` 2.27): the
 * client pays over a channel it funded on the channel contract, each call with a voucher that
 * raises the channel's signed cumulative amount by the price. Three payloads reach a priced route:
 * - `deposit`: the channel's first payment (or a top-up): an ERC-3009 deposit into the channel
 *   contract, settled on chain, plus the voucher of this call;
 * - `voucher`: a call paid by a voucher alone: checked locally, no transaction;
 * - `refund`: the client's cooperative refund: no call is served and nothing is charged; the
 *   remainder of the channel goes back to the payer on chain.
 * The scheme's rules themselves are the package's; this file only names the payment for our books.
 */
export type ChannelPaymentType = 'deposit' | 'voucher' | 'refund';

export interface ChannelPayment {
  type: ChannelPaymentType;
  /** bytes32, lowercase. */
  channelId: Hex;
  payer: Address;
  /** The voucher's signed cumulative amount (atomic units). */
  maxClaimable: bigint;
}

const hex32 = z.string().regex(/^0x[0-9a-fA-F]{64}$/);
const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/);
const channelPayloadSchema = z.object({
  type: z.enum(['deposit', 'voucher', 'refund']),
  channelConfig: z.object({ payer: address }).passthrough(),
  voucher: z.object({ channelId: hex32, maxClaimableAmount: z.string().regex(/^[0-9]{1,78}$/) }).passthrough(),
});

export const BATCH_SETTLEMENT_SCHEME = 'batch-settlement';

/** The channel payment a verified x402 payload carries (its inner `payload`), or undefined for another scheme. */
export function channelPaymentOf(scheme: string | undefined, inner: unknown): ChannelPayment | undefined {
  if (scheme !== BATCH_SETTLEMENT_SCHEME) return undefined;
  const parsed = channelPayloadSchema.safeParse(inner);
  if (!parsed.success) return undefined;
  const { type, channelConfig, voucher } = parsed.data;
  return {
    type,
    channelId: voucher.channelId.toLowerCase() as Hex,
    payer: getAddress(channelConfig.payer),
    maxClaimable: BigInt(voucher.maxClaimableAmount),
  };
}

/**
 * The payment's authorization nonce in our books: one per (channel, cumulative amount), so a
 * voucher charges at most one call (payments' unique authorization index).
 */
export function voucherNonce(channelId: Hex, maxClaimable: bigint): Hex {
  return keccak256(encodeAbiParameters([{ type: 'bytes32' }, { type: 'uint256' }], [channelId, maxClaimable]));
}

/**
 * The `extra.minDeposit` hint of a route: enough for `calls` calls at its price, at most `max`
 * (the stock client refuses one payment above $1 by default), and never below one call.
 */
export function minDepositFor(price: bigint, calls: number, max: bigint): bigint {
  const wanted = price * BigInt(calls);
  const capped = wanted < max ? wanted : max;
  return capped > price ? capped : price;
}

/** The scheme's reasons (@x402/evm 2.27) that `staleClientReason` reads and answers. */
export const CUMULATIVE_EXCEEDS_BALANCE = 'invalid_batch_settlement_evm_cumulative_exceeds_balance';
export const CUMULATIVE_AMOUNT_MISMATCH = 'invalid_batch_settlement_evm_cumulative_amount_mismatch';

/**
 * The reason to answer a refused voucher with so that the stock client recovers, or undefined to
 * answer the scheme's own. A voucher beyond its channel's balance, on a channel this service no
 * longer stores, comes from a client whose view of the channel is stale: the channel settler
 * refunded the idle channel (its balance is back with the payer) and dropped it. The stock client
 * never re-reads the channel on `cumulative_exceeds_balance`, so it would sign the same refused
 * voucher on every call; on `cumulative_amount_mismatch` without a stored channel state it reads
 * the channel from the contract, sees the balance spent, and deposits anew within the same call.
 */
export function staleClientReason(reason: string | undefined, stored: boolean): string | undefined {
  return reason === CUMULATIVE_EXCEEDS_BALANCE && !stored ? CUMULATIVE_AMOUNT_MISMATCH : undefined;
}
