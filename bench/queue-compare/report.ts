/**
 * What `npm run bench:queue` prints: one row per queue and database, the ratios within the run,
 * what pg-boss did on PGlite, and the graphile-worker note.
 */
import { fmt, printTable } from '../lib.js';
import type { PgliteFinding } from './pgboss.js';
import type { Settings } from './settings.js';
import type { DbKind, WorkloadResult } from './workload.js';

const enqueueRate = (r: WorkloadResult) => r.jobs / r.enqueueSeconds;
const workRate = (r: WorkloadResult) => r.jobs / r.workSeconds;
const statementsPerJob = (r: WorkloadResult) => r.enqueueStatementsPerJob + r.workStatementsPerJob;

export function printResults(results: readonly WorkloadResult[], s: Settings): void {
  console.log(
    `\nN=${s.jobs} jobs, K=${s.workers} enqueue lanes and ${s.workers} workers, batch B=${s.batch}, work ${s.workMs} ms per batch` +
      ` (statements per job: BEGIN/COMMIT included; CPU: this process, which on PGlite includes the database)\n`,
  );
  printTable(
    ['queue', 'database', 'enqueue jobs/s', 'enqueue stmts/job', 'work jobs/s', 'claim p50 ms', 'claim p99 ms', 'jobs/claim', 'work stmts/job', 'stmts/job', 'CPU ms/job', 'same-tx enqueue'],
    results.map((r) => [
      r.queue,
      r.db,
      fmt(enqueueRate(r)),
      fmt(r.enqueueStatementsPerJob, 2),
      fmt(workRate(r)),
      fmt(r.claimP50, 2),
      fmt(r.claimP99, 2),
      fmt(r.jobs / (r.claims - r.emptyClaims), 1),
      fmt(r.workStatementsPerJob, 2),
      fmt(statementsPerJob(r), 2),
      fmt(r.cpuMsPerJob, 3),
      r.sameTransaction,
    ]),
    new Set([0, 1, 11]),
  );
}

function ratioRow(label: string, a: WorkloadResult | undefined, b: WorkloadResult | undefined): string[] | undefined {
  if (!a || !b) return undefined;
  const x = (f: (r: WorkloadResult) => number) => `${fmt(f(a) / f(b), 2)}×`;
  return [label, x(enqueueRate), x(workRate), x((r) => r.claimP50), x((r) => r.claimP99), x(statementsPerJob), x((r) => r.cpuMsPerJob)];
}

export function printRatios(results: readonly WorkloadResult[]): void {
  const find = (queue: string, db: DbKind) => results.find((r) => r.queue === queue && r.db === db);
  const rows = [
    ratioRow('pg-boss ÷ ours, Postgres', find('pg-boss', 'Postgres'), find('ours', 'Postgres')),
    ratioRow('pg-boss ÷ ours, PGlite', find('pg-boss', 'PGlite'), find('ours', 'PGlite')),
    ratioRow('ours, PGlite ÷ Postgres', find('ours', 'PGlite'), find('ours', 'Postgres')),
    ratioRow('pg-boss, PGlite ÷ Postgres', find('pg-boss', 'PGlite'), find('pg-boss', 'Postgres')),
  ].filter((r): r is string[] => r !== undefined);
  if (rows.length === 0) return;
  console.log('\nratios within this run (jobs/s: higher is faster; latency, statements, CPU: lower is cheaper)\n');
  printTable(['ratio', 'enqueue jobs/s', 'work jobs/s', 'claim p50', 'claim p99', 'stmts/job', 'CPU/job'], rows);
}

export function printPgliteFindings(version: string, findings: readonly PgliteFinding[] | string): void {
  console.log(`\npg-boss ${version} on PGlite (custom \`db\`, executeSql(text, values)):`);
  if (typeof findings === 'string') {
    console.log(`  not tried: ${findings}`);
    return;
  }
  for (const f of findings) console.log(`  ${f.ok ? 'ok  ' : 'FAIL'} ${f.step}: ${f.outcome}`);
}

export function printGraphileNote(): void {
  console.log(
    '\ngraphile-worker (not benchmarked): needs a node-postgres Pool or connection string (no executeSql-style adapter, so no in-process' +
      ' PGlite; only through @electric-sql/pglite-socket, one connection at a time) and LISTEN/NOTIFY; PostgreSQL 12+; 0.18 needs Node 22.18+' +
      ' (0.16/0.17 declare Node 14+). It can enqueue inside the caller\'s transaction on Postgres: `select graphile_worker.add_job(…)` is plain SQL.',
  );
}
