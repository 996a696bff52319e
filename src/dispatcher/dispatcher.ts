import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { and, eq, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { rowsOf, withTransaction, type Db, type Tx } from '../db/client.js';
import { agents, tasks, type AgentRow, type TaskRow } from '../db/schema.js';
import { isAppError } from '../errors.js';
import type { TaskLifecycle } from '../tasks/lifecycle.js';
import { backoffMs, type WorkerLog } from '../queue/index.js';
import type { AgentRuntime, RunOutcome, TaskBrief } from './runtime.js';
import { Loop } from '../workers/loop.js';

/**
 * Runs the hired agent of every funded task, the way pg-boss / graphile-worker run jobs:
 * - claim: `… FOR UPDATE SKIP LOCKED` over the queued rows (and rows whose lease expired: a
 *   crashed worker's), a lease with an expiry, kept alive by a heartbeat;
 * - concurrency per worker (slots) and per agent (running tasks of one agent);
 * - transient failures retried with exponential backoff up to `maxAttempts`, then `failed`;
 * - the deadline (timeout_seconds) aborts the run: `failed`, escrow refunded;
 * - cancellation reaches a running agent: the heartbeat sees the task is no longer in_progress,
 *   aborts the run and tells a remote agent.
 * Several dispatchers on one Postgres never run one task at the same time.
 */
export type DispatcherLog = WorkerLog;

export interface DispatcherOptions {
  db: Db;
  clock: Clock;
  tasks: TaskLifecycle;
  runtimes: AgentRuntime<unknown>[];
  /** Public base URL agents call back (progress, deliver). */
  publicBaseUrl: string;
  concurrency: number;
  perAgentConcurrency: number;
  leaseMs: number;
  heartbeatMs: number;
  maxAttempts: number;
  backoffBaseMs: number;
  workerId?: string;
  log?: DispatcherLog;
}

/** Advisory-lock namespace of per-agent dispatch claims (the second key is hashtext(agent_id)). */
const AGENT_LOCK_SPACE = 727_002;

interface Candidate {
  id: string;
  agent_id: string;
  status: string;
  dispatch_attempts: number | string;
}

const silent: DispatcherLog = { info: () => {}, warn: () => {}, error: () => {} };

interface Running {
  taskId: string;
  controller: AbortController;
  done: Promise<void>;
}

export class Dispatcher {
  readonly id: string;
  private readonly running = new Map<string, Running>();
  /** Tasks the last claim found out of attempts (their workers kept dying): failed, never briefed again. */
  private readonly exhausted = new Set<string>();
  private readonly runtimes: Map<string, AgentRuntime<unknown>>;
  private readonly log: DispatcherLog;
  private readonly loop: Loop;
  private stopping = false;

  constructor(private readonly opts: DispatcherOptions) {
    this.id = opts.workerId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    this.runtimes = new Map(opts.runtimes.map((r) => [r.kind, r]));
    this.log = opts.log ?? silent;
    this.loop = new Loop(
      () => this.runOnce(),
      (err) => this.log.error({ err }, 'dispatcher: claim failed'),
    );
  }

  /** Tasks currently run by this dispatcher. */
  get active(): number {
    return this.running.size;
  }

  /** Claims what free slots allow and starts those runs; resolves once they are started (not finished). */
  async runOnce(): Promise<number> {
    if (this.stopping) return 0;
    const free = this.opts.concurrency - this.running.size;
    if (free <= 0) return 0;
    const claimed = await this.lease(free);
    for (const task of claimed) this.launch(task);
    if (this.exhausted.size > 0) await this.failExhausted();
    return claimed.length;
  }

  /** Waits until every run this dispatcher started has finished (tests, graceful stop). */
  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()].map((r) => r.done));
  }

  start(intervalMs: number): void {
    this.loop.start(intervalMs);
  }

  /**
   * Stops claiming; lets runs finish for up to `graceMs`, then aborts the rest and hands their
   * tasks back to the queue (another worker picks them up at once).
   */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    await this.loop.stop();
    const deadline = new Promise((r) => setTimeout(r, graceMs).unref());
    await Promise.race([this.drain(), deadline]);
    for (const run of this.running.values()) run.controller.abort(new ShutdownAbort());
    await this.drain();
  }

  // ── claim ──────────────────────────────────────────────────────────────────

  private async lease(limit: number): Promise<TaskRow[]> {
    return withTransaction(this.opts.db, async (tx) => {
      const now = this.opts.clock.now();
      // Two index-ordered scans (each on its partial index) rather than one OR that sorts every due row.
      const queued = rowsOf<Candidate>(
        await tx.execute(sql`
          select id, agent_id, status, dispatch_attempts from tasks
          where dispatch_state = 'queued' and dispatch_next_at <= ${now}
          order by dispatch_next_at
          limit ${limit * 4}
          for update skip locked`),
      );
      const orphaned =
        queued.length >= limit * 4
          ? []
          : rowsOf<Candidate>(
              await tx.execute(sql`
                select id, agent_id, status, dispatch_attempts from tasks
                where dispatch_state = 'running' and lease_expires_at < ${now}
                order by lease_expires_at
                limit ${limit * 4 - queued.length}
                for update skip locked`),
            );
      const found = [...orphaned, ...queued];
      if (found.length === 0) return [];
      // The per-agent cap holds across workers: a claim counts an agent's runs only while it holds
      // that agent's lock (until commit), so two workers never both see room for the same slot.
      const locked = await this.lockAgents(tx, [...new Set(found.map((c) => c.agent_id))]);
      const candidates = found.filter((c) => locked.has(c.agent_id));
      if (candidates.length === 0) return [];
      const busy = await this.runningPerAgent(tx, now);
      const chosen: TaskRow[] = [];
      for (const c of candidates) {
        if (chosen.length >= limit) break;
        if (c.status !== 'funded' && Number(c.dispatch_attempts) >= this.opts.maxAttempts) {
          // Its runs kept dying (crashed workers): no further brief; fail it (and refund) after this claim.
          this.exhausted.add(c.id);
          await tx.update(tasks).set({ leaseOwner: this.id, leaseExpiresAt: new Date(now.getTime() + this.opts.leaseMs) }).where(eq(tasks.id, c.id));
          continue;
        }
        const load = busy.get(c.agent_id) ?? 0;
        if (load >= this.opts.perAgentConcurrency) continue;
        busy.set(c.agent_id, load + 1);
        chosen.push(await this.take(tx, c.id, c.status, now));
      }
      return chosen;
    });
  }

  /** Transaction-level advisory locks of these agents; those another claim holds now are skipped. */
  private async lockAgents(tx: Tx, agentIds: string[]): Promise<Set<string>> {
    const locked = new Set<string>();
    for (const id of agentIds.sort()) {
      const [row] = rowsOf<{ ok: boolean }>(await tx.execute(sql`select pg_try_advisory_xact_lock(${AGENT_LOCK_SPACE}, hashtext(${id})) as ok`));
      if (row?.ok) locked.add(id);
    }
    return locked;
  }

  private async runningPerAgent(tx: Tx, now: Date): Promise<Map<string, number>> {
    const rows = rowsOf<{ agent_id: string; n: string | number }>(
      await tx.execute(sql`
        select agent_id, count(*) as n from tasks
        where dispatch_state = 'running' and lease_expires_at >= ${now}
        group by agent_id`),
    );
    return new Map(rows.map((r) => [r.agent_id, Number(r.n)]));
  }

  /** The claimed row becomes this worker's: started (first run) or re-leased (retry, reclaim). */
  private async take(tx: Tx, id: string, status: string, now: Date): Promise<TaskRow> {
    const lease = { owner: this.id, expiresAt: new Date(now.getTime() + this.opts.leaseMs) };
    if (status === 'funded') {
      const estimatedCompletion = await this.estimateCompletion(tx, id, now);
      return this.opts.tasks.markStarted(id, `dispatcher:${this.id}`, { ...lease, estimatedCompletion }, tx);
    }
    const [row] = await tx
      .update(tasks)
      .set({
        dispatchState: 'running',
        leaseOwner: lease.owner,
        leaseExpiresAt: lease.expiresAt,
        dispatchAttempts: sql`${tasks.dispatchAttempts} + 1`,
        updatedAt: now,
      })
      .where(eq(tasks.id, id))
      .returning();
    return row!;
  }

  /** From the agent's mean response time, when it has finished tasks before. */
  private async estimateCompletion(tx: Tx, taskId: string, now: Date): Promise<Date | null> {
    const [row] = await tx
      .select({ done: agents.tasksCompleted, total: agents.responseTimeTotalSeconds })
      .from(tasks)
      .innerJoin(agents, eq(agents.id, tasks.agentId))
      .where(eq(tasks.id, taskId));
    if (!row || row.done === 0) return null;
    return new Date(now.getTime() + (row.total / row.done) * 1000);
  }

  // ── run ────────────────────────────────────────────────────────────────────

  private launch(task: TaskRow): void {
    const controller = new AbortController();
    const done = this.execute(task, controller)
      .catch((err: unknown) => this.log.error({ err, task: task.id }, 'dispatcher: run crashed'))
      .finally(() => this.running.delete(task.id));
    this.running.set(task.id, { taskId: task.id, controller, done });
  }

  private async execute(task: TaskRow, controller: AbortController): Promise<void> {
    const [agent] = await this.opts.db.select().from(agents).where(eq(agents.id, task.agentId));
    const runtime = agent ? this.runtimes.get(String(agent.runtime.kind ?? '')) : undefined;
    if (!agent || !runtime) {
      await this.fail(task.id, `The agent has no runnable runtime (kind "${String(agent?.runtime.kind ?? '')}")`);
      return;
    }
    const config = runtime.configSchema.safeParse(agent.runtime);
    if (!config.success) {
      await this.fail(task.id, `The agent's ${runtime.kind} runtime is misconfigured: ${config.error.issues[0]?.message ?? 'invalid'}`);
      return;
    }
    const brief = this.briefOf(task);
    const stopWatching = this.watch(task, brief, controller, () => runtime.notifyCancelled?.(brief, config.data, 'cancelled'));
    let outcome: RunOutcome;
    try {
      outcome = await runtime.run(brief, config.data, {
        signal: controller.signal,
        report: async (update) => {
          await this.opts.tasks.reportProgress(task.id, update).catch(() => undefined);
        },
      });
    } catch (err) {
      outcome = { kind: 'failed', reason: err instanceof Error ? err.message : String(err), retryable: true };
    } finally {
      stopWatching();
    }
    await this.conclude(task, agent, brief, controller.signal, outcome, () => runtime.notifyCancelled?.(brief, config.data, 'timed out'));
  }

  private briefOf(task: TaskRow): TaskBrief {
    const base = this.opts.publicBaseUrl.replace(/\/$/, '');
    return {
      taskId: task.id,
      agentId: task.agentId,
      description: task.description,
      requirements: task.requirements ?? null,
      budget: { amount: (task.fundedAmount ?? task.budgetAmount).toString(), currency: 'USDC' },
      deadline: task.deadlineAt ?? new Date(this.opts.clock.now().getTime() + task.timeoutSeconds * 1000),
      attempt: task.dispatchAttempts,
      callbacks: { progress: `${base}/v1/tasks/${task.id}/progress`, deliver: `${base}/v1/tasks/${task.id}/deliver` },
    };
  }

  /**
   * While the agent runs: renew the lease, and abort when the deadline passes, the lease is lost
   * or the task stopped being in_progress (cancelled, disputed, delivered through the API).
   */
  private watch(task: TaskRow, brief: TaskBrief, controller: AbortController, onCancelled: () => Promise<void> | undefined): () => void {
    const untilDeadline = Math.max(0, brief.deadline.getTime() - this.opts.clock.now().getTime());
    const deadline = setTimeout(() => controller.abort(new DeadlineAbort()), untilDeadline);
    const beat = setInterval(() => {
      void this.heartbeat(task.id).then((state) => {
        if (state === 'ok' || controller.signal.aborted) return;
        controller.abort(new LeaseLostAbort(state));
        if (state === 'cancelled') void Promise.resolve(onCancelled()).catch(() => undefined);
      });
    }, this.opts.heartbeatMs);
    return () => {
      clearTimeout(deadline);
      clearInterval(beat);
    };
  }

  private async heartbeat(taskId: string): Promise<'ok' | 'cancelled' | 'lost'> {
    const now = this.opts.clock.now();
    const [row] = await this.opts.db
      .update(tasks)
      .set({ leaseExpiresAt: new Date(now.getTime() + this.opts.leaseMs) })
      .where(and(eq(tasks.id, taskId), eq(tasks.leaseOwner, this.id), eq(tasks.status, 'in_progress'), eq(tasks.dispatchState, 'running')))
      .returning({ id: tasks.id });
    if (row) return 'ok';
    const [current] = await this.opts.db.select({ status: tasks.status }).from(tasks).where(eq(tasks.id, taskId));
    return current && current.status !== 'in_progress' && current.status !== 'completed' ? 'cancelled' : 'lost';
  }

  // ── outcome ────────────────────────────────────────────────────────────────

  private async conclude(
    task: TaskRow,
    agent: AgentRow,
    brief: TaskBrief,
    signal: AbortSignal,
    outcome: RunOutcome,
    onTimeout: () => Promise<void> | undefined,
  ): Promise<void> {
    const why = signal.aborted ? signal.reason : null;
    if (why instanceof LeaseLostAbort) return; // someone else owns the task now, or it was cancelled
    if (why instanceof ShutdownAbort) return this.requeue(task.id, 0, 'worker shut down');
    if (why instanceof DeadlineAbort) {
      void Promise.resolve(onTimeout()).catch(() => undefined);
      return this.fail(task.id, `Timed out after ${task.timeoutSeconds} s`);
    }
    if (outcome.kind === 'completed') {
      await this.ignoreConflict(task.id, () => this.opts.tasks.markCompleted(task.id, outcome.result, `agent:${agent.id}`));
      return;
    }
    if (outcome.kind === 'accepted') {
      await this.opts.db
        .update(tasks)
        .set({ dispatchState: 'awaiting_delivery', leaseOwner: null, leaseExpiresAt: null, agentNotifiedAt: this.opts.clock.now() })
        .where(and(eq(tasks.id, task.id), eq(tasks.leaseOwner, this.id), eq(tasks.status, 'in_progress')));
      return;
    }
    const attempts = brief.attempt;
    if (outcome.retryable && attempts < this.opts.maxAttempts) return this.requeue(task.id, this.backoffMs(attempts), outcome.reason);
    return this.fail(task.id, outcome.reason);
  }

  /** Retry delay after the n-th attempt: base × 2^min(n−1, 10). */
  backoffMs(attempt: number): number {
    return backoffMs(this.opts.backoffBaseMs, attempt);
  }

  private async requeue(taskId: string, delayMs: number, reason: string): Promise<void> {
    const now = this.opts.clock.now();
    await this.opts.db
      .update(tasks)
      .set({
        dispatchState: 'queued',
        dispatchNextAt: new Date(now.getTime() + delayMs),
        leaseOwner: null,
        leaseExpiresAt: null,
        lastDispatchError: reason.slice(0, 1000),
        updatedAt: now,
      })
      .where(and(eq(tasks.id, taskId), eq(tasks.leaseOwner, this.id), eq(tasks.status, 'in_progress')));
    this.log.warn({ task: taskId, delayMs, reason }, 'dispatcher: run failed, retrying');
  }

  private async fail(taskId: string, reason: string): Promise<void> {
    await this.ignoreConflict(taskId, () => this.opts.tasks.markFailed(taskId, reason.slice(0, 1000), `dispatcher:${this.id}`));
  }

  /** Fails the tasks whose runs kept dying, found by the last claim. */
  private async failExhausted(): Promise<void> {
    const ids = [...this.exhausted];
    this.exhausted.clear();
    for (const id of ids) await this.fail(id, `Gave up after ${this.opts.maxAttempts} attempts whose workers stopped`).catch(() => undefined);
  }

  /**
   * Runs an outcome (complete, fail). The task moved on meanwhile (cancelled, delivered,
   * disputed): nothing to do. Any other refusal parks the task for an operator (dispatch state
   * `stuck`, listed by GET /v1/admin/attention): it is never briefed again.
   */
  private async ignoreConflict(taskId: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (isAppError(err) && (err.code === 'state_conflict' || err.code === 'task_not_found')) return;
      const reason = err instanceof Error ? err.message : String(err);
      this.log.error({ err, task: taskId }, 'dispatcher: the outcome could not be recorded; task parked as stuck');
      await this.opts.db
        .update(tasks)
        .set({ dispatchState: 'stuck', leaseOwner: null, leaseExpiresAt: null, lastDispatchError: `stuck: ${reason}`.slice(0, 1000) })
        .where(eq(tasks.id, taskId));
    }
  }
}

class DeadlineAbort extends Error {}
class ShutdownAbort extends Error {}
class LeaseLostAbort extends Error {
  constructor(readonly state: string) {
    super(`lease ${state}`);
  }
}
