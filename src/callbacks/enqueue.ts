import { randomBytes } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { Executor } from '../db/client.js';
import { callbackDeliveries, type CallbackDeliveryRow, type CallbackEvent } from '../db/callback-schema.js';

/**
 * The outbox side of client callbacks: `enqueueCallback` writes a pending delivery inside the
 * transaction of a task's terminal transition (no callback without the transition, no
 * transition without its callback), or of the transition that ends a batch's last item
 * (batches/ended.ts). The `CallbackSender` (./sender.ts) delivers it.
 * This module needs nothing but the database, so the task state machine can import it.
 */

export type EnqueueCallbackInput = ({ taskId: string; batchId?: undefined } | { batchId: string; taskId?: undefined }) & {
  url: string;
  event: CallbackEvent;
  /** The event's `data` (JSON). */
  data: unknown;
}

export function newCallbackId(): string {
  return `cb_${randomBytes(16).toString('hex')}`;
}

/**
 * Inserts a pending delivery; call it inside the transaction of the terminal transition. A batch's
 * event is written once (a unique index): a second one for the same batch writes nothing.
 */
export async function enqueueCallback(tx: Executor, clock: Clock, input: EnqueueCallbackInput): Promise<string> {
  const now = clock.now();
  const id = newCallbackId();
  await tx.insert(callbackDeliveries).values({
    id,
    taskId: input.taskId ?? null,
    batchId: input.batchId ?? null,
    url: input.url,
    event: input.event,
    payload: input.data ?? null,
    status: 'pending',
    attempts: 0,
    nextAttemptAt: now,
    createdAt: now,
  }).onConflictDoNothing();
  return id;
}

/** The body a receiver gets (stable across attempts; only the signature's timestamp changes). */
export function callbackBody(row: Pick<CallbackDeliveryRow, 'id' | 'event' | 'createdAt' | 'payload'>): string {
  return JSON.stringify({ id: row.id, type: row.event, created_at: row.createdAt.toISOString(), data: row.payload });
}
