import { asc, eq, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { type Executor } from '../db/client.js';
import { batches, tasks } from '../db/schema.js';
import type { CallbackEvent } from '../db/callback-schema.js';
import { enqueueCallback } from '../callbacks/enqueue.js';
import { BATCH_QUEUE_LOCK_SPACE } from '../dispatcher/jobs.js';
import { publicStatus, type TaskStatus } from '../tasks/statuses.js';
import { batchStatusOf } from './schemas.js';

/** Item statuses in which an item has ended (a completed item may still be disputed: it stays ended). */
const ENDED: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled', 'expired', 'disputed']);

/**
 * A batch's callback: when its last item ends, one signed event `batch.<status>` is written to the
 * callback outbox in that item's transition (callbacks/sender.ts delivers it like a task's). Called
 * by the task state machine on every item's end; a batch without `callback_url` costs one read.
 *
 * Exactly once: the check runs under the batch's queue lock (the one `queueReadyItems` takes), so of
 * two items ending at once in two transactions the second, holding the lock, reads the first's
 * commit (READ COMMITTED) and is the one that sees every item ended; a unique index on the
 * delivery's batch_id backs this up.
 */
export async function enqueueBatchCallbackIfEnded(tx: Executor, clock: Clock, batchId: string): Promise<boolean> {
  const [batch] = await tx.select().from(batches).where(eq(batches.id, batchId));
  if (!batch?.callbackUrl) return false;
  await tx.execute(sql`select pg_advisory_xact_lock(${BATCH_QUEUE_LOCK_SPACE}, hashtext(${batchId}))`);
  const items = await tx
    .select({
      id: tasks.id,
      index: tasks.batchIndex,
      status: tasks.status,
      escrowStatus: tasks.escrowStatus,
      resultHash: tasks.resultHash,
      failureReason: tasks.failureReason,
      cancelReason: tasks.cancelReason,
    })
    .from(tasks)
    .where(eq(tasks.batchId, batchId))
    .orderBy(asc(tasks.batchIndex));
  if (items.some((i) => !ENDED.has(i.status))) return false;
  const delivered = (i: (typeof items)[number]) => i.resultHash !== null && (i.status === 'completed' || i.status === 'disputed');
  const status = batchStatusOf({ items: items.length, ended: items.length, delivered: items.filter(delivered).length, cancelled: batch.cancelledAt !== null });
  const data = {
    batch_id: batch.id,
    status,
    items: items.map((i) => ({
      index: i.index ?? 0,
      task_id: i.id,
      status: publicStatus(i.status as TaskStatus),
      escrow_status: i.escrowStatus,
      result_hash: delivered(i) ? i.resultHash : null,
      failure: delivered(i) ? null : (i.failureReason ?? i.cancelReason ?? i.status),
    })),
    totals: {
      escrow: batch.escrowTotal.toString(),
      fee: batch.fee.toString(),
      completed: items.filter(delivered).length,
      failed: items.filter((i) => !delivered(i)).length,
    },
    at: clock.now().toISOString(),
  };
  await enqueueCallback(tx, clock, { batchId, url: batch.callbackUrl, event: `batch.${status}` as CallbackEvent, data });
  return true;
}
