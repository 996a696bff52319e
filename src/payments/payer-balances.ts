import type { Address } from 'viem';

/**
 * The USDC balance each payer was last seen to hold on chain, kept for a short while. A micro-fee
 * is served before it is settled only when the payer was seen, recently, to hold enough to pay
 * it and everything it already owes (payments/micro-fees.ts): the balance *known* to cover it.
 * One chain read per payer per `ttlMs` at most, instead of one simulation per request.
 *
 * A stale balance can be too high (the payer spent since): what that can cost is bounded by the
 * per-payer cap on unsettled fees, and a fee whose authorization then fails puts its payer in
 * arrears.
 */
export interface BalanceReader {
  balanceOf(asset: Address, payer: Address): Promise<bigint>;
}

const MAX_ENTRIES = 50_000;

export class PayerBalances {
  private readonly entries = new Map<string, { balance: bigint; until: number }>();

  constructor(
    private readonly reader: BalanceReader,
    private readonly ttlMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  private key(asset: string, payer: string): string {
    return `${asset.toLowerCase()}:${payer.toLowerCase()}`;
  }

  /** The payer's balance: the one seen within `ttlMs`, else read from the chain now. */
  async read(asset: Address, payer: Address): Promise<bigint> {
    const key = this.key(asset, payer);
    const hit = this.entries.get(key);
    if (hit && hit.until > this.now()) return hit.balance;
    const balance = await this.reader.balanceOf(asset, payer);
    if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
    this.entries.set(key, { balance, until: this.now() + this.ttlMs });
    return balance;
  }

  /** The balance seen within `ttlMs`, without asking the chain; undefined when none is fresh. */
  known(asset: string, payer: string): bigint | undefined {
    const hit = this.entries.get(this.key(asset, payer));
    return hit && hit.until > this.now() ? hit.balance : undefined;
  }

  /** Forget what was seen (after a settlement moved the payer's money). */
  forget(asset: string, payer: string): void {
    this.entries.delete(this.key(asset, payer));
  }
}
