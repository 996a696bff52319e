import { bigint, check, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { sql } from 'drizzle-orm';

/**
 * Spending limits a wallet set on itself (limits/service.ts owns this table). One row per payer;
 * a null cap is no cap, and a wallet without a row has none. Amounts are atomic USDC. The row is
 * also the per-payer lock under which a paid write re-checks the daily cap (`FOR UPDATE`).
 * Re-exported from schema.ts.
 */

const money = (name: string) => bigint(name, { mode: 'bigint' });

export const spendingLimits = pgTable(
  'spending_limits',
  {
    /** The wallet (lowercase). */
    payerAddress: text('payer_address').primaryKey(),
    /** The escrow of one task: a task's budget, and the amount of one funding. */
    maxPerTask: money('max_per_task'),
    /** One batch's payment: its escrows plus the batch fee. */
    maxPerBatch: money('max_per_batch'),
    /** Escrow funded per UTC day (single fundings and batch items). */
    maxPerDay: money('max_per_day'),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull(),
  },
  (t) => [
    check('spending_limits_per_task_chk', sql`${t.maxPerTask} is null or ${t.maxPerTask} >= 0`),
    check('spending_limits_per_batch_chk', sql`${t.maxPerBatch} is null or ${t.maxPerBatch} >= 0`),
    check('spending_limits_per_day_chk', sql`${t.maxPerDay} is null or ${t.maxPerDay} >= 0`),
  ],
);

export type SpendingLimitsRow = typeof spendingLimits.$inferSelect;
