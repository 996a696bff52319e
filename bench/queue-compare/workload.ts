/**
 * The workload every queue runs, the same for each: N jobs enqueued by K lanes, each job in its own
 * transaction together with the update of its "domain" row (`bench_tasks`, the state change the job
 * belongs to); then K workers loop claim(B) → work → complete until a claim comes back empty.
 */
import type { Counter } from './counting.js';
import type { Settings } from './settings.js';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export type DbKind = 'Postgres' | 'PGlite';

/** One queue on one database, ready to run (schema made, N domain rows inserted). */
export interface QueueUnderTest {
  queue: string;
  db: DbKind;
  counter: Counter;
  /** One transaction: domain row `t<i>` goes created → queued, and job `i` is enqueued. */
  enqueue(i: number): Promise<void>;
  /** Leases (fetches) up to `limit` jobs for `owner`; their ids. */
  claim(owner: string, limit: number): Promise<string[]>;
  /** Marks `ids` done on behalf of `owner`; how many it completed. */
  complete(owner: string, ids: string[]): Promise<number>;
  /**
   * Enqueues in a transaction that updates the domain row `t-rb`, then throws: neither the job nor
   * the update may be left. '' when so, else what was left.
   */
  rollbackProblem(): Promise<string>;
  /** What the database holds after the run that it should not (every job done once, every domain row queued). */
  verify(n: number): Promise<string[]>;
  close(): Promise<void>;
}

export interface WorkloadResult {
  queue: string;
  db: DbKind;
  jobs: number;
  enqueueSeconds: number;
  enqueueStatementsPerJob: number;
  workSeconds: number;
  claims: number;
  emptyClaims: number;
  claimP50: number;
  claimP99: number;
  workStatementsPerJob: number;
  /** CPU of this process per job over the work phase (on PGlite that includes the database). */
  cpuMsPerJob: number;
  sameTransaction: string;
  problems: string[];
}

/** Nearest-rank percentile of `sorted` (ascending). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export async function runWorkload(q: QueueUnderTest, s: Settings): Promise<WorkloadResult> {
  const problems: string[] = [];
  const rb = await q.rollbackProblem();
  const sameTransaction = rb === '' ? 'yes (rollback verified)' : `NO: ${rb}`;
  if (rb !== '') problems.push(`same-transaction enqueue: ${rb}`);

  // enqueue: K lanes, job i on lane i mod K, one transaction per job
  const n = s.jobs;
  let statements = q.counter.statements;
  let t0 = performance.now();
  await Promise.all(
    Array.from({ length: s.workers }, async (_, lane) => {
      for (let i = lane; i < n; i += s.workers) await q.enqueue(i);
    }),
  );
  const enqueueSeconds = (performance.now() - t0) / 1000;
  const enqueueStatements = q.counter.statements - statements;

  // work: K workers, claim B → sleep → complete, until a claim is empty
  const latencies: number[] = [];
  let claims = 0;
  let emptyClaims = 0;
  let completed = 0;
  statements = q.counter.statements;
  const cpu = process.cpuUsage();
  t0 = performance.now();
  await Promise.all(
    Array.from({ length: s.workers }, async (_, w) => {
      const owner = `${q.queue}-w${w}`;
      for (;;) {
        const c0 = performance.now();
        const ids = await q.claim(owner, s.batch);
        const ms = performance.now() - c0;
        claims++;
        if (ids.length === 0) {
          emptyClaims++;
          return;
        }
        latencies.push(ms);
        if (s.workMs > 0) await sleep(s.workMs);
        const done = await q.complete(owner, ids);
        if (done !== ids.length) problems.push(`${owner} completed ${done} of the ${ids.length} jobs it claimed`);
        completed += done;
      }
    }),
  );
  const workSeconds = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(cpu);
  const workStatements = q.counter.statements - statements;
  if (completed !== n) problems.push(`workers completed ${completed} jobs, expected ${n}`);
  problems.push(...(await q.verify(n)));

  latencies.sort((a, b) => a - b);
  return {
    queue: q.queue,
    db: q.db,
    jobs: n,
    enqueueSeconds,
    enqueueStatementsPerJob: enqueueStatements / n,
    workSeconds,
    claims,
    emptyClaims,
    claimP50: percentile(latencies, 50),
    claimP99: percentile(latencies, 99),
    workStatementsPerJob: workStatements / n,
    cpuMsPerJob: (used.user + used.system) / 1000 / n,
    sameTransaction,
    problems,
  };
}

/** Thrown inside a transaction to roll it back on purpose. */
export class RollbackOnPurpose extends Error {
  constructor() {
    super('rolled back on purpose');
  }
}

/** Runs `fn`, which must throw RollbackOnPurpose (anything else is rethrown). */
export async function expectRollback(fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof RollbackOnPurpose) return;
    throw err;
  }
  throw new Error('the transaction was expected to throw');
}
