/**
 * Parent side: the run's settings (environment knobs, see bench/README.md), its time budget, and
 * what every phase is handed.
 */
import { DEV_ROLES } from '../../src/chain/constants.js';
import type { DevChain } from '../../src/chain/dev/devchain.js';
import { DEFAULT_PG_URL, positiveInt } from '../lib.js';
import type { InstantAgent } from './agent.js';
import type { Problems } from './checks.js';

export interface Settings {
  tasks: number;
  paidTasks: number;
  claimRows: number;
  /** Repetitions of the k=1 raw claim on each side of the dispatch (k=concurrency: 4× as many). */
  claimRepeat: number;
  warmupTasks: number;
  concurrency: number;
  paidLanes: number;
  poolMax: number;
  pgUrl: string;
}

export function readSettings(): Settings {
  const tasks = positiveInt('BENCH_TASKS', 300);
  return {
    tasks,
    paidTasks: positiveInt('BENCH_PAID_TASKS', 30),
    claimRows: positiveInt('BENCH_CLAIM_ROWS', tasks),
    claimRepeat: positiveInt('BENCH_CLAIM_REPEAT', 3, 1000),
    warmupTasks: positiveInt('BENCH_WARMUP_TASKS', 20),
    concurrency: positiveInt('BENCH_DISPATCH_CONCURRENCY', 16, 1000),
    paidLanes: positiveInt('BENCH_PAID_LANES', DEV_ROLES.demo.length, DEV_ROLES.demo.length),
    poolMax: positiveInt('BENCH_DB_POOL_MAX', 10, 200),
    pgUrl: process.env.DATABASE_URL || DEFAULT_PG_URL,
  };
}

/** Wall-clock budget after which the bench gives up and kills everything. */
export function budgetSeconds(s: Settings): number {
  return 600 + Math.ceil(s.tasks / 5) + Math.ceil((s.claimRows * s.claimRepeat) / 25) + 8 * s.paidTasks;
}

/** What each phase runs with: the script its app children run (`--serve`), the settings, the chain, the agent, the problems found so far. */
export interface BenchRun {
  script: string;
  s: Settings;
  chain: DevChain;
  agent: InstantAgent;
  problems: Problems;
}

/** The environment of an app child of the run (x402 on or off). */
export const childEnv = (run: BenchRun, x402: boolean): Record<string, string> => ({
  BENCH_RPC_URL: run.chain.rpcUrl,
  BENCH_X402: x402 ? 'true' : 'false',
  BENCH_DISPATCH_CONCURRENCY: String(run.s.concurrency),
  BENCH_DB_POOL_MAX: String(run.s.poolMax),
});
