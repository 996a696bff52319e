import { asc, eq, inArray, sql, type SQL } from 'drizzle-orm';
import { refuseRevoked, sessionRevoked } from '../auth/session.js';
import { getAddress } from 'viem';
import type { Db, Executor, Tx } from '../db/client.js';
import { preparedQuery } from '../db/prepared.js';
import { chainTransfers, disputes, tasks, type AgentRow, type ChainTransferRow, type TaskRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { cancellationTerms, isDisputable, type EscrowStatus } from '../escrow/rules.js';
import { newId } from '../ids.js';
import { UnsafeUrlError, assertPublicUrl } from '../net/ssrf.js';
import { runUnpaid, type PaidWrite } from '../payments/paid-write.js';
import { TaskModule, type TaskDeps, type TaskReader } from './access.js';
import type { TaskLifecycle } from './lifecycle.js';
import { addUsage, usageOf } from './usage.js';
import type {
  ChildTaskT,
  TaskDelegationT,
  CancelTaskInput,
  CreateTaskInput,
  DisputeOpenedT,
  DisputeTaskInput,
  TaskCancelledT,
  TaskCreatedT,
  TaskResultT,
  TaskStatusViewT,
  ResultContentT,
  PayoutT,
} from './schemas.js';
import { lockForEnd, publicStatus, transition, type TaskStatus } from './state-machine.js';

/** What a task's transfers of one kind add up to (planned or confirmed). */
function sumOf(transfers: readonly ChainTransferRow[], kind: 'release' | 'refund'): bigint {
  return transfers.filter((t) => t.kind === kind).reduce((sum, t) => sum + t.amount, 0n);
}

/**
 * What a task refunded: its refund transfers, or for a sub-delegated child whose refund went back to
 * its parent's escrow (no transfer) the refund it decided.
 */
export function refundedOf(task: Pick<TaskRow, 'refundStatus' | 'refundAmount'>, transfers: readonly ChainTransferRow[]): bigint {
  return sumOf(transfers, 'refund') + (task.refundStatus === 'returned' ? (task.refundAmount ?? 0n) : 0n);
}

/** A release or refund of a task's escrow as the API shows it (a task's status, a batch's items). */
export function payoutView(x: ChainTransferRow): PayoutT {
  return payoutJsonView({ kind: x.kind, to: x.toAddress, amount: x.amount.toString(), status: x.status, tx_hash: x.txHash });
}

/** `payoutView` of a payout as `taskRead` aggregates it (the same fields, the amount as decimal text). */
function payoutJsonView(x: PayoutJson): PayoutT {
  return {
    kind: x.kind as PayoutT['kind'],
    to: getAddress(x.to),
    amount: x.amount,
    status: x.status as PayoutT['status'],
    tx_hash: x.tx_hash,
  };
}

function stageOf(status: TaskStatus): 'awaiting_funding' | 'queued' | 'running' | 'done' {
  if (status === 'created') return 'awaiting_funding';
  if (status === 'funded') return 'queued';
  if (status === 'in_progress') return 'running';
  return 'done';
}

/** A task's payouts (releases, refunds) in order, prepared: a status read after the task was just expired. */
const payoutsOf = preparedQuery((db) =>
  db.select().from(chainTransfers).where(eq(chainTransfers.taskId, sql.placeholder('taskId'))).orderBy(chainTransfers.createdAt).prepare('tasks_payouts'),
);

/** A payout as a task read aggregates it: `payoutView`'s fields, the amount as decimal text. */
interface PayoutJson {
  kind: string;
  to: string;
  amount: string;
  status: string;
  tx_hash: string | null;
}

/** What a status read shows of a task, and what its access rule and `delegationOf` need: not its result. */
const statusColumns = {
  id: tasks.id,
  agentId: tasks.agentId,
  payerAddress: tasks.payerAddress,
  status: tasks.status,
  escrowStatus: tasks.escrowStatus,
  progressPercent: tasks.progressPercent,
  intermediateResult: tasks.intermediateResult,
  updatedAt: tasks.updatedAt,
  estimatedCompletion: tasks.estimatedCompletion,
  expiresAt: tasks.expiresAt,
  deadlineAt: tasks.deadlineAt,
  parentTaskId: tasks.parentTaskId,
  delegationDepth: tasks.delegationDepth,
  resultHash: tasks.resultHash,
};
type StatusRow = Pick<TaskRow, keyof typeof statusColumns>;

/** What a result read needs of a task. */
const resultColumns = {
  id: tasks.id,
  agentId: tasks.agentId,
  payerAddress: tasks.payerAddress,
  status: tasks.status,
  result: tasks.result,
  resultHash: tasks.resultHash,
  finishedAt: tasks.finishedAt,
};

/**
 * A task read in one prepared statement (one round trip): the task's `columns` (null when there is no
 * such task) and whether the reader's session token is revoked (`session`: '' for a reader without one,
 * no session has that id), from a one-row source so that the revocation is answered for a missing task too.
 */
function taskReadFrom<C extends typeof statusColumns | typeof resultColumns, E extends Record<string, SQL>>(db: Db, columns: C, extra: E) {
  return db
    .select({ task: columns, ...extra, revoked: sessionRevoked(sql.placeholder('session')) })
    .from(sql`(select 1) as one`)
    .leftJoin(tasks, eq(tasks.id, sql.placeholder('id')));
}

/** A status read: the task, its payouts in `payoutsOf`'s order, and whether it has children (a hosted agent's hires). */
const statusRead = preparedQuery((db) =>
  taskReadFrom(db, statusColumns, {
    payouts: sql<PayoutJson[]>`(select coalesce(json_agg(json_build_object(
        'kind', ${chainTransfers.kind}, 'to', ${chainTransfers.toAddress}, 'amount', ${chainTransfers.amount}::text,
        'status', ${chainTransfers.status}, 'tx_hash', ${chainTransfers.txHash}) order by ${chainTransfers.createdAt}), '[]'::json)
      from ${chainTransfers} where ${chainTransfers.taskId} = ${tasks.id})`,
    hasChildren: sql<boolean>`exists (select 1 from ${tasks} as children where children.parent_task_id = ${tasks.id})`,
  }).prepare('tasks_read_status'),
);

/** A result read: the task's result. */
const resultRead = preparedQuery((db) => taskReadFrom(db, resultColumns, {}).prepare('tasks_read_result'));

/** A task as a status read found it. */
interface StatusRead {
  task: StatusRow;
  payouts: PayoutJson[];
  hasChildren: boolean;
}

const readerOf = (caller: string | TaskReader): TaskReader => (typeof caller === 'string' ? { address: caller } : caller);

/**
 * The task a read found, once the reader's session (if it is still to be checked) is found unrevoked:
 * 401 before 404, as when `authenticate` checks it before the route runs.
 */
function found<T>(reader: TaskReader, id: string, row: { task: T | null; revoked: boolean } | undefined): T {
  if (reader.session !== undefined && row?.revoked !== false) throw refuseRevoked();
  if (!row?.task) throw new AppError('task_not_found', `Task ${id} does not exist`);
  return row.task;
}

/** A task's status read once for all of its readers (`TaskClient.sharedStatus`). */
export interface SharedTaskStatus {
  view: TaskStatusViewT;
  /** The view, if `caller` may read the task (throws `forbidden` otherwise). */
  viewFor(caller: string): Promise<TaskStatusViewT>;
}

/**
 * The paying client's side of a task: create, read status and result, fund (the check; the
 * funding itself is `escrow/funding.ts`), cancel, dispute. The writes are paid writes
 * (payments/paid-write.ts): checked before the payment settles, applied with its booking.
 */
export class TaskClient extends TaskModule {
  constructor(
    deps: TaskDeps,
    private readonly lifecycle: TaskLifecycle,
  ) {
    super(deps);
  }

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

  /** The agent to create a task for, if the request may create one now (a batch checks each item so). */
  async creatable(exec: Executor, input: CreateTaskInput): Promise<AgentRow> {
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

  /** GET /v1/tasks/{id}/status: one statement for the payer (a session's revocation included), one more for the agent. */
  async status(caller: string | TaskReader, id: string): Promise<TaskStatusViewT> {
    const reader = readerOf(caller);
    const read = await this.statusRead(reader, id);
    await this.checkReadable(reader.address, read.task, 'payer_or_agent', () => this.agentsService.require(this.db, read.task.agentId));
    return this.statusView(read);
  }

  private async statusRead(reader: TaskReader, id: string): Promise<StatusRead> {
    const [row] = await statusRead(this.db).execute({ id, session: reader.session ?? '' });
    return { task: found(reader, id, row), payouts: row!.payouts, hasChildren: row!.hasChildren };
  }

  /**
   * A task's status as one read finds it, for each of its readers (the event streams of the task
   * share it): the view does not depend on who reads it, and `viewFor` applies `status`'s access
   * rule to each reader, reading the assigned agent at most once. Only for readers already let in
   * by `status` (the event streams' first event): it may expire the task before checking anyone.
   */
  async sharedStatus(id: string): Promise<SharedTaskStatus> {
    const read = await this.statusRead({ address: '' }, id);
    const { task } = read;
    const view = await this.statusView(read);
    let agent: Promise<AgentRow> | undefined;
    const agentOf = () => (agent ??= this.agentsService.require(this.db, task.agentId));
    return {
      view,
      viewFor: async (caller) => {
        await this.checkReadable(caller, task, 'payer_or_agent', agentOf);
        return view;
      },
    };
  }

  /** The status view of a task as read (an unfunded task past its funding window expires first, and is read again). */
  private async statusView(read: StatusRead): Promise<TaskStatusViewT> {
    let task: StatusRow = read.task;
    let payouts = read.payouts.map(payoutJsonView);
    if (task.status === 'created' && task.expiresAt <= this.clock.now()) {
      task = await this.lifecycle.expireUnfunded(task.id);
      payouts = (await payoutsOf(this.db).execute({ taskId: task.id })).map(payoutView);
    }
    const delegation = task.delegationDepth === 0 && read.hasChildren ? await this.delegationOf(task) : undefined;
    return {
      task_id: task.id,
      status: publicStatus(task.status as TaskStatus),
      stage: stageOf(task.status as TaskStatus),
      escrow_status: task.escrowStatus as EscrowStatus,
      payouts,
      progress_percent: task.progressPercent,
      intermediate_result: task.intermediateResult ?? null,
      updated_at: task.updatedAt.toISOString(),
      estimated_completion: task.estimatedCompletion?.toISOString() ?? null,
      expires_at: task.expiresAt.toISOString(),
      deadline_at: task.deadlineAt?.toISOString() ?? null,
      ...(task.parentTaskId ? { parent_task_id: task.parentTaskId } : {}),
      ...(delegation ? { delegation } : {}),
    };
  }

  /** The children its hosted agent hired (delegate_task) with what they cost its escrow, if it hired any. */
  private async delegationOf(task: StatusRow): Promise<TaskDelegationT | undefined> {
    const children = await this.db.select().from(tasks).where(eq(tasks.parentTaskId, task.id)).orderBy(asc(tasks.createdAt), asc(tasks.batchIndex));
    if (children.length === 0) return undefined;
    const transfers = await this.db.select().from(chainTransfers).where(inArray(chainTransfers.taskId, children.map((c) => c.id)));
    const views: ChildTaskT[] = children.map((c) => {
      const own = transfers.filter((t) => t.taskId === c.id);
      const delivered = c.resultHash !== null && (c.status === 'completed' || c.status === 'disputed');
      const ended = !['created', 'funded', 'in_progress'].includes(c.status);
      return {
        task_id: c.id,
        agent_id: c.agentId,
        batch_id: c.batchId ?? '',
        index: c.batchIndex ?? 0,
        status: publicStatus(c.status as TaskStatus),
        escrow_status: c.escrowStatus as EscrowStatus,
        escrow: (c.fundedAmount ?? 0n).toString(),
        released: sumOf(own, 'release').toString(),
        refunded: refundedOf(c, own).toString(),
        failure: delivered || !ended ? null : (c.failureReason ?? c.cancelReason ?? c.status),
        usage: usageOf(delivered ? (c.result as ResultContentT) : null),
      };
    });
    const total = (pick: (v: ChildTaskT) => string) => views.reduce((sum, v) => sum + BigInt(pick(v)), 0n);
    const delivered = task.resultHash !== null && (task.status === 'completed' || task.status === 'disputed');
    return {
      children: views,
      totals: {
        children: views.length,
        running: views.filter((v) => v.status === 'in_progress' || v.status === 'created').length,
        escrow: total((v) => v.escrow).toString(),
        released: total((v) => v.released).toString(),
        refunded: total((v) => v.refunded).toString(),
        spent: (total((v) => v.escrow) - total((v) => v.refunded)).toString(),
        usage: addUsage([usageOf(delivered ? await this.resultOf(task.id) : null), ...views.map((v) => v.usage)]),
      },
    };
  }

  /** A delivered task's result (a status read does not read it). */
  private async resultOf(id: string): Promise<ResultContentT> {
    const [row] = await this.db.select({ result: tasks.result }).from(tasks).where(eq(tasks.id, id));
    return row?.result as ResultContentT;
  }

  /** GET /v1/tasks/{id}/result: one statement (a session's revocation included). */
  async result(caller: string | TaskReader, id: string): Promise<TaskResultT> {
    const reader = readerOf(caller);
    const [row] = await resultRead(this.db).execute({ id, session: reader.session ?? '' });
    const task = found(reader, id, row);
    await this.checkReadable(reader.address, task, 'payer', () => this.agentsService.require(this.db, task.agentId));
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
    // On what the escrow holds now (less what its children took); the apply recomputes it once they are cancelled.
    const terms = cancellationTerms(status, await this.lifecycle.heldEscrow(exec, task), task.progressPercent, this.rules.cancellationFeeBps);
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

  /** Cancels in `tx` on the refund rule's terms (a batch's cancel runs it for each of its items). */
  async cancelIn(tx: Tx, caller: string, id: string, input: CancelTaskInput): Promise<TaskCancelledT> {
    await lockForEnd(tx, id); // the task (and its parent, first): children and carves wait
    await this.cancellation(tx, caller, id, input);
    const { row, terms, refundStatus } = await this.lifecycle.cancelOnTerms(tx, id, { reason: input.reason ?? null, actor: caller.toLowerCase() });
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
    // Its run stops (the dispatcher sees it is no longer in progress): so do its children's, their refunds back to its frozen escrow.
    await this.lifecycle.endChildren(tx, id, `Its parent task ${id} is disputed`, caller.toLowerCase());
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

  /** A callback_url the service may POST to (public unless private URLs are allowed); 400 otherwise. */
  async checkCallbackUrl(url: string, param = 'callback_url'): Promise<void> {
    try {
      await assertPublicUrl(url, { allowPrivate: this.rules.allowPrivateUrls });
    } catch (err) {
      if (err instanceof UnsafeUrlError) {
        throw new AppError('validation_error', `${param} is refused: ${err.message}`, { param });
      }
      throw err;
    }
  }

}
