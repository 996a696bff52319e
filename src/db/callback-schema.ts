import { sql } from 'drizzle-orm';
import { check, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/**
 * Signed callbacks to a task's `callback_url` on terminal states, and to a batch's once every item
 * has ended (an outbox: written in the transaction of the transition, sent by the CallbackSender).
 * To be re-exported from schema.ts.
 */

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const taskCallbackEvents = ['task.completed', 'task.failed', 'task.cancelled', 'task.expired', 'task.disputed'] as const;
/** A batch's one terminal event: its status once every item has ended. */
export const batchCallbackEvents = ['batch.completed', 'batch.partially_failed', 'batch.failed', 'batch.cancelled'] as const;
export const callbackEvents = [...taskCallbackEvents, ...batchCallbackEvents] as const;
export type CallbackEvent = (typeof callbackEvents)[number];
export const callbackStatuses = ['pending', 'delivered', 'failed'] as const;
export type CallbackStatus = (typeof callbackStatuses)[number];

export const callbackDeliveries = pgTable(
  'callback_deliveries',
  {
    /** `cb_…`; also the `id` of the event the receiver gets (its idempotency key). */
    id: text('id').primaryKey(),
    /** Whose event: a task's, or (batch_id) a batch's; exactly one of the two. */
    taskId: text('task_id'),
    batchId: text('batch_id'),
    url: text('url').notNull(),
    event: text('event').$type<CallbackEvent>().notNull(),
    /** The event's `data`. */
    payload: jsonb('payload').$type<unknown>().notNull(),
    status: text('status').$type<CallbackStatus>().notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    /** When the next attempt is due (application clock; backoff). */
    nextAttemptAt: ts('next_attempt_at').notNull(),
    /** The sender making an attempt now, until `lease_expires_at` (database clock, queue/index.ts). */
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: ts('lease_expires_at'),
    lastStatusCode: integer('last_status_code'),
    lastError: text('last_error'),
    createdAt: ts('created_at').notNull(),
    deliveredAt: ts('delivered_at'),
  },
  (t) => [
    index('callback_deliveries_due_idx').on(t.nextAttemptAt).where(sql`status = 'pending'`),
    index('callback_deliveries_task_idx').on(t.taskId),
    /** A batch's terminal event is written once. */
    uniqueIndex('callback_deliveries_batch_uq').on(t.batchId).where(sql`batch_id is not null`),
    check('callback_deliveries_status_chk', sql`${t.status} in ('pending','delivered','failed')`),
    check(
      'callback_deliveries_event_chk',
      sql`${t.event} in ('task.completed','task.failed','task.cancelled','task.expired','task.disputed','batch.completed','batch.partially_failed','batch.failed','batch.cancelled')`,
    ),
    check('callback_deliveries_subject_chk', sql`(${t.taskId} is null) <> (${t.batchId} is null)`),
    check('callback_deliveries_attempts_nonneg', sql`${t.attempts} >= 0`),
  ],
);

/** One row per attempt to deliver a callback (status code or error). */
export const callbackAttempts = pgTable(
  'callback_attempts',
  {
    deliveryId: text('delivery_id')
      .notNull()
      .references(() => callbackDeliveries.id, { onDelete: 'cascade' }),
    attempt: integer('attempt').notNull(),
    statusCode: integer('status_code'),
    error: text('error'),
    at: ts('at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.deliveryId, t.attempt] }), check('callback_attempts_attempt_pos', sql`${t.attempt} >= 1`)],
);

export type CallbackDeliveryRow = typeof callbackDeliveries.$inferSelect;
export type CallbackAttemptRow = typeof callbackAttempts.$inferSelect;
