/**
 * What the parent and the app child of bench/dispatch.ts share: the constants of the run and the
 * messages between them (a request with an id, answered by one `result`).
 */
import { randomBytes } from 'node:crypto';

/** The webhook agent's shared secret: made by the parent, handed to each app child. */
export const AGENT_SECRET = process.env.BENCH_AGENT_SECRET || `bench-dispatch-webhook-secret-${randomBytes(8).toString('hex')}`;
/** Budget (and funded amount) of every task: 1 USDC. */
export const BUDGET = 1_000_000n;
/** Loop pacing of the bench's dispatcher and settlement loops (instead of the production timers). */
export const AT_CAPACITY_SLEEP_MS = 1;
export const EMPTY_CLAIM_SLEEP_MS = 5;
export const SETTLE_IDLE_SLEEP_MS = 5;
export const WAIT_POLL_MS = 20;
/** Lease the raw claim gives the rows it takes. */
export const RAW_LEASE_MS = 30_000;
/** Concurrent raw claimers, and dispatchers, in one app child. */
export const CLAIMERS = 2;
export const DISPATCHERS = 2;

/** One task as the app child reports it after a phase (times in ms since the epoch). */
export interface TaskReport {
  id: string;
  status: string;
  fundedAt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  attempts: number;
  lastError: string | null;
  completedEvents: number;
  releaseStatus: string | null;
  releaseAmount: string | null;
  releaseConfirmedAt: number | null;
}

export interface RawClaimResult {
  /** Rows claimed over all repetitions (rows × repeat when all went well). */
  rows: number;
  claimed: number;
  duplicates: number;
  transactions: number;
  seconds: number;
  cpuMs: number;
}

export interface LoopStats {
  /** `runOnce()` calls that had a free slot (each one a claim transaction). */
  claimCalls: number;
  /** … of which claimed at least one task. */
  nonEmptyClaims: number;
  claimed: number;
  /** Tasks claimed by each dispatcher. */
  claimedBy: number[];
  settleRuns: number;
  errors: string[];
}

export interface WaitResult {
  done: number;
  timedOut: boolean;
  /** Wall clock (ms) at which the loops started. */
  startedAt: number;
  /** Wall clock (ms) at which the wait ended. */
  endedAt: number;
  /** Child CPU from the loops' start to the end of the wait. */
  cpuMs: number;
  stats: LoopStats;
}

export type Request =
  | { type: 'register-agent'; url: string; payout: string; name: string }
  | { type: 'raw-claim'; agentId: string; rows: number; batch: number; repeat: number }
  | { type: 'fund'; agentId: string; tasks: number }
  | { type: 'loops-start'; dispatch: boolean; settle: boolean }
  | { type: 'wait'; agentId: string; expected: number; until: 'finished' | 'released'; timeoutMs: number }
  | { type: 'loops-stop' }
  | { type: 'report'; agentId: string }
  | { type: 'payments' }
  | { type: 'cpu' }
  | { type: 'warnings' };

export type ToChild = (Request & { id: number }) | { type: 'close' };
export type FromChild =
  | { type: 'listening'; port: number }
  | { type: 'result'; id: number; ok: true; value: unknown }
  | { type: 'result'; id: number; ok: false; message: string }
  | { type: 'failed'; message: string };
