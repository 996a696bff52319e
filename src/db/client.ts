import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import { DrizzleQueryError, type ExtractTablesWithRelations } from 'drizzle-orm';
import pg from 'pg';
import * as schema from './schema.js';

export type Schema = typeof schema;
export type Db = PgDatabase<PgQueryResultHKT, Schema>;
export type Tx = PgTransaction<PgQueryResultHKT, Schema, ExtractTablesWithRelations<Schema>>;
/** Anything queries can run on: the database or an open transaction. */
export type Executor = Db | Tx;

export interface Database {
  db: Db;
  kind: 'pglite' | 'postgres';
  /** The Postgres URL (absent on PGlite). */
  url?: string;
  /** Throws when the database does not answer. */
  ping(): Promise<void>;
  /**
   * Calls `onNotify` with the payload of every `NOTIFY` on `channel`, from any process on this
   * database (Postgres: one dedicated connection, reconnected after a loss, then `onResume`, since
   * notifications may have been missed; PGlite: its in-process listener). Resolves with `stop`.
   */
  listen(channel: string, onNotify: (payload: string) => void, onResume?: () => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** postgres://… ; absent = embedded PGlite in `dataDir`. */
  url?: string | undefined;
  /** Directory of the embedded database (PGlite keeps its files in `<dataDir>/pglite`). */
  dataDir: string;
  poolMax?: number;
  /** Pass an already open PGlite (tests reuse a migrated data directory). */
  pglite?: PGlite;
}

export async function openDatabase(opts: DatabaseOptions): Promise<Database> {
  if (opts.url) return openPostgres(opts.url, opts.poolMax ?? 10);
  return openPglite(opts.pglite ?? (await createPglite(opts.dataDir)));
}

/**
 * PGlite's settings, on top of its own start parameters. Postgres sizes its shared memory at start and
 * PGlite allocates all of it in its WASM heap, which never shrinks: with initdb's shared_buffers=128MB
 * that heap is 189 MB, 155 MB of it resident from the first second. 16MB (2048 pages, several times the
 * service's hot tables and indexes) makes it 128 MB (the module's floor), about 30 MB resident; pages
 * outside it are read back from the OS page cache of the data directory. See bench/README.md, memory.
 */
export const PGLITE_START_PARAMS: readonly string[] = [...PGlite.defaultStartParams, '-c', 'shared_buffers=16MB'];

export async function createPglite(dataDir: string): Promise<PGlite> {
  const dir = path.resolve(dataDir, 'pglite');
  mkdirSync(dir, { recursive: true });
  if (!existsSync(path.join(dir, 'PG_VERSION'))) await initPgliteDataDir(dir);
  return PGlite.create(dir, { startParams: [...PGLITE_START_PARAMS] });
}

/**
 * initdb for a new data directory, in a short-lived child process. In this process it would leave
 * behind, until a full GC that may come minutes later, a second PGlite (initdb runs in a throwaway
 * in-memory instance whose files are then copied over), initdb's own WASM heap and the copy's buffers:
 * about 450 MB more RSS right after a first start.
 */
async function initPgliteDataDir(dir: string): Promise<void> {
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // no --inspect, loaders or heap flags meant for the service
  const child = spawn(process.execPath, ['-e', PGLITE_INIT_SOURCE, '--', entry, dir, JSON.stringify(PGLITE_START_PARAMS)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env,
    windowsHide: true,
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (exitCode) => resolve(exitCode));
  });
  if (code !== 0 || !existsSync(path.join(dir, 'PG_VERSION'))) {
    throw new Error(`PGlite could not initialise ${dir} (exit code ${code}): ${stderr.trim() || '<no stderr>'}`);
  }
}

/** Run with `node -e`: creates (initdb) the data directory argv[2] with PGlite from argv[1], then closes it. */
const PGLITE_INIT_SOURCE = String.raw`'use strict';
const [entry, dir, startParams] = process.argv.slice(1);
const { PGlite } = require(entry);
PGlite.create(dir, { startParams: JSON.parse(startParams) })
  .then((pg) => pg.close())
  .catch((err) => { process.stderr.write(String((err && err.stack) || err) + '\n'); process.exit(1); });
`;

function openPostgres(url: string, max: number): Database {
  // int8 → string; drizzle maps bigint columns itself, and COUNT(*) stays exact.
  const pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: 5000 });
  pool.on('error', () => {
    /* an idle client died; the pool replaces it. Errors reach callers through their queries. */
  });
  const db = drizzlePg(pool, { schema }) as unknown as Db;
  return {
    db,
    kind: 'postgres',
    url,
    ping: async () => {
      await db.execute(sql`select 1`);
    },
    listen: (channel, onNotify, onResume) => listenPostgres(url, channel, onNotify, onResume),
    close: () => pool.end(),
  };
}

/** LISTEN on a connection of its own, reconnected (every second) after a loss. */
async function listenPostgres(url: string, channel: string, onNotify: (payload: string) => void, onResume?: () => void): Promise<() => Promise<void>> {
  let client: pg.Client | null = null;
  let stopped = false;
  let retry: NodeJS.Timeout | null = null;
  const connect = async (): Promise<void> => {
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
    c.on('notification', (m) => {
      if (m.channel === channel) onNotify(m.payload ?? '');
    });
    const lost = () => {
      if (client !== c || stopped) return;
      client = null;
      void c.end().catch(() => undefined);
      later();
    };
    c.on('error', lost);
    c.on('end', lost);
    await c.connect();
    await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
    client = c;
  };
  const later = () => {
    retry = setTimeout(() => {
      retry = null;
      if (stopped) return;
      connect().then(
        () => onResume?.(),
        () => later(),
      );
    }, 1000);
    retry.unref();
  };
  await connect();
  return async () => {
    stopped = true;
    if (retry) clearTimeout(retry);
    await client?.end().catch(() => undefined);
    client = null;
  };
}

function openPglite(client: PGlite): Database {
  const db = drizzlePglite(client, { schema }) as unknown as Db;
  return {
    db,
    kind: 'pglite',
    ping: async () => {
      await db.execute(sql`select 1`);
    },
    listen: async (channel, onNotify) => {
      const unlisten = await client.listen(channel, onNotify);
      return async () => {
        if (!client.closed) await unlisten();
      };
    },
    close: async () => {
      if (!client.closed) await client.close();
    },
  };
}

/** Rows of a raw `db.execute` on either driver (both expose `.rows`). */
export function rowsOf<T>(result: unknown): T[] {
  return (result as { rows: T[] }).rows;
}

const RETRYABLE_SQLSTATES = new Set(['40001', '40P01']);

/**
 * Runs `fn` in one transaction; retries the whole transaction on serialization failures
 * and deadlocks (SQLSTATE 40001 / 40P01), never on anything else.
 */
export async function withTransaction<T>(db: Db, fn: (tx: Tx) => Promise<T>, retries = 3): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await db.transaction(fn);
    } catch (err) {
      if (attempt >= retries || !RETRYABLE_SQLSTATES.has(sqlState(err) ?? '')) throw err;
    }
  }
}

export function sqlState(err: unknown): string | undefined {
  let e: unknown = err;
  for (let i = 0; i < 4 && e && typeof e === 'object'; i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export function isUniqueViolation(err: unknown): boolean {
  return sqlState(err) === '23505';
}

// ── database outages ─────────────────────────────────────────────────────────

/** Socket-level failures (Node error codes) that mean the database cannot be reached. */
const UNREACHABLE_NET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'ECONNABORTED',
]);

/**
 * SQLSTATEs of an unavailable server: 57P01 admin_shutdown (incl. pg_terminate_backend),
 * 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up, shutting down, in recovery),
 * 53300 too_many_connections. The whole class 08 (connection exception) is added below.
 */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);

/** Messages of node-postgres, pg-pool and PGlite when no connection can serve a query. */
const UNAVAILABLE_MESSAGES: RegExp[] = [
  /^Connection terminated\b/, // pg: "… unexpectedly", "… due to connection timeout"
  /^timeout exceeded when trying to connect$/, // pg-pool: connectionTimeoutMillis while waiting for a client
  /^Client has encountered a connection error and is not queryable$/,
  /^Client was closed and is not queryable$/,
  /^Cannot use a pool after calling end on the pool$/,
  /^PGlite is clos(ed|ing)$/,
];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** The error, its `cause` chain and the members of AggregateErrors, outermost first (bounded, cycle-safe). */
function errorChain(err: unknown): Array<{ error: Record<string, unknown>; viaDriver: boolean }> {
  const out: Array<{ error: Record<string, unknown>; viaDriver: boolean }> = [];
  const seen = new Set<unknown>();
  const queue: Array<{ e: unknown; viaDriver: boolean }> = [{ e: err, viaDriver: true }];
  while (queue.length > 0 && out.length < 16) {
    const { e, viaDriver } = queue.shift()!;
    if (!isObject(e) || seen.has(e)) continue;
    seen.add(e);
    out.push({ error: e, viaDriver });
    // A socket error below this one still comes from the database when this one is drizzle's
    // wrapper, pg-pool's timeout wrapper or Node's AggregateError of connection attempts;
    // below anything else (an HTTP client's "fetch failed", a chain RPC error) it does not.
    const passesThrough =
      viaDriver && (e instanceof DrizzleQueryError || e instanceof AggregateError || /^Connection terminated\b/.test(String(e.message)));
    if ('cause' in e) queue.push({ e: e.cause, viaDriver: passesThrough });
    if (Array.isArray(e.errors)) for (const member of e.errors) queue.push({ e: member, viaDriver: passesThrough });
  }
  return out;
}

/**
 * Whether `err` means the database cannot be reached right now (a retry later may work), as
 * opposed to a query that failed. Looks through drizzle's DrizzleQueryError and every `cause`:
 * - Node socket errors (ECONNREFUSED, ECONNRESET, ETIMEDOUT, EPIPE, ENOTFOUND, …), when thrown by
 *   the driver itself (top level, or under drizzle's / pg-pool's wrappers; not under an HTTP
 *   client's error, so an unreachable chain RPC or webhook is not taken for the database);
 * - SQLSTATE class 08 (connection exception), 57P01/57P02/57P03 (shutdown, terminated backend,
 *   cannot connect now), 53300 (too many connections);
 * - node-postgres / pg-pool messages ("Connection terminated…", "timeout exceeded when trying to
 *   connect", a client that is not queryable, a pool that was ended) and a closed PGlite.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (const { error, viaDriver } of errorChain(err)) {
    const code = error.code;
    if (typeof code === 'string') {
      if (/^[0-9A-Z]{5}$/.test(code) && (code.startsWith('08') || UNAVAILABLE_SQLSTATES.has(code))) return true;
      if (viaDriver && UNREACHABLE_NET_CODES.has(code)) return true;
    }
    const message = error.message;
    if (typeof message === 'string' && UNAVAILABLE_MESSAGES.some((re) => re.test(message))) return true;
  }
  return false;
}

/** Replaces credentials in connection strings and `password=…` pairs found in a text. */
export function redactSecrets(text: string): string {
  return text
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@'"]+@/gi, '$1[redacted]@')
    .replace(/\b(password|passwd|pwd)\s*[=:]\s*("[^"]*"|'[^']*'|[^\s&;,]+)/gi, '$1=[redacted]');
}

/**
 * A log-safe summary of a database failure: the driver's own error (not drizzle's wrapper,
 * whose message carries the query and its parameters), its code/SQLSTATE, and its message
 * with any credentials removed. Never the connection string or the pool's configuration.
 */
export function describeDatabaseError(err: unknown): { code?: string; message: string } {
  const chain = errorChain(err).map((c) => c.error);
  const own = chain.filter((e) => !(e instanceof DrizzleQueryError));
  const hasMessage = (e: Record<string, unknown>) => typeof e.message === 'string' && e.message !== '';
  const driver =
    own.find((e) => typeof e.code === 'string' && hasMessage(e)) ??
    own.find((e) => typeof e.code === 'string') ??
    own.find(hasMessage) ??
    chain[0];
  if (!driver) return { message: redactSecrets(String(err)).slice(0, 500) };
  const code = typeof driver.code === 'string' ? driver.code : undefined;
  const message = redactSecrets(typeof driver.message === 'string' ? driver.message : String(driver)).slice(0, 500);
  return code ? { code, message } : { message };
}

/**
 * `database.ping()` bounded in time: rejects after `ms` when the database hangs instead of
 * refusing (a frozen connection, a blackholed host) so a readiness probe never waits forever.
 */
export async function pingWithin(database: Pick<Database, 'ping'>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const ping = database.ping();
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the database did not answer within ${ms} ms`)), ms);
    timer.unref();
  });
  try {
    await Promise.race([ping, timeout]);
  } finally {
    clearTimeout(timer);
    ping.catch(() => undefined); // a ping that fails after the timeout is already answered
  }
}
