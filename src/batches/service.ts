import { eq } from 'drizzle-orm';
import { getAddress } from 'viem';
import type { AgentsService } from '../agents/service.js';
import type { Clock } from '../clock.js';
import type { Db, Executor, Tx } from '../db/client.js';
import { batches, type BatchRow } from '../db/schema.js';
import { AppError, isAppError } from '../errors.js';
import { newId } from '../ids.js';
import { recordBatchFee } from '../ledger/ledger.js';
import { runUnpaid, type PaidWrite } from '../payments/paid-write.js';
import type { BatchItemRow, BatchTasks, CancelOne, PlannedItem } from '../tasks/batch-items.js';
import { payoutView, type TaskClient } from '../tasks/client.js';
import type { ResultContentT } from '../tasks/schemas.js';
import { publicStatus, type TaskStatus } from '../tasks/state-machine.js';
import { batchTotal, type BatchItemInput, type BatchViewT, type CancelBatchInput, type CreateBatchInput, type UsageT } from './schemas.js';

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
        createdAt: this.deps.clock.now(),
      })
      .returning();
    await this.deps.items.createFunded(tx, { payer, batchId: id, items: planned, txHash: settled.txHash, paymentId: settled.paymentId });
    await recordBatchFee(tx, this.deps.clock, { amount: this.deps.fee, paymentId: settled.paymentId });
    return this.viewOf(row!, await this.deps.items.itemsOf(tx, id), await this.deps.items.dispatchStates(tx, id));
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
        await this.deps.items.cancelAll(tx, caller, id, { reason: input.reason, acceptPartial: input.accept_partial_refund }, cancelOne);
        const [row] = await tx.update(batches).set({ cancelledAt: this.deps.clock.now() }).where(eq(batches.id, batch.id)).returning();
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
    const sum = (pick: (v: (typeof views)[number]) => string) => views.reduce((s, v) => s + BigInt(pick(v)), 0n).toString();
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
        released: sum((v) => v.released),
        refunded: sum((v) => v.refunded),
        completed: delivered,
        failed: failures.length,
        running: views.length - ended,
        usage: addUsage(views.map((v) => v.usage)),
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
      created_at: batch.createdAt.toISOString(),
    };
  }
}

/** The item's limits on a hosted agent's run, if it set any. */
function runLimitsOf(item: BatchItemInput): PlannedItem['runLimits'] {
  if (item.toolsets === undefined && item.max_iterations === undefined) return null;
  return { ...(item.toolsets ? { toolsets: [...item.toolsets] } : {}), ...(item.max_iterations ? { max_iterations: item.max_iterations } : {}) };
}

/** What an agent reported with its result: tokens, and for a hosted agent its model calls and their cost. */
function usageOf(result: ResultContentT | null): UsageT {
  const meta = (result?.metadata ?? {}) as Record<string, unknown>;
  const int = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : null);
  return {
    tokens_used: int(meta.tokens_used),
    model_calls: int(meta.iterations),
    llm_cost_usd: typeof meta.cost_usd === 'number' && Number.isFinite(meta.cost_usd) && meta.cost_usd >= 0 ? meta.cost_usd : null,
  };
}

/** Usage added up over items; a figure stays null while no item reported it. */
function addUsage(usages: UsageT[]): UsageT {
  const sum = (pick: (u: UsageT) => number | null) =>
    usages.reduce<number | null>((total, u) => (pick(u) === null ? total : (total ?? 0) + pick(u)!), null);
  const cost = sum((u) => u.llm_cost_usd);
  return { tokens_used: sum((u) => u.tokens_used), model_calls: sum((u) => u.model_calls), llm_cost_usd: cost === null ? null : Math.round(cost * 1e6) / 1e6 };
}

function batchStatus(batch: BatchRow, count: number, ended: number, delivered: number): BatchViewT['status'] {
  if (ended < count) return 'running';
  if (batch.cancelledAt) return 'cancelled';
  if (delivered === count) return 'completed';
  return delivered === 0 ? 'failed' : 'partially_failed';
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
    refunded: moved('refund'),
    payouts: transfers.map(payoutView),
    failure: delivered || !ENDED.has(status) ? null : (task.failureReason ?? task.cancelReason ?? status),
    usage: usageOf(delivered ? (task.result as ResultContentT) : null),
    result: delivered ? (task.result as ResultContentT) : null,
    result_hash: delivered ? task.resultHash : null,
  };
}
