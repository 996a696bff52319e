import { createPublicClient, http, parseAbi, type Address, type Hex, type PublicClient } from 'viem';
import { BATCH_SETTLEMENT_ADDRESS, MULTICALL3 } from './constants.js';

/**
 * Reads of the x402 batch-settlement channel contract (at the address @x402/evm expects on every
 * chain): what each channel holds and has had claimed, and what a receiver has had claimed and paid
 * out. The channel settler (payments/channels/settler.ts) and reconciliation trust these over any
 * stored copy.
 */
export const channelContractAbi = parseAbi([
  'function channels(bytes32 channelId) view returns (uint128 balance, uint128 totalClaimed)',
  'function receivers(address receiver, address token) view returns (uint128 totalClaimed, uint128 totalSettled)',
]);

export interface OnchainChannel {
  balance: bigint;
  totalClaimed: bigint;
}

export class ChannelContractReader {
  private readonly client: PublicClient;

  constructor(
    rpcUrl: string,
    readonly address: Address = BATCH_SETTLEMENT_ADDRESS,
  ) {
    this.client = createPublicClient({ transport: http(rpcUrl), cacheTime: 0 });
  }

  /** Each channel's balance and claimed total, in the order asked (one Multicall3 read per 500). */
  async channels(ids: readonly Hex[]): Promise<OnchainChannel[]> {
    const out: OnchainChannel[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      const slice = ids.slice(i, i + 500);
      const results = await this.client.multicall({
        allowFailure: false,
        multicallAddress: MULTICALL3,
        contracts: slice.map((id) => ({ address: this.address, abi: channelContractAbi, functionName: 'channels', args: [id] }) as const),
      });
      for (const [balance, totalClaimed] of results as [bigint, bigint][]) out.push({ balance, totalClaimed });
    }
    return out;
  }

  /** What the contract has claimed for `receiver` in `token`, and paid out to it (cumulative). */
  async receiver(receiver: Address, token: Address): Promise<{ totalClaimed: bigint; totalSettled: bigint }> {
    const [totalClaimed, totalSettled] = await this.client.readContract({ address: this.address, abi: channelContractAbi, functionName: 'receivers', args: [receiver, token] });
    return { totalClaimed, totalSettled };
  }
}
