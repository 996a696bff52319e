/**
 * pg-boss (10.x, the last major that supports Node 20) under the same workload: queue `bench`,
 * `send` inside the caller's transaction through pg-boss's `db` option (an object with
 * `executeSql(text, values)` bound to the transaction's connection), `fetch({batchSize})` as the
 * claim and `complete(name, ids)`; on Postgres with its own pool, and on PGlite through an adapter.
 */
import { createRequire } from 'node:module';
import type { PGlite, Transaction } from '@electric-sql/pglite';
import pg from 'pg';
import PgBoss from 'pg-boss';
import type { Counter } from './counting.js';
import { domainSchemaSql } from './ours.js';
import { expectRollback, RollbackOnPurpose, type QueueUnderTest } from './workload.js';

export const QUEUE = 'bench';
export const PGBOSS_VERSION = (createRequire(import.meta.url)('pg-boss/package.json') as { version: string }).version;

type Executes = PgBoss.Db;

/** What `complete` answers at run time (its typings say void). */
interface CommandResponse {
  affected: number;
}

const UPDATE_TASK = `update bench_tasks set state = 'queued', updated_at = now() where id = $1 and state = 'created'`;

async function verifyJobs(
  query: (text: string) => Promise<{ rows: Array<Record<string, unknown>> }>,
  count: number,
): Promise<string[]> {
  const { rows } = await query(`
    select (select count(*)::int from pgboss.job where name = '${QUEUE}' and state = 'completed') as done,
           (select count(*)::int from pgboss.job where name = '${QUEUE}' and state <> 'completed') as other,
           (select count(*)::int from pgboss.job where name = '${QUEUE}' and retry_count <> 0) as retried,
           (select count(*)::int from bench_tasks where state = 'queued') as tasks`);
  const row = rows[0] as { done: number; other: number; retried: number; tasks: number } | undefined;
  const problems: string[] = [];
  if (row?.done !== count || row.other !== 0) problems.push(`pgboss.job: ${row?.done} completed and ${row?.other} not, expected ${count} completed`);
  if (row?.retried !== 0) problems.push(`pgboss.job: ${row?.retried} jobs fetched more than once`);
  if (row?.tasks !== count) problems.push(`bench_tasks: ${row?.tasks} queued, expected ${count}`);
  return problems;
}

/**
 * pg-boss emits 'error' (it must have a listener). Errors after `stop()` began are not the run's:
 * pg's `Pool#end` resolves before the server side of its connections has gone, so dropping the
 * scratch database right after can terminate one of them ("terminating connection due to
 * administrator command").
 */
function watchErrors(boss: PgBoss, problems: string[]): { boss: PgBoss; stop(opts?: PgBoss.StopOptions): Promise<void> } {
  let stopping = false;
  boss.on('error', (err) => {
    if (!stopping) problems.push(`pg-boss error event: ${err.message}`);
  });
  return {
    boss,
    stop: (opts = { graceful: false, wait: true }) => {
      stopping = true;
      return boss.stop(opts);
    },
  };
}

// ---------------------------------------------------------------- Postgres

/** pg-boss on Postgres (its own pool, max 10); the enqueue transactions on a second pool (max 10), like the app's. */
export async function pgBossOnPostgres(url: string, counter: Counter, n: number, problems: string[]): Promise<QueueUnderTest> {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', () => undefined);
  for (const stmt of domainSchemaSql(n)) await pool.query(stmt);
  const { boss, stop } = watchErrors(new PgBoss({ connectionString: url, max: 10 }), problems);
  await boss.start();
  await boss.createQueue(QUEUE);
  await pool.query('analyze');

  const inTransaction = async (task: string, thenThrow: boolean) => {
    const client = await pool.connect();
    try {
      await client.query('begin');
      await client.query(UPDATE_TASK, [task]);
      const db: Executes = { executeSql: (text, values) => client.query(text, values) };
      await boss.send(QUEUE, { task }, { db });
      if (thenThrow) throw new RollbackOnPurpose();
      await client.query('commit');
    } catch (err) {
      await client.query('rollback');
      throw err;
    } finally {
      client.release();
    }
  };

  return {
    queue: 'pg-boss',
    db: 'Postgres',
    counter,
    enqueue: (i) => inTransaction(`t${i}`, false),
    claim: async (_owner, limit) => (await boss.fetch(QUEUE, { batchSize: limit })).map((j) => j.id),
    complete: async (_owner, ids) => ((await boss.complete(QUEUE, ids)) as unknown as CommandResponse).affected,
    rollbackProblem: async () => {
      await expectRollback(() => inTransaction('t-rb', true));
      const { rows } = await pool.query<{ jobs: number; task: string }>(
        `select (select count(*)::int from pgboss.job where data->>'task' = 't-rb') as jobs, (select state from bench_tasks where id = 't-rb') as task`,
      );
      return rows[0]?.jobs === 0 && rows[0].task === 'created' ? '' : `left ${rows[0]?.jobs} job(s), task ${rows[0]?.task}`;
    },
    verify: (count) => verifyJobs((text) => pool.query(text), count),
    close: async () => {
      await stop();
      await pool.end();
    },
  };
}

// ---------------------------------------------------------------- PGlite

/**
 * The adapter pg-boss needs on PGlite: PGlite's `query` runs one statement with the extended
 * protocol (parameters, no multi-statement text); `exec` runs a multi-statement text with the
 * simple protocol (no parameters). pg-boss sends both kinds through `executeSql` (its schema
 * install and its maintenance are `BEGIN; …; COMMIT` texts without parameters).
 */
export function pgliteExecutor(target: Pick<PGlite | Transaction, 'query' | 'exec'>): Executes {
  return {
    executeSql: async (text, values) => {
      if (values && values.length > 0) return target.query(text, values);
      const results = await target.exec(text);
      return { rows: results.at(-1)?.rows ?? [] };
    },
  };
}

/** The adapter one would write first: `executeSql` = PGlite's `query`. */
export function naivePgliteExecutor(client: PGlite): Executes {
  return { executeSql: (text, values) => client.query(text, values) };
}

export const NAIVE_START = 'start(), executeSql = PGlite query()';

export interface PgliteFinding {
  step: string;
  outcome: string;
  ok: boolean;
}

/**
 * Tries pg-boss on `client`: `start()` with the naive adapter (the schema install), then with the
 * adapter above: start, createQueue, send inside a PGlite transaction that is rolled back,
 * fetch + complete, `maintain()` (expire, archive, drop: `BEGIN; …; COMMIT` texts).
 */
export async function probePgBossOnPglite(client: PGlite): Promise<PgliteFinding[]> {
  const findings: PgliteFinding[] = [];
  const step = async (name: string, fn: () => Promise<string>) => {
    try {
      findings.push({ step: name, outcome: await fn(), ok: true });
      return true;
    } catch (err) {
      findings.push({ step: name, outcome: `fails: ${(err as Error).message}`, ok: false });
      return false;
    }
  };

  const naiveErrors: string[] = [];
  const naive = watchErrors(new PgBoss({ db: naivePgliteExecutor(client), supervise: false, schedule: false }), naiveErrors);
  await step(NAIVE_START, async () => {
    await naive.boss.start();
    return 'works';
  });
  await naive.stop().catch(() => undefined);

  const errors: string[] = [];
  const { boss, stop } = watchErrors(new PgBoss({ db: pgliteExecutor(client), supervise: false, schedule: false }), errors);
  try {
    if (!(await step('start(), executeSql = query() with values, else exec()', async () => (await boss.start(), 'works (schema installed)')))) return findings;
    await step('createQueue', async () => (await boss.createQueue('probe'), 'works'));
    await step('send in a PGlite transaction, rolled back', async () => {
      await expectRollback(() =>
        client.transaction(async (tx) => {
          await boss.send('probe', { task: 'rb' }, { db: pgliteExecutor(tx) });
          throw new RollbackOnPurpose();
        }),
      );
      const { rows } = await client.query<{ n: number }>(`select count(*)::int as n from pgboss.job where name = 'probe'`);
      if (rows[0]?.n !== 0) throw new Error(`the rolled back job is there (${rows[0]?.n})`);
      return 'works (no job left)';
    });
    await step('send, fetch, complete', async () => {
      await client.transaction(async (tx) => {
        await boss.send('probe', { task: 'ok' }, { db: pgliteExecutor(tx) });
      });
      const jobs = await boss.fetch('probe', { batchSize: 5 });
      if (jobs.length !== 1) throw new Error(`fetch returned ${jobs.length} jobs, expected 1 (fetch swallows its own errors)`);
      const r = (await boss.complete('probe', jobs.map((j) => j.id))) as unknown as CommandResponse;
      if (r.affected !== 1) throw new Error(`complete affected ${r.affected}`);
      return 'works';
    });
    await step('maintain() (expire, archive, drop)', async () => (await boss.maintain(), 'works'));
  } finally {
    await stop().catch(() => undefined);
  }
  for (const e of [...naiveErrors, ...errors]) findings.push({ step: 'error event', outcome: e, ok: false });
  return findings;
}

/** pg-boss on PGlite through `pgliteExecutor`, for the same workload (after the probe passed); the caller closes `client`. */
export async function pgBossOnPglite(client: PGlite, counter: Counter, n: number, problems: string[]): Promise<QueueUnderTest> {
  for (const stmt of domainSchemaSql(n)) await client.exec(stmt);
  const { boss, stop } = watchErrors(new PgBoss({ db: pgliteExecutor(client) }), problems);
  await boss.start();
  await boss.createQueue(QUEUE);
  await client.exec('analyze');

  const inTransaction = (task: string, thenThrow: boolean) =>
    client.transaction(async (tx) => {
      await tx.query(UPDATE_TASK, [task]);
      await boss.send(QUEUE, { task }, { db: pgliteExecutor(tx) });
      if (thenThrow) throw new RollbackOnPurpose();
    });

  return {
    queue: 'pg-boss',
    db: 'PGlite',
    counter,
    enqueue: async (i) => void (await inTransaction(`t${i}`, false)),
    claim: async (_owner, limit) => (await boss.fetch(QUEUE, { batchSize: limit })).map((j) => j.id),
    complete: async (_owner, ids) => ((await boss.complete(QUEUE, ids)) as unknown as CommandResponse).affected,
    rollbackProblem: async () => {
      await expectRollback(() => inTransaction('t-rb', true));
      const { rows } = await client.query<{ jobs: number; task: string }>(
        `select (select count(*)::int from pgboss.job where data->>'task' = 't-rb') as jobs, (select state from bench_tasks where id = 't-rb') as task`,
      );
      return rows[0]?.jobs === 0 && rows[0].task === 'created' ? '' : `left ${rows[0]?.jobs} job(s), task ${rows[0]?.task}`;
    },
    verify: (count) => verifyJobs((text) => client.query<Record<string, unknown>>(text), count),
    close: async () => {
      await stop();
      await client.exec('drop table bench_tasks');
    },
  };
}
