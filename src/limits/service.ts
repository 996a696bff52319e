import { and, eq, gte, isNull, sql } from 'drizzle-orm';
import { getAddress } from 'viem';
import type { Clock } from '../clock.js';
import type { Db, Executor } from '../db/client.js';
import { spendingLimits, tasks, type SpendingLimitsRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import type { PaidWrite } from '../payments/paid-write.js';
import { breachOf, NO_CAPS, utcDay, type Breach, type Caps, type Spend } from './rules.js';
import type { LimitsViewT, PutLimitsInput } from './schemas.js';

export interface LimitsDeps {
  db: Db;
  clock: Clock;
  /** How long a created task may wait for funding (TASK_FUNDING_WINDOW_SECONDS): bounds the daily scan. */
  fundingWindowSeconds: number;
}

/**
 * Spending limits a wallet sets on itself (`spending_limits` is this module's table). The caps
 * are enforced in a paid write's `check` (before any payment is settled: a refusal moves no
 * money) and again in its `apply`, under a lock on the wallet's limits row, so that two requests
 * racing past the check cannot together exceed the daily cap (the second is refused and its
 * payment refunded in full, as any effect refused after settlement).
 *
 * "Funded today" is read from the tasks themselves: the `funded_amount` of the wallet's tasks
 * whose `funded_at` is after 00:00 UTC (the service clock). It is the same with x402 on or off,
 * counts batch items and single fundings alike, and leaves fees out. Sub-delegated children are not
 * counted: their escrows are carved from their parent's, already counted, and bring no new money.
 */
export class LimitsService {
  constructor(private readonly deps: LimitsDeps) {}

  /** GET /v1/limits: the caps and today's count. */
  async view(payer: string, exec: Executor = this.deps.db): Promise<LimitsViewT> {
    const [row] = await exec.select().from(spendingLimits).where(eq(spendingLimits.payerAddress, payer.toLowerCase()));
    return this.viewOf(payer, row, await this.spentToday(exec, payer));
  }

  /** PUT /v1/limits: replaces the wallet's caps (null = no cap). */
  async set(payer: string, input: PutLimitsInput): Promise<LimitsViewT> {
    const caps = {
      maxPerTask: amountOrNull(input.max_per_task),
      maxPerBatch: amountOrNull(input.max_per_batch),
      maxPerDay: amountOrNull(input.max_per_day),
      updatedAt: this.deps.clock.now(),
    };
    const [row] = await this.deps.db
      .insert(spendingLimits)
      .values({ payerAddress: payer.toLowerCase(), ...caps })
      .onConflictDoUpdate({ target: spendingLimits.payerAddress, set: caps })
      .returning();
    return this.viewOf(payer, row, await this.spentToday(this.deps.db, payer));
  }

  /**
   * `write` with the wallet's caps enforced: after its own check (before the payment settles),
   * and again first thing in its transaction, under the lock of the wallet's limits row.
   */
  guard<T>(payer: string, spend: Spend, write: PaidWrite<T>): PaidWrite<T> {
    return {
      check: async () => {
        const checked = await write.check();
        await this.enforce(this.deps.db, payer, spend, false);
        return checked;
      },
      apply: async (tx, settled) => {
        await this.enforce(tx, payer, spend, true);
        return write.apply(tx, settled);
      },
      taskOf: (result) => write.taskOf?.(result),
    };
  }

  /** Refuses `spend` with `spending_limit_exceeded` if it breaks one of the wallet's caps. */
  async enforce(exec: Executor, payer: string, spend: Spend, lock: boolean): Promise<void> {
    const query = exec.select().from(spendingLimits).where(eq(spendingLimits.payerAddress, payer.toLowerCase()));
    const [row] = lock ? await query.for('update') : await query;
    if (!row) return; // no caps set
    const caps = capsOf(row);
    const spent = caps.maxPerDay !== null && spend.today > 0n ? await this.spentToday(exec, payer) : 0n;
    const breach = breachOf(caps, spend, spent);
    if (breach) throw limitExceeded(breach, utcDay(this.deps.clock.now()).end);
  }

  /** Escrow the wallet funded since 00:00 UTC. */
  async spentToday(exec: Executor, payer: string): Promise<bigint> {
    const { start } = utcDay(this.deps.clock.now());
    // A task is funded before it expires, so today's fundings are of tasks created at most one
    // funding window (or a week, whichever is longer) before midnight: the payer index bounds the scan.
    const createdSince = new Date(start.getTime() - Math.max(this.deps.fundingWindowSeconds, 7 * 86_400) * 1000);
    const [row] = await exec
      .select({ total: sql<string>`coalesce(sum(${tasks.fundedAmount}), 0)` })
      .from(tasks)
      .where(
        and(eq(tasks.payerAddress, payer.toLowerCase()), gte(tasks.createdAt, createdSince), gte(tasks.fundedAt, start), isNull(tasks.parentTaskId)),
      );
    return BigInt(String(row?.total ?? 0));
  }

  private viewOf(payer: string, row: SpendingLimitsRow | undefined, spent: bigint): LimitsViewT {
    const caps = row ? capsOf(row) : NO_CAPS;
    const wire = (v: bigint | null) => (v === null ? null : v.toString());
    return {
      payer: getAddress(payer),
      max_per_task: wire(caps.maxPerTask),
      max_per_batch: wire(caps.maxPerBatch),
      max_per_day: wire(caps.maxPerDay),
      spent_today: spent.toString(),
      remaining_today: caps.maxPerDay === null ? null : (caps.maxPerDay > spent ? caps.maxPerDay - spent : 0n).toString(),
      resets_at: utcDay(this.deps.clock.now()).end.toISOString(),
      updated_at: row ? row.updatedAt.toISOString() : null,
    };
  }
}

function capsOf(row: SpendingLimitsRow): Caps {
  return { maxPerTask: row.maxPerTask, maxPerBatch: row.maxPerBatch, maxPerDay: row.maxPerDay };
}

function amountOrNull(value: string | null): bigint | null {
  return value === null ? null : BigInt(value);
}

/** The error naming the cap: which, its value, what was asked and what remains. */
export function limitExceeded(breach: Breach, resetsAt: Date): AppError {
  const { cap, limit, requested, remaining } = breach;
  const change = 'A wallet changes its limits with PUT /v1/limits.';
  const message =
    cap === 'max_per_task'
      ? `Your spending limit max_per_task is ${limit} atomic USDC per task; this asks ${requested} for one task. ${change}`
      : cap === 'max_per_batch'
        ? `Your spending limit max_per_batch is ${limit} atomic USDC per batch; this batch costs ${requested} (escrows + fee). ${change}`
        : `Your spending limit max_per_day is ${limit} atomic USDC of escrow per UTC day: ${breach.spentToday ?? 0n} funded today, ` +
          `this asks ${requested}, ${remaining} remains until ${resetsAt.toISOString()}. ${change}`;
  return new AppError('spending_limit_exceeded', message, {
    ...(breach.param ? { param: breach.param } : {}),
    details: {
      cap,
      limit: limit.toString(),
      requested: requested.toString(),
      remaining: remaining.toString(),
      ...(cap === 'max_per_day' ? { spent_today: (breach.spentToday ?? 0n).toString(), resets_at: resetsAt.toISOString() } : {}),
    },
  });
}
