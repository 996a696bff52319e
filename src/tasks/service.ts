import { and, eq, lte, sql } from 'drizzle-orm';
import { getAddress } from 'viem';
import type { AgentsService } from '../agents/service.js';
import type { Clock } from '../clock.js';
import { withTransaction, type Db, type Executor, type Tx } from '../db/client.js';
import { findTransfer, planRefund, planRelease } from '../escrow/outbox.js';
import { runUnpaid, type PaidWrite } from '../payments/paid-write.js';
import { recordEscrowFunding } from '../ledger/ledger.js';
import { agents, chainTransfers, disputes, tasks, type AgentRow, type TaskRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { cancellationTerms, isDisputable, type EscrowStatus } from '../escrow/rules.js';
import { newId } from '../ids.js';
import { resultHash } from './result-hash.js';
import { UnsafeUrlError, assertPublicUrl } from '../net/ssrf.js';
import type {
  CancelTaskInput,
  CreateTaskInput,
  DisputeOpenedT,
  DisputeTaskInput,
  ResultContentT,
  TaskCancelledT,
  TaskCreatedT,
  TaskResultT,
  TaskStatusViewT,
} from './schemas.js';
import { publicStatus, transition, type TaskStatus } from './state-machine.js';

export interface TaskRules {
  escrowAddress: string;
  platformFeeBps: number;
  /** Seconds after completion before the escrow is released (a dispute within it freezes it). */
  disputeWindowSeconds: number;
  /** Whether callback_url may point at loopback/private addresses (dev mode only). */
  allowPrivateUrls: boolean;
  fundingWindowSeconds: number;
  timeoutMinSeconds: number;
  timeoutMaxSeconds: number;
  defaultTimeoutSeconds: number;
  cancellationFeeBps: number;
  disputeReviewSeconds: number;
}

function stageOf(status: TaskStatus): 'awaiting_funding' | 'queued' | 'running' | 'done' {
  if (status === 'created') return 'awaiting_funding';
  if (status === 'funded') return 'queued';
  if (status === 'in_progress') return 'running';
  return 'done';
}

export interface ProgressReport {
  progress_percent?: number | undefined;
  intermediate_result?: unknown;
  estimated_completion?: string | null | undefined;
}

type Access = 'payer' | 'payer_or_agent';

export class TasksService {
  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    private readonly agentsService: AgentsService,
    private readonly rules: TaskRules,
  ) {}

  // ── client side ────────────────────────────────────────────────────────────

  /** POST /v1/tasks as a paid write: checked before the payment settles, created with its booking. */
  createWrite(payer: string, input: CreateTaskInput): PaidWrite<TaskCreatedT> {
    return {
      check: () => this.creatable(this.db, input),
      apply: (tx) => this.insertTask(tx, payer, input),
      taskOf: (created) => created.task_id,
    };
  }

  async create(payer: string, input: CreateTaskInput): Promise<TaskCreatedT> {
    return runUnpaid(this.db, this.createWrite(payer, input));
  }

  /** The agent to create a task for, if the request may create one now. */
  private async creatable(exec: Executor, input: CreateTaskInput): Promise<AgentRow> {
    const timeout = input.timeout_seconds ?? this.rules.defaultTimeoutSeconds;
    if (timeout < this.rules.timeoutMinSeconds || timeout > this.rules.timeoutMaxSeconds) {
      throw new AppError(
        'validation_error',
        `timeout_seconds must be between ${this.rules.timeoutMinSeconds} and ${this.rules.timeoutMaxSeconds}`,
        { param: 'timeout_seconds' },
      );
    }
    if (input.callback_url) await this.checkCallbackUrl(input.callback_url);
    const agent = await this.agentsService.require(exec, input.agent_id);
    if (agent.availability !== 'online') {
      throw new AppError('agent_unavailable', `Agent ${agent.id} is ${agent.availability} and takes no new tasks`, { param: 'agent_id' });
    }
    if (BigInt(input.budget.amount) < agent.baseRate) {
      throw new AppError('budget_too_low', `The budget is below the agent's base rate of ${agent.baseRate} atomic USDC`, {
        param: 'budget.amount',
        details: { base_rate: agent.baseRate.toString() },
      });
    }
    return agent;
  }

  private async insertTask(tx: Tx, payer: string, input: CreateTaskInput): Promise<TaskCreatedT> {
    const agent = await this.creatable(tx, input);
    const now = this.clock.now();
    const [row] = await tx
      .insert(tasks)
      .values({
        id: newId('task'),
        agentId: agent.id,
        payerAddress: payer.toLowerCase(),
        description: input.description,
        requirements: input.requirements ?? null,
        budgetAmount: BigInt(input.budget.amount),
        currency: input.budget.currency,
        chain: input.budget.chain,
        callbackUrl: input.callback_url ?? null,
        timeoutSeconds: input.timeout_seconds ?? this.rules.defaultTimeoutSeconds,
        status: 'created',
        escrowStatus: 'none',
        escrowAddress: this.rules.escrowAddress.toLowerCase(),
        expiresAt: new Date(now.getTime() + this.rules.fundingWindowSeconds * 1000),
        createdAt: now,
        updatedAt: now,
      })
      .returning();
    const t = row!;
    return {
      task_id: t.id,
      status: t.status as TaskStatus,
      agent_id: t.agentId,
      escrow_address: getAddress(t.escrowAddress),
      escrow_amount: t.budgetAmount.toString(),
      expires_at: t.expiresAt.toISOString(),
      timeout_seconds: t.timeoutSeconds,
      created_at: t.createdAt.toISOString(),
    };
  }

  async status(caller: string, id: string): Promise<TaskStatusViewT> {
    let task = await this.readable(caller, id, 'payer_or_agent');
    if (task.status === 'created' && task.expiresAt <= this.clock.now()) task = await this.expireUnfunded(id);
    const transfers = await this.db
      .select()
      .from(chainTransfers)
      .where(eq(chainTransfers.taskId, task.id))
      .orderBy(chainTransfers.createdAt);
    return {
      task_id: task.id,
      status: publicStatus(task.status as TaskStatus),
      stage: stageOf(task.status as TaskStatus),
      escrow_status: task.escrowStatus as EscrowStatus,
      payouts: transfers.map((x) => ({
        kind: x.kind as 'release' | 'refund',
        to: getAddress(x.toAddress),
        amount: x.amount.toString(),
        status: x.status as 'pending',
        tx_hash: x.txHash,
      })),
      progress_percent: task.progressPercent,
      intermediate_result: task.intermediateResult ?? null,
      updated_at: task.updatedAt.toISOString(),
      estimated_completion: task.estimatedCompletion?.toISOString() ?? null,
      expires_at: task.expiresAt.toISOString(),
      deadline_at: task.deadlineAt?.toISOString() ?? null,
    };
  }

  async result(caller: string, id: string): Promise<TaskResultT> {
    const task = await this.readable(caller, id, 'payer');
    const completed = task.status === 'completed' || (task.status === 'disputed' && task.resultHash !== null);
    if (!completed || !task.result || !task.finishedAt || !task.resultHash) {
      throw new AppError('not_ready', `Task ${id} is ${task.status}; the result exists once it is completed`, {
        details: { status: task.status },
      });
    }
    return {
      task_id: task.id,
      status: 'completed',
      result: task.result as ResultContentT,
      result_hash: task.resultHash,
      completed_at: task.finishedAt.toISOString(),
    };
  }

  /** POST /v1/tasks/{id}/cancel as a paid write: the refund rule is checked before the fee settles. */
  cancelWrite(caller: string, id: string, input: CancelTaskInput): PaidWrite<TaskCancelledT> {
    return {
      check: () => this.cancellation(this.db, caller, id, input),
      apply: (tx) => this.cancelIn(tx, caller, id, input),
      taskOf: () => id,
    };
  }

  async cancel(caller: string, id: string, input: CancelTaskInput): Promise<TaskCancelledT> {
    return runUnpaid(this.db, this.cancelWrite(caller, id, input));
  }

  /** The task and the refund rule's terms, if `caller` may cancel it now on these terms. */
  private async cancellation(exec: Executor, caller: string, id: string, input: CancelTaskInput) {
    const task = await this.readable(caller, id, 'payer', exec);
    const status = task.status as TaskStatus;
    if (status === 'completed') throw new AppError('task_completed', `Task ${id} is completed and cannot be cancelled`);
    if (!['created', 'funded', 'in_progress'].includes(status)) {
      throw new AppError('invalid_state', `Task ${id} is ${status} and cannot be cancelled`, { details: { status } });
    }
    const terms = cancellationTerms(status, task.fundedAmount ?? 0n, task.progressPercent, this.rules.cancellationFeeBps);
    if (status === 'in_progress' && !input.accept_partial_refund) {
      throw new AppError(
        'work_in_progress',
        `Work on task ${id} has started: cancelling refunds ${terms.refund} and pays the agent a cancellation fee of ` +
          `${terms.cancellationFee} (atomic USDC). Send accept_partial_refund: true to cancel on these terms.`,
        { param: 'accept_partial_refund', details: { refund_amount: terms.refund.toString(), cancellation_fee: terms.cancellationFee.toString() } },
      );
    }
    return { task, status, terms };
  }

  private async cancelIn(tx: Tx, caller: string, id: string, input: CancelTaskInput): Promise<TaskCancelledT> {
    const { status, terms } = await this.cancellation(tx, caller, id, input);
    const refundStatus = terms.refund > 0n ? 'pending' : 'not_required';
    const row = await transition(tx, this.clock, {
      taskId: id,
      to: 'cancelled',
      from: [status],
      escrowStatus: terms.escrowStatus,
      set: {
        cancelReason: input.reason ?? null,
        cancellationFee: terms.cancellationFee,
        refundAmount: terms.refund,
        refundStatus,
        finishedAt: this.clock.now(),
      },
      actor: caller.toLowerCase(),
      detail: { reason: input.reason ?? null, refund: terms.refund.toString(), fee: terms.cancellationFee.toString() },
    });
    if (status !== 'created') {
      const agent = await this.agentsService.require(tx, row.agentId);
      await planRefund(tx, this.clock, {
        task: row,
        refund: terms.refund,
        agentShare: terms.cancellationFee,
        agentPayout: agent.payoutAddress,
      });
    }
    return {
      task_id: row.id,
      status: 'cancelled',
      refund: { amount: terms.refund.toString(), tx_hash: row.refundTxHash, status: refundStatus },
      cancellation_fee: terms.cancellationFee.toString(),
    };
  }

  /** POST /v1/tasks/{id}/dispute as a paid write. */
  disputeWrite(caller: string, id: string, input: DisputeTaskInput): PaidWrite<DisputeOpenedT> {
    return {
      check: () => this.disputable(this.db, caller, id),
      apply: (tx) => this.disputeIn(tx, caller, id, input),
      taskOf: () => id,
    };
  }

  async dispute(caller: string, id: string, input: DisputeTaskInput): Promise<DisputeOpenedT> {
    return runUnpaid(this.db, this.disputeWrite(caller, id, input));
  }

  private async disputable(exec: Executor, caller: string, id: string): Promise<TaskRow> {
    const task = await this.readable(caller, id, 'payer', exec);
    if (task.status === 'disputed') throw new AppError('already_disputed', `Task ${id} is already under dispute`);
    if (!['in_progress', 'completed'].includes(task.status) || !isDisputable(task.escrowStatus as EscrowStatus)) {
      throw new AppError('invalid_state', `Task ${id} is ${task.status} with escrow ${task.escrowStatus}: nothing is held to dispute`, {
        details: { status: task.status, escrow_status: task.escrowStatus },
      });
    }
    return task;
  }

  private async disputeIn(tx: Tx, caller: string, id: string, input: DisputeTaskInput): Promise<DisputeOpenedT> {
    const task = await this.disputable(tx, caller, id);
    const now = this.clock.now();
    await transition(tx, this.clock, {
      taskId: id,
      to: 'disputed',
      from: [task.status as TaskStatus],
      escrowFrom: ['held'],
      escrowStatus: 'frozen',
      actor: caller.toLowerCase(),
      detail: { reason: input.reason },
    });
    const [d] = await tx
      .insert(disputes)
      .values({
        id: newId('dispute'),
        taskId: id,
        openedBy: caller.toLowerCase(),
        reason: input.reason,
        evidence: input.evidence ?? [],
        status: 'under_review',
        previousStatus: task.status,
        submittedAt: now,
        expectedResolutionAt: new Date(now.getTime() + this.rules.disputeReviewSeconds * 1000),
      })
      .returning();
    return {
      dispute_id: d!.id,
      task_id: id,
      status: 'under_review',
      submitted_at: d!.submittedAt.toISOString(),
      expected_resolution: d!.expectedResolutionAt.toISOString(),
    };
  }

  // ── service side (payments, dispatcher) ────────────────────────────────────

  /**
   * Checks, before any money moves, that `payer` may fund task `id` with `amount` now:
   * its payer, still created, before expires_at, at least the budget.
   */
  async assertFundable(payer: string, id: string, amount: bigint): Promise<TaskRow> {
    const task = await this.readable(payer, id, 'payer');
    if (task.status !== 'created') {
      throw new AppError('invalid_state', `Task ${id} is ${publicStatus(task.status as TaskStatus)}; only a created task can be funded`, {
        details: { status: publicStatus(task.status as TaskStatus), escrow_status: task.escrowStatus },
      });
    }
    if (task.expiresAt <= this.clock.now()) {
      throw new AppError('task_expired', `Task ${id} was not funded before ${task.expiresAt.toISOString()}`);
    }
    if (amount < task.budgetAmount) {
      throw new AppError('amount_mismatch', `Funding must be at least the budget of ${task.budgetAmount} atomic USDC`, { param: 'amount' });
    }
    return task;
  }

  /**
   * Records money locked in escrow for the task, with its ledger movements (escrow in, funding
   * fee), in the caller's transaction when given (the payments layer calls this once it settled).
   */
  async markFunded(
    id: string,
    funding: { amount: bigint; fee?: bigint; txHash: string | null; paymentId?: string; actor: string },
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
        // Queued for the dispatcher at once.
        set: {
          fundedAmount: funding.amount,
          fundTxHash: funding.txHash,
          fundedAt: this.clock.now(),
          dispatchState: 'queued',
          dispatchNextAt: this.clock.now(),
        },
        actor: funding.actor,
        detail: { amount: funding.amount.toString(), tx_hash: funding.txHash },
      });
      const fee = funding.fee ?? 0n;
      await recordEscrowFunding(tx, this.clock, { taskId: id, amount: funding.amount + fee, fundFee: fee, paymentId: funding.paymentId ?? null });
      return row;
    });
  }

  /**
   * Work starts: the deadline is set from timeout_seconds. With a lease the dispatcher runs it;
   * without one the task is out of the dispatcher's queue (an external runner, or tests).
   */
  async markStarted(id: string, actor = 'dispatcher', lease?: { owner: string; expiresAt: Date; estimatedCompletion: Date | null }, exec?: Tx): Promise<TaskRow> {
    return this.inTransaction(exec, async (tx) => {
      const task = await this.require(tx, id);
      const now = this.clock.now();
      return transition(tx, this.clock, {
        taskId: id,
        to: 'in_progress',
        from: ['funded'],
        set: {
          startedAt: now,
          deadlineAt: new Date(now.getTime() + task.timeoutSeconds * 1000),
          dispatchState: lease ? 'running' : null,
          leaseOwner: lease?.owner ?? null,
          leaseExpiresAt: lease?.expiresAt ?? null,
          dispatchAttempts: lease ? 1 : task.dispatchAttempts,
          estimatedCompletion: lease?.estimatedCompletion ?? null,
        },
        actor,
      });
    });
  }

  /** Progress from the running agent; not a transition, so only a running task accepts it. */
  async reportProgress(id: string, report: ProgressReport): Promise<TaskRow> {
    const [row] = await this.db
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
          sql`(${tasks.dispatchState} is distinct from 'running' or ${tasks.leaseExpiresAt} < ${now})`,
          sql`${tasks.dispatchState} is distinct from 'stuck'`,
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
    const [row] = await tx
      .update(tasks)
      .set({ escrowStatus: 'released', updatedAt: this.clock.now() })
      .where(and(eq(tasks.id, task.id), eq(tasks.escrowStatus, 'held')))
      .returning();
    return row ?? task;
  }

  /** Work failed (or timed out): the whole escrow goes back to the payer. */
  async markFailed(id: string, reason: string, actor = 'dispatcher'): Promise<TaskRow> {
    return withTransaction(this.db, async (tx) => {
      const task = await this.require(tx, id);
      const row = await transition(tx, this.clock, {
        taskId: id,
        to: 'failed',
        from: ['funded', 'in_progress'],
        escrowFrom: ['held'],
        escrowStatus: 'refunded',
        set: { failureReason: reason, finishedAt: this.clock.now(), refundAmount: task.fundedAmount, refundStatus: 'pending' },
        actor,
        detail: { reason },
      });
      await planRefund(tx, this.clock, { task: row, refund: task.fundedAmount ?? 0n });
      return row;
    });
  }

  /** An unfunded task past its funding deadline becomes expired (nothing to refund). */
  async expireUnfunded(id: string): Promise<TaskRow> {
    return withTransaction(this.db, async (tx) => {
      const task = await this.require(tx, id);
      if (task.status !== 'created' || task.expiresAt > this.clock.now()) return task;
      return transition(tx, this.clock, { taskId: id, to: 'expired', from: ['created'], actor: 'system', set: { finishedAt: this.clock.now() } });
    });
  }

  // ── provider side (the hired agent's wallet) ───────────────────────────────

  /** The task, if `wallet` is the assigned agent's owner or payout wallet. */
  private async forAgent(wallet: string, id: string, exec: Executor = this.db): Promise<TaskRow> {
    const task = await this.require(exec, id);
    const agent = await this.agentsService.require(exec, task.agentId);
    const who = wallet.toLowerCase();
    if (agent.ownerAddress !== who && agent.payoutAddress !== who) {
      throw new AppError('forbidden', `Only the agent assigned to task ${id} may do this`);
    }
    return task;
  }

  async agentProgress(wallet: string, id: string, report: ProgressReport): Promise<{ task_id: string; status: string; progress_percent: number }> {
    await this.forAgent(wallet, id);
    const row = await this.reportProgress(id, report);
    return { task_id: row.id, status: publicStatus(row.status as TaskStatus), progress_percent: row.progressPercent };
  }

  /** An agent delivers its result through the API (async webhook agents). */
  async deliver(wallet: string, id: string, result: ResultContentT): Promise<{ task_id: string; status: 'completed'; result_hash: string; completed_at: string }> {
    await this.forAgent(wallet, id);
    const row = await this.markCompleted(id, result, `agent:${wallet.toLowerCase()}`);
    return { task_id: row.id, status: 'completed', result_hash: row.resultHash!, completed_at: row.finishedAt!.toISOString() };
  }

  /** The provider claims payment for delivered work: the hash must be the delivered result's. */
  async claim(wallet: string, id: string, hash: string) {
    const task = await this.forAgent(wallet, id);
    if (task.status !== 'completed' || !task.resultHash) {
      throw new AppError('not_ready', `Task ${id} is ${publicStatus(task.status as TaskStatus)}; payment is claimed for completed work`);
    }
    if (hash.toLowerCase().replace(/^0x/, '') !== task.resultHash) {
      throw new AppError('result_hash_mismatch', 'result_hash is not the SHA-256 of the delivered result', { param: 'result_hash' });
    }
    const release = await findTransfer(this.db, id, 'release');
    if (!release) throw new AppError('not_ready', `The escrow of task ${id} is ${task.escrowStatus}; nothing is released yet`);
    return {
      task_id: id,
      claim_status: 'approved' as const,
      payment: { amount: release.amount.toString(), tx_hash: release.txHash, recipient: getAddress(release.toAddress), status: release.status },
      claimed_at: this.clock.now().toISOString(),
    };
  }

  /** Tasks the dispatcher parked because their outcome could not be recorded (for the operator). */
  async stuck(): Promise<TaskRow[]> {
    return this.db.select().from(tasks).where(eq(tasks.dispatchState, 'stuck')).orderBy(tasks.updatedAt).limit(100);
  }

  // ── helpers ────────────────────────────────────────────────────────────────

  private async checkCallbackUrl(url: string): Promise<void> {
    try {
      await assertPublicUrl(url, { allowPrivate: this.rules.allowPrivateUrls });
    } catch (err) {
      if (err instanceof UnsafeUrlError) {
        throw new AppError('validation_error', `callback_url is refused: ${err.message}`, { param: 'callback_url' });
      }
      throw err;
    }
  }

  private inTransaction<T>(exec: Tx | undefined, fn: (tx: Tx) => Promise<T>): Promise<T> {
    return exec ? fn(exec) : withTransaction(this.db, fn);
  }

  async require(exec: Executor, id: string): Promise<TaskRow> {
    const [row] = await exec.select().from(tasks).where(eq(tasks.id, id));
    if (!row) throw new AppError('task_not_found', `Task ${id} does not exist`);
    return row;
  }

  /** The task if `caller` may see it: its payer, or (for status) the assigned agent's owner. */
  private async readable(caller: string, id: string, access: Access, exec: Executor = this.db): Promise<TaskRow> {
    const task = await this.require(exec, id);
    const who = caller.toLowerCase();
    if (task.payerAddress === who) return task;
    if (access === 'payer_or_agent') {
      const agent = await this.agentsService.require(exec, task.agentId);
      if (agent.ownerAddress === who || agent.payoutAddress === who) return task;
    }
    throw new AppError('forbidden', `Task ${id} belongs to another wallet`);
  }
}
