import { eq, inArray, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { rowsOf, withTransaction, type Db, type Tx } from '../db/client.js';
import { preparedQuery } from '../db/prepared.js';
import { agents, tasks, type AgentRow, type TaskRow } from '../db/schema.js';
import { isAppError } from '../errors.js';
import type { TaskLifecycle } from '../tasks/lifecycle.js';
import { backoffMs, workerId, type WorkerLog } from '../queue/index.js';
import type { AgentRuntime, PredecessorResult, RunOutcome, ServiceTool, ServiceTools, TaskBrief } from './runtime.js';
import type { ResultContentT } from '../tasks/schemas.js';
import { Loop } from '../workers/loop.js';
import { BATCH_CLAIM_LOCK_SPACE, closeDispatch, DispatchJobs, doomedItems, tryAdvisoryLock, type DispatchCandidate } from './jobs.js';

/**
 * Runs the hired agent of every funded task, from its queue (`dispatch_jobs`, see jobs.ts):
 * - claim: `… FOR UPDATE SKIP LOCKED` over the queued jobs (and jobs whose lease expired: a
 *   crashed worker's), a lease on the database's clock, kept alive by one heartbeat statement
 *   for all of this worker's runs, so a dead worker's runs are taken over within one lease;
 * - concurrency per worker (slots) and per agent (running tasks of one agent);
 * - transient failures retried with exponential backoff up to `maxAttempts`, then `failed`; a run
 *   lost with its worker does not use an attempt (bounded apart, `maxLostRuns`);
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
  /** Runs lost with their workers before the task is failed (default 3). */
  maxLostRuns?: number;
  backoffBaseMs: number;
  workerId?: string;
  log?: DispatcherLog;
  /** Tools the service offers hosted agents (delegate_task); their waits free this worker's slot. */
  serviceTools?: ServiceTools;
}

/** The hired agent's finished tasks and their total response time (the claim's estimate), prepared once per database. */
const agentTimes = preparedQuery((db) =>
  db
    .select({ done: agents.tasksCompleted, total: agents.responseTimeTotalSeconds })
    .from(tasks)
    .innerJoin(agents, eq(agents.id, tasks.agentId))
    .where(eq(tasks.id, sql.placeholder('taskId')))
    .prepare('dispatch_agent_times'),
);

/** Advisory-lock namespace of per-agent dispatch claims (the second key is hashtext(agent_id)). */
const AGENT_LOCK_SPACE = 727_002;

const silent: DispatcherLog = { info: () => {}, warn: () => {}, error: () => {} };

interface Running {
  taskId: string;
  controller: AbortController;
  done: Promise<void>;
  /** Tells a remote agent its task was cancelled (set once the run knows its runtime). */
  onCancelled: (() => Promise<void> | undefined) | undefined;
}

export class Dispatcher {
  readonly id: string;
  private readonly running = new Map<string, Running>();
  /** Tasks the last claim found out of attempts (their workers kept dying): failed, never briefed again. */
  private readonly exhausted = new Set<string>();
  private readonly runtimes: Map<string, AgentRuntime<unknown>>;
  private readonly log: DispatcherLog;
  private readonly loop: Loop;
  private readonly heartbeat: Loop;
  private readonly jobs: DispatchJobs;
  private readonly maxLostRuns: number;
  private stopping = false;
  /** Runs waiting inside a service tool (a parent awaiting its children): they hold no slot. */
  private waiting = 0;

  constructor(private readonly opts: DispatcherOptions) {
    this.id = opts.workerId ?? workerId();
    this.runtimes = new Map(opts.runtimes.map((r) => [r.kind, r]));
    this.log = opts.log ?? silent;
    this.loop = new Loop(
      () => this.runOnce(),
      (err) => this.log.error({ err }, 'dispatcher: claim failed'),
    );
    this.heartbeat = new Loop(
      () => this.beat(),
      (err) => this.log.warn({ err }, 'dispatcher: heartbeat failed'),
    );
    this.jobs = new DispatchJobs(opts.db, opts.clock);
    this.maxLostRuns = opts.maxLostRuns ?? 3;
  }

  /** Tasks currently run by this dispatcher. */
  get active(): number {
    return this.running.size;
  }

  /**
   * Claims what free slots allow and starts those runs; resolves once they are started (not
   * finished). A run waiting for its children (delegate_task) leaves its slot to others, so parents
   * waiting on this worker never starve their own children of slots.
   */
  async runOnce(): Promise<number> {
    if (this.stopping) return 0;
    const free = this.opts.concurrency - (this.running.size - this.waiting);
    if (free <= 0) return 0;
    await this.cancelDoomed();
    const claimed = await this.lease(free);
    for (const task of claimed) this.launch(task);
    if (this.exhausted.size > 0) await this.failExhausted();
    return claimed.length;
  }

  /** Batch items that will never run (`fail_fast` after a failure): cancelled, refunded in full. */
  private async cancelDoomed(): Promise<void> {
    for (const item of await doomedItems(this.opts.db)) {
      await this.ignoreConflict(item.task_id, () =>
        this.opts.tasks.cancelUnstarted(item.task_id, `Not run (policy fail_fast): ${item.reason}`, `dispatcher:${this.id}`),
      );
    }
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

  private async lease(limit: number): Promise<Leased[]> {
    return withTransaction(this.opts.db, async (tx) => {
      const found = await this.jobs.candidates(tx, limit * 4);
      if (found.length === 0) return [];
      // The per-agent cap holds across workers: a claim counts an agent's runs only while it holds
      // that agent's lock (until commit), so two workers never both see room for the same slot.
      const locked = await this.tryLocks(tx, AGENT_LOCK_SPACE, [...new Set(found.map((c) => c.agent_id))]);
      // A batch's max_concurrency likewise: its live runs are counted under the batch's claim lock.
      const batchIds = [...new Set(found.flatMap((c) => (c.batch_id ? [c.batch_id] : [])))];
      const lockedBatches = await this.tryLocks(tx, BATCH_CLAIM_LOCK_SPACE, batchIds);
      const candidates = found.filter((c) => locked.has(c.agent_id) && (!c.batch_id || lockedBatches.has(c.batch_id)));
      if (candidates.length === 0) return [];
      const busy = await this.jobs.runningPerAgent(tx, [...locked]);
      const batchBusy = await this.jobs.runningPerBatch(tx, [...lockedBatches]);
      const chosen: Leased[] = [];
      for (const c of candidates) {
        if (chosen.length >= limit) break;
        if (c.status !== 'funded' && c.status !== 'in_progress') {
          await closeDispatch(tx, this.opts.clock, c.task_id); // ended without its transition closing the job
          continue;
        }
        if (c.state === 'running' && c.lost_runs >= this.maxLostRuns) {
          // Its runs kept dying with their workers: no further brief; fail it (and refund) after this claim.
          this.exhausted.add(c.task_id);
          await this.jobs.hold(tx, c.task_id, this.id, this.opts.leaseMs);
          continue;
        }
        const load = busy.get(c.agent_id) ?? 0;
        if (load >= this.opts.perAgentConcurrency) continue;
        // A takeover keeps the batch's slot its dead run held (that run no longer counts as live).
        const batchLoad = c.batch_id ? (batchBusy.get(c.batch_id) ?? 0) : 0;
        if (c.batch_id && c.batch_limit !== null && batchLoad >= c.batch_limit) continue;
        busy.set(c.agent_id, load + 1);
        if (c.batch_id) batchBusy.set(c.batch_id, batchLoad + 1);
        chosen.push(await this.take(tx, c));
      }
      return chosen;
    });
  }

  /** Transaction-level advisory locks of these agents or batches; those another claim holds now are skipped. */
  private async tryLocks(tx: Tx, space: number, ids: string[]): Promise<Set<string>> {
    const locked = new Set<string>();
    for (const id of ids.sort()) {
      const [row] = rowsOf<{ ok: boolean }>(await tryAdvisoryLock(tx).execute({ space, key: id }));
      if (row?.ok) locked.add(id);
    }
    return locked;
  }

  /** The job becomes this worker's run; a funded task starts (its first run). */
  private async take(tx: Tx, c: DispatchCandidate): Promise<Leased> {
    const job = await this.jobs.run(tx, c, this.id, this.opts.leaseMs);
    const task =
      c.status === 'funded'
        ? await this.opts.tasks.markStarted(c.task_id, `dispatcher:${this.id}`, { estimatedCompletion: await this.estimateCompletion(tx, c.task_id) }, tx)
        : await this.opts.tasks.require(tx, c.task_id);
    return { ...task, attempt: job.attempts };
  }

  /** From the agent's mean response time, when it has finished tasks before. */
  private async estimateCompletion(tx: Tx, taskId: string): Promise<Date | null> {
    const [row] = await agentTimes(tx).execute({ taskId });
    if (!row || row.done === 0) return null;
    return new Date(this.opts.clock.now().getTime() + (row.total / row.done) * 1000);
  }

  // ── run ────────────────────────────────────────────────────────────────────

  private launch(task: Leased): void {
    const controller = new AbortController();
    const done = this.execute(task, controller)
      .catch((err: unknown) => this.log.error({ err, task: task.id }, 'dispatcher: run crashed'))
      .finally(() => {
        this.running.delete(task.id);
        if (this.running.size === 0) this.heartbeat.stop();
      });
    this.running.set(task.id, { taskId: task.id, controller, done, onCancelled: undefined });
    this.heartbeat.start(this.opts.heartbeatMs);
  }

  private async execute(task: Leased, controller: AbortController): Promise<void> {
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
    const brief = this.briefOf(task, await this.predecessorsOf(task));
    const run = this.running.get(task.id);
    if (run) run.onCancelled = () => runtime.notifyCancelled?.(brief, config.data, 'cancelled');
    const untilDeadline = Math.max(0, brief.deadline.getTime() - this.opts.clock.now().getTime());
    const deadline = setTimeout(() => controller.abort(new DeadlineAbort()), untilDeadline);
    let outcome: RunOutcome;
    try {
      outcome = await runtime.run(brief, config.data, {
        signal: controller.signal,
        report: async (update) => {
          await this.opts.tasks.reportProgress(task.id, update).catch(() => undefined);
        },
        tools: this.serviceToolsFor(task),
      });
    } catch (err) {
      outcome = { kind: 'failed', reason: err instanceof Error ? err.message : String(err), retryable: true };
    } finally {
      clearTimeout(deadline);
    }
    await this.conclude(task, agent, brief, controller.signal, outcome, () => runtime.notifyCancelled?.(brief, config.data, 'timed out'));
  }

  /** The service's tools for this run (none for a child task), each call's wait leaving the slot free. */
  private serviceToolsFor(task: Leased): ServiceTool[] {
    return (this.opts.serviceTools?.forRun(task) ?? []).map((tool) => ({
      ...tool,
      execute: async (args, signal) => {
        this.waiting++;
        try {
          return await tool.execute(args, signal);
        } finally {
          this.waiting--;
        }
      },
    }));
  }

  /** A batch item's predecessors with their results, in its depends_on order. */
  private async predecessorsOf(task: Leased): Promise<PredecessorResult[] | undefined> {
    const ids = task.dependsOn ?? [];
    if (ids.length === 0) return undefined;
    const rows = await this.opts.db.select().from(tasks).where(inArray(tasks.id, ids));
    const byId = new Map(rows.map((r) => [r.id, r]));
    return ids.flatMap((id) => {
      const p = byId.get(id);
      if (!p) return [];
      const delivered = p.resultHash !== null && (p.status === 'completed' || p.status === 'disputed');
      return [
        {
          task_id: p.id,
          index: p.batchIndex ?? 0,
          status: p.status,
          result: delivered ? (p.result as ResultContentT) : null,
          failure: delivered ? null : (p.failureReason ?? p.cancelReason ?? p.status),
        },
      ];
    });
  }

  private briefOf(task: Leased, predecessors: PredecessorResult[] | undefined): TaskBrief {
    const base = this.opts.publicBaseUrl.replace(/\/$/, '');
    return {
      ...(predecessors ? { predecessors } : {}),
      ...(task.runLimits ? { limits: task.runLimits } : {}),
      taskId: task.id,
      agentId: task.agentId,
      description: task.description,
      requirements: task.requirements ?? null,
      budget: { amount: (task.fundedAmount ?? task.budgetAmount).toString(), currency: 'USDC' },
      deadline: task.deadlineAt ?? new Date(this.opts.clock.now().getTime() + task.timeoutSeconds * 1000),
      attempt: task.attempt,
      callbacks: { progress: `${base}/v1/tasks/${task.id}/progress`, deliver: `${base}/v1/tasks/${task.id}/deliver` },
    };
  }

  /**
   * The heartbeat of all this worker's runs: one statement renews every lease it holds. A run whose
   * lease is gone is aborted: its task was cancelled (the agent is told) or another worker took it.
   */
  private async beat(): Promise<void> {
    const ids = [...this.running.keys()];
    const held = await this.jobs.renew(this.id, this.opts.leaseMs, ids);
    const lost = ids.filter((id) => !held.has(id) && !this.running.get(id)?.controller.signal.aborted);
    if (lost.length === 0) return;
    const statuses = await this.jobs.statuses(lost);
    for (const id of lost) {
      const run = this.running.get(id);
      if (!run || run.controller.signal.aborted) continue;
      const status = statuses.get(id);
      const cancelled = status !== undefined && status !== 'in_progress' && status !== 'completed';
      run.controller.abort(new LeaseLostAbort(cancelled ? 'cancelled' : 'lost'));
      if (cancelled) void Promise.resolve(run.onCancelled?.()).catch(() => undefined);
    }
  }

  // ── outcome ────────────────────────────────────────────────────────────────

  private async conclude(
    task: Leased,
    agent: AgentRow,
    brief: TaskBrief,
    signal: AbortSignal,
    outcome: RunOutcome,
    onTimeout: () => Promise<void> | undefined,
  ): Promise<void> {
    const why = signal.aborted ? signal.reason : null;
    if (why instanceof LeaseLostAbort) return; // someone else owns the task now, or it was cancelled
    if (why instanceof ShutdownAbort) return this.requeue(task.id, 0, 'worker shut down', true);
    if (why instanceof DeadlineAbort) {
      void Promise.resolve(onTimeout()).catch(() => undefined);
      return this.fail(task.id, `Timed out after ${task.timeoutSeconds} s`);
    }
    if (outcome.kind === 'completed') {
      await this.ignoreConflict(task.id, () => this.opts.tasks.markCompleted(task.id, outcome.result, `agent:${agent.id}`));
      return;
    }
    if (outcome.kind === 'accepted') return this.jobs.awaitDelivery(task.id, this.id);
    const attempts = brief.attempt;
    if (outcome.retryable && attempts < this.opts.maxAttempts) return this.requeue(task.id, this.backoffMs(attempts), outcome.reason);
    return this.fail(task.id, outcome.reason);
  }

  /** Retry delay after the n-th attempt: base × 2^min(n−1, 10). */
  backoffMs(attempt: number): number {
    return backoffMs(this.opts.backoffBaseMs, attempt);
  }

  private async requeue(taskId: string, delayMs: number, reason: string, lost = false): Promise<void> {
    if (await this.jobs.requeue(taskId, this.id, delayMs, reason, lost)) {
      this.log.warn({ task: taskId, delayMs, reason }, lost ? 'dispatcher: run stopped, handed back' : 'dispatcher: run failed, retrying');
    }
  }

  private async fail(taskId: string, reason: string): Promise<void> {
    await this.ignoreConflict(taskId, () => this.opts.tasks.markFailed(taskId, reason.slice(0, 1000), `dispatcher:${this.id}`));
  }

  /** Fails the tasks whose runs kept dying, found by the last claim. */
  private async failExhausted(): Promise<void> {
    const ids = [...this.exhausted];
    this.exhausted.clear();
    for (const id of ids) await this.fail(id, `Gave up after ${this.maxLostRuns} runs whose workers stopped`).catch(() => undefined);
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
      await this.jobs.park(taskId, reason);
    }
  }
}

/** A task leased for a run, with the attempt this run is. */
type Leased = TaskRow & { attempt: number };

class DeadlineAbort extends Error {}
class ShutdownAbort extends Error {}
class LeaseLostAbort extends Error {
  constructor(readonly state: string) {
    super(`lease ${state}`);
  }
}
