import { and, eq, inArray, isNotNull, sql } from 'drizzle-orm';
import type { Executor } from '../db/client.js';
import { chainTransfers, payments } from '../db/schema.js';
import { RECEIVABLE_CHANNEL_FEES, TREASURY_CALL_FEES, type Wallet } from './accounts.js';
import { accountBalance, checkLedger, kindTotal, walletBalance, type LedgerCheck } from './ledger.js';

/** What reconciliation needs of a wallet: its address and its on-chain USDC. */
export interface WalletProbe {
  readonly address: string;
  usdcBalance(): Promise<bigint>;
}

export interface WalletReconciliation {
  wallet: Wallet;
  address: string;
  /** USDC the wallet holds on chain. */
  onChain: bigint;
  /** Sum of the ledger accounts this wallet holds. */
  ledger: bigint;
  /** onChain − ledger: 0n when they agree. */
  difference: bigint;
  /**
   * Payouts from this wallet signed or sent but not yet confirmed. While one is mined and
   * awaiting confirmations, `difference` is its negative; a difference beyond that is real.
   */
  inFlight: bigint;
  /**
   * Deferred micro-fees into this wallet whose batch settlement was sent but not yet booked: while
   * one is mined and not booked, `difference` is up to this much (payments/micro-fee-settler.ts).
   */
  incoming: bigint;
}

/** What reconciliation needs of the batch-settlement channels paying the fee wallet (payments/channels/). */
export interface ChannelsProbe {
  /** Over the stored channels, read on the contract: their balances, and what was charged beyond what was claimed. */
  held(): Promise<{ channels: number; balance: bigint; unclaimed: bigint }>;
  /** The contract's cumulative totals for the fee wallet. */
  receiver(): Promise<{ totalClaimed: bigint; totalSettled: bigint }>;
}

export interface ChannelsReconciliation {
  channels: number;
  /** USDC the contract holds in those channels (the payers' deposits, what was claimed included until it is settled out). */
  deposits: bigint;
  /** The ledger's `receivable:channel_fees`: calls served, not yet paid into the fee wallet. */
  ledger: bigint;
  /** What the contract owes for them: charged and unclaimed + claimed and unsettled + settled and not yet booked. */
  onChain: bigint;
  /** onChain − ledger: 0n when they agree. */
  difference: bigint;
  /** Paid into the fee wallet by the contract and not yet booked (the channel settler books it): the fee wallet's `difference` is this much meanwhile. */
  unbooked: bigint;
}

export interface Reconciliation {
  ledger: LedgerCheck;
  wallets: WalletReconciliation[];
  channels?: ChannelsReconciliation;
  /** The ledger balances and every wallet agrees with the chain. */
  ok: boolean;
}

/**
 * Checks the books: the ledger sums to zero per movement and overall, the escrow wallet holds
 * on chain exactly what its accounts say (escrow:* + treasury:fund_fees + treasury:platform_fees
 * + payout_pending), and so does the fee wallet (treasury:call_fees) when given.
 */
export async function reconcile(
  exec: Executor,
  opts: { escrow: WalletProbe; feeWallet?: WalletProbe; channels?: ChannelsProbe | undefined },
): Promise<Reconciliation> {
  const ledger = await checkLedger(exec);
  const probes: [Wallet, WalletProbe][] = [['escrow', opts.escrow]];
  if (opts.feeWallet) probes.push(['fee', opts.feeWallet]);
  const wallets: WalletReconciliation[] = [];
  for (const [wallet, probe] of probes) wallets.push(await reconcileWallet(exec, wallet, probe));
  const channels = opts.channels ? await reconcileChannels(exec, opts.channels) : undefined;
  return {
    ledger,
    wallets,
    ...(channels ? { channels } : {}),
    ok: ledger.ok && wallets.every((w) => w.difference === 0n) && (channels === undefined || channels.difference === 0n),
  };
}

/**
 * The channels' side: every unit the ledger holds as owed by channels (`receivable:channel_fees`)
 * is on the contract, charged on a stored channel beyond its claimed total, or claimed for the fee
 * wallet and not yet paid out, or paid out and not yet booked.
 */
async function reconcileChannels(exec: Executor, probe: ChannelsProbe): Promise<ChannelsReconciliation> {
  const held = await probe.held();
  const totals = await probe.receiver();
  const booked = await kindTotal(exec, 'channel_settled', TREASURY_CALL_FEES);
  const unbooked = totals.totalSettled - booked;
  const onChain = held.unclaimed + (totals.totalClaimed - totals.totalSettled) + unbooked;
  const ledger = await accountBalance(exec, RECEIVABLE_CHANNEL_FEES);
  return { channels: held.channels, deposits: held.balance, ledger, onChain, difference: onChain - ledger, unbooked };
}

async function reconcileWallet(exec: Executor, wallet: Wallet, probe: WalletProbe): Promise<WalletReconciliation> {
  const onChain = await probe.usdcBalance();
  const ledger = await walletBalance(exec, wallet);
  const inFlight = await inFlightFrom(exec, probe.address);
  const incoming = await incomingTo(exec, probe.address);
  return { wallet, address: probe.address, onChain, ledger, difference: onChain - ledger, inFlight, incoming };
}

async function incomingTo(exec: Executor, address: string): Promise<bigint> {
  const [row] = await exec
    .select({ total: sql<string>`coalesce(sum(${payments.amount}), 0)::text` })
    .from(payments)
    .where(and(eq(payments.payTo, address.toLowerCase()), eq(payments.status, 'deferred'), isNotNull(payments.txHash)));
  return BigInt(row?.total ?? '0');
}

async function inFlightFrom(exec: Executor, address: string): Promise<bigint> {
  const [row] = await exec
    .select({ total: sql<string>`coalesce(sum(${chainTransfers.amount}), 0)::text` })
    .from(chainTransfers)
    .where(and(eq(chainTransfers.fromAddress, address.toLowerCase()), inArray(chainTransfers.status, ['signed', 'sent'])));
  return BigInt(row?.total ?? '0');
}
