/**
 * Child side: the dispatchers and the settlement worker the bench drives itself (`runOnce()` in a
 * loop, paced by the bench instead of the production timers), and the wait for a phase to end.
 */
import { and, eq, inArray, sql } from 'drizzle-orm';
import { chainTransfers, tasks } from '../../src/db/schema.js';
import type { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { SettlementWorker } from '../../src/escrow/settlement-worker.js';
import { cpuMsSince, sleep } from '../lib.js';
import type { ChildApp } from './app.js';
import {
  AT_CAPACITY_SLEEP_MS,
  DISPATCHERS,
  EMPTY_CLAIM_SLEEP_MS,
  SETTLE_IDLE_SLEEP_MS,
  WAIT_POLL_MS,
  type LoopStats,
  type Request,
  type WaitResult,
} from './protocol.js';

interface Running {
  stop: boolean;
  startedAt: number;
  cpu: NodeJS.CpuUsage;
  stats: LoopStats;
  dispatchers: Dispatcher[];
  done: Promise<unknown>;
}

async function dispatchLoop(d: Dispatcher, index: number, concurrency: number, loops: Running): Promise<void> {
  while (!loops.stop) {
    if (d.active >= concurrency) {
      await sleep(AT_CAPACITY_SLEEP_MS);
      continue;
    }
    let n = 0;
    try {
      n = await d.runOnce();
    } catch (err) {
      loops.stats.errors.push(`runOnce: ${err instanceof Error ? err.message : String(err)}`);
    }
    loops.stats.claimCalls++;
    if (n > 0) {
      loops.stats.nonEmptyClaims++;
      loops.stats.claimed += n;
      loops.stats.claimedBy[index] = (loops.stats.claimedBy[index] ?? 0) + n;
    } else await sleep(EMPTY_CLAIM_SLEEP_MS);
  }
}

async function settleLoop(worker: SettlementWorker, loops: Running): Promise<void> {
  while (!loops.stop) {
    let n = 0;
    try {
      n = await worker.runOnce();
    } catch (err) {
      loops.stats.errors.push(`settlement runOnce: ${err instanceof Error ? err.message : String(err)}`);
    }
    loops.stats.settleRuns++;
    if (n === 0) await sleep(SETTLE_IDLE_SLEEP_MS);
  }
}

/** Tasks of the agent finished, or (`released`) whose transfer is final (its release, or a refund if it failed). */
async function countDone(s: ChildApp, agentId: string, until: 'finished' | 'released'): Promise<number> {
  if (until === 'finished') {
    const [row] = await s.app.db
      .select({ n: sql<number>`count(*)::int` })
      .from(tasks)
      .where(and(eq(tasks.agentId, agentId), sql`${tasks.finishedAt} is not null`));
    return Number(row?.n ?? 0);
  }
  const [row] = await s.app.db
    .select({ n: sql<number>`count(distinct ${tasks.id})::int` })
    .from(chainTransfers)
    .innerJoin(tasks, eq(tasks.id, chainTransfers.taskId))
    .where(and(eq(tasks.agentId, agentId), inArray(chainTransfers.status, ['confirmed', 'failed'])));
  return Number(row?.n ?? 0);
}

/** At most one set of loops at a time over the child's app. */
export class Loops {
  private running: Running | null = null;

  constructor(private readonly s: ChildApp) {}

  get active(): boolean {
    return this.running !== null;
  }

  /** DISPATCHERS dispatchers (`dispatch`) and one settlement worker (`settle`), looping from now on. */
  start(req: Extract<Request, { type: 'loops-start' }>): { startedAt: number } {
    if (this.running) throw new Error('loops already running');
    const s = this.s;
    const stats: LoopStats = { claimCalls: 0, nonEmptyClaims: 0, claimed: 0, claimedBy: [], settleRuns: 0, errors: [] };
    const dispatchers = req.dispatch
      ? Array.from({ length: DISPATCHERS }, (_, i) => createDispatcher(s.app, { workerId: `bench-dispatcher-${i}` }))
      : [];
    const log = {
      info: () => {},
      warn: (o: object, msg: string) => s.warnings.push(`settlement: ${msg} ${JSON.stringify(o).slice(0, 300)}`),
      error: (o: object, msg: string) => s.warnings.push(`settlement: ${msg} ${JSON.stringify(o).slice(0, 300)}`),
    };
    const worker = req.settle ? s.app.escrow!.createWorker(s.app.db, s.app.clock, log) : null;
    const loops: Running = { stop: false, startedAt: Date.now(), cpu: process.cpuUsage(), stats, dispatchers, done: Promise.resolve() };
    const concurrency = s.app.config.DISPATCH_CONCURRENCY;
    loops.done = Promise.all([...dispatchers.map((d, i) => dispatchLoop(d, i, concurrency, loops)), ...(worker ? [settleLoop(worker, loops)] : [])]);
    this.running = loops;
    return { startedAt: loops.startedAt };
  }

  async stop(): Promise<LoopStats> {
    const loops = this.running;
    if (!loops) throw new Error('no loops running');
    loops.stop = true;
    await loops.done;
    await Promise.all(loops.dispatchers.map((d) => d.stop(5000)));
    this.running = null;
    return loops.stats;
  }

  /** Polls until `expected` tasks of the agent are done (or the timeout), with the loops' figures so far. */
  async wait(req: Extract<Request, { type: 'wait' }>): Promise<WaitResult> {
    const loops = this.running;
    if (!loops) throw new Error('no loops running');
    const deadline = Date.now() + req.timeoutMs;
    let done = 0;
    let timedOut = false;
    for (;;) {
      done = await countDone(this.s, req.agentId, req.until);
      if (done >= req.expected) break;
      if (Date.now() > deadline) {
        timedOut = true;
        break;
      }
      await sleep(WAIT_POLL_MS);
    }
    return { done, timedOut, startedAt: loops.startedAt, endedAt: Date.now(), cpuMs: cpuMsSince(loops.cpu), stats: structuredClone(loops.stats) };
  }
}
