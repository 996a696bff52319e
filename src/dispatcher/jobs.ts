import { and, eq, ne, sql, type SQL } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { rowsOf, type Db, type Executor, type Tx } from '../db/client.js';
import { preparedQuery, preparedSql } from '../db/prepared.js';
import { dispatchJobs, tasks, type DispatchJobRow, type TaskRow } from '../db/schema.js';
import { leaseUntil, leaseUntilParam, renewLeases } from '../queue/index.js';

/**
 * The dispatcher's queue (`dispatch_jobs`), its only writer. A funded task gets a job in the
 * transaction that funds it (`enqueueDispatch`); a task that completes or ends closes its job in
 * the transaction of that transition (`closeDispatch`). Everything between is the dispatcher's:
 * leasing, heartbeats, retries, parking.
 *
 * Counting: `attempts` counts runs the agent was given; a run lost because its worker stopped
 * (crash, lease lost, graceful stop) is not one of them and counts in `lost_runs` instead.
 */

/** A batch item's place in its batch, as the queue needs it. */
export interface BatchSlot {
  batchId: string;
  /** Tasks of the batch that must end first; none = queued at once. */
  dependsOn: readonly string[];
}

/**
 * A funded task enters the queue, due now. A batch item with predecessors waits (`waiting`) until
 * they have ended (`closeDispatch` queues it in the transaction of the last one's transition).
 */
export async function enqueueDispatch(tx: Executor, clock: Clock, job: { taskId: string; agentId: string; batch?: BatchSlot }): Promise<void> {
  const now = clock.now();
  const state = job.batch && job.batch.dependsOn.length > 0 ? 'waiting' : 'queued';
  const batch = job.batch ? { batchId: job.batch.batchId, dependsOn: [...job.batch.dependsOn] } : {};
  await tx
    .insert(dispatchJobs)
    .values({ taskId: job.taskId, agentId: job.agentId, state, nextAt: now, createdAt: now, updatedAt: now, ...batch })
    .onConflictDoUpdate({ target: dispatchJobs.taskId, set: { state, nextAt: now, leaseOwner: null, leaseExpiresAt: null, updatedAt: now } });
}

/**
 * The task completed or ended (or an outside runner took it): out of the dispatcher's hands. In a
 * batch, the items waiting only for it become queued.
 */
export async function closeDispatch(tx: Executor, clock: Clock, taskId: string): Promise<void> {
  const closed = await tx
    .update(dispatchJobs)
    .set({ state: 'done', leaseOwner: null, leaseExpiresAt: null, updatedAt: clock.now() })
    .where(and(eq(dispatchJobs.taskId, taskId), ne(dispatchJobs.state, 'done')))
    .returning({ batchId: dispatchJobs.batchId });
  const batchId = closed[0]?.batchId;
  if (batchId) await queueReadyItems(tx, clock, batchId);
}

/** Advisory-lock namespaces of a batch: one for queueing its waiting items, one for claiming its runs. */
export const BATCH_QUEUE_LOCK_SPACE = 727_003;
export const BATCH_CLAIM_LOCK_SPACE = 727_004;

/** Task statuses in which a predecessor has ended, and those in which it delivered a result. */
const ENDED = sql`('completed','disputed','failed','cancelled','expired')`;
const DELIVERED = sql`(t.status = 'completed' or (t.status = 'disputed' and t.result_hash is not null))`;

/**
 * Queues the batch's waiting items whose predecessors have all ended: with policy `continue`
 * however they ended, with `fail_fast` only if each delivered (an item behind a failure is the
 * dispatcher's to cancel, `doomedItems`). Serialised per batch: two predecessors ending at once in
 * two transactions would otherwise each see the other still running, and neither queue the item.
 * Under READ COMMITTED the second, once it holds the lock, reads the first one's commit.
 */
export async function queueReadyItems(tx: Executor, clock: Clock, batchId: string): Promise<number> {
  await tx.execute(sql`select pg_advisory_xact_lock(${BATCH_QUEUE_LOCK_SPACE}, hashtext(${batchId}))`);
  const now = clock.now().toISOString();
  const rows = rowsOf<{ task_id: string }>(
    await tx.execute(sql`
      update dispatch_jobs j set state = 'queued', next_at = ${now}::timestamptz, updated_at = ${now}::timestamptz
      from batches b
      where j.batch_id = ${batchId} and j.state = 'waiting' and b.id = j.batch_id
        and not exists (
          select 1 from jsonb_array_elements_text(coalesce(j.depends_on, '[]'::jsonb)) d(id) join tasks t on t.id = d.id
          where t.status not in ${ENDED} or (b.policy = 'fail_fast' and not ${DELIVERED}))
      returning j.task_id`),
  );
  return rows.length;
}

/**
 * Batch items that will never run under `fail_fast`: every item not yet started (waiting or queued)
 * of a batch where an item failed, and every waiting item whose predecessor ended without a result
 * (cancelled on its own, disputed before delivery). The dispatcher cancels them with a full refund.
 */
export async function doomedItems(exec: Executor, limit = 100): Promise<{ task_id: string; reason: string }[]> {
  return rowsOf<{ task_id: string; reason: string }>(
    await exec.execute(sql`
      select task_id, reason from (
      select j.task_id, coalesce(
        (select 'item ' || f.batch_index || ' (' || f.id || ') of its batch failed'
           from tasks f where f.batch_id = j.batch_id and f.status = 'failed' order by f.batch_index limit 1),
        (select 'its predecessor ' || t.batch_index || ' (' || t.id || ') ended ' || t.status || ' without a result'
           from jsonb_array_elements_text(coalesce(j.depends_on, '[]'::jsonb)) d(id) join tasks t on t.id = d.id
           where t.status in ${ENDED} and not ${DELIVERED} limit 1)) as reason
      from dispatch_jobs j
      join batches b on b.id = j.batch_id and b.policy = 'fail_fast'
      where j.batch_id is not null and j.state in ('waiting', 'queued')) doomed
      where reason is not null
      order by task_id limit ${limit}`),
  );
}

/** A job the dispatcher may lease now, with its task's status. */
export interface DispatchCandidate {
  task_id: string;
  agent_id: string;
  batch_id: string | null;
  /** The batch's max_concurrency (null outside a batch). */
  batch_limit: number | null;
  status: string;
  state: 'queued' | 'running';
  attempts: number;
  lost_runs: number;
}

/** Jobs whose lease ran out hold no slot: `running` counts only live leases. */
const LIVE = sql`lease_expires_at >= now()`;

/**
 * The statements of the dispatcher's claim (one transaction, dispatcher.ts `lease`), prepared once
 * per database (db/prepared.ts) and run on the claim's transaction.
 */
const pickDue = (name: string, where: SQL, order: SQL) =>
  preparedSql(
    name,
    sql`select j.task_id, j.agent_id, j.batch_id, b.max_concurrency as batch_limit, t.status, j.state, j.attempts, j.lost_runs
        from dispatch_jobs j join tasks t on t.id = j.task_id left join batches b on b.id = j.batch_id
        where ${where} order by ${order} limit ${sql.placeholder('limit')}::integer
        for update of j skip locked`,
  );
const pickOrphaned = pickDue('dispatch_pick_orphaned', sql`j.state = 'running' and j.lease_expires_at < now()`, sql`j.lease_expires_at`);
const pickQueued = pickDue('dispatch_pick_queued', sql`j.state = 'queued' and j.next_at <= ${sql.placeholder('now')}::timestamptz`, sql`j.next_at`);
const countRunningPerAgent = preparedSql(
  'dispatch_running_per_agent',
  sql`select agent_id, count(*) as n from dispatch_jobs
      where state = 'running' and ${LIVE}
        and agent_id in (select jsonb_array_elements_text(${sql.placeholder('ids')}::jsonb))
      group by agent_id`,
);
const countRunningPerBatch = preparedSql(
  'dispatch_running_per_batch',
  sql`select batch_id, count(*) as n from dispatch_jobs
      where ((state = 'running' and ${LIVE}) or state = 'awaiting_delivery')
        and batch_id in (select jsonb_array_elements_text(${sql.placeholder('ids')}::jsonb))
      group by batch_id`,
);
/** The job becomes a run: a first run (or a retry) counts an attempt, a takeover a lost run. */
const startRun = preparedQuery((db) =>
  db
    .update(dispatchJobs)
    .set({
      state: 'running',
      leaseOwner: sql`${sql.placeholder('owner')}`,
      leaseExpiresAt: leaseUntilParam,
      attempts: sql`${dispatchJobs.attempts} + ${sql.placeholder('attempt')}::integer`,
      lostRuns: sql`${dispatchJobs.lostRuns} + ${sql.placeholder('lost')}::integer`,
      updatedAt: sql`${sql.placeholder('now')}::timestamptz`,
    })
    .where(eq(dispatchJobs.taskId, sql.placeholder('taskId')))
    .returning()
    .prepare('dispatch_start_run'),
);
/** A transaction-level advisory lock of (space, hashtext(key)), if no other transaction holds it. */
export const tryAdvisoryLock = preparedSql(
  'advisory_try_xact_lock',
  sql`select pg_try_advisory_xact_lock(${sql.placeholder('space')}::integer, hashtext(${sql.placeholder('key')}::text)) as ok`,
);

export class DispatchJobs {
  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
  ) {}

  /**
   * Up to `limit` jobs due now, locked (`FOR UPDATE SKIP LOCKED`) until the transaction ends:
   * first runs whose worker died (lease expired), then queued jobs due by `next_at`. Two
   * index-ordered scans rather than one OR that sorts every due row.
   */
  async candidates(tx: Tx, limit: number): Promise<DispatchCandidate[]> {
    const orphaned = rowsOf<DispatchCandidate>(await pickOrphaned(tx).execute({ limit }));
    const queued =
      orphaned.length >= limit ? [] : rowsOf<DispatchCandidate>(await pickQueued(tx).execute({ limit: limit - orphaned.length, now: this.clock.now().toISOString() }));
    return [...orphaned, ...queued].map((c) => ({
      ...c,
      attempts: Number(c.attempts),
      lost_runs: Number(c.lost_runs),
      batch_limit: c.batch_limit === null ? null : Number(c.batch_limit),
    }));
  }

  /** Live runs per agent (call while holding the agents' locks). */
  async runningPerAgent(tx: Tx, agentIds: readonly string[]): Promise<Map<string, number>> {
    if (agentIds.length === 0) return new Map();
    const rows = rowsOf<{ agent_id: string; n: string | number }>(await countRunningPerAgent(tx).execute({ ids: JSON.stringify(agentIds) }));
    return new Map(rows.map((r) => [r.agent_id, Number(r.n)]));
  }

  /** Live runs per batch, an accepted async run included (call while holding the batches' claim locks). */
  async runningPerBatch(tx: Tx, batchIds: readonly string[]): Promise<Map<string, number>> {
    if (batchIds.length === 0) return new Map();
    const rows = rowsOf<{ batch_id: string; n: string | number }>(await countRunningPerBatch(tx).execute({ ids: JSON.stringify(batchIds) }));
    return new Map(rows.map((r) => [r.batch_id, Number(r.n)]));
  }

  /**
   * The job becomes `owner`'s run, leased for `leaseMs` on the database's clock. A takeover (the
   * last run's worker died) counts a lost run, not an attempt.
   */
  async run(tx: Tx, c: DispatchCandidate, owner: string, leaseMs: number): Promise<DispatchJobRow> {
    const takeover = c.state === 'running';
    const [row] = await startRun(tx).execute({
      taskId: c.task_id,
      owner,
      leaseMs: Math.round(leaseMs),
      attempt: takeover ? 0 : 1,
      lost: takeover ? 1 : 0,
      now: this.clock.now().toISOString(),
    });
    return row!;
  }

  /** The heartbeat: renews every lease `owner` holds on `taskIds` in one statement; returns those it still holds. */
  renew(owner: string, leaseMs: number, taskIds: readonly string[]): Promise<Set<string>> {
    return renewLeases(this.db, 'dispatch_jobs', owner, leaseMs, taskIds, 'task_id');
  }

  /**
   * Back in the queue, due after `delayMs`. `lost`: the run ended through no fault of the agent
   * (its worker stopped), so it gives its attempt back and counts as a lost run.
   */
  async requeue(taskId: string, owner: string, delayMs: number, reason: string, lost = false): Promise<boolean> {
    const now = this.clock.now();
    const rows = await this.db
      .update(dispatchJobs)
      .set({
        state: 'queued',
        nextAt: new Date(now.getTime() + delayMs),
        leaseOwner: null,
        leaseExpiresAt: null,
        lastError: reason.slice(0, 1000),
        ...(lost ? { attempts: sql`greatest(${dispatchJobs.attempts} - 1, 0)`, lostRuns: sql`${dispatchJobs.lostRuns} + 1` } : {}),
        updatedAt: now,
      })
      .where(this.held(taskId, owner))
      .returning({ id: dispatchJobs.taskId });
    return rows.length === 1;
  }

  /** The agent accepted the brief and will deliver through the API. */
  async awaitDelivery(taskId: string, owner: string): Promise<void> {
    const now = this.clock.now();
    await this.db
      .update(dispatchJobs)
      .set({ state: 'awaiting_delivery', leaseOwner: null, leaseExpiresAt: null, notifiedAt: now, updatedAt: now })
      .where(this.held(taskId, owner));
  }

  /** A leased job taken out of the queue for an operator (its outcome could not be recorded). */
  async park(taskId: string, reason: string): Promise<void> {
    await this.db
      .update(dispatchJobs)
      .set({ state: 'stuck', leaseOwner: null, leaseExpiresAt: null, lastError: `stuck: ${reason}`.slice(0, 1000), updatedAt: this.clock.now() })
      .where(and(eq(dispatchJobs.taskId, taskId), ne(dispatchJobs.state, 'done')));
  }

  /** Holds the job for `owner` (a job given up or finished stays so). */
  async hold(tx: Tx, taskId: string, owner: string, leaseMs: number): Promise<void> {
    await tx.update(dispatchJobs).set({ leaseOwner: owner, leaseExpiresAt: leaseUntil(leaseMs) }).where(eq(dispatchJobs.taskId, taskId));
  }

  /** Statuses of these tasks (to tell a cancelled run from a lost lease). */
  async statuses(taskIds: readonly string[]): Promise<Map<string, string>> {
    if (taskIds.length === 0) return new Map();
    const rows = rowsOf<{ id: string; status: string }>(
      await this.db.execute(sql`select id, status from tasks where id in (select jsonb_array_elements_text(${JSON.stringify(taskIds)}::jsonb))`),
    );
    return new Map(rows.map((r) => [r.id, r.status]));
  }

  private held(taskId: string, owner: string) {
    return and(eq(dispatchJobs.taskId, taskId), eq(dispatchJobs.leaseOwner, owner), eq(dispatchJobs.state, 'running'));
  }
}

/** Tasks the dispatcher parked (for the operator), with the reason. */
export async function stuckDispatches(db: Executor, limit = 100): Promise<{ task: TaskRow; reason: string | null }[]> {
  const rows = await db
    .select({ task: tasks, reason: dispatchJobs.lastError })
    .from(dispatchJobs)
    .innerJoin(tasks, eq(tasks.id, dispatchJobs.taskId))
    .where(eq(dispatchJobs.state, 'stuck'))
    .orderBy(dispatchJobs.updatedAt)
    .limit(limit);
  return rows;
}
