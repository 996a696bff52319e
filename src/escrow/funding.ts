import type { FastifyReply, FastifyRequest } from 'fastify';
import { getAddress } from 'viem';
import type { Clock } from '../clock.js';
import { withTransaction, type Db } from '../db/client.js';
import { AppError, isAppError } from '../errors.js';
import { callerOf } from '../http/caller.js';
import { settlePayment } from '../http/x402.js';
import { recordEscrowFunding } from '../ledger/ledger.js';
import type { PaymentsService } from '../payments/service.js';
import { publicStatus } from '../tasks/state-machine.js';
import type { TaskFundedT } from '../tasks/schemas.js';
import type { TasksService } from '../tasks/service.js';
import { planRefund } from './outbox.js';

/** The escrow amount a fund request asks to lock (validated by the route schema before payment). */
export function fundingAmount(request: FastifyRequest): bigint {
  const amount = (request.body as { amount?: unknown } | undefined)?.amount;
  return typeof amount === 'string' && /^[0-9]{1,16}$/.test(amount) ? BigInt(amount) : 0n;
}

export interface FundingDeps {
  db: Db;
  clock: Clock;
  tasks: TasksService;
  payments: PaymentsService;
  fundFee: bigint;
}

/**
 * POST /v1/tasks/{id}/fund. The x402 payment (escrow amount + funding fee, paid to the escrow
 * wallet) has been verified and claimed; this:
 *  1. checks the task can take the money (payer, created, not expired, amount ≥ budget) — a
 *     refusal here moves nothing;
 *  2. settles the payment on chain;
 *  3. in one transaction: the payment becomes settled, the task funded, the escrow held, the
 *     ledger gets escrow-in and the funding fee.
 * If 3 loses a race after the money moved (the task was cancelled meanwhile), the whole payment
 * is booked and refunded through the outbox, and the request fails: never charged, never lost.
 */
export async function fundTask(deps: FundingDeps, request: FastifyRequest, reply: FastifyReply, taskId: string): Promise<TaskFundedT> {
  const payer = callerOf(request).address;
  const amount = fundingAmount(request);
  const task = await deps.tasks.assertFundable(payer, taskId, amount);
  const { txHash, payment } = await settlePayment(request, reply);
  const paymentId = payment.claim.id;
  try {
    const row = await withTransaction(deps.db, async (tx) => {
      await deps.payments.settle(tx, paymentId, txHash, taskId);
      return deps.tasks.markFunded(taskId, { amount, fee: deps.fundFee, txHash, paymentId, actor: payer.toLowerCase() }, tx);
    });
    return {
      task_id: row.id,
      escrow_funded: true,
      amount: amount.toString(),
      fee: deps.fundFee.toString(),
      escrow_address: getAddress(row.escrowAddress),
      tx_hash: txHash,
      status: publicStatus('funded'),
      agent_notified: false,
    };
  } catch (err) {
    if (!isAppError(err)) throw err;
    await withTransaction(deps.db, async (tx) => {
      await deps.payments.settle(tx, paymentId, txHash, taskId);
      await recordEscrowFunding(tx, deps.clock, { taskId, amount: amount + deps.fundFee, paymentId });
      await planRefund(tx, deps.clock, { task, refund: amount + deps.fundFee });
    });
    throw new AppError(err.code, `${err.message}. The payment of ${amount + deps.fundFee} was refunded.`, {
      details: { ...(err.details ?? {}), refunded: (amount + deps.fundFee).toString(), payment_tx_hash: txHash },
    });
  }
}
