import { createHash } from 'node:crypto';
import { is } from 'drizzle-orm';
import { PgTimestamp } from 'drizzle-orm/pg-core';
import { PglitePreparedQuery } from 'drizzle-orm/pglite';
import type { Db } from './client.js';

/**
 * A query built and prepared once per database (drizzle's `.prepare(name)`, its parameters
 * `sql.placeholder`s), for the hot paths: not built again per request. On Postgres it runs as a
 * named statement, parsed once per pooled connection. On PGlite, which has one session, it is
 * prepared (`PREPARE`) in that session on first use and run with `EXECUTE` from then on
 * (`pgliteNamed`): parsed and planned once, as on Postgres, not on every run. A prepared query runs
 * on the database it was built on, never inside a transaction: callers in one use the query builder.
 *
 * `name` must be unique in the service: Postgres refuses one name for two texts on a connection.
 */
export function preparedQuery<Q>(build: (db: Db) => Q): (db: Db) => Q {
  const byDatabase = new WeakMap<Db, Q>();
  return (db) => {
    let query = byDatabase.get(db);
    if (query === undefined) byDatabase.set(db, (query = pgliteNamed(build(db))));
    return query;
  };
}

/** The part of PGlite (and of a drizzle PGlite prepared query) that `pgliteNamed` uses. */
interface PgliteClient {
  query(text: string, params?: unknown[], options?: unknown): Promise<unknown>;
  exec(text: string): Promise<unknown>;
}
interface PglitePrepared {
  client: PgliteClient;
  queryString: string;
  /** The selected fields in column order (absent for a query drizzle does not map). */
  fields?: { field: unknown }[];
}
interface QueryOptions {
  rowMode?: 'array' | 'object';
  parsers?: Record<number, unknown>;
}
interface QueryResult {
  rows: unknown[][];
  fields: { dataTypeID: number }[];
}

/** PGlite's type id of `timestamp with time zone`. */
const TIMESTAMPTZ = 1184;

/** SQLSTATE of EXECUTE for a statement the session does not have (deallocated). */
const UNDEFINED_STATEMENT = '26000';
/** SQLSTATE of PREPARE for a name the session already has. */
const DUPLICATE_STATEMENT = '42P05';

/**
 * On PGlite, makes a drizzle prepared query run as a statement prepared in PGlite's session: its text
 * is `PREPARE`d once (the name derived from the text, so that two identical texts share one) and each
 * run is `EXECUTE name('…', …)`, the parameters as quoted literals (the text PGlite would bind; the
 * prepared statement's parameter types apply, and the result has the same columns and types, so drizzle
 * maps the rows as before), without drizzle's per-query parsers when they change nothing
 * (`parsersSkippable`). A run whose parameters are not all strings, finite numbers, bigints or
 * nulls, or a session without standard_conforming_strings, runs the plain text as before. Anything
 * but a drizzle PGlite prepared query is returned as it is.
 */
function pgliteNamed<Q>(query: Q): Q {
  if (!is(query, PglitePreparedQuery)) return query;
  const target = query as unknown as Partial<PglitePrepared>;
  const client = target.client;
  const text = target.queryString;
  if (!client || typeof client.query !== 'function' || typeof client.exec !== 'function' || typeof text !== 'string') return query;
  const name = `te_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
  const fields = target.fields;
  let ready: Promise<boolean> | undefined;
  /** Drizzle's options of the first run, and whether runs with them may skip its parsers (the columns `withoutParsers` fixes up). */
  let checked: { options: unknown; bare: number[] | undefined } | undefined;
  const prepare = async (): Promise<boolean> => {
    const [setting] = ((await client.query('show standard_conforming_strings')) as { rows: { standard_conforming_strings?: string }[] }).rows;
    if (setting?.standard_conforming_strings !== 'on') return false;
    try {
      await client.exec(`prepare ${name} as ${text}`);
    } catch (err) {
      if (sqlState(err) !== DUPLICATE_STATEMENT) return false; // e.g. a parameter whose type cannot be told: run the text
    }
    return true;
  };
  target.client = {
    exec: (sql) => client.exec(sql),
    query: async (sql, params = [], options) => {
      const values = sql === text ? literals(params) : undefined;
      if (values === undefined || !(await (ready ??= prepare()))) return client.query(sql, params, options);
      const execute = values ? `execute ${name}(${values})` : `execute ${name}`;
      const run = async () => {
        if (checked?.bare && checked.options === options) return withoutParsers(client, execute, checked.bare);
        const result = await client.query(execute, [], options);
        checked ??= { options, bare: parsersSkippable(options as QueryOptions | undefined, result as QueryResult, fields) };
        return result;
      };
      try {
        return await run();
      } catch (err) {
        if (sqlState(err) !== UNDEFINED_STATEMENT) throw err;
        await client.exec(`prepare ${name} as ${text}`); // deallocated by someone: prepare it again, once
        return run();
      }
    },
  };
  return query;
}

/**
 * Drizzle passes PGlite its own parsers on every query (the date and time types as text), and PGlite
 * copies its whole parser table (some 300 entries) to add them, on every query: a tenth of a status
 * read's CPU. A statement may skip them when the rows come out the same: none of its columns is of a
 * type drizzle parses itself, except `timestamp with time zone` columns that drizzle maps as a
 * `timestamp` column (withTimezone, mode 'date'), which takes PGlite's Date as it takes the text
 * (`new Date(text)` either way; an infinite one, which PGlite makes ±Infinity, is made the Invalid
 * Date drizzle makes of it). Returns the indexes of those columns, or undefined when it may not skip.
 */
function parsersSkippable(options: QueryOptions | undefined, result: QueryResult, fields: PglitePrepared['fields']): number[] | undefined {
  if (options?.rowMode !== 'array' || !options.parsers || !fields || result.fields.length !== fields.length) return undefined;
  const own = new Set(Object.keys(options.parsers).map(Number));
  const timestamps: number[] = [];
  for (const [i, { dataTypeID }] of result.fields.entries()) {
    if (!own.has(dataTypeID)) continue;
    const field = fields[i]!.field;
    if (dataTypeID !== TIMESTAMPTZ || !is(field, PgTimestamp) || !field.withTimezone) return undefined;
    timestamps.push(i);
  }
  return timestamps;
}

/** A run of a statement that skips drizzle's parsers (`parsersSkippable`): rows as drizzle's parsers would have left them to it. */
async function withoutParsers(client: PgliteClient, execute: string, timestamps: readonly number[]): Promise<unknown> {
  const result = (await client.query(execute, [], { rowMode: 'array' })) as QueryResult;
  for (const row of result.rows) {
    for (const i of timestamps) if (typeof row[i] === 'number') row[i] = new Date(NaN);
  }
  return result;
}

/** EXECUTE's argument list for `params` ('' for none), or undefined when one is not a plain string, number, bigint or null. */
function literals(params: readonly unknown[]): string | undefined {
  const out: string[] = [];
  for (const p of params) {
    if (p === null || p === undefined) out.push('null');
    else if (typeof p === 'string' && !p.includes('\0')) out.push(`'${p.replaceAll("'", "''")}'`);
    else if ((typeof p === 'number' && Number.isFinite(p)) || typeof p === 'bigint') out.push(`'${String(p)}'`);
    else return undefined;
  }
  return out.join(', ');
}

const sqlState = (err: unknown): string | undefined =>
  typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
