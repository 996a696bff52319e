/**
 * The database side of the phase-3 kill: which tasks a worker process holds (its dispatch leases
 * name its pid: `host:pid:random`), how long until every one of them is finished after the kill,
 * and the wait until the callbacks are drained too (the soak's quiesce covers payments, payouts
 * and tasks). The dispatcher's leases are its jobs' (`dispatch_jobs`).
 */
import { sql } from 'drizzle-orm';
import { rowsOf, type Db } from '../../src/db/client.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Task ids whose dispatch lease the worker process `pid` holds now. */
export async function heldBy(db: Db, pid: number): Promise<string[]> {
  const owner = `%:${pid}:%`;
  const q = sql`select task_id as id from dispatch_jobs where state = 'running' and lease_owner like ${owner}`;
  return rowsOf<{ id: string }>(await db.execute(q)).map((r) => r.id);
}

export interface Takeover {
  /** The tasks the killed worker held at the kill. */
  held: number;
  ids: string[];
  /** From the SIGKILL until the last of them finished (its finished_at); NaN if it held none or they did not finish. */
  ms: number;
  /** From the SIGKILL until every one of them was leased by a live worker (or finished): the takeover proper. */
  takenOverMs: number;
  finished: boolean;
  /** Their final statuses. */
  statuses: Record<string, number>;
  /** Briefs the agents received for them, in all. */
  briefs?: number;
}

/** Waits (up to `timeoutMs`) until every task in `ids` is completed or failed; `pid` is the killed worker's. */
export async function waitFinished(db: Db, ids: string[], pid: number, killAt: number, timeoutMs: number): Promise<Takeover> {
  const started = Date.now();
  let takenOverMs = NaN;
  for (;;) {
    if (Number.isNaN(takenOverMs) && (ids.length === 0 || (await heldBy(db, pid)).length === 0)) takenOverMs = Date.now() - killAt;
    const rows =
      ids.length === 0
        ? []
        : rowsOf<{ status: string; finished: string | null }>(
            await db.execute(sql`select status, (extract(epoch from finished_at) * 1000)::text as finished from tasks where id in ${ids}`),
          );
    const statuses: Record<string, number> = {};
    for (const r of rows) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    const finished = rows.every((r) => r.status === 'completed' || r.status === 'failed');
    if (finished || Date.now() - started > timeoutMs) {
      const last = Math.max(...rows.map((r) => Number(r.finished ?? NaN)));
      return { held: ids.length, ids, ms: finished && ids.length > 0 ? last - killAt : NaN, takenOverMs, finished, statuses };
    }
    await sleep(100);
  }
}

/** Waits until no callback delivery is pending (or `timeoutMs`); returns how many still are. */
export async function callbacksDrained(db: Db, timeoutMs: number): Promise<{ pending: number; ms: number }> {
  const started = Date.now();
  for (;;) {
    const [row] = rowsOf<{ n: number }>(await db.execute(sql`select count(*)::int as n from callback_deliveries where status = 'pending'`));
    const pending = row?.n ?? 0;
    if (pending === 0 || Date.now() - started > timeoutMs) return { pending, ms: Date.now() - started };
    await sleep(250);
  }
}
