import { and, eq, ne, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { rowsOf, type Db, type Executor, type Tx } from '../db/client.js';
import { dispatchJobs, tasks, type DispatchJobRow, type TaskRow } from '../db/schema.js';
import { leaseUntil, renewLeases } from '../queue/index.js';

/**
 * The dispatcher's queue (`dispatch_jobs`), its only writer. A funded task gets a job in the
 * transaction that funds it (`enqueueDispatch`); a task that completes or ends closes its job in
 * the transaction of that transition (`closeDispatch`). Everything between is the dispatcher's:
 * leasing, heartbeats, retries, parking.
 *
 * Counting: `attempts` counts runs the agent was given; a run lost because its worker stopped
 * (crash, lease lost, graceful stop) is not one of them and counts in `lost_runs` instead.
 */

/** A funded task enters the queue, due now. */
export async function enqueueDispatch(tx: Executor, clock: Clock, job: { taskId: string; agentId: string }): Promise<void> {
  const now = clock.now();
  await tx
    .insert(dispatchJobs)
    .values({ taskId: job.taskId, agentId: job.agentId, state: 'queued', nextAt: now, createdAt: now, updatedAt: now })
    .onConflictDoUpdate({ target: dispatchJobs.taskId, set: { state: 'queued', nextAt: now, leaseOwner: null, leaseExpiresAt: null, updatedAt: now } });
}

/** The task completed or ended (or an outside runner took it): out of the dispatcher's hands. */
export async function closeDispatch(tx: Executor, clock: Clock, taskId: string): Promise<void> {
  await tx
    .update(dispatchJobs)
    .set({ state: 'done', leaseOwner: null, leaseExpiresAt: null, updatedAt: clock.now() })
    .where(and(eq(dispatchJobs.taskId, taskId), ne(dispatchJobs.state, 'done')));
}

/** A job the dispatcher may lease now, with its task's status. */
export interface DispatchCandidate {
  task_id: string;
  agent_id: string;
  status: string;
  state: 'queued' | 'running';
  attempts: number;
  lost_runs: number;
}

/** Jobs whose lease ran out hold no slot: `running` counts only live leases. */
const LIVE = sql`lease_expires_at >= now()`;

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
    const pick = (where: ReturnType<typeof sql>, order: ReturnType<typeof sql>, n: number) =>
      tx.execute(sql`
        select j.task_id, j.agent_id, t.status, j.state, j.attempts, j.lost_runs
        from dispatch_jobs j join tasks t on t.id = j.task_id
        where ${where} order by ${order} limit ${n}
        for update of j skip locked`);
    const orphaned = rowsOf<DispatchCandidate>(await pick(sql`j.state = 'running' and j.lease_expires_at < now()`, sql`j.lease_expires_at`, limit));
    const queued =
      orphaned.length >= limit
        ? []
        : rowsOf<DispatchCandidate>(
            await pick(sql`j.state = 'queued' and j.next_at <= ${this.clock.now().toISOString()}::timestamptz`, sql`j.next_at`, limit - orphaned.length),
          );
    return [...orphaned, ...queued].map((c) => ({ ...c, attempts: Number(c.attempts), lost_runs: Number(c.lost_runs) }));
  }

  /** Live runs per agent (call while holding the agents' locks). */
  async runningPerAgent(tx: Tx, agentIds: readonly string[]): Promise<Map<string, number>> {
    if (agentIds.length === 0) return new Map();
    const rows = rowsOf<{ agent_id: string; n: string | number }>(
      await tx.execute(sql`
        select agent_id, count(*) as n from dispatch_jobs
        where state = 'running' and ${LIVE}
          and agent_id in (select jsonb_array_elements_text(${JSON.stringify(agentIds)}::jsonb))
        group by agent_id`),
    );
    return new Map(rows.map((r) => [r.agent_id, Number(r.n)]));
  }

  /**
   * The job becomes `owner`'s run, leased for `leaseMs` on the database's clock. A takeover (the
   * last run's worker died) counts a lost run, not an attempt.
   */
  async run(tx: Tx, c: DispatchCandidate, owner: string, leaseMs: number): Promise<DispatchJobRow> {
    const takeover = c.state === 'running';
    const [row] = await tx
      .update(dispatchJobs)
      .set({
        state: 'running',
        leaseOwner: owner,
        leaseExpiresAt: leaseUntil(leaseMs),
        attempts: takeover ? sql`${dispatchJobs.attempts}` : sql`${dispatchJobs.attempts} + 1`,
        lostRuns: takeover ? sql`${dispatchJobs.lostRuns} + 1` : sql`${dispatchJobs.lostRuns}`,
        updatedAt: this.clock.now(),
      })
      .where(eq(dispatchJobs.taskId, c.task_id))
      .returning();
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
