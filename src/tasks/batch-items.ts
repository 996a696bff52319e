import { and, asc, eq, inArray } from 'drizzle-orm';
import type { Executor, Tx } from '../db/client.js';
import { chainTransfers, dispatchJobs, tasks, type ChainTransferRow, type TaskRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { assertCarvable } from '../escrow/carve.js';
import { newId } from '../ids.js';
import { TaskModule, type TaskDeps } from './access.js';
import type { TaskLifecycle } from './lifecycle.js';

/** One item of a batch, checked and with its agent chosen (batches/ plans it, this module writes it). */
export interface PlannedItem {
  agentId: string;
  description: string;
  requirements: unknown;
  budget: bigint;
  /** Undefined: the configured default. */
  timeoutSeconds: number | undefined;
  /** Indexes of the items it depends on. */
  dependsOn: readonly number[];
  /** What the client allows a hosted agent on it (toolsets, max_iterations); null: its owner's settings. */
  runLimits: { toolsets?: string[]; max_iterations?: number } | null;
}

/** A batch item as its batch's view reads it: the task, its runs, and its escrow's transfers. */
export interface BatchItemRow {
  task: TaskRow;
  attempts: number;
  transfers: ChainTransferRow[];
  /** The children its hosted agent hired with delegate_task (paid from its escrow), with their transfers. */
  children: { task: TaskRow; transfers: ChainTransferRow[] }[];
}

/**
 * The tasks of batches: created and funded together in the transaction that books the batch's one
 * payment, each funded with its own escrow so it follows the release and refund rules of any task.
 * Part of the task modules (the only writers of `tasks`).
 */
export class BatchTasks extends TaskModule {
  constructor(
    deps: TaskDeps,
    private readonly lifecycle: TaskLifecycle,
  ) {
    super(deps);
  }

  /**
   * Creates the items in request order and funds each from the payment: its escrow is its budget.
   * An item with predecessors waits in the dispatcher's queue until they have ended.
   */
  async createFunded(
    tx: Tx,
    input: { payer: string; batchId: string; items: readonly PlannedItem[]; txHash: string | null; paymentId: string | null },
  ): Promise<string[]> {
    const now = this.clock.now();
    const ids = input.items.map(() => newId('task'));
    const payer = input.payer.toLowerCase();
    await tx.insert(tasks).values(
      input.items.map((item, index) => ({
        id: ids[index]!,
        agentId: item.agentId,
        payerAddress: payer,
        description: item.description,
        requirements: item.requirements ?? null,
        budgetAmount: item.budget,
        currency: 'USDC',
        chain: 'base',
        callbackUrl: null,
        timeoutSeconds: item.timeoutSeconds ?? this.rules.defaultTimeoutSeconds,
        status: 'created',
        escrowStatus: 'none',
        escrowAddress: this.rules.escrowAddress.toLowerCase(),
        expiresAt: new Date(now.getTime() + this.rules.fundingWindowSeconds * 1000),
        batchId: input.batchId,
        batchIndex: index,
        dependsOn: item.dependsOn.map((d) => ids[d]!),
        runLimits: item.runLimits,
        createdAt: now,
        updatedAt: now,
      })),
    );
    for (const [index, item] of input.items.entries()) {
      await this.lifecycle.markFunded(
        ids[index]!,
        {
          amount: item.budget,
          fee: 0n,
          txHash: input.txHash,
          ...(input.paymentId ? { paymentId: input.paymentId } : {}),
          actor: payer,
          batch: { batchId: input.batchId, dependsOn: item.dependsOn.map((d) => ids[d]!) },
        },
        tx,
      );
    }
    return ids;
  }

  /**
   * The task whose hosted agent is hiring children (delegate_task), locked FOR UPDATE for the rest
   * of the transaction: concurrent carves from it, and its own end, wait for this one. Without a
   * parent of its own, so this is the first lock the transaction takes (parents before children).
   */
  async lockParent(tx: Tx, parentId: string): Promise<TaskRow> {
    const [parent] = await tx.select().from(tasks).where(eq(tasks.id, parentId)).for('update');
    if (!parent) throw new AppError('task_not_found', `Task ${parentId} does not exist`);
    return parent;
  }

  /**
   * The children of one delegate_task call, created and funded from the parent's escrow in the
   * caller's transaction (which holds the parent's lock): refused whole if their escrows together
   * exceed what remains of the parent's. Each is paid by the parent's payer (who can read and
   * cancel it), marked with its parent, one level deeper, and runs at most until the parent's
   * deadline. No payment, no fee, no spending cap: no new money moves.
   */
  async createCarved(tx: Tx, input: { parent: TaskRow; batchId: string; items: readonly PlannedItem[] }): Promise<string[]> {
    const { parent } = input;
    await assertCarvable(tx, parent.id, input.items.reduce((sum, i) => sum + i.budget, 0n));
    const now = this.clock.now();
    const left = parent.deadlineAt ? Math.floor((parent.deadlineAt.getTime() - now.getTime()) / 1000) : parent.timeoutSeconds;
    if (left < this.rules.timeoutMinSeconds) {
      throw new AppError('invalid_state', `Task ${parent.id} has ${Math.max(0, left)} s left, less than a child's shortest timeout (${this.rules.timeoutMinSeconds} s)`);
    }
    const ids = input.items.map(() => newId('task'));
    await tx.insert(tasks).values(
      input.items.map((item, index) => ({
        id: ids[index]!,
        agentId: item.agentId,
        payerAddress: parent.payerAddress,
        description: item.description,
        requirements: item.requirements ?? null,
        budgetAmount: item.budget,
        currency: parent.currency,
        chain: parent.chain,
        callbackUrl: null,
        timeoutSeconds: Math.min(item.timeoutSeconds ?? left, left),
        status: 'created',
        escrowStatus: 'none',
        escrowAddress: parent.escrowAddress,
        expiresAt: new Date(now.getTime() + this.rules.fundingWindowSeconds * 1000),
        batchId: input.batchId,
        batchIndex: index,
        dependsOn: [],
        runLimits: item.runLimits,
        parentTaskId: parent.id,
        delegationDepth: parent.delegationDepth + 1,
        createdAt: now,
        updatedAt: now,
      })),
    );
    for (const [index, item] of input.items.entries()) {
      await this.lifecycle.markCarved(tx, ids[index]!, {
        parentId: parent.id,
        amount: item.budget,
        actor: `task:${parent.id}`,
        batch: { batchId: input.batchId, dependsOn: [] },
      });
    }
    return ids;
  }

  /**
   * Children of the parent still open when a later run of it hires new ones: hired by an earlier run
   * (before `runStartedAt`) that ended (a lost worker, a retry), no one awaits them. Cancelled on the
   * refund rule, back into the parent's escrow (call holding the parent's lock).
   */
  supersede(tx: Tx, parentId: string, runStartedAt: Date): Promise<string[]> {
    return this.lifecycle.endChildren(tx, parentId, `Superseded: the run of its parent task ${parentId} that hired it ended`, `task:${parentId}`, runStartedAt);
  }

  /** The batch's items in request order, with their runs and transfers. */
  async itemsOf(exec: Executor, batchId: string): Promise<BatchItemRow[]> {
    const rows = await exec
      .select({ task: tasks, attempts: dispatchJobs.attempts })
      .from(tasks)
      .leftJoin(dispatchJobs, eq(dispatchJobs.taskId, tasks.id))
      .where(eq(tasks.batchId, batchId))
      .orderBy(asc(tasks.batchIndex));
    const ids = rows.map((r) => r.task.id);
    const children = ids.length ? await exec.select().from(tasks).where(inArray(tasks.parentTaskId, ids)).orderBy(asc(tasks.createdAt), asc(tasks.batchIndex)) : [];
    const moved = [...ids, ...children.map((c) => c.id)];
    const transfers = moved.length ? await exec.select().from(chainTransfers).where(inArray(chainTransfers.taskId, moved)).orderBy(chainTransfers.createdAt) : [];
    const transfersOf = (id: string) => transfers.filter((t) => t.taskId === id);
    return rows.map((r) => ({
      task: r.task,
      attempts: r.attempts ?? 0,
      transfers: transfersOf(r.task.id),
      children: children.filter((c) => c.parentTaskId === r.task.id).map((c) => ({ task: c, transfers: transfersOf(c.id) })),
    }));
  }

  /** Dispatch states of the batch's items (waiting, queued, running…). */
  async dispatchStates(exec: Executor, batchId: string): Promise<Map<string, string>> {
    const rows = await exec
      .select({ taskId: dispatchJobs.taskId, state: dispatchJobs.state })
      .from(dispatchJobs)
      .where(and(eq(dispatchJobs.batchId, batchId)));
    return new Map(rows.map((r) => [r.taskId, r.state]));
  }

  /**
   * Cancels every item of the batch that has not ended, on each one's refund rule: an item not yet
   * started is refunded in full, a running one (only with `acceptPartial`) minus the cancellation fee.
   */
  async cancelAll(tx: Tx, caller: string, batchId: string, input: { reason?: string | undefined; acceptPartial: boolean }, cancelOne: CancelOne): Promise<string[]> {
    const open = await tx
      .select({ id: tasks.id })
      .from(tasks)
      .where(and(eq(tasks.batchId, batchId), inArray(tasks.status, ['created', 'funded', 'in_progress'])))
      .orderBy(asc(tasks.batchIndex));
    for (const { id } of open) await cancelOne(tx, caller, id, { reason: input.reason, accept_partial_refund: input.acceptPartial });
    return open.map((o) => o.id);
  }
}

/** TaskClient.cancelIn: one task's cancellation on its refund rule, in `tx`. */
export type CancelOne = (tx: Tx, caller: string, id: string, input: { reason?: string | undefined; accept_partial_refund: boolean }) => Promise<unknown>;
