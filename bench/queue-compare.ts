/**
 * Our queue (src/queue/index.ts) against pg-boss, on Postgres and on PGlite, in one run
 * (see bench/README.md, "queue-compare.ts"):
 *
 *   npm run bench:queue -- [--jobs 5000] [--workers 4] [--batch 10] [--work-ms 0] [--lease-ms 30000] [--pglite file|memory]
 *
 * For each target: N jobs enqueued by K lanes, each in one transaction with the update of its
 * domain row, then K workers claim B → work → complete until the queue is empty
 * (queue-compare/workload.ts). Targets, in this order:
 *  1. ours on Postgres — a throwaway database, the service's drizzle pool (queue-compare/ours.ts);
 *  2. pg-boss on Postgres — another throwaway database, pg-boss's own pool, `send` in the
 *     caller's transaction via its `db` option (queue-compare/pgboss.ts);
 *  3. ours on PGlite — in-process, in a temp directory (or memory);
 *  4. pg-boss on the same PGlite (ours' tables dropped) — first a probe of what works (naive
 *     adapter, then the one that routes parameterless texts to `exec`), then the workload when
 *     the probe passed.
 * Then the table, the ratios, the PGlite finding and a note on graphile-worker. Exit 1 when a run
 * lost, repeated or left a job, or a same-transaction enqueue survived its rollback.
 */
import { cpus } from 'node:os';
import { PGlite } from '@electric-sql/pglite';
import { createPglite, openDatabase } from '../src/db/client.js';
import { databases, makeTempDir, postgresAdmin, redactUrl, removeTempDir, startWatchdog, tempDirs } from './lib.js';
import { countPglite, countPostgres, uncountPostgres, type Counter } from './queue-compare/counting.js';
import { ourQueue } from './queue-compare/ours.js';
import { NAIVE_START, PGBOSS_VERSION, pgBossOnPglite, pgBossOnPostgres, probePgBossOnPglite, type PgliteFinding } from './queue-compare/pgboss.js';
import { printGraphileNote, printPgliteFindings, printRatios, printResults } from './queue-compare/report.js';
import { budgetSeconds, readSettings, type Settings } from './queue-compare/settings.js';
import { runWorkload, type QueueUnderTest, type WorkloadResult } from './queue-compare/workload.js';

function killAll(): void {
  for (const dir of [...tempDirs]) removeTempDir(dir);
  for (const db of [...databases]) void db.drop().catch(() => undefined);
}

async function measure(label: string, open: () => Promise<QueueUnderTest>, s: Settings): Promise<WorkloadResult> {
  const t0 = performance.now();
  const q = await open();
  try {
    const r = await runWorkload(q, s);
    console.log(
      `${label}: ready in ${((performance.now() - t0) / 1000 - r.enqueueSeconds - r.workSeconds).toFixed(1)} s, ` +
        `enqueue ${r.enqueueSeconds.toFixed(2)} s, work ${r.workSeconds.toFixed(2)} s${r.problems.length ? ` — ${r.problems.length} problem(s)` : ''}`,
    );
    return r;
  } finally {
    await q.close();
  }
}

/** A PGlite of the kind the settings ask for, with its temp directory (if any). */
async function newPglite(s: Settings): Promise<{ client: PGlite; dispose(): Promise<void> }> {
  if (s.pglite === 'memory') {
    const client = await PGlite.create();
    return { client, dispose: async () => void (client.closed || (await client.close())) };
  }
  const dir = makeTempDir('te-queue-');
  const client = await createPglite(dir);
  return {
    client,
    dispose: async () => {
      if (!client.closed) await client.close();
      removeTempDir(dir);
    },
  };
}

async function main(): Promise<number> {
  let s: Settings;
  try {
    s = readSettings();
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  startWatchdog(budgetSeconds(s) * 1000, { kill: killAll, exitDelayMs: 2000, signals: ['SIGINT', 'SIGTERM'] });
  console.log(
    `bench:queue — ours (src/queue) vs pg-boss ${PGBOSS_VERSION}; N=${s.jobs}, K=${s.workers}, B=${s.batch}, work ${s.workMs} ms, ` +
      `PGlite ${s.pglite}; node ${process.version}, ${cpus().length} cpus; Postgres ${redactUrl(s.pgUrl)}; budget ${budgetSeconds(s)} s`,
  );
  const results: WorkloadResult[] = [];
  const problems: string[] = [];
  const run = async (label: string, open: (problems: string[]) => Promise<QueueUnderTest>) => {
    const own: string[] = [];
    try {
      const r = await measure(label, () => open(own), s);
      r.problems.push(...own);
      results.push(r);
      problems.push(...r.problems.map((p) => `${label}: ${p}`));
    } catch (err) {
      problems.push(`${label}: ${(err as Error).stack ?? String(err)}`);
      console.log(`${label}: failed (${(err as Error).message})`);
    }
  };

  // 1, 2: Postgres
  const admin = await postgresAdmin(s.pgUrl);
  if (typeof admin === 'string') {
    console.log(`Postgres targets skipped: ${admin}`);
  } else {
    try {
      await run('ours on Postgres', async () => {
        const scratch = await admin.create();
        const counter: Counter = { statements: 0 };
        countPostgres(counter);
        const database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 10 });
        const q = await ourQueue(database, 'Postgres', counter, s.jobs, s.leaseMs);
        return { ...q, close: async () => (await q.close(), await database.close(), await scratch.drop()) };
      });
      await run('pg-boss on Postgres', async (own) => {
        const scratch = await admin.create();
        const counter: Counter = { statements: 0 };
        countPostgres(counter);
        const q = await pgBossOnPostgres(scratch.url, counter, s.jobs, own);
        return { ...q, close: async () => (await q.close(), await scratch.drop()) };
      });
    } finally {
      uncountPostgres();
      for (const db of [...databases]) await db.drop().catch(() => undefined);
      await admin.end();
    }
  }

  // 3, 4: one PGlite for both (initdb is the slow part): ours, then what pg-boss does on it, then
  // pg-boss's workload if everything did
  let findings: PgliteFinding[] | string = 'no PGlite';
  const t0 = performance.now();
  const lite = await newPglite(s);
  console.log(`PGlite (${s.pglite}) created in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  try {
    const counter: Counter = { statements: 0 };
    const database = await openDatabase({ dataDir: '', pglite: countPglite(lite.client, counter) });
    await run('ours on PGlite', () => ourQueue(database, 'PGlite', counter, s.jobs, s.leaseMs));
    try {
      findings = await probePgBossOnPglite(lite.client);
    } catch (err) {
      findings = `the probe itself failed: ${(err as Error).message}`;
    }
    const adapterWorks = typeof findings !== 'string' && findings.filter((f) => f.step !== NAIVE_START).every((f) => f.ok);
    if (adapterWorks) await run('pg-boss on PGlite', (own) => pgBossOnPglite(lite.client, counter, s.jobs, own));
  } finally {
    await lite.dispose();
  }

  printResults(results, s);
  printRatios(results);
  printPgliteFindings(PGBOSS_VERSION, findings);
  printGraphileNote();
  if (problems.length > 0) {
    console.log(`\nINVALID RUN — ${problems.length} problem(s):`);
    for (const p of problems) console.log(`  - ${p}`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    killAll();
    setTimeout(() => process.exit(1), 2000).unref();
  },
);
