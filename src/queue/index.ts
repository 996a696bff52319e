import { sql, type SQL } from 'drizzle-orm';
import { rowsOf, type Executor } from '../db/client.js';

/**
 * What every background worker shares (the dispatcher, the settlement worker, the callback
 * sender, the payment recovery sweep): one lease statement, one backoff, one logger shape.
 *
 * Leases are stamped with the application clock (`Clock`), the one clock tests move; workers
 * and the database run on NTP-synchronised hosts and leases are seconds long.
 */

export interface WorkerLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** Retries back off exponentially up to 2^10 × the base. */
export const MAX_BACKOFF_EXPONENT = 10;

/**
 * The delay before retry number `attempt` (1 = the first retry): base × 2^min(attempt − 1, 10).
 * With `random`, scaled by a factor in [0.5, 1) so that workers retrying together spread out.
 */
export function backoffMs(baseMs: number, attempt: number, random?: () => number): number {
  const ceiling = baseMs * 2 ** Math.min(Math.max(attempt - 1, 0), MAX_BACKOFF_EXPONENT);
  return random ? Math.round(ceiling * (0.5 + 0.5 * random())) : ceiling;
}

export interface LeaseQuery {
  /** The table (its primary key is `id`). */
  table: string;
  /** Which rows are due (and not held by a live lease). */
  due: SQL;
  /** The columns that stamp the lease, e.g. sql`lease_owner = ${me}, lease_expires_at = ${until}`. */
  lease: SQL;
  orderBy: SQL;
  limit: number;
  /** Ids this run already worked on. */
  exclude?: readonly string[];
}

/**
 * Leases up to `limit` due rows nobody else holds, in one statement: a CTE picks them with
 * `FOR UPDATE SKIP LOCKED` (concurrent workers never pick the same row) and an UPDATE stamps the
 * lease. Returns the leased ids, in `orderBy` order.
 */
export async function leaseDue(exec: Executor, q: LeaseQuery): Promise<string[]> {
  const table = sql.identifier(q.table);
  const rows = rowsOf<{ id: string }>(
    await exec.execute(sql`
      with due as (
        select id from ${table}
        where ${q.due}
          and id not in (select jsonb_array_elements_text(${JSON.stringify(q.exclude ?? [])}::jsonb))
        order by ${q.orderBy}
        limit ${q.limit}
        for update skip locked
      )
      update ${table} as leased set ${q.lease}
      from due where leased.id = due.id
      returning leased.id`),
  );
  return rows.map((r) => r.id);
}
