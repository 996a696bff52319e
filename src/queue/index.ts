import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { sql, type SQL } from 'drizzle-orm';
import { rowsOf, type Executor } from '../db/client.js';

/**
 * The one queue every background worker leases from (the dispatcher, the settlement worker, the
 * callback sender, the payment recovery sweep): one lease statement, one heartbeat, one backoff,
 * one logger shape.
 *
 * Leases are fenced on the database's clock: a lease is stamped `now() + leaseMs` and expires when
 * the database's `now()` passes it, so workers on hosts whose clocks drift still agree on who holds
 * a row. Due times (`next_at`, backoff) stay on the application clock (`Clock`), the clock tests move.
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

/** `now() + ms` on the database's clock: the expiry of a lease taken or renewed now. */
export function leaseUntil(ms: number): SQL {
  return sql`now() + (${Math.round(ms)}::integer * interval '1 millisecond')`;
}

/** `leaseUntil` of a prepared statement's `leaseMs` parameter (whole milliseconds). */
export const leaseUntilParam: SQL = sql`now() + (${sql.placeholder('leaseMs')}::integer * interval '1 millisecond')`;

/** True when a lease column has run out (or was never taken), on the database's clock. */
export function leaseFree(column: SQL = sql.raw('lease_expires_at')): SQL {
  return sql`(${column} is null or ${column} < now())`;
}

export interface LeaseQuery {
  /** The table (its primary key is `id`, or `key` when given), with `lease_owner` and `lease_expires_at`. */
  table: string;
  key?: string;
  /** Which rows are due. Rows held by a live lease are skipped by the query itself. */
  due: SQL;
  orderBy: SQL;
  limit: number;
  /** The lease: its holder and length. */
  owner: string;
  leaseMs: number;
  /** More columns stamped with the lease, e.g. sql`attempts = attempts + 1`. */
  set?: SQL;
  /** Ids this run already worked on. */
  exclude?: readonly string[];
}

/**
 * Leases up to `limit` due rows nobody holds, in one statement: a CTE picks them with
 * `FOR UPDATE SKIP LOCKED` (concurrent workers never pick the same row) and an UPDATE stamps the
 * lease. Returns the leased ids, in `orderBy` order.
 */
export async function leaseDue(exec: Executor, q: LeaseQuery): Promise<string[]> {
  const table = sql.identifier(q.table);
  const key = sql.identifier(q.key ?? 'id');
  const rows = rowsOf<{ id: string }>(
    await exec.execute(sql`
      with due as (
        select ${key} as id from ${table}
        where ${q.due}
          and ${leaseFree()}
          and ${key} not in (select jsonb_array_elements_text(${JSON.stringify(q.exclude ?? [])}::jsonb))
        order by ${q.orderBy}
        limit ${q.limit}
        for update skip locked
      )
      update ${table} as leased
      set lease_owner = ${q.owner}, lease_expires_at = ${leaseUntil(q.leaseMs)}${q.set ? sql`, ${q.set}` : sql``}
      from due where leased.${key} = due.id
      returning leased.${key} as id`),
  );
  return rows.map((r) => r.id);
}

/**
 * The heartbeat: renews, in one statement, the leases `owner` still holds on `ids`. Returns the
 * ids it renewed; an id missing from the answer was lost (taken over, or released by its state change).
 */
export async function renewLeases(exec: Executor, table: string, owner: string, leaseMs: number, ids: readonly string[], key = 'id'): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = rowsOf<{ id: string }>(
    await exec.execute(sql`
      update ${sql.identifier(table)} set lease_expires_at = ${leaseUntil(leaseMs)}
      where lease_owner = ${owner}
        and ${sql.identifier(key)} in (select jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb))
      returning ${sql.identifier(key)} as id`),
  );
  return new Set(rows.map((r) => r.id));
}

/** A lease holder's name: host, process and a random suffix (unique per worker object). */
export function workerId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}
