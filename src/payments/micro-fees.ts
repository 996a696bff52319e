import { sql } from 'drizzle-orm';
import { getAddress, type Address } from 'viem';
import type { Clock } from '../clock.js';
import type { Tx } from '../db/client.js';
import type { PaymentRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { formatUsdc } from './prices.js';
import { plainEip3009 } from './fast-exact.js';
import type { PaymentLifecycle } from './lifecycle.js';
import type { PayerBalances } from './payer-balances.js';
import type { PaidWrite } from './paid-write.js';
import type { ArrearsPaidT } from './schemas.js';

/**
 * Micro-fees served before they are settled (issue 9, point 3). A stock `exact` payment of at
 * most `ceiling` into the fee wallet, signed by an account (a plain 65-byte signature), is
 * verified without the chain (fast-exact.ts `local`: signature, time window, a balance seen
 * recently), and the call is served with the fee booked as owed. The worker's batch settler
 * (micro-fee-settler.ts) settles owed authorizations many to a transaction.
 *
 * The rules, all decided here:
 * - **exposure**: a payer's unsettled fees plus this one stay within `payerCap` and within the
 *   balance last seen for it on chain; checked under a per-payer lock in the serving transaction,
 *   so concurrent calls on any number of API processes cannot overshoot. Past either, the call is
 *   settled first, like any payment: the client sees no difference but the wait;
 * - **time**: the authorization must stay valid `minValiditySeconds` more, so the settler has time;
 * - **arrears**: a payer one of whose deferred authorizations failed at settlement is refused (402
 *   `payment_in_arrears`) on every priced route until it pays what it owes at
 *   `POST /v1/payers/{address}/arrears`;
 * - never deferred: escrow funding (paid into the escrow wallet, settle-first always), the arrears
 *   payment itself, and anything above the ceiling.
 */
export interface MicroFeeTerms {
  ceiling: bigint;
  payerCap: bigint;
  minValiditySeconds: number;
  feeAddress: Address;
}

/** Purposes always settled first even at a micro price. */
const SETTLE_FIRST_PURPOSES: readonly string[] = ['pay_arrears'];

/** Under the same lock two transactions serving one payer take turns (advisory, per payer, per transaction). */
const PAYER_LOCK_CLASS = 727_101;

/** Holds `payer`'s lock for the rest of `tx`. */
async function lockPayer(tx: Tx, payer: string): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(${PAYER_LOCK_CLASS}, hashtext(${payer.toLowerCase()}))`);
}

export class MicroFees {
  private readonly fee: string;

  constructor(
    private readonly lifecycle: PaymentLifecycle,
    private readonly clock: Clock,
    readonly terms: MicroFeeTerms,
    private readonly balances: PayerBalances,
  ) {
    this.fee = terms.feeAddress.toLowerCase();
  }

  /** Whether this recorded payment may be served before it is settled (the payment alone; exposure is `defer`'s). */
  deferrable(row: PaymentRow): boolean {
    if (row.kind !== 'call_fee' || row.payTo !== this.fee || row.amount > this.terms.ceiling) return false;
    if (SETTLE_FIRST_PURPOSES.includes(row.purpose)) return false;
    if (!row.validBefore || row.validBefore.getTime() < this.clock.now().getTime() + this.terms.minValiditySeconds * 1000) return false;
    const payload = (row.payload?.payload as { payload?: unknown } | undefined)?.payload;
    return plainEip3009(payload) !== undefined;
  }

  /**
   * In the transaction that serves the call: under the payer's lock, defers the payment (booked as
   * owed) if its exposure allows. False: nothing was written; settle the payment first instead.
   */
  async defer(tx: Tx, row: PaymentRow, owner: string): Promise<boolean> {
    const known = this.balances.known(row.asset, row.payerAddress);
    if (known === undefined || known < row.amount) return false;
    await lockPayer(tx, row.payerAddress);
    const owed = await this.lifecycle.owed(row.payerAddress, tx);
    const exposure = owed.unsettled + row.amount;
    if (owed.arrears > 0n || exposure > this.terms.payerCap || exposure > known) return false;
    await this.lifecycle.defer(tx, row.id, owner);
    return true;
  }

  /** Refuses a payer in arrears (before its request is served). */
  async refuseArrears(payer: Address, purpose: string): Promise<void> {
    if (SETTLE_FIRST_PURPOSES.includes(purpose)) return;
    const { arrears } = await this.lifecycle.owed(payer);
    if (arrears === 0n) return;
    throw arrearsError(payer, arrears);
  }
}

/**
 * Paying a payer's arrears (`POST /v1/payers/{address}/arrears`, priced at exactly what it owes,
 * settled first): its defaulted fees become repaid in the transaction that books the payment, and
 * it is served again. Anyone may pay them. Arrears that changed since the price was quoted refuse
 * the write, and the payment is refunded in full.
 */
export function arrearsWrite(lifecycle: PaymentLifecycle, debtor: Address, paid: bigint): PaidWrite<ArrearsPaidT> {
  const mismatch = (owed: bigint) =>
    new AppError('amount_mismatch', `${getAddress(debtor)} owes ${owed} atomic USDC, not ${paid}; request the price again`, { details: { owed: owed.toString() } });
  return {
    check: async () => {
      const { arrears } = await lifecycle.owed(debtor);
      if (arrears === 0n) throw nothingOwed(debtor);
      if (arrears !== paid) throw mismatch(arrears);
    },
    apply: async (tx, settled) => {
      await lockPayer(tx, debtor);
      const { arrears } = await lifecycle.owed(debtor, tx);
      if (arrears !== paid) throw mismatch(arrears);
      const repaid = await lifecycle.repay(tx, debtor, settled.paymentId ?? 'unpaid');
      return { payer: getAddress(debtor), repaid: repaid.toString(), tx_hash: settled.txHash ?? '' };
    },
  };
}

export function nothingOwed(debtor: string): AppError {
  return new AppError('invalid_state', `${getAddress(debtor)} owes no fees: there is nothing to pay`);
}

export function arrearsError(payer: string, arrears: bigint): AppError {
  const address = getAddress(payer);
  return new AppError(
    'payment_in_arrears',
    `${address} owes ${formatUsdc(arrears)} in fees whose payment authorizations failed at settlement; ` +
      `pay them with POST /v1/payers/${address}/arrears, then retry`,
    { details: { payer: address, owed: arrears.toString(), pay_at: `/v1/payers/${address}/arrears` } },
  );
}
