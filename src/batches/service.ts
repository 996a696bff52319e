import { and, eq } from 'drizzle-orm';
import { getAddress } from 'viem';
import type { AgentsService } from '../agents/service.js';
import type { Clock } from '../clock.js';
import { withTransaction, type Db, type Executor, type Tx } from '../db/client.js';
import { batches, type BatchRow } from '../db/schema.js';
import { AppError, isAppError } from '../errors.js';
import { newId } from '../ids.js';
import { recordBatchFee } from '../ledger/ledger.js';
import { runUnpaid, type PaidWrite } from '../payments/paid-write.js';
import type { BatchItemRow, BatchTasks, CancelOne, PlannedItem } from '../tasks/batch-items.js';
import { payoutView, refundedOf, type TaskClient } from '../tasks/client.js';
import type { ResultContentT } from '../tasks/schemas.js';
import { addUsage, usageOf } from '../tasks/usage.js';
import { publicStatus, type TaskStatus } from '../tasks/state-machine.js';
import { batchStatusOf, batchTotal, MAX_CHILDREN_RUNNING, MAX_DELEGATION_DEPTH, type BatchItemInput, type BatchViewT, type CancelBatchInput, type CreateBatchInput } from './schemas.js';

export interface BatchDeps {
  db: Db;
  clock: Clock;
  agents: AgentsService;
  tasks: TaskClient;
  items: BatchTasks;
  /** The batch fee (atomic USDC), paid once with the escrows. */
  fee: bigint;
}

const ENDED: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled', 'expired', 'disputed']);

/**
 * Batches: many tasks hired with one payment (`batches` is this module's table; the tasks are
 * written by tasks/batch-items.ts). Creating a batch is a paid write: every item is checked and its
 * agent chosen before the payment settles; then one transaction creates and funds every item, books
 * the batch fee and the payment. The dispatcher runs the items (max_concurrency, depends_on and the
 * policy are kept in its queue, dispatcher/jobs.ts).
 */
export class BatchService {
  constructor(private readonly deps: BatchDeps) {}

  /** POST /v1/batches as a paid write. */
  createWrite(payer: string, input: CreateBatchInput): PaidWrite<BatchViewT> {
    // agent_query is resolved once, before payment (search reads outside any transaction); the
    // booking transaction checks the chosen agents again.
    let chosen: string[] = [];
    return {
      check: async () => (chosen = (await this.plan(this.deps.db, input)).map((p) => p.agentId)),
      apply: (tx, settled) => this.createIn(tx, payer, input, chosen, settled),
    };
  }

  async create(payer: string, input: CreateBatchInput): Promise<BatchViewT> {
    return runUnpaid(this.deps.db, this.createWrite(payer, input));
  }

  /** Every item checked and its agent chosen; refused (before any payment) with the item named. */
  private async plan(exec: Executor, input: CreateBatchInput, chosen?: readonly string[]): Promise<PlannedItem[]> {
    const total = batchTotal(input, this.deps.fee); // the same figure the x402 challenge asked for
    if (input.max_spend !== undefined && total > BigInt(input.max_spend)) {
      throw new AppError('spend_limit_exceeded', `The batch costs ${total} atomic USDC (escrows + fee), above its max_spend of ${input.max_spend}`, {
        param: 'max_spend',
        details: { total: total.toString(), max_spend: input.max_spend, fee: this.deps.fee.toString() },
      });
    }
    if (input.callback_url) await this.deps.tasks.checkCallbackUrl(input.callback_url);
    const planned: PlannedItem[] = [];
    for (const [index, item] of input.items.entries()) {
      const agentId = chosen?.[index];
      planned.push(await this.planItem(exec, index, agentId ? { ...item, agent_id: agentId, agent_query: undefined } : item));
    }
    return planned;
  }

  private async planItem(exec: Executor, index: number, item: BatchItemInput): Promise<PlannedItem> {
    try {
      const agentId = item.agent_id ?? (await this.resolveAgent(index, item));
      const { description, requirements, budget, timeout_seconds } = item;
      const agent = await this.deps.tasks.creatable(exec, { agent_id: agentId, description, requirements, budget, timeout_seconds });
      return {
        agentId: agent.id,
        description,
        requirements: requirements ?? null,
        budget: BigInt(budget.amount),
        timeoutSeconds: timeout_seconds,
        dependsOn: item.depends_on ?? [],
        runLimits: runLimitsOf(item),
      };
    } catch (err) {
      if (!isAppError(err)) throw err;
      throw new AppError(err.code, `Item ${index}: ${err.message}`, {
        param: `items.${index}.${err.param ?? 'agent_id'}`,
        details: { ...(err.details ?? {}), index },
      });
    }
  }

  /** agent_query: the best-ranked online agent that matches and whose base rate fits the budget. */
  private async resolveAgent(index: number, item: BatchItemInput): Promise<string> {
    const query = item.agent_query!;
    const found = await this.deps.agents.search({
      query: query.query,
      availability: 'online',
      max_price: item.budget.amount,
      ...(query.min_rating !== undefined ? { min_rating: query.min_rating } : {}),
      page: 1,
      limit: 1,
    } as Parameters<AgentsService['search']>[0]);
    const agent = found.agents[0];
    if (!agent) {
      throw new AppError('no_matching_agent', `No online agent matches "${query.query}" within a budget of ${item.budget.amount} atomic USDC`, {
        param: 'agent_query',
        details: { index },
      });
    }
    return agent.id;
  }

  private async createIn(
    tx: Tx,
    payer: string,
    input: CreateBatchInput,
    chosen: readonly string[],
    settled: { txHash: string | null; paymentId: string | null },
  ): Promise<BatchViewT> {
    const planned = await this.plan(tx, input, chosen); // again, in the booking transaction: agents may have gone offline
    const id = newId('batch');
    const escrowTotal = planned.reduce((sum, p) => sum + p.budget, 0n);
    const [row] = await tx
      .insert(batches)
      .values({
        id,
        payerAddress: payer.toLowerCase(),
        policy: input.policy,
        maxConcurrency: input.max_concurrency,
        maxSpend: input.max_spend === undefined ? null : BigInt(input.max_spend),
        itemCount: planned.length,
        escrowTotal,
        fee: this.deps.fee,
        paymentId: settled.paymentId,
        fundTxHash: settled.txHash,
        callbackUrl: input.callback_url ?? null,
        createdAt: this.deps.clock.now(),
      })
      .returning();
    await this.deps.items.createFunded(tx, { payer, batchId: id, items: planned, txHash: settled.txHash, paymentId: settled.paymentId });
    await recordBatchFee(tx, this.deps.clock, { amount: this.deps.fee, paymentId: settled.paymentId });
    return this.viewOf(row!, await this.deps.items.itemsOf(tx, id), await this.deps.items.dispatchStates(tx, id));
  }

  /**
   * Children hired by the hosted agent of task `parentId` with delegate_task: a batch (policy
   * `continue`, at most 3 running at once) paid from the parent's escrow. Each item is checked and
   * its agent chosen first (agent_query as for any batch); then one transaction locks the parent,
   * checks that it may delegate (running, escrow held, not itself a child), and creates and funds
   * the children, each escrow carved from what remains of the parent's (refused whole if they do
   * not fit). `key` names the call in the parent's run: a rerun of the parent making the same call
   * gets the batch it hired before (not hired twice); a new call cancels the children still open
   * from runs before `runStartedAt` (their run is gone), back into the parent's escrow, so at most
   * one call's children (3 at once) run for a parent.
   */
  async createChildren(
    parentId: string,
    items: readonly BatchItemInput[],
    key: string,
    runStartedAt: Date,
  ): Promise<{ batchId: string; reused: boolean }> {
    const chosen: string[] = [];
    for (const [index, item] of items.entries()) chosen.push((await this.planItem(this.deps.db, index, item)).agentId);
    return withTransaction(this.deps.db, async (tx) => {
      const parent = await this.deps.items.lockParent(tx, parentId);
      if (parent.delegationDepth + 1 >= MAX_DELEGATION_DEPTH) {
        throw new AppError('invalid_state', `Task ${parentId} is itself a delegated child: children cannot delegate (depth limit ${MAX_DELEGATION_DEPTH})`);
      }
      if (parent.status !== 'in_progress' || parent.escrowStatus !== 'held') {
        throw new AppError('invalid_state', `Task ${parentId} is ${parent.status} with escrow ${parent.escrowStatus}: only a running task with its escrow held can delegate`);
      }
      const [earlier] = await tx
        .select({ id: batches.id })
        .from(batches)
        .where(and(eq(batches.parentTaskId, parentId), eq(batches.delegationKey, key)));
      if (earlier) return { batchId: earlier.id, reused: true };
      await this.deps.items.supersede(tx, parentId, runStartedAt);
      const planned: PlannedItem[] = [];
      for (const [index, item] of items.entries()) {
        planned.push(await this.planItem(tx, index, { ...item, agent_id: chosen[index]!, agent_query: undefined }));
      }
      const id = newId('batch');
      await tx.insert(batches).values({
        id,
        payerAddress: parent.payerAddress,
        policy: 'continue',
        maxConcurrency: MAX_CHILDREN_RUNNING,
        itemCount: planned.length,
        escrowTotal: planned.reduce((sum, p) => sum + p.budget, 0n),
        fee: 0n,
        paymentId: null,
        fundTxHash: null,
        parentTaskId: parentId,
        delegationKey: key,
        createdAt: this.deps.clock.now(),
      });
      await this.deps.items.createCarved(tx, { parent, batchId: id, items: planned });
      return { batchId: id, reused: false };
    });
  }

  /** A batch's view for the service itself (delegate_task awaiting its children): no caller check. */
  async viewOwn(id: string): Promise<BatchViewT> {
    const [batch] = await this.deps.db.select().from(batches).where(eq(batches.id, id));
    if (!batch) throw new AppError('batch_not_found', `Batch ${id} does not exist`);
    return this.viewOf(batch, await this.deps.items.itemsOf(this.deps.db, id), await this.deps.items.dispatchStates(this.deps.db, id));
  }

  /** GET /v1/batches/{id}: its items in request order, totals and the partial-failure report. */
  async view(caller: string, id: string, exec: Executor = this.deps.db): Promise<BatchViewT> {
    const batch = await this.readable(exec, caller, id);
    return this.viewOf(batch, await this.deps.items.itemsOf(exec, id), await this.deps.items.dispatchStates(exec, id));
  }

  /** POST /v1/batches/{id}/cancel as a paid write: every item not ended is cancelled on its refund rule. */
  cancelWrite(caller: string, id: string, input: CancelBatchInput, cancelOne: CancelOne): PaidWrite<BatchViewT> {
    return {
      check: () => this.cancellable(this.deps.db, caller, id, input),
      apply: async (tx) => {
        const batch = await this.cancellable(tx, caller, id, input);
        // Marked first: the last item's cancellation sends the batch's callback, which says `batch.cancelled`.
        const [row] = await tx.update(batches).set({ cancelledAt: this.deps.clock.now() }).where(eq(batches.id, batch.id)).returning();
        await this.deps.items.cancelAll(tx, caller, id, { reason: input.reason, acceptPartial: input.accept_partial_refund }, cancelOne);
        return this.viewOf(row!, await this.deps.items.itemsOf(tx, id), await this.deps.items.dispatchStates(tx, id));
      },
    };
  }

  private async cancellable(exec: Executor, caller: string, id: string, input: CancelBatchInput): Promise<BatchRow> {
    const batch = await this.readable(exec, caller, id);
    const items = await this.deps.items.itemsOf(exec, id);
    const open = items.filter((i) => !ENDED.has(i.task.status));
    if (open.length === 0) throw new AppError('invalid_state', `Every item of batch ${id} has ended; nothing to cancel`);
    const running = open.filter((i) => i.task.status === 'in_progress');
    if (running.length > 0 && !input.accept_partial_refund) {
      throw new AppError(
        'work_in_progress',
        `Items ${running.map((i) => i.task.batchIndex).join(', ')} of batch ${id} are running: cancelling refunds each one's escrow minus ` +
          'the cancellation fee. Send accept_partial_refund: true to cancel on these terms.',
        { param: 'accept_partial_refund', details: { running: running.map((i) => i.task.id) } },
      );
    }
    return batch;
  }

  /** The batch, if `caller` paid for it (anyone else: not found, as for tasks). */
  private async readable(exec: Executor, caller: string, id: string): Promise<BatchRow> {
    const [batch] = await exec.select().from(batches).where(eq(batches.id, id));
    if (!batch || batch.payerAddress !== caller.toLowerCase()) throw new AppError('batch_not_found', `Batch ${id} does not exist`);
    return batch;
  }

  private viewOf(batch: BatchRow, items: BatchItemRow[], states: Map<string, string>): BatchViewT {
    const indexOf = new Map(items.map((i) => [i.task.id, i.task.batchIndex ?? 0]));
    const views = items.map((i) => itemView(i, states.get(i.task.id), indexOf));
    const delegated = items.map(delegatedCost);
    const sum = (pick: (v: (typeof views)[number]) => string, extra: (d: DelegatedCost) => bigint = () => 0n) =>
      (views.reduce((s, v) => s + BigInt(pick(v)), 0n) + delegated.reduce((s, d) => s + extra(d), 0n)).toString();
    const delivered = views.filter((v) => v.result !== null).length;
    const ended = views.filter((v) => ENDED.has(v.rawStatus)).length;
    const failures = views.filter((v) => ENDED.has(v.rawStatus) && v.result === null);
    return {
      batch_id: batch.id,
      status: batchStatus(batch, views.length, ended, delivered),
      policy: batch.policy as BatchViewT['policy'],
      max_concurrency: batch.maxConcurrency,
      max_spend: batch.maxSpend === null ? null : batch.maxSpend.toString(),
      payer: getAddress(batch.payerAddress),
      items: views.map(({ rawStatus: _raw, ...v }) => v),
      totals: {
        escrow: batch.escrowTotal.toString(),
        fee: batch.fee.toString(),
        paid: (batch.escrowTotal + batch.fee).toString(),
        released: sum((v) => v.released, (d) => d.released),
        refunded: sum((v) => v.refunded, (d) => d.refunded),
        completed: delivered,
        failed: failures.length,
        running: views.length - ended,
        usage: addUsage([...views.map((v) => v.usage), ...delegated.flatMap((d) => d.usage)]),
      },
      failures: failures.map((v) => ({
        index: v.index,
        task_id: v.task_id,
        status: v.status,
        reason: v.failure ?? v.rawStatus,
        attempts: v.attempts,
        refunded: v.refunded,
      })),
      fund_tx_hash: batch.fundTxHash,
      ...(batch.parentTaskId ? { parent_task_id: batch.parentTaskId } : {}),
      created_at: batch.createdAt.toISOString(),
    };
  }
}

/** The item's limits on a hosted agent's run, if it set any. */
function runLimitsOf(item: BatchItemInput): PlannedItem['runLimits'] {
  if (item.toolsets === undefined && item.max_iterations === undefined) return null;
  return { ...(item.toolsets ? { toolsets: [...item.toolsets] } : {}), ...(item.max_iterations ? { max_iterations: item.max_iterations } : {}) };
}

function batchStatus(batch: BatchRow, count: number, ended: number, delivered: number): BatchViewT['status'] {
  return batchStatusOf({ items: count, ended, delivered, cancelled: batch.cancelledAt !== null });
}

interface DelegatedCost {
  released: bigint;
  refunded: bigint;
  usage: ReturnType<typeof usageOf>[];
}

/**
 * What an item's children (delegate_task) cost, beyond the item itself: paid from its escrow, so
 * part of what the batch's payment bought. Their releases to their agents; their refunds sent back
 * to the payer on chain (a refund returned into the item's escrow is not money out: the item's own
 * release or refund carries it); their usage.
 */
function delegatedCost(item: BatchItemRow): DelegatedCost {
  const moved = (kind: 'release' | 'refund') => item.children.reduce((s, c) => s + c.transfers.filter((t) => t.kind === kind).reduce((a, t) => a + t.amount, 0n), 0n);
  return {
    released: moved('release'),
    refunded: moved('refund'),
    usage: item.children.map((c) => usageOf(c.task.resultHash !== null && (c.task.status === 'completed' || c.task.status === 'disputed') ? (c.task.result as ResultContentT) : null)),
  };
}

function itemView({ task, attempts, transfers }: BatchItemRow, dispatchState: string | undefined, indexOf: Map<string, number>) {
  const status = task.status as TaskStatus;
  const delivered = task.resultHash !== null && (status === 'completed' || status === 'disputed');
  const moved = (kind: 'release' | 'refund') => transfers.filter((t) => t.kind === kind).reduce((s, t) => s + t.amount, 0n).toString();
  const stage: 'waiting' | 'queued' | 'running' | 'done' = ENDED.has(status)
    ? 'done'
    : status === 'in_progress'
      ? 'running'
      : dispatchState === 'queued'
        ? 'queued'
        : 'waiting';
  return {
    rawStatus: status as string,
    index: task.batchIndex ?? 0,
    task_id: task.id,
    agent_id: task.agentId,
    status: publicStatus(status),
    stage,
    escrow_status: task.escrowStatus as BatchViewT['items'][number]['escrow_status'],
    depends_on: (task.dependsOn ?? []).map((id) => indexOf.get(id) ?? -1),
    progress_percent: task.progressPercent,
    attempts,
    escrow: (task.fundedAmount ?? task.budgetAmount).toString(),
    released: moved('release'),
    refunded: refundedOf(task, transfers).toString(),
    payouts: transfers.map(payoutView),
    failure: delivered || !ENDED.has(status) ? null : (task.failureReason ?? task.cancelReason ?? status),
    usage: usageOf(delivered ? (task.result as ResultContentT) : null),
    result: delivered ? (task.result as ResultContentT) : null,
    result_hash: delivered ? task.resultHash : null,
  };
}
