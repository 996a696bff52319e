/**
 * Part 1, the raw claim: the dispatcher's claim statement bare, by CLAIMERS concurrent claimers
 * over queued rows inserted in bulk. The child measures (`rawClaim`); the parent asks for a
 * round, checks that every row was claimed exactly once (`rawRound`) and makes the table row.
 */
import { inArray, sql } from 'drizzle-orm';
import { leaseDue } from '../../src/queue/index.js';
import { tasks } from '../../src/db/schema.js';
import { cpuMsSince, fmt } from '../lib.js';
import { insertTasks, vacuum, type ChildApp } from './app.js';
import type { Problems } from './checks.js';
import type { Child } from './children.js';
import { CLAIMERS, RAW_LEASE_MS, type RawClaimResult, type Request } from './protocol.js';
import type { Row } from './report.js';

type RawClaimRequest = Extract<Request, { type: 'raw-claim' }>;

/**
 * Child: the dispatcher's claim, bare: the same candidate SELECT (WHERE, ORDER BY, FOR UPDATE SKIP
 * LOCKED, LIMIT k) and an UPDATE that leases the rows, in one transaction; no per-agent count,
 * no state transition, no run. CLAIMERS claimers until the queue is empty; the rows are deleted
 * after. `repeat` times, summed.
 */
export async function rawClaim(s: ChildApp, req: RawClaimRequest): Promise<RawClaimResult> {
  const total: RawClaimResult = { rows: 0, claimed: 0, duplicates: 0, transactions: 0, seconds: 0, cpuMs: 0 };
  for (let r = 0; r < req.repeat; r++) {
    const one = await rawClaimOnce(s, req);
    for (const k of Object.keys(total) as (keyof RawClaimResult)[]) total[k] += one[k];
  }
  return total;
}

async function rawClaimOnce(s: ChildApp, req: RawClaimRequest): Promise<RawClaimResult> {
  const ids = await insertTasks(s, req.agentId, req.rows, true);
  await vacuum(s);
  const seen = new Map<string, number>();
  let transactions = 0;
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CLAIMERS }, async (_, c) => {
      const owner = `raw-claimer-${c}`;
      for (;;) {
        // the queue's one lease statement (queue/index.ts) on the dispatcher's table
        const got = await leaseDue(s.app.db, {
          table: 'dispatch_jobs',
          key: 'task_id',
          due: sql`state in ('queued', 'running') and next_at <= ${new Date().toISOString()}::timestamptz`,
          orderBy: sql`next_at`,
          limit: req.batch,
          owner,
          leaseMs: RAW_LEASE_MS,
          set: sql`state = 'running', attempts = attempts + 1`,
        });
        transactions++;
        if (got.length === 0) return;
        for (const id of got) seen.set(id, (seen.get(id) ?? 0) + 1);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpuMs = cpuMsSince(cpu);
  for (let i = 0; i < ids.length; i += 1000) await s.app.db.delete(tasks).where(inArray(tasks.id, ids.slice(i, i + 1000)));
  await vacuum(s);
  const own = new Set(ids);
  let duplicates = 0;
  let claimed = 0;
  for (const [id, n] of seen) {
    if (!own.has(id)) duplicates++;
    claimed++;
    if (n > 1) duplicates += n - 1;
  }
  return { rows: req.rows, claimed, duplicates, transactions, seconds, cpuMs };
}

/** Parent: one round of `repeat` raw claim runs at k=`batch`; every row must be claimed exactly once. */
export async function rawRound(child: Child, agentId: string, rows: number, batch: number, repeat: number, where: string, problems: Problems): Promise<RawClaimResult> {
  const r = await child.call<RawClaimResult>({ type: 'raw-claim', agentId, rows, batch, repeat });
  if (r.claimed !== rows * repeat || r.duplicates > 0) problems.add(where, `raw claim k=${batch}: ${r.claimed}/${rows * repeat} claimed, ${r.duplicates} duplicates`);
  console.log(
    `  raw claim k=${batch}: ${repeat} × ${rows} rows in ${fmt(r.seconds, 2)} s = ${fmt(r.rows / r.seconds)} claims/s ` +
      `(${r.transactions} transactions, app CPU ${fmt((r.cpuMs / (r.seconds * 1000)) * 100)} %)`,
  );
  return r;
}

/** The table row of the raw claim at k, over the rounds before and after the dispatch, pooled. */
export function rawRow(k: number, db: string, rounds: RawClaimResult[]): Row {
  const secs = rounds.reduce((a, r) => a + r.seconds, 0);
  const n = rounds.reduce((a, r) => a + r.rows, 0);
  return {
    measure: `raw claim k=${k}, ${CLAIMERS} claimers`,
    db,
    n,
    seconds: secs,
    rate: n / secs,
    latency: '',
    p50: NaN,
    p99: NaN,
    cpuPerItem: rounds.reduce((a, r) => a + r.cpuMs, 0) / n,
    cpuPct: (rounds.reduce((a, r) => a + r.cpuMs, 0) / (secs * 1000)) * 100,
  };
}
