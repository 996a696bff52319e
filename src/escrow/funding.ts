import { getAddress } from 'viem';
import type { PaidWrite } from '../payments/paid-write.js';
import { publicStatus } from '../tasks/state-machine.js';
import type { TaskFundedT } from '../tasks/schemas.js';
import type { TaskClient } from '../tasks/client.js';
import type { TaskLifecycle } from '../tasks/lifecycle.js';

/** The escrow amount a fund request asks to lock (validated by the route schema before payment). */
export function fundingAmount(body: unknown): bigint {
  const amount = (body as { amount?: unknown } | undefined)?.amount;
  return typeof amount === 'string' && /^[0-9]{1,16}$/.test(amount) ? BigInt(amount) : 0n;
}

/**
 * POST /v1/tasks/{id}/fund as a paid write (payments/paid-write.ts). The x402 payment (escrow
 * amount + funding fee, paid to the escrow wallet) was verified and recorded against the task,
 * so a second funding of the same task is refused before any money moves. Then:
 *  1. check: the payer's task, still created, before expires_at, amount ≥ budget;
 *  2. the payment is settled on chain;
 *  3. one transaction: the task funded, the escrow held, the ledger's escrow-in and funding fee,
 *     the payment booked. If the task changed meanwhile (expired, cancelled) the whole payment
 *     is refunded and the request fails.
 */
export function fundingWrite(
  tasks: { client: TaskClient; lifecycle: TaskLifecycle },
  fundFee: bigint,
  payer: string,
  taskId: string,
  amount: bigint,
): PaidWrite<TaskFundedT> {
  return {
    check: () => tasks.client.assertFundable(payer, taskId, amount),
    apply: async (tx, settled) => {
      const row = await tasks.lifecycle.markFunded(
        taskId,
        { amount, fee: fundFee, txHash: settled.txHash, paymentId: settled.paymentId ?? undefined, actor: payer.toLowerCase() },
        tx,
      );
      return {
        task_id: row.id,
        escrow_funded: true,
        amount: amount.toString(),
        fee: fundFee.toString(),
        escrow_address: getAddress(row.escrowAddress),
        tx_hash: settled.txHash ?? '',
        status: publicStatus('funded'),
        agent_notified: false,
      };
    },
    taskOf: (result) => result.task_id,
  };
}
