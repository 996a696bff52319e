import { withTransaction, type Db, type Tx } from '../db/client.js';
import type { PaymentRow } from '../db/schema.js';
import { AppError, isAppError } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { PaymentFenceError, paymentReleased, type PaymentLifecycle } from './lifecycle.js';
import { SERVICE_SETTLEMENT_MESSAGE, type SettlementFault } from './settlement-fault.js';

/**
 * The rule for every priced route that changes state: **settle first, then commit the effect
 * together with the payment's booking**.
 *
 *  1. `check` the request against the current state: a refusal here moves no money;
 *  2. the payment becomes `settling` and is settled on chain. If the payer's authorization is at
 *     fault, nothing happened and nothing was charged (402). If the failure is ours (the node, a
 *     nonce, gas), the recovery sweep takes the payment over at once and refunds whatever moved (503);
 *  3. one transaction applies the effect and books the payment. If the effect is refused now
 *     (the state changed since the check), the payment is refunded in full in its own
 *     transaction and the request fails with the effect's error.
 *
 * A crash or an outage after 2 leaves the payment `settling`: the recovery sweep asks the chain
 * and refunds it. So a payer ends either served (effect + booking committed together) or
 * refunded, and an effect never exists without its payment.
 */
export type SettleResult = { ok: true; txHash: string } | { ok: false; reason: string; fault: SettlementFault };

/** One verified, recorded payment of a request, and the way to settle it (no HTTP types here). */
export interface PaidCall {
  payment: PaymentRow;
  /** The payment's lease owner (the request). */
  owner: string;
  settle(): Promise<SettleResult>;
  /**
   * A micro-fee that may be served before it is settled (payments/micro-fees.ts): defers it in
   * `tx` (booked as owed) and answers true, or writes nothing and answers false (settle first).
   */
  defer?: ((tx: Tx) => Promise<boolean>) | undefined;
}

export interface PaidWrite<T> {
  check(): Promise<unknown>;
  /** The effect, in the transaction that books the payment; `txHash` is null when x402 is off. */
  apply(tx: Tx, settled: { txHash: string | null; paymentId: string | null }): Promise<T>;
  /** The task the effect created or changed, named on the receipt. */
  taskOf?(result: T): string | undefined;
}

export interface PaidWriteDeps {
  db: Db;
  lifecycle: PaymentLifecycle;
}

export async function payThen<T>(deps: PaidWriteDeps, paid: PaidCall | null, write: PaidWrite<T>): Promise<T> {
  await write.check();
  if (!paid) return withTransaction(deps.db, (tx) => write.apply(tx, { txHash: null, paymentId: null }));
  const { payment, owner } = paid;
  if (paid.defer) {
    const deferred = await applyDeferred(deps, paid, write);
    if (deferred) return deferred.result;
  }
  await deps.lifecycle.beginSettling(payment.id, owner);
  const settled = await paid.settle();
  if (!settled.ok) throw await settlementFailed(deps.lifecycle, payment.id, owner, settled);
  const { txHash } = settled;
  failpoint('payment:after-settle', payment.purpose);
  try {
    return await withTransaction(deps.db, async (tx) => {
      const result = await write.apply(tx, { txHash, paymentId: payment.id });
      await deps.lifecycle.book(tx, payment.id, owner, { txHash, taskId: write.taskOf?.(result) });
      return result;
    });
  } catch (err) {
    // Anything but a refusal (an outage, a lost lease) leaves the payment settling for the sweep.
    if (err instanceof PaymentFenceError) {
      throw new AppError('service_unavailable', 'This request took too long; its payment is being refunded in full. Retry shortly.', { cause: err });
    }
    if (!isAppError(err)) throw err;
    await deps.lifecycle.refundNow(payment.id, owner, { txHash, reason: err.message });
    throw new AppError(err.code, `${err.message}. The payment of ${payment.amount} atomic USDC was settled and is being refunded in full.`, {
      ...(err.param ? { param: err.param } : {}),
      details: { ...(err.details ?? {}), refunded: payment.amount.toString(), payment_tx_hash: txHash },
    });
  }
}

/**
 * A micro-fee served before settlement: the effect and the fee's booking as owed commit in one
 * transaction, and nothing moves on chain now (the batch settler settles it later). Undefined
 * when the payer's exposure does not allow it: nothing was written, settle first. A refused
 * effect rolls the deferral back with it: the payment is forgotten, nothing was charged.
 */
async function applyDeferred<T>(deps: PaidWriteDeps, paid: PaidCall, write: PaidWrite<T>): Promise<{ result: T } | undefined> {
  try {
    return await withTransaction(deps.db, async (tx) => {
      if (!(await paid.defer!(tx))) return undefined;
      const result = await write.apply(tx, { txHash: null, paymentId: paid.payment.id });
      await deps.lifecycle.attachTask(tx, paid.payment.id, write.taskOf?.(result));
      return { result };
    });
  } catch (err) {
    if (err instanceof PaymentFenceError) {
      throw paymentReleased(err);
    }
    await deps.lifecycle.forget(paid.payment.id, paid.owner).catch(() => undefined); // else the recovery sweep forgets it
    throw err;
  }
}

/** The same write without a payment (x402 off, or a caller inside the service): check, then apply. */
export async function runUnpaid<T>(db: Db, write: PaidWrite<T>): Promise<T> {
  return payThen({ db, lifecycle: undefined as never }, null, write);
}

/**
 * A settlement that failed. The payer's fault: the payment failed, nothing was charged, 402 with
 * the reason. Ours: the payment is handed to the recovery sweep at once (it finds out on chain
 * whether money moved, and refunds it if so), 503 retryable.
 */
export async function settlementFailed(
  lifecycle: PaymentLifecycle,
  paymentId: string,
  owner: string,
  settled: { reason: string; fault: SettlementFault },
): Promise<AppError> {
  if (settled.fault.by === 'payer') {
    await lifecycle.fail(paymentId, owner, settled.reason);
    return new AppError(settled.fault.code, `Payment settlement failed: ${settled.reason}`, { details: { reason: settled.reason } });
  }
  await lifecycle.handOver(paymentId, owner);
  return new AppError('service_unavailable', SERVICE_SETTLEMENT_MESSAGE, { details: { payment_id: paymentId } });
}
