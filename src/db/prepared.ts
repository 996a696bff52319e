import { createHash } from 'node:crypto';
import { is } from 'drizzle-orm';
import { PgTimestamp } from 'drizzle-orm/pg-core';
import type { SQL } from 'drizzle-orm';
import { NodePgPreparedQuery } from 'drizzle-orm/node-postgres';
import type { PgDialect, PgPreparedQuery, PgSession, PreparedQueryConfig } from 'drizzle-orm/pg-core';
import { PglitePreparedQuery } from 'drizzle-orm/pglite';
import type { Db, Executor } from './client.js';

/**
 * A query built and prepared once per database (drizzle's `.prepare(name)`, its parameters
 * `sql.placeholder`s), for the hot paths: not built again per request, on the database or inside a
 * transaction. The query is built once per database (drizzle instance); each executor gets a light
 * copy of it bound to its own connection (`bindTo`): the database's pool or PGlite, a transaction's
 * pooled connection or PGlite transaction. On Postgres it runs as a named statement, parsed once per
 * pooled connection. On PGlite, which has one session, it is prepared (`PREPARE`) in that session on
 * first use and run with `EXECUTE` from then on (`pgliteNamed`): parsed and planned once, as on
 * Postgres, not on every run.
 *
 * `name` must be unique in the service: Postgres refuses one name for two texts on a connection.
 */
export function preparedQuery<Q>(build: (db: Db) => Q): (exec: Executor) => Q {
  const templates = new WeakMap<object, Q>();
  const bound = new WeakMap<object, Q>();
  return (exec) => {
    const { dialect, session } = exec as unknown as Partial<DrizzleInternals>;
    const client = session?.client;
    if (typeof dialect !== 'object' || dialect === null || typeof client !== 'object' || client === null) return build(exec as Db);
    let query = bound.get(client);
    if (query !== undefined) return query;
    let template = templates.get(dialect);
    if (template === undefined) templates.set(dialect, (template = build(exec as Db)));
    query = bindTo(template, client, dialect, () => build(exec as Db));
    bound.set(client, query);
    return query;
  };
}

/**
 * A prepared statement of raw SQL (its parameters `sql.placeholder`s), as `preparedQuery`; `execute`
 * answers the driver's result (`rowsOf` reads its rows). For statements the query builder cannot
 * express (locking clauses of joins, advisory locks).
 */
export function preparedSql(name: string, text: SQL): (exec: Executor) => PgPreparedQuery<PreparedQueryConfig & { execute: unknown }> {
  return preparedQuery((db) => {
    const { dialect, session } = db as unknown as DrizzleInternals;
    return session.prepareQuery(dialect.sqlToQuery(text), undefined, name, false);
  });
}

/** The parts of a drizzle database or transaction `preparedQuery` reads (the same on both). */
interface DrizzleInternals {
  dialect: PgDialect;
  session: { client: object; prepareQuery: PgSession['prepareQuery'] };
}

/**
 * `template` (built on some executor of this database), bound to `client`: an object whose prototype
 * is the template, with its own `client`. Prepared queries of another driver are built anew (`fresh`).
 */
function bindTo<Q>(template: Q, client: object, dialect: object, fresh: () => Q): Q {
  if (is(template, NodePgPreparedQuery)) return Object.assign(Object.create(template) as Q & object, { client });
  if (is(template, PglitePreparedQuery)) {
    const target = template as unknown as Partial<PglitePrepared>;
    if (typeof target.queryString !== 'string' || !isPgliteClient(client)) return template;
    return Object.assign(Object.create(template) as Q & object, {
      client: pgliteNamed(client, statementOf(dialect, target.queryString, target.fields)),
    });
  }
  return fresh();
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

/** A statement's text on one PGlite database, shared by the copies of its query bound to that database's clients. */
interface Statement {
  name: string;
  text: string;
  fields: PglitePrepared['fields'];
  /** Whether the session has it prepared (false: it cannot be, run the text); unknown until a client has tried. */
  prepared: boolean | undefined;
  /** Drizzle's options of the first run, and whether runs with them may skip its parsers (the columns `withoutParsers` fixes up). */
  checked: { options: unknown; bare: number[] | undefined } | undefined;
}

const statements = new WeakMap<object, Map<string, Statement>>();

/** The statement of `text` on the database of `dialect` (the name derived from the text, so that two identical texts share one). */
function statementOf(dialect: object, text: string, fields: PglitePrepared['fields']): Statement {
  let byText = statements.get(dialect);
  if (!byText) statements.set(dialect, (byText = new Map()));
  let statement = byText.get(text);
  if (!statement) {
    statement = { name: `te_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`, text, fields, prepared: undefined, checked: undefined };
    byText.set(text, statement);
  }
  return statement;
}

const isPgliteClient = (client: object): client is PgliteClient =>
  typeof (client as Partial<PgliteClient>).query === 'function' && typeof (client as Partial<PgliteClient>).exec === 'function';

/**
 * On PGlite, a client (PGlite, or one of its transactions) that runs a drizzle prepared query as a
 * statement prepared in PGlite's session: its text is `PREPARE`d once and each run is
 * `EXECUTE name('…', …)`, the parameters as quoted literals (the text PGlite would bind; the prepared
 * statement's parameter types apply, and the result has the same columns and types, so drizzle maps
 * the rows as before), without drizzle's per-query parsers when they change nothing
 * (`parsersSkippable`). A run whose parameters are not all strings, finite numbers, bigints or nulls,
 * or a session without standard_conforming_strings, runs the plain text as before.
 *
 * Prepared statements belong to the session, whatever becomes of the transaction that prepared them.
 * PGlite runs a transaction alone (its other queries wait), so in a transaction "is it prepared?"
 * and the `PREPARE` are one step; the `PREPARE` runs under a savepoint, so that a statement PGlite
 * cannot prepare leaves the transaction usable (and runs as text from then on).
 */
function pgliteNamed(client: PgliteClient, statement: Statement): PgliteClient {
  const inTransaction = typeof (client as { transaction?: unknown }).transaction !== 'function'; // PGlite has transaction(); its transactions do not
  const { name, text } = statement;
  let ready: Promise<boolean> | undefined;
  const prepare = async (): Promise<boolean> => {
    const [setting] = ((await client.query('show standard_conforming_strings')) as { rows: { standard_conforming_strings?: string }[] }).rows;
    if (setting?.standard_conforming_strings !== 'on') return false;
    if (!inTransaction) {
      try {
        await client.exec(`prepare ${name} as ${text}`);
      } catch (err) {
        if (sqlState(err) !== DUPLICATE_STATEMENT) return false; // e.g. a parameter whose type cannot be told: run the text
      }
      return true;
    }
    const found = (await client.query('select 1 from pg_prepared_statements where name = $1', [name])) as { rows: unknown[] };
    if (found.rows.length > 0) return true;
    await client.exec('savepoint te_prepare');
    try {
      await client.exec(`prepare ${name} as ${text}`);
      await client.exec('release savepoint te_prepare');
      return true;
    } catch (err) {
      await client.exec('rollback to savepoint te_prepare');
      return sqlState(err) === DUPLICATE_STATEMENT;
    }
  };
  const isReady = async (): Promise<boolean> => {
    if (statement.prepared !== undefined) return statement.prepared;
    return (statement.prepared = await (ready ??= prepare()));
  };
  return {
    exec: (sql) => client.exec(sql),
    query: async (sql, params = [], options) => {
      const values = sql === text ? literals(params) : undefined;
      if (values === undefined || !(await isReady())) return client.query(sql, params, options);
      const execute = values ? `execute ${name}(${values})` : `execute ${name}`;
      const run = async () => {
        const checked = statement.checked;
        if (checked?.bare && checked.options === options) return withoutParsers(client, execute, checked.bare);
        const result = await client.query(execute, [], options);
        statement.checked ??= { options, bare: parsersSkippable(options as QueryOptions | undefined, result as QueryResult, statement.fields) };
        return result;
      };
      try {
        return await run();
      } catch (err) {
        if (inTransaction || sqlState(err) !== UNDEFINED_STATEMENT) throw err;
        await client.exec(`prepare ${name} as ${text}`); // deallocated by someone: prepare it again, once
        return run();
      }
    },
  };
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
