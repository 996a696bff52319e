/**
 * The spending-limit rule, as pure functions (limits/service.ts reads the caps and today's spend
 * and applies it). A wallet's caps are in atomic USDC; a null cap is no cap.
 *
 * - `max_per_task`: the escrow of one task: a task's budget when it is created, the amount when it
 *   is funded, and every batch item's budget.
 * - `max_per_batch`: one batch's payment, its escrows plus the batch fee (what the 402 asks).
 * - `max_per_day`: escrow funded by the wallet since 00:00 UTC (single fundings and batch items,
 *   counted when funded; a later refund does not give the allowance back). Fees are not counted.
 */

export type CapName = 'max_per_task' | 'max_per_batch' | 'max_per_day';

export interface Caps {
  maxPerTask: bigint | null;
  maxPerBatch: bigint | null;
  maxPerDay: bigint | null;
}

export const NO_CAPS: Caps = { maxPerTask: null, maxPerBatch: null, maxPerDay: null };

/** What one request would spend, as the caps see it. */
export interface Spend {
  /** The escrow of each task the request budgets or funds, with the request field that sets it. */
  tasks: readonly { amount: bigint; param: string }[];
  /** A batch's whole payment (escrows + fee), for max_per_batch. */
  batch?: bigint;
  /** Escrow this request funds now, for max_per_day (0 for a task only created). */
  today: bigint;
}

/** The first cap a request breaks: which, its value, what was asked, what remains. */
export interface Breach {
  cap: CapName;
  limit: bigint;
  requested: bigint;
  remaining: bigint;
  param?: string;
  /** max_per_day only: escrow already funded today. */
  spentToday?: bigint;
}

/** Creating one task: its budget is the escrow it will hold. */
export function taskSpend(budget: string): Spend {
  return { tasks: [{ amount: toAmount(budget), param: 'budget.amount' }], today: 0n };
}

/** Funding one task: the escrow amount (the funding fee is not counted). */
export function fundingSpend(amount: bigint): Spend {
  return { tasks: [{ amount, param: 'amount' }], today: amount };
}

/** A batch: each item's budget, the whole payment (escrows + fee), and the escrows funded today. */
export function batchSpend(items: readonly { budget: { amount: string } }[], total: bigint): Spend {
  const tasks = items.map((item, i) => ({ amount: toAmount(item.budget.amount), param: `items.${i}.budget.amount` }));
  return { tasks, batch: total, today: tasks.reduce((sum, t) => sum + t.amount, 0n) };
}

/** The first cap `spend` breaks given what was funded today, or null when every cap allows it. */
export function breachOf(caps: Caps, spend: Spend, spentToday: bigint): Breach | null {
  if (caps.maxPerTask !== null) {
    for (const task of spend.tasks) {
      if (task.amount > caps.maxPerTask) {
        return { cap: 'max_per_task', limit: caps.maxPerTask, requested: task.amount, remaining: caps.maxPerTask, param: task.param };
      }
    }
  }
  if (caps.maxPerBatch !== null && spend.batch !== undefined && spend.batch > caps.maxPerBatch) {
    return { cap: 'max_per_batch', limit: caps.maxPerBatch, requested: spend.batch, remaining: caps.maxPerBatch };
  }
  if (caps.maxPerDay !== null && spend.today > 0n && spentToday + spend.today > caps.maxPerDay) {
    const remaining = caps.maxPerDay > spentToday ? caps.maxPerDay - spentToday : 0n;
    return { cap: 'max_per_day', limit: caps.maxPerDay, requested: spend.today, remaining, spentToday };
  }
  return null;
}

/** The current UTC day: from its midnight to the next. */
export function utcDay(now: Date): { start: Date; end: Date } {
  const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
  return { start, end: new Date(start.getTime() + 86_400_000) };
}

function toAmount(value: string): bigint {
  return /^[0-9]{1,16}$/.test(value) ? BigInt(value) : 0n;
}
