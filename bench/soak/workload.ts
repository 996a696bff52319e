/**
 * One iteration's seeded random workload: `lanes` concurrent payers (one wallet each, paying with
 * the stock `@x402/fetch` client) that hire agents and poke at their tasks until the service is
 * killed (or the workload's time is up). Every choice comes from the lane's own PRNG stream; what
 * a lane acts on (its tasks and their states) is read from the database, since a request cut off
 * by the kill may or may not have taken effect. A channel payer's lane (wallets.ts) does the same;
 * its fixed-price calls go over its batch-settlement channel and are tallied as `<purpose> (channel)`.
 */
import { and, desc, eq, inArray, sql } from 'drizzle-orm';
import { rowsOf, type Db } from '../../src/db/client.js';
import { tasks } from '../../src/db/schema.js';
import type { AgentKind, SoakAgents } from './agents.js';
import type { Rng } from './prng.js';
import type { Answer, RequestStats } from './requests.js';
import { CHANNEL_IDLE_REFUND_MS } from './service.js';
import type { Payer } from './wallets.js';

/** The paid routes, by the price name a failpoint is qualified with. */
export const PURPOSES = ['create_task', 'fund_task', 'cancel_task', 'dispute_task', 'task_status', 'task_result', 'create_batch', 'batch_status', 'cancel_batch'] as const;
export type Purpose = (typeof PURPOSES)[number];
/** The fixed-price ones: offered over a batch-settlement channel too (funding and batches are dynamic, `exact` only). */
export const CHANNEL_PURPOSES = ['create_task', 'cancel_task', 'dispute_task', 'task_status', 'task_result', 'batch_status', 'cancel_batch'] as const satisfies readonly Purpose[];
export type ChannelPurpose = (typeof CHANNEL_PURPOSES)[number];
const isChannelPurpose = (p: Purpose): boolean => (CHANNEL_PURPOSES as readonly Purpose[]).includes(p);

export interface WorkloadSettings {
  /** timeout_seconds of created tasks: [min, max]. */
  taskTimeoutSeconds: readonly [number, number];
  /** Budgets in atomic USDC: [min, max]. */
  budget: readonly [number, number];
  adminKey: string;
}

export interface LaneContext {
  iteration: number;
  baseUrl: string;
  db: Db;
  agents: SoakAgents;
  stats: RequestStats;
  settings: WorkloadSettings;
  /** False once the kill landed (or the process died): stop at once. */
  alive(): boolean;
  /** No new operation starts after this (epoch ms). */
  until: number;
  /**
   * Let a channel payer's calls race the channel settler's idle refund (a src bug lost the racing
   * call's charge: channel-refund-race.ts reproduces it). Off: a call on a channel idle for a second
   * or more waits until it is idle well past the refund, which then has happened.
   */
  raceChannelRefunds?: boolean;
}

/** A channel call after this long idle waits until the channel is idle `CLEAR_OF_REFUND_MS` (the settler refunded it by then). */
const NEAR_REFUND_MS = CHANNEL_IDLE_REFUND_MS - 1000;
const CLEAR_OF_REFUND_MS = CHANNEL_IDLE_REFUND_MS + 1500;
/** A channel call waits until this long after a request's reservation of the channel expired (the settler refunds it then). */
const AFTER_RESERVATION_MS = 1500;

interface TaskView {
  id: string;
  status: string;
  escrowStatus: string;
  agentId: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const REQUEST_TIMEOUT_MS = 20_000;

type Op = 'hire' | 'poll' | 'result' | 'cancel' | 'dispute' | 'fund_old' | 'resolve' | 'batch' | 'batch_poll' | 'batch_cancel';
const OPS: readonly (readonly [Op, number])[] = [
  ['hire', 4],
  ['batch', 1.5],
  ['batch_poll', 0.7],
  ['batch_cancel', 0.7],
  ['poll', 2],
  ['result', 1],
  ['cancel', 1.5],
  ['dispute', 1],
  ['fund_old', 0.7],
  ['resolve', 0.5],
];
const HIRE_KINDS: readonly (readonly [AgentKind, number])[] = [
  ['instant', 3],
  ['slow', 3],
  ['async', 2],
  ['fail', 1.5],
];

export class Lane {
  /** Payments refused (402) since it was last reset. */
  private refused = 0;

  constructor(
    private readonly ctx: LaneContext,
    private readonly payer: Payer,
    private readonly rng: Rng,
  ) {}

  /**
   * Runs operations until the kill or the end; `first` (a failpoint's purpose) is aimed at first.
   * `stop`: no operation starts once it says so (the lane then stays idle: a channel payer's
   * channel goes idle, for the channel settler's idle refund).
   */
  async run(first?: Purpose, stop?: () => boolean): Promise<void> {
    if (first) {
      this.refused = 0;
      await this.aim(first);
      // A channel payer's first call of an iteration often meets its channel refunded by the
      // restart (its client refused once, then rebuilt from the contract): aim again.
      if (this.payer.channel && this.refused > 0 && this.ctx.alive()) await this.aim(first);
    }
    while (this.ctx.alive() && Date.now() < this.ctx.until && !stop?.()) {
      const op = this.rng.weighted(OPS);
      await this.operate(op);
      if (!this.ctx.alive()) return;
      await sleep(this.rng.int(0, 150));
    }
  }

  private async operate(op: Op): Promise<void> {
    switch (op) {
      case 'hire':
        return this.hire(this.rng.weighted(HIRE_KINDS));
      case 'poll': {
        const task = await this.someTask(['created', 'funded', 'in_progress', 'completed', 'failed', 'cancelled', 'disputed']);
        return task ? void (await this.status(task.id)) : this.hire(this.rng.weighted(HIRE_KINDS));
      }
      case 'result': {
        const task = (await this.someTask(['completed'])) ?? (await this.someTask(['in_progress', 'failed']));
        if (task) await this.result(task.id);
        return;
      }
      case 'cancel': {
        const task = await this.someTask(['created', 'funded', 'in_progress']);
        if (task) await this.cancel(task.id, this.rng.chance(0.5));
        return;
      }
      case 'dispute': {
        const task = await this.someTask(['in_progress']);
        if (task) await this.dispute(task.id);
        return;
      }
      case 'fund_old': {
        const task = await this.someTask(['created']);
        if (task) await this.fund(task.id, await this.budgetOf(task.id), 1);
        return;
      }
      case 'resolve':
        return this.resolveDispute();
      case 'batch':
        return void (await this.batch());
      case 'batch_poll': {
        const batch = await this.someBatch();
        if (batch) await this.get('batch_status', `/v1/batches/${batch}`);
        else await this.batch();
        return;
      }
      case 'batch_cancel': {
        const batch = await this.someBatch();
        if (batch) await this.cancelBatch(batch);
        return;
      }
    }
  }

  /** The first operation of a failpoint iteration: one that settles a payment of `purpose`. */
  private async aim(purpose: Purpose): Promise<void> {
    switch (purpose) {
      case 'create_task':
      case 'fund_task':
        return this.hire(this.rng.weighted(HIRE_KINDS), 'none');
      case 'cancel_task': {
        const task = await this.someTask(['created', 'funded', 'in_progress']);
        if (task) return void (await this.cancel(task.id, true));
        return this.hire('slow', 'cancel');
      }
      case 'dispute_task': {
        const task = await this.someTask(['in_progress']);
        if (task) return void (await this.dispute(task.id));
        return this.hire('slow', 'dispute');
      }
      case 'task_status': {
        const task = await this.someTask(['created', 'funded', 'in_progress', 'completed', 'failed', 'cancelled']);
        if (task) return void (await this.status(task.id));
        return this.hire('instant', 'poll');
      }
      case 'task_result': {
        const task = await this.someTask(['completed']);
        if (task) return void (await this.result(task.id));
        return this.hire('instant', 'result');
      }
      case 'create_batch':
        return void (await this.batch());
      case 'batch_status':
      case 'cancel_batch': {
        const batch = (await this.someBatch()) ?? (await this.batch());
        if (!batch || !this.ctx.alive()) return;
        if (purpose === 'batch_status') return void (await this.get('batch_status', `/v1/batches/${batch}`));
        return void (await this.cancelBatch(batch));
      }
    }
  }

  /**
   * A batch of 2–4 items of random agents paid with one payment: a random policy, concurrency and
   * a chain or fan-in of dependencies, sometimes a max_spend it exceeds (refused before payment).
   */
  private async batch(): Promise<string | undefined> {
    const [min, max] = this.ctx.settings.budget;
    const [tmin, tmax] = this.ctx.settings.taskTimeoutSeconds;
    const n = this.rng.int(2, 4);
    const items = Array.from({ length: n }, (_, i) => ({
      agent_id: this.ctx.agents.agent(this.rng.weighted(HIRE_KINDS)).id,
      description: `Soak iteration ${this.ctx.iteration}: batch item ${i}`,
      budget: { amount: String(this.rng.int(min, max)), currency: 'USDC', chain: 'base' },
      timeout_seconds: this.rng.int(tmin, tmax),
      ...(i > 0 && this.rng.chance(0.5) ? { depends_on: [this.rng.int(0, i - 1)] } : {}),
    }));
    const total = items.reduce((s, i) => s + Number(i.budget.amount), 0);
    const created = await this.post('create_batch', '/v1/batches', {
      items,
      policy: this.rng.chance(0.5) ? 'fail_fast' : 'continue',
      max_concurrency: this.rng.int(1, 3),
      ...(this.rng.chance(0.15) ? { max_spend: String(Math.max(1, total - 1)) } : {}),
    });
    return created?.status === 201 ? (created.body as { batch_id: string }).batch_id : undefined;
  }

  private cancelBatch(batchId: string): Promise<Answer | null> {
    return this.post('cancel_batch', `/v1/batches/${batchId}/cancel`, { reason: 'soak: changed my mind', accept_partial_refund: this.rng.chance(0.7) });
  }

  /** One of this payer's recent batches, at random. */
  private async someBatch(): Promise<string | undefined> {
    const rows = rowsOf<{ id: string }>(
      await this.ctx.db.execute(sql`select id from batches where payer_address = ${this.payer.address.toLowerCase()} order by created_at desc limit 10`),
    );
    return rows.length === 0 ? undefined : this.rng.pick(rows).id;
  }

  // ── operations ────────────────────────────────────────────────────────────

  private async hire(kind: AgentKind, followUp?: 'none' | 'poll' | 'cancel' | 'dispute' | 'result'): Promise<void> {
    const [min, max] = this.ctx.settings.budget;
    const budget = this.rng.int(min, max);
    const [tmin, tmax] = this.ctx.settings.taskTimeoutSeconds;
    const created = await this.post('create_task', '/v1/tasks', {
      agent_id: this.ctx.agents.agent(kind).id,
      description: `Soak iteration ${this.ctx.iteration}: a ${kind} job`,
      budget: { amount: String(budget), currency: 'USDC', chain: 'base' },
      timeout_seconds: this.rng.int(tmin, tmax),
    });
    const taskId = created?.status === 201 ? (created.body as { task_id: string }).task_id : undefined;
    if (!taskId || !this.ctx.alive()) return;
    if (this.rng.chance(0.1)) return; // left unfunded (funded, cancelled or expired later)
    const amount = this.rng.chance(0.2) ? budget + this.rng.int(1, 5000) : budget;
    const concurrent = this.rng.chance(0.3) ? this.rng.int(2, 3) : 1;
    await this.fund(taskId, amount, concurrent);
    if (!this.ctx.alive()) return;
    const next =
      followUp ??
      this.rng.weighted<'none' | 'poll' | 'cancel' | 'dispute' | 'result'>([
        ['none', 2],
        ['poll', 2],
        ['cancel', 1.5],
        ['dispute', kind === 'slow' || kind === 'async' ? 1.5 : 0.2],
        ['result', kind === 'instant' ? 1.5 : 0.3],
      ]);
    if (next === 'none') return;
    await sleep(next === 'dispute' ? this.rng.int(250, 700) : this.rng.int(0, 600));
    if (!this.ctx.alive()) return;
    if (next === 'poll') await this.status(taskId);
    else if (next === 'cancel') await this.cancel(taskId, this.rng.chance(0.5));
    else if (next === 'dispute') await this.dispute(taskId);
    else await this.result(taskId);
  }

  /** `concurrent` fundings of one task at once, each with its own authorization (one may win). */
  private async fund(taskId: string, amount: number | bigint, concurrent: number): Promise<void> {
    const body = { amount: String(amount) };
    await Promise.all(Array.from({ length: concurrent }, () => this.post('fund_task', `/v1/tasks/${taskId}/fund`, body)));
  }

  private status(taskId: string): Promise<Answer | null> {
    return this.get('task_status', `/v1/tasks/${taskId}/status`);
  }

  private result(taskId: string): Promise<Answer | null> {
    return this.get('task_result', `/v1/tasks/${taskId}/result`);
  }

  private cancel(taskId: string, acceptPartialRefund: boolean): Promise<Answer | null> {
    return this.post('cancel_task', `/v1/tasks/${taskId}/cancel`, {
      reason: 'soak: changed my mind',
      ...(acceptPartialRefund ? { accept_partial_refund: true } : {}),
    });
  }

  private dispute(taskId: string): Promise<Answer | null> {
    return this.post('dispute_task', `/v1/tasks/${taskId}/dispute`, { reason: 'soak: not what I asked for', evidence: ['soak'] });
  }

  /** An operator splits a frozen escrow (any payer's) at random between payer and agent. */
  private async resolveDispute(): Promise<void> {
    const open = rowsOf<{ id: string; held: string }>(
      await this.ctx.db.execute(sql`
        select d.id, (select coalesce(sum(amount), 0)::text from ledger_entries where account = 'escrow:' || t.id) as held
        from disputes d join tasks t on t.id = d.task_id
        where d.status = 'under_review' and t.escrow_status = 'frozen'
        order by d.submitted_at limit 10`),
    );
    if (open.length === 0) return;
    const dispute = this.rng.pick(open);
    const held = BigInt(dispute.held);
    const payerShare = (held * BigInt(this.rng.int(0, 100))) / 100n;
    await this.ctx.stats.send(this.ctx.iteration, 'admin_resolve', this.ctx.alive, () =>
      fetch(`${this.ctx.baseUrl}/v1/admin/disputes/${dispute.id}/resolve`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-admin-key': this.ctx.settings.adminKey },
        body: JSON.stringify({ payer_amount: payerShare.toString(), agent_amount: (held - payerShare).toString() }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      }),
    );
  }

  // ── helpers ───────────────────────────────────────────────────────────────

  /** The tally's label: a channel payer's fixed-price calls are counted apart (they go over its channel). */
  private label(purpose: Purpose): string {
    return this.payer.channel && isChannelPurpose(purpose) ? `${purpose} (channel)` : purpose;
  }

  private counted(answer: Answer | null): Answer | null {
    if (answer?.status === 402) this.refused++;
    return answer;
  }

  /**
   * Before a call over the channel: keep clear of the settler's idle refund (see
   * `raceChannelRefunds`). The settler refunds the channel once it is idle for the refund delay and
   * not reserved by a request: when the lane's own last call over it is that old (it waits until
   * the refund is surely done), and when a reservation left by a request a kill cut off expires
   * (it waits until a moment after the expiry; meanwhile every call would be refused as busy).
   */
  private async clearOfRefund(purpose: Purpose): Promise<void> {
    const channel = this.payer.channel;
    if (!channel || this.ctx.raceChannelRefunds || !isChannelPurpose(purpose)) return;
    const [row] = rowsOf<{ until: string | null }>(
      await this.ctx.db.execute(sql`select max((channel->'pendingRequest'->>'expiresAt')::bigint)::text as until
                                    from payment_channels where payer = ${this.payer.address.toLowerCase()} and channel is not null`),
    );
    const reservedUntil = Number(row?.until ?? 0);
    let waitUntil = 0;
    if (reservedUntil > Date.now() - AFTER_RESERVATION_MS) waitUntil = reservedUntil + AFTER_RESERVATION_MS;
    const idle = Date.now() - channel.lastCallAt;
    if (channel.lastCallAt > 0 && idle >= NEAR_REFUND_MS && idle < CLEAR_OF_REFUND_MS) waitUntil = Math.max(waitUntil, channel.lastCallAt + CLEAR_OF_REFUND_MS);
    // not past the workload: a longer wait would outlast the kill anyway
    if (waitUntil > Date.now()) await sleep(Math.min(waitUntil, this.ctx.until + 500) - Date.now());
  }

  private async post(purpose: Purpose, path: string, body: unknown): Promise<Answer | null> {
    await this.clearOfRefund(purpose);
    if (!this.ctx.alive()) return null;
    return this.counted(await this.ctx.stats.send(this.ctx.iteration, this.label(purpose), this.ctx.alive, () =>
      this.payer.pay(`${this.ctx.baseUrl}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      }),
    ));
  }

  private async get(purpose: Purpose, path: string): Promise<Answer | null> {
    await this.clearOfRefund(purpose);
    if (!this.ctx.alive()) return null;
    return this.counted(
      await this.ctx.stats.send(this.ctx.iteration, this.label(purpose), this.ctx.alive, () =>
        this.payer.pay(`${this.ctx.baseUrl}${path}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) }),
      ),
    );
  }

  /** One of this payer's recent tasks in one of `statuses`, at random. */
  private async someTask(statuses: string[]): Promise<TaskView | undefined> {
    const rows = await this.ctx.db
      .select({ id: tasks.id, status: tasks.status, escrowStatus: tasks.escrowStatus, agentId: tasks.agentId })
      .from(tasks)
      .where(and(eq(tasks.payerAddress, this.payer.address.toLowerCase()), inArray(tasks.status, statuses)))
      .orderBy(desc(tasks.createdAt))
      .limit(20);
    return rows.length === 0 ? undefined : this.rng.pick(rows);
  }

  private async budgetOf(taskId: string): Promise<bigint> {
    const [row] = await this.ctx.db.select({ budget: tasks.budgetAmount }).from(tasks).where(eq(tasks.id, taskId));
    return row?.budget ?? 1000n;
  }
}
