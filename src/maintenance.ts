import { and, eq, lt, lte } from 'drizzle-orm';
import type { Services } from './app.js';
import type { Clock } from './clock.js';
import type { Db } from './db/client.js';
import { idempotencyKeys, tasks } from './db/schema.js';
import { Loop } from './workers/loop.js';

export interface MaintenanceReport {
  expiredTasks: number;
  timedOutTasks: number;
  releasedEscrows: number;
  purgedNonces: number;
  purgedIdempotencyKeys: number;
}

const BATCH = 500;

/**
 * Housekeeping that no request triggers: unfunded tasks past their funding deadline become
 * expired; running tasks past their deadline that no dispatcher holds fail (refund); escrows
 * whose dispute window passed are released; spent sign-in nonces and idempotency keys past
 * their lifetime are deleted.
 * Safe to run from any number of processes at once (every step is a conditional write).
 */
export async function runMaintenance(db: Db, clock: Clock, services: Services): Promise<MaintenanceReport> {
  const now = clock.now();
  const due = await db
    .select({ id: tasks.id })
    .from(tasks)
    .where(and(eq(tasks.status, 'created'), lte(tasks.expiresAt, now)))
    .limit(BATCH);
  let expiredTasks = 0;
  for (const { id } of due) {
    const row = await services.taskLifecycle.expireUnfunded(id).catch(() => null);
    if (row?.status === 'expired') expiredTasks++;
  }
  const timedOutTasks = await services.taskLifecycle.failOverdue();
  const releasedEscrows = await services.taskLifecycle.releaseDue();
  // Spent sign-in nonces and the ids of revoked session tokens, once they can no longer be used.
  const purgedNonces = (await services.siwe.purgeExpired()) + (await services.sessions.purgeExpired());
  const purged = await db.delete(idempotencyKeys).where(lt(idempotencyKeys.expiresAt, now)).returning({ key: idempotencyKeys.key });
  return { expiredTasks, timedOutTasks, releasedEscrows, purgedNonces, purgedIdempotencyKeys: purged.length };
}

/** Runs maintenance every `intervalMs` until stopped; errors are logged, never thrown. */
export function startMaintenance(
  run: () => Promise<MaintenanceReport>,
  intervalMs: number,
  log: { info(obj: object, msg: string): void; error(obj: object, msg: string): void },
): () => Promise<void> {
  const loop = new Loop(
    async () => {
      const report = await run();
      if (Object.values(report).some((n) => n > 0)) log.info(report, 'maintenance');
    },
    (err) => log.error({ err }, 'maintenance failed'),
  );
  loop.start(intervalMs);
  return () => loop.stop();
}
