import { and, eq, inArray, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { rowsOf, type Executor } from '../db/client.js';
import { preparedQuery } from '../db/prepared.js';
import { taskEvents, tasks, type TaskRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import type { EscrowStatus } from '../escrow/rules.js';
import { enqueueCallback } from '../callbacks/enqueue.js';
import { enqueueBatchCallbackIfEnded } from '../batches/ended.js';
import { closeDispatch } from '../dispatcher/jobs.js';
import { notifyTaskChanged } from './change-feed.js';
import { publicStatus, publicStatuses, taskStatuses, type PublicStatus, type TaskStatus } from './statuses.js';

export { publicStatus, publicStatuses, taskStatuses, type PublicStatus, type TaskStatus };
import type { CallbackEvent } from '../db/callback-schema.js';

/**
 * The task lifecycle, in one place:
 *
 *   created ──fund──▶ funded ──start──▶ in_progress ──▶ completed | failed
 *      │                │                    │
 *      ├─cancel─▶ cancelled ◀──cancel────────┤
 *      └─expire─▶ expired  ◀──expire/timeout─┘   in_progress|completed ──dispute──▶ disputed
 *
 * A terminal task never restarts. Every transition is one conditional UPDATE
 * (`… WHERE id = $1 AND status IN (allowed predecessors)`) plus an event row, inside the
 * caller's transaction; when the row is no longer in an allowed state the transition fails
 * with 409 instead of overwriting what a concurrent request did.
 */
export const transitions: Readonly<Record<TaskStatus, readonly TaskStatus[]>> = {
  created: ['funded', 'cancelled', 'expired'],
  funded: ['in_progress', 'cancelled', 'expired', 'failed'],
  in_progress: ['completed', 'failed', 'cancelled', 'expired', 'disputed'],
  completed: ['disputed'],
  failed: [],
  cancelled: [],
  disputed: [],
  expired: [],
};

export function canTransition(from: TaskStatus, to: TaskStatus): boolean {
  return transitions[from].includes(to);
}

/** States a task can reach `to` from. */
export function predecessorsOf(to: TaskStatus): TaskStatus[] {
  return taskStatuses.filter((s) => canTransition(s, to));
}

export function isTerminal(status: TaskStatus): boolean {
  return status !== 'completed' && transitions[status].length === 0;
}

export interface TransitionRequest {
  taskId: string;
  to: TaskStatus;
  /** The states this transition accepts; each must be an allowed predecessor of `to`. */
  from: readonly TaskStatus[];
  escrowStatus?: EscrowStatus;
  /** Escrow must currently be in one of these (extra guard in the same UPDATE). */
  escrowFrom?: readonly EscrowStatus[];
  set?: Partial<Omit<TaskRow, 'id' | 'status' | 'escrowStatus' | 'createdAt'>>;
  actor: string;
  detail?: Record<string, unknown>;
}

/** A transition's lock of its task and its event, prepared once per database (db/prepared.ts); the update itself sets what each transition sets. */
const lockTask = preparedQuery((db) =>
  db.select({ status: tasks.status, escrowStatus: tasks.escrowStatus }).from(tasks).where(eq(tasks.id, sql.placeholder('id'))).for('update').prepare('tasks_lock'),
);
const insertEvent = preparedQuery((db) =>
  db
    .insert(taskEvents)
    .values({
      taskId: sql.placeholder('taskId'),
      fromStatus: sql.placeholder('from'),
      toStatus: sql.placeholder('to'),
      escrowStatus: sql.placeholder('escrow'),
      actor: sql.placeholder('actor'),
      detail: sql`${sql.placeholder('detail')}::jsonb`,
      at: sql`${sql.placeholder('at')}::timestamptz`,
    })
    .prepare('tasks_event'),
);

export async function transition(tx: Executor, clock: Clock, req: TransitionRequest): Promise<TaskRow> {
  for (const f of req.from) {
    if (!canTransition(f, req.to)) throw new Error(`state machine: ${f} → ${req.to} is not a transition`);
  }
  const now = clock.now();
  const conditions = [eq(tasks.id, req.taskId), inArray(tasks.status, [...req.from])];
  if (req.escrowFrom) conditions.push(inArray(tasks.escrowStatus, [...req.escrowFrom]));
  // Lock the row: concurrent transitions of one task queue here, and `before` is exact.
  const before = REFUNDING.has(req.to)
    ? await lockForEnd(tx, req.taskId)
    : (await lockTask(tx).execute({ id: req.taskId }))[0];
  if (!before) throw new AppError('task_not_found', `Task ${req.taskId} does not exist`);
  const [row] = await tx
    .update(tasks)
    .set({
      ...req.set,
      status: req.to,
      ...(req.escrowStatus ? { escrowStatus: req.escrowStatus } : {}),
      updatedAt: now,
    })
    .where(and(...conditions))
    .returning();
  if (!row) {
    throw new AppError('state_conflict', `Task ${req.taskId} is ${before.status}; it cannot become ${req.to}`, {
      details: { status: before.status, escrow_status: before.escrowStatus },
    });
  }
  // A finished task is out of the dispatcher's hands: its job is closed.
  if (req.to === 'completed' || isTerminal(req.to)) await closeDispatch(tx, clock, row.id);
  if (row.callbackUrl && (req.to === 'completed' || isTerminal(req.to))) {
    await enqueueCallback(tx, clock, {
      taskId: row.id,
      url: row.callbackUrl,
      event: `task.${req.to}` as CallbackEvent,
      data: { task_id: row.id, status: req.to, escrow_status: row.escrowStatus, agent_id: row.agentId, at: now.toISOString() },
    });
  }
  // A batch whose last item just ended tells its callback_url, once.
  if (row.batchId && (req.to === 'completed' || isTerminal(req.to))) await enqueueBatchCallbackIfEnded(tx, clock, row.batchId);
  await insertEvent(tx).execute({
    taskId: req.taskId,
    from: before.status,
    to: req.to,
    escrow: row.escrowStatus,
    actor: req.actor,
    detail: req.detail == null ? null : JSON.stringify(req.detail),
    at: now.toISOString(),
  });
  await notifyTaskChanged(tx, row.id);
  return row;
}

/** Transitions that refund: a sub-delegated child's refund may go back to its parent's escrow (escrow/carve.ts). */
const REFUNDING: ReadonlySet<TaskStatus> = new Set(['failed', 'cancelled']);

/**
 * Locks the task and, first, its parent if it has one (one statement: rows are locked in the
 * order sorted, the parent before the child). Every transaction that locks both takes them in this
 * order (a parent's end locks itself, then cancels its children; a carve locks the parent, then
 * creates children), so they never deadlock.
 */
export async function lockForEnd(tx: Executor, taskId: string): Promise<{ status: string; escrowStatus: string } | undefined> {
  const rows = rowsOf<{ id: string; status: string; escrow_status: string }>(
    await tx.execute(sql`
      select id, status, escrow_status from tasks
      where id = ${taskId} or id = (select parent_task_id from tasks where id = ${taskId})
      order by (id = ${taskId}) for update`),
  );
  const row = rows.find((r) => r.id === taskId);
  return row ? { status: row.status, escrowStatus: row.escrow_status } : undefined;
}

export interface EscrowTransitionRequest {
  taskId: string;
  /** The escrow states this change accepts. */
  from: readonly EscrowStatus[];
  to: EscrowStatus;
  set?: Partial<Pick<TaskRow, 'refundAmount' | 'refundStatus'>>;
  actor: string;
  detail?: Record<string, unknown>;
}

/**
 * A change of the escrow alone (released after the dispute window, split by a dispute's
 * resolution): one conditional UPDATE with its event row, like every task transition; 409 when
 * the escrow is no longer in an accepted state.
 */
export async function escrowTransition(tx: Executor, clock: Clock, req: EscrowTransitionRequest): Promise<TaskRow> {
  const now = clock.now();
  const [row] = await tx
    .update(tasks)
    .set({ ...req.set, escrowStatus: req.to, updatedAt: now })
    .where(and(eq(tasks.id, req.taskId), inArray(tasks.escrowStatus, [...req.from])))
    .returning();
  if (!row) {
    const [current] = await tx.select({ status: tasks.status, escrowStatus: tasks.escrowStatus }).from(tasks).where(eq(tasks.id, req.taskId));
    if (!current) throw new AppError('task_not_found', `Task ${req.taskId} does not exist`);
    throw new AppError('state_conflict', `The escrow of task ${req.taskId} is ${current.escrowStatus}; it cannot become ${req.to}`, {
      details: { status: current.status, escrow_status: current.escrowStatus },
    });
  }
  await tx.insert(taskEvents).values({
    taskId: req.taskId,
    fromStatus: row.status,
    toStatus: row.status,
    escrowStatus: req.to,
    actor: req.actor,
    detail: req.detail ?? null,
    at: now,
  });
  await notifyTaskChanged(tx, row.id);
  return row;
}

/** A sub-delegated child's refund went back to its parent's escrow (a ledger movement: nothing to send). */
export async function recordRefundReturned(tx: Executor, taskId: string): Promise<void> {
  await tx.update(tasks).set({ refundStatus: 'returned' }).where(eq(tasks.id, taskId));
}

/** The settlement worker reports the task's own refund transfer: signed (its hash), then confirmed or failed. */
export async function recordRefundTransfer(
  tx: Executor,
  taskId: string,
  progress: { txHash: string } | { status: 'confirmed' | 'failed' },
): Promise<void> {
  await tx
    .update(tasks)
    .set('txHash' in progress ? { refundTxHash: progress.txHash } : { refundStatus: progress.status })
    .where(eq(tasks.id, taskId));
}
