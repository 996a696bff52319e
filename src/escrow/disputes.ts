import { eq } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { withTransaction, type Db } from '../db/client.js';
import { agents, disputes, tasks } from '../db/schema.js';
import { AppError } from '../errors.js';
import { accountBalance } from '../ledger/ledger.js';
import { escrowAccount } from '../ledger/accounts.js';
import { escrowTransition } from '../tasks/state-machine.js';
import { planDisputeSplit } from './outbox.js';

export interface DisputeResolution {
  dispute_id: string;
  task_id: string;
  status: 'resolved';
  payer_amount: string;
  agent_amount: string;
  escrow_status: 'refunded' | 'released' | 'partially_refunded';
  resolved_at: string;
}

/**
 * An operator settles a dispute: the frozen escrow is split between the payer (refund) and the
 * agent (release, minus the platform fee). The two shares must add up to what the escrow holds.
 */
export async function resolveDispute(
  db: Db,
  clock: Clock,
  input: { disputeId: string; payerAmount: bigint; agentAmount: bigint; platformFeeBps: number },
): Promise<DisputeResolution> {
  return withTransaction(db, async (tx) => {
    const [dispute] = await tx.select().from(disputes).where(eq(disputes.id, input.disputeId)).for('update');
    if (!dispute) throw new AppError('not_found', `Dispute ${input.disputeId} does not exist`);
    if (dispute.status !== 'under_review') throw new AppError('invalid_state', `Dispute ${dispute.id} is already ${dispute.status}`);
    const [task] = await tx.select().from(tasks).where(eq(tasks.id, dispute.taskId)).for('update');
    if (!task || task.escrowStatus !== 'frozen') throw new AppError('invalid_state', `The escrow of task ${dispute.taskId} is not frozen`);
    const held = await accountBalance(tx, escrowAccount(task.id));
    if (input.payerAmount + input.agentAmount !== held) {
      throw new AppError('amount_mismatch', `The shares must add up to the ${held} atomic USDC held in escrow`, {
        param: 'payer_amount',
        details: { held: held.toString() },
      });
    }
    const [agent] = await tx.select().from(agents).where(eq(agents.id, task.agentId));
    const planned = await planDisputeSplit(tx, clock, {
      task,
      payerAmount: input.payerAmount,
      agentAmount: input.agentAmount,
      agentPayout: agent!.payoutAddress,
      platformFeeBps: input.platformFeeBps,
    });
    const escrowStatus: DisputeResolution['escrow_status'] =
      input.agentAmount === 0n ? 'refunded' : input.payerAmount === 0n ? 'released' : 'partially_refunded';
    const now = clock.now();
    await escrowTransition(tx, clock, {
      taskId: task.id,
      from: ['frozen'],
      to: escrowStatus,
      // A sub-delegated child's payer share went back to its parent's escrow (no transfer to wait for).
      set: { refundAmount: input.payerAmount, refundStatus: planned.returned > 0n ? 'returned' : input.payerAmount > 0n ? 'pending' : 'not_required' },
      actor: 'operator',
      detail: { dispute_id: dispute.id, payer_amount: input.payerAmount.toString(), agent_amount: input.agentAmount.toString() },
    });
    await tx.update(disputes).set({ status: 'resolved', resolvedAt: now }).where(eq(disputes.id, dispute.id));
    return {
      dispute_id: dispute.id,
      task_id: task.id,
      status: 'resolved',
      payer_amount: input.payerAmount.toString(),
      agent_amount: input.agentAmount.toString(),
      escrow_status: escrowStatus,
      resolved_at: now.toISOString(),
    };
  });
}
