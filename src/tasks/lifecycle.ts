import { and, asc, eq, inArray, lt, lte, sql } from 'drizzle-orm';
import { withTransaction, type Executor, type Tx } from '../db/client.js';
import { agents, tasks, type TaskRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { carveEscrow, heldEscrow } from '../escrow/carve.js';
import { planRefund, planRelease } from '../escrow/outbox.js';
import { cancellationTerms, type CancellationTerms } from '../escrow/rules.js';
import { closeDispatch, enqueueDispatch, stuckDispatches, type BatchSlot } from '../dispatcher/jobs.js';
import { recordEscrowFunding } from '../ledger/ledger.js';
import { TaskModule } from './access.js';
import { resultHash } from './result-hash.js';
import type { ResultContentT } from './schemas.js';
import { escrowTransition, lockForEnd, transition, type TaskStatus } from './state-machine.js';
import { notifyTaskChanged } from './change-feed.js';

/** A cancellation on the refund rule's terms, as decided. */
export interface Cancellation {
  row: TaskRow;
  terms: CancellationTerms;
  refundStatus: 'not_required' | 'pending' | 'returned';
}

/** Task statuses of a child that has not ended (a parent's end cancels those). */
const OPEN: TaskStatus[] = ['created', 'funded', 'in_progress'];

export interface ProgressReport {
  progress_percent?: number | undefined;
  intermediate_result?: unknown;
  estimated_completion?: string | null | undefined;
}

/**
 * What happens to a task after it was created, driven by the service itself (the funding
 * effect, the dispatcher, maintenance): funded, started, progress, completed (and released),
 * failed (and refunded), expired.
 */
export class TaskLifecycle extends TaskModule {
  /**
   * Records money locked in escrow for the task, with its ledger movements (escrow in, funding
   * fee), in the caller's transaction when given (the payments layer calls this once it settled).
   */
  async markFunded(
    id: string,
    funding: { amount: bigint; fee?: bigint; txHash: string | null; paymentId?: string; actor: string; batch?: BatchSlot },
    exec?: Tx,
  ): Promise<TaskRow> {
    return this.inTransaction(exec, async (tx) => {
      const task = await this.require(tx, id);
      if (task.status === 'created' && task.expiresAt <= this.clock.now()) {
        throw new AppError('task_expired', `Task ${id} was not funded before ${task.expiresAt.toISOString()}`);
      }
      if (funding.amount < task.budgetAmount) {
        throw new AppError('amount_mismatch', `Funding must be at least the budget of ${task.budgetAmount} atomic USDC`, {
          param: 'amount',
        });
      }
      const row = await transition(tx, this.clock, {
        taskId: id,
        to: 'funded',
        from: ['created'],
        escrowFrom: ['none'],
        escrowStatus: 'held',
        set: { fundedAmount: funding.amount, fundTxHash: funding.txHash, fundedAt: this.clock.now() },
        actor: funding.actor,
        detail: { amount: funding.amount.toString(), tx_hash: funding.txHash },
      });
      await enqueueDispatch(tx, this.clock, { taskId: id, agentId: row.agentId, ...(funding.batch ? { batch: funding.batch } : {}) }); // the dispatcher runs it next
      const fee = funding.fee ?? 0n;
      await recordEscrowFunding(tx, this.clock, { taskId: id, amount: funding.amount + fee, fundFee: fee, paymentId: funding.paymentId ?? null });
      return row;
    });
  }

  /**
   * A child hired by its parent's hosted agent (delegate_task) is funded from the parent's escrow:
   * `carve` escrow:<parent> → escrow:<child>, no payment. The caller holds the parent's row lock and
   * checked what remains (escrow/carve.ts), in the transaction that created the child.
   */
  async markCarved(tx: Tx, id: string, carve: { parentId: string; amount: bigint; actor: string; batch: BatchSlot }): Promise<TaskRow> {
    const row = await transition(tx, this.clock, {
      taskId: id,
      to: 'funded',
      from: ['created'],
      escrowFrom: ['none'],
      escrowStatus: 'held',
      set: { fundedAmount: carve.amount, fundTxHash: null, fundedAt: this.clock.now() },
      actor: carve.actor,
      detail: { amount: carve.amount.toString(), carved_from: carve.parentId },
    });
    await enqueueDispatch(tx, this.clock, { taskId: id, agentId: row.agentId, batch: carve.batch });
    await carveEscrow(tx, this.clock, { parentId: carve.parentId, childId: id, amount: carve.amount });
    return row;
  }

  /**
   * Work starts: the deadline is set from timeout_seconds. `run` is the dispatcher's run (it
   * holds the task's job); without one an outside runner took the task out of the dispatcher's queue.
   */
  async markStarted(id: string, actor = 'dispatcher', run?: { estimatedCompletion: Date | null }, exec?: Tx): Promise<TaskRow> {
    return this.inTransaction(exec, async (tx) => {
      const task = await this.require(tx, id);
      const now = this.clock.now();
      if (!run) await closeDispatch(tx, this.clock, id);
      return transition(tx, this.clock, {
        taskId: id,
        to: 'in_progress',
        from: ['funded'],
        set: {
          startedAt: now,
          deadlineAt: new Date(now.getTime() + task.timeoutSeconds * 1000),
          estimatedCompletion: run?.estimatedCompletion ?? null,
        },
        actor,
      });
    });
  }

  /** Progress from the running agent; not a transition, so only a running task accepts it. */
  async reportProgress(id: string, report: ProgressReport): Promise<TaskRow> {
    const [row] = await withTransaction(this.db, async (tx) => {
      const updated = await tx
        .update(tasks)
        .set({
          ...(report.progress_percent !== undefined ? { progressPercent: report.progress_percent } : {}),
          ...(report.intermediate_result !== undefined ? { intermediateResult: report.intermediate_result } : {}),
          ...(report.estimated_completion !== undefined
            ? { estimatedCompletion: report.estimated_completion ? new Date(report.estimated_completion) : null }
            : {}),
          updatedAt: this.clock.now(),
        })
        .where(and(eq(tasks.id, id), eq(tasks.status, 'in_progress')))
        .returning();
      if (updated.length > 0) await notifyTaskChanged(tx, id); // followers of the task's events look again
      return updated;
    });
    if (!row) {
      const task = await this.require(this.db, id);
      throw new AppError('invalid_state', `Task ${id} is ${task.status}; progress is accepted while in_progress`);
    }
    return row;
  }

  /** Stores the delivered result with its hash, completes the task and updates the agent's record. */
  async markCompleted(id: string, result: ResultContentT, actor = 'dispatcher'): Promise<TaskRow> {
    return withTransaction(this.db, async (tx) => {
      const now = this.clock.now();
      const row = await transition(tx, this.clock, {
        taskId: id,
        to: 'completed',
        from: ['in_progress'],
        set: { result, resultHash: resultHash(result), finishedAt: now, progressPercent: 100, intermediateResult: null },
        actor,
      });
      // Children still open (the run that hired them was lost): no one waits for them any more.
      await this.endChildren(tx, id, `Its parent task ${id} completed`, 'system');
      const seconds = Math.max(0, Math.round((now.getTime() - (row.startedAt ?? row.createdAt).getTime()) / 1000));
      const [agent] = await tx
        .update(agents)
        .set({
          tasksCompleted: sql`${agents.tasksCompleted} + 1`,
          responseTimeTotalSeconds: sql`${agents.responseTimeTotalSeconds} + ${seconds}`,
        })
        .where(eq(agents.id, row.agentId))
        .returning({ payoutAddress: agents.payoutAddress });
      if (this.rules.disputeWindowSeconds > 0) return row; // released by releaseDue once the window passed
      return this.release(tx, row, agent!.payoutAddress);
    });
  }

  /** Completed tasks whose dispute window passed without a dispute: release their escrow. */
  async releaseDue(limit = 100): Promise<number> {
    const due = new Date(this.clock.now().getTime() - this.rules.disputeWindowSeconds * 1000);
    const rows = await this.db
      .select({ id: tasks.id })
      .from(tasks)
      .where(and(eq(tasks.status, 'completed'), eq(tasks.escrowStatus, 'held'), lte(tasks.finishedAt, due)))
      .limit(limit);
    let released = 0;
    for (const { id } of rows) {
      const done = await withTransaction(this.db, async (tx) => {
        const [task] = await tx.select().from(tasks).where(and(eq(tasks.id, id), eq(tasks.escrowStatus, 'held'), eq(tasks.status, 'completed'))).for('update');
        if (!task) return false;
        const agent = await this.agentsService.require(tx, task.agentId);
        await this.release(tx, task, agent.payoutAddress);
        return true;
      });
      if (done) released++;
    }
    return released;
  }

  /** Running tasks past their deadline that no dispatcher holds (an async agent never delivered): failed, refunded. */
  async failOverdue(limit = 100): Promise<number> {
    const now = this.clock.now();
    const rows = await this.db
      .select({ id: tasks.id })
      .from(tasks)
      .where(
        and(
          eq(tasks.status, 'in_progress'),
          lte(tasks.deadlineAt, now),
          // not held by a live run, nor parked for an operator
          sql`not exists (select 1 from dispatch_jobs j where j.task_id = ${tasks.id}
                and ((j.state = 'running' and j.lease_expires_at >= now()) or j.state = 'stuck'))`,
        ),
      )
      .limit(limit);
    let failed = 0;
    for (const { id } of rows) {
      const ok = await this.markFailed(id, 'Timed out: the agent did not deliver before the deadline', 'system').then(
        () => true,
        () => false,
      );
      if (ok) failed++;
    }
    return failed;
  }

  /** Completion releases the escrow: the agent's payout wallet gets it minus the platform fee. */
  private async release(tx: Tx, task: TaskRow, payoutAddress: string): Promise<TaskRow> {
    await planRelease(tx, this.clock, { task, payout: { to: payoutAddress }, platformFeeBps: this.rules.platformFeeBps });
    return escrowTransition(tx, this.clock, { taskId: task.id, from: ['held'], to: 'released', actor: 'system', detail: { payout: payoutAddress } });
  }

  /**
   * Work failed (or timed out): the whole escrow goes back to the payer. Its children are cancelled
   * first (their refunds come back to its escrow), so the refund is what the escrow then holds.
   */
  async markFailed(id: string, reason: string, actor = 'dispatcher', exec?: Tx): Promise<TaskRow> {
    return this.inTransaction(exec, async (tx) => {
      await lockForEnd(tx, id);
      await this.endChildren(tx, id, `Its parent task ${id} failed: ${reason}`.slice(0, 1000), actor);
      const held = await heldEscrow(tx, await this.require(tx, id));
      const row = await transition(tx, this.clock, {
        taskId: id,
        to: 'failed',
        from: ['funded', 'in_progress'],
        escrowFrom: ['held'],
        escrowStatus: 'refunded',
        set: { failureReason: reason, finishedAt: this.clock.now(), refundAmount: held, refundStatus: held > 0n ? 'pending' : 'not_required' },
        actor,
        detail: { reason },
      });
      await planRefund(tx, this.clock, { task: row, refund: held });
      return row;
    });
  }

  /**
   * A funded task that will not run (a batch item behind a failure, or its batch cancelled before it
   * started, or a child whose parent ended): cancelled, the whole escrow back to the payer (a child's:
   * to its parent's escrow).
   */
  async cancelUnstarted(id: string, reason: string, actor: string, exec?: Tx): Promise<TaskRow> {
    return this.inTransaction(exec, async (tx) => {
      await lockForEnd(tx, id);
      const refund = await heldEscrow(tx, await this.require(tx, id));
      const row = await transition(tx, this.clock, {
        taskId: id,
        to: 'cancelled',
        from: ['funded'],
        escrowFrom: ['held'],
        escrowStatus: 'refunded',
        set: { cancelReason: reason.slice(0, 1000), cancellationFee: 0n, refundAmount: refund, refundStatus: 'pending', finishedAt: this.clock.now() },
        actor,
        detail: { reason, refund: refund.toString() },
      });
      await planRefund(tx, this.clock, { task: row, refund });
      return row;
    });
  }

  /**
   * Cancels a task on the refund rule's terms (escrow/rules.ts `cancellationTerms`) in `tx`: its
   * children first (their refunds come back to its escrow), then the terms on what its escrow holds.
   * The caller checked who may cancel.
   */
  async cancelOnTerms(tx: Tx, id: string, input: { reason: string | null; actor: string }): Promise<Cancellation> {
    await lockForEnd(tx, id);
    await this.endChildren(tx, id, `Its parent task ${id} was cancelled`, input.actor);
    const task = await this.require(tx, id);
    const status = task.status as TaskStatus;
    const terms = cancellationTerms(status, await heldEscrow(tx, task), task.progressPercent, this.rules.cancellationFeeBps);
    const row = await transition(tx, this.clock, {
      taskId: id,
      to: 'cancelled',
      from: [status],
      escrowStatus: terms.escrowStatus,
      set: {
        cancelReason: input.reason,
        cancellationFee: terms.cancellationFee,
        refundAmount: terms.refund,
        refundStatus: terms.refund > 0n ? 'pending' : 'not_required',
        finishedAt: this.clock.now(),
      },
      actor: input.actor,
      detail: { reason: input.reason, refund: terms.refund.toString(), fee: terms.cancellationFee.toString() },
    });
    let refundStatus: Cancellation['refundStatus'] = terms.refund > 0n ? 'pending' : 'not_required';
    if (status !== 'created') {
      const agent = await this.agentsService.require(tx, row.agentId);
      const planned = await planRefund(tx, this.clock, { task: row, refund: terms.refund, agentShare: terms.cancellationFee, agentPayout: agent.payoutAddress });
      if (planned.returned > 0n) refundStatus = 'returned';
    }
    return { row, terms, refundStatus };
  }

  /**
   * The task ended: every child not ended is cancelled, each on the refund rule (one not started:
   * in full; one running: minus the cancellation fee its agent keeps, and the dispatcher interrupts
   * its run). Their refunds go back to this task's escrow while it is held. Call it holding this
   * task's row lock, before deciding what its own escrow pays out. `hiredBefore`: only the children
   * of delegate_task calls made before then (an earlier run's, which no one awaits any more).
   */
  async endChildren(tx: Tx, parentId: string, reason: string, actor: string, hiredBefore?: Date): Promise<string[]> {
    const open = await tx
      .select({ id: tasks.id })
      .from(tasks)
      .where(and(eq(tasks.parentTaskId, parentId), inArray(tasks.status, OPEN), ...(hiredBefore ? [lt(tasks.createdAt, hiredBefore)] : [])))
      .orderBy(asc(tasks.createdAt), asc(tasks.batchIndex));
    const ended: string[] = [];
    for (const { id } of open) {
      await lockForEnd(tx, id); // then read again: a dispatcher may have started it meanwhile, or it ended
      const child = await this.require(tx, id);
      if (child.status === 'funded') await this.cancelUnstarted(id, reason, actor, tx);
      else if (child.status === 'in_progress' || child.status === 'created') await this.cancelOnTerms(tx, id, { reason, actor });
      else continue;
      ended.push(id);
    }
    return ended;
  }

  /** What the task's escrow holds now: its funding, less what its children took and did not give back. */
  heldEscrow(exec: Executor, task: TaskRow): Promise<bigint> {
    return heldEscrow(exec, task);
  }

  /** An unfunded task past its funding deadline becomes expired (nothing to refund). */
  async expireUnfunded(id: string): Promise<TaskRow> {
    return withTransaction(this.db, async (tx) => {
      const task = await this.require(tx, id);
      if (task.status !== 'created' || task.expiresAt > this.clock.now()) return task;
      return transition(tx, this.clock, { taskId: id, to: 'expired', from: ['created'], actor: 'system', set: { finishedAt: this.clock.now() } });
    });
  }

  /** Tasks the dispatcher parked because their outcome could not be recorded (for the operator). */
  stuck(): Promise<{ task: TaskRow; reason: string | null }[]> {
    return stuckDispatches(this.db);
  }

}
