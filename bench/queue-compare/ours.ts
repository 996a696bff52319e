/**
 * Our queue (src/queue/index.ts) under the workload: a `bench_jobs` table leased with `leaseDue`
 * through the service's own drizzle connection (`openDatabase`), on Postgres or on PGlite.
 * `close()` drops the bench tables; the caller closes the database.
 */
import { sql } from 'drizzle-orm';
import { rowsOf, type Database, type Tx } from '../../src/db/client.js';
import { leaseDue } from '../../src/queue/index.js';
import type { Counter } from './counting.js';
import { expectRollback, RollbackOnPurpose, type DbKind, type QueueUnderTest } from './workload.js';

/** The domain table both queues' enqueue transactions update: N rows `t0…t<N-1>` plus `t-rb`. */
export function domainSchemaSql(n: number): string[] {
  return [
    `create table bench_tasks (id text primary key, state text not null, updated_at timestamptz not null default now())`,
    `insert into bench_tasks (id, state) select 't' || g, 'created' from generate_series(0, ${n - 1}) g`,
    `insert into bench_tasks (id, state) values ('t-rb', 'created')`,
  ];
}

const JOBS_SCHEMA = [
  `create table bench_jobs (
     id text primary key,
     state text not null,
     next_at timestamptz not null,
     lease_owner text,
     lease_expires_at timestamptz,
     attempts int not null default 0)`,
  // the partial index every queue-like table of the service has on its claimable rows
  `create index bench_jobs_due on bench_jobs (next_at, id) where state = 'queued'`,
];

export async function ourQueue(database: Database, kind: DbKind, counter: Counter, n: number, leaseMs: number): Promise<QueueUnderTest> {
  const { db } = database;
  for (const stmt of [...domainSchemaSql(n), ...JOBS_SCHEMA]) await db.execute(sql.raw(stmt));
  await db.execute(sql.raw('analyze'));

  /** The state change and its job, in the caller's transaction. */
  const enqueueIn = async (tx: Tx, task: string, job: string) => {
    await tx.execute(sql`update bench_tasks set state = 'queued', updated_at = now() where id = ${task} and state = 'created'`);
    await tx.execute(sql`insert into bench_jobs (id, state, next_at) values (${job}, 'queued', ${new Date().toISOString()}::timestamptz)`);
  };

  return {
    queue: 'ours',
    db: kind,
    counter,
    enqueue: (i) => db.transaction((tx) => enqueueIn(tx, `t${i}`, `j${i}`)),
    claim: (owner, limit) =>
      leaseDue(db, {
        table: 'bench_jobs',
        due: sql`state = 'queued' and next_at <= ${new Date().toISOString()}::timestamptz`,
        orderBy: sql`next_at, id`,
        limit,
        owner,
        leaseMs,
        set: sql`attempts = attempts + 1`,
      }),
    complete: async (owner, ids) =>
      rowsOf<{ id: string }>(
        await db.execute(sql`
          update bench_jobs set state = 'done'
          where state = 'queued' and lease_owner = ${owner}
            and id in (select jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb))
          returning id`),
      ).length,
    rollbackProblem: async () => {
      await expectRollback(() =>
        db.transaction(async (tx) => {
          await enqueueIn(tx, 't-rb', 'j-rb');
          throw new RollbackOnPurpose();
        }),
      );
      const [row] = rowsOf<{ jobs: number; task: string }>(
        await db.execute(sql`select (select count(*)::int from bench_jobs where id = 'j-rb') as jobs, (select state from bench_tasks where id = 't-rb') as task`),
      );
      return row?.jobs === 0 && row.task === 'created' ? '' : `left ${row?.jobs} job(s), task ${row?.task}`;
    },
    verify: async (count) => {
      const [row] = rowsOf<{ done: number; other: number; retried: number; tasks: number }>(
        await db.execute(sql`
          select (select count(*)::int from bench_jobs where state = 'done') as done,
                 (select count(*)::int from bench_jobs where state <> 'done') as other,
                 (select count(*)::int from bench_jobs where attempts <> 1) as retried,
                 (select count(*)::int from bench_tasks where state = 'queued') as tasks`),
      );
      const problems: string[] = [];
      if (row?.done !== count || row.other !== 0) problems.push(`bench_jobs: ${row?.done} done and ${row?.other} not, expected ${count} done`);
      if (row?.retried !== 0) problems.push(`bench_jobs: ${row?.retried} jobs leased more than once`);
      if (row?.tasks !== count) problems.push(`bench_tasks: ${row?.tasks} queued, expected ${count}`);
      return problems;
    },
    close: async () => {
      await db.execute(sql.raw('drop table bench_jobs, bench_tasks'));
    },
  };
}
