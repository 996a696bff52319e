import { and, eq, inArray, isNotNull, sql } from 'drizzle-orm';
import type { Executor } from '../db/client.js';
import { chainTransfers, payments } from '../db/schema.js';
import type { Wallet } from './accounts.js';
import { checkLedger, walletBalance, type LedgerCheck } from './ledger.js';

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

export interface Reconciliation {
  ledger: LedgerCheck;
  wallets: WalletReconciliation[];
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
  opts: { escrow: WalletProbe; feeWallet?: WalletProbe },
): Promise<Reconciliation> {
  const ledger = await checkLedger(exec);
  const probes: [Wallet, WalletProbe][] = [['escrow', opts.escrow]];
  if (opts.feeWallet) probes.push(['fee', opts.feeWallet]);
  const wallets: WalletReconciliation[] = [];
  for (const [wallet, probe] of probes) wallets.push(await reconcileWallet(exec, wallet, probe));
  return { ledger, wallets, ok: ledger.ok && wallets.every((w) => w.difference === 0n) };
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
