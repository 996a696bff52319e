/**
 * What the dispatcher costs per task, against the bare `FOR UPDATE SKIP LOCKED` claim it is built
 * on, and what a whole paid hire costs end to end, on PGlite and on Postgres, in one run
 * (see bench/README.md):
 *
 *  1. raw claim: the dispatcher's claim statement (same WHERE / ORDER BY / FOR UPDATE SKIP LOCKED)
 *     plus the UPDATE that leases the rows, by 2 concurrent claimers over pre-inserted queued rows;
 *  2. dispatch: N funded tasks (markFunded, x402 off), 2 dispatchers (`createDispatcher`) looping
 *     `runOnce()` against an instant webhook agent until every task is completed; then the
 *     settlement worker pays the N releases out on the embedded anvil (a separate figure);
 *  3. paid: create → fund (stock @x402/fetch client, x402 on, anvil) → dispatch → complete →
 *     release confirmed by the settlement worker.
 *
 *   npx tsx bench/dispatch.ts   (BENCH_TASKS, BENCH_PAID_TASKS, BENCH_CLAIM_ROWS, BENCH_CLAIM_REPEAT,
 *                                BENCH_WARMUP_TASKS, BENCH_DISPATCH_CONCURRENCY, BENCH_PAID_LANES,
 *                                BENCH_DB_POOL_MAX, DATABASE_URL)
 *
 * The app, its database and the dispatchers run in a child process (this file with `--serve`);
 * the webhook agent, the paying clients and the orchestration run here.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus } from 'node:os';
import { wrapFetchWithPayment } from '@x402/fetch';
import { and, eq, inArray, sql } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import type { Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { RegisterAgentBody } from '../src/agents/schemas.js';
import { buildApp } from '../src/app.js';
import { DEV_ROLES } from '../src/chain/constants.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../src/chain/dev/devchain.js';
import { resolveWallets } from '../src/chain/wallets.js';
import { loadConfig } from '../src/config.js';
import { openDatabase, rowsOf, withTransaction, type Database } from '../src/db/client.js';
import { runMigrations } from '../src/db/migrate.js';
import { chainTransfers, payments, taskEvents, tasks } from '../src/db/schema.js';
import type { Dispatcher } from '../src/dispatcher/dispatcher.js';
import { createDispatcher } from '../src/dispatcher/index.js';
import { SIGNATURE_HEADER, verifyWebhookSignature } from '../src/net/signing.js';
import type { SettlementWorker } from '../src/escrow/settlement-worker.js';
import { newId } from '../src/ids.js';
import {
  DEFAULT_PG_URL,
  cpuMsSince,
  databases,
  demo,
  forkSelf,
  killChildren,
  makeTempDir,
  positiveInt as boundedInt,
  postgresAdmin,
  printTable as printMarkdownTable,
  redactUrl,
  removeTempDir,
  runBench,
  serveChild,
  sleep,
  startWatchdog,
  stopProcess,
  tell,
  tempDirs,
  x402ClientFor,
  type ThrowawayDb,
} from './lib.js';

/** The webhook agent's shared secret: made by the parent, handed to each app child. */
const AGENT_SECRET = process.env.BENCH_AGENT_SECRET || `bench-dispatch-webhook-secret-${randomBytes(8).toString('hex')}`;
const BUDGET = 1_000_000n;
/** Loop pacing of the bench's dispatcher and settlement loops (instead of the production timers). */
const AT_CAPACITY_SLEEP_MS = 1;
const EMPTY_CLAIM_SLEEP_MS = 5;
const SETTLE_IDLE_SLEEP_MS = 5;
const WAIT_POLL_MS = 20;
const RAW_LEASE_MS = 30_000;
const CLAIMERS = 2;
const DISPATCHERS = 2;

// ---------------------------------------------------------------- messages parent ⇄ child

interface TaskReport {
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

interface RawClaimResult {
  /** Rows claimed over all repetitions (rows × repeat when all went well). */
  rows: number;
  claimed: number;
  duplicates: number;
  transactions: number;
  seconds: number;
  cpuMs: number;
}

interface LoopStats {
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

interface WaitResult {
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

type Request =
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

type ToChild = (Request & { id: number }) | { type: 'close' };
type FromChild =
  | { type: 'listening'; port: number }
  | { type: 'result'; id: number; ok: true; value: unknown }
  | { type: 'result'; id: number; ok: false; message: string }
  | { type: 'failed'; message: string };

// ---------------------------------------------------------------- child: the app

interface Served {
  app: FastifyInstance;
  database: Database;
  warnings: string[];
  loops: RunningLoops | null;
  close(): Promise<void>;
}

/** The real app; warn+ log lines are collected (a run with any is invalid), nothing else is logged. */
async function serveApp(): Promise<Served> {
  const url = process.env.BENCH_DB_URL || undefined;
  const dataDir = process.env.BENCH_DATA_DIR || 'unused';
  const rpcUrl = process.env.BENCH_RPC_URL;
  if (!rpcUrl) throw new Error('BENCH_RPC_URL is not set');
  const config = loadConfig({
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    DATABASE_URL: url,
    DATA_DIR: dataDir,
    DB_POOL_MAX: process.env.BENCH_DB_POOL_MAX,
    RATE_LIMIT_MAX: '1000000000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    X402_ENABLED: process.env.BENCH_X402 === 'true' ? 'true' : 'false',
    DISPATCH_CONCURRENCY: process.env.BENCH_DISPATCH_CONCURRENCY,
    DISPATCH_PER_AGENT_CONCURRENCY: '1000',
  });
  const database = await openDatabase({ url: config.DATABASE_URL, dataDir: config.DATA_DIR, poolMax: config.DB_POOL_MAX });
  await runMigrations(database);
  const warnings: string[] = [];
  const logStream = {
    write(line: string) {
      try {
        const o = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string }; error?: string; reason?: string };
        if ((o.level ?? 0) >= 40) warnings.push(`${o.msg ?? '?'}${o.err?.message ? `: ${o.err.message}` : ''}${o.error ? `: ${o.error}` : ''}${o.reason ? `: ${o.reason}` : ''}`);
      } catch {
        warnings.push(line.slice(0, 300));
      }
    },
  };
  const app = await buildApp({ config, database, chainRpcUrl: rpcUrl, logStream });
  return {
    app,
    database,
    warnings,
    loops: null,
    close: async () => {
      await app.close();
      await database.close();
    },
  };
}

async function registerAgent(s: Served, req: Extract<Request, { type: 'register-agent' }>): Promise<string> {
  const owner = privateKeyToAccount(generatePrivateKey()).address;
  const input = RegisterAgentBody.parse({
    name: req.name,
    description: 'Instant webhook agent of the dispatch benchmark',
    capabilities: ['copywriting'],
    pricing: { base_rate: '500000' },
    payout_address: req.payout,
    availability: 'online',
    runtime: { kind: 'webhook', url: req.url, secret: AGENT_SECRET, timeout_ms: 30_000 },
  });
  const agent = await s.app.services.agents.register(owner, input);
  return agent.id;
}

/** Task rows inserted in bulk, as `create` (+ `markFunded` when queued) would leave them. */
async function insertTasks(s: Served, agentId: string, n: number, queued: boolean): Promise<string[]> {
  const now = new Date();
  const escrow = resolveWallets(s.app.config).escrowAddress.toLowerCase();
  const payer = privateKeyToAccount(generatePrivateKey()).address.toLowerCase();
  const ids: string[] = [];
  for (let i = 0; i < n; i += 500) {
    const rows = Array.from({ length: Math.min(500, n - i) }, () => {
      const id = newId('task');
      ids.push(id);
      return {
        id,
        agentId,
        payerAddress: payer,
        description: 'Write a blurb',
        budgetAmount: BUDGET,
        currency: 'USDC',
        chain: 'base',
        timeoutSeconds: 3600,
        status: queued ? 'funded' : 'created',
        escrowStatus: queued ? 'held' : 'none',
        escrowAddress: escrow,
        expiresAt: new Date(now.getTime() + 3_600_000),
        createdAt: now,
        updatedAt: now,
        ...(queued ? { fundedAmount: BUDGET, fundedAt: now, dispatchState: 'queued', dispatchNextAt: now } : {}),
      };
    });
    await s.app.db.insert(tasks).values(rows);
  }
  return ids;
}

async function vacuum(s: Served): Promise<void> {
  await s.app.db.execute(sql`vacuum analyze tasks`);
}

/**
 * The dispatcher's claim, bare: the same candidate SELECT (WHERE, ORDER BY, FOR UPDATE SKIP
 * LOCKED, LIMIT k) and an UPDATE that leases the rows, in one transaction; no per-agent count,
 * no state transition, no run. 2 claimers until the queue is empty; the rows are deleted after.
 */
async function rawClaim(s: Served, req: Extract<Request, { type: 'raw-claim' }>): Promise<RawClaimResult> {
  const total: RawClaimResult = { rows: 0, claimed: 0, duplicates: 0, transactions: 0, seconds: 0, cpuMs: 0 };
  for (let r = 0; r < req.repeat; r++) {
    const one = await rawClaimOnce(s, req);
    for (const k of Object.keys(total) as (keyof RawClaimResult)[]) total[k] += one[k];
  }
  return total;
}

async function rawClaimOnce(s: Served, req: Extract<Request, { type: 'raw-claim' }>): Promise<RawClaimResult> {
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
        const got = await withTransaction(s.app.db, async (tx) => {
          const now = new Date();
          const candidates = rowsOf<{ id: string; agent_id: string; status: string }>(
            await tx.execute(sql`
              select id, agent_id, status from tasks
              where (dispatch_state = 'queued' and dispatch_next_at <= ${now})
                 or (dispatch_state = 'running' and lease_expires_at < ${now})
              order by coalesce(dispatch_next_at, lease_expires_at)
              limit ${req.batch}
              for update skip locked`),
          );
          if (candidates.length === 0) return [];
          const taken = candidates.map((r) => r.id);
          await tx
            .update(tasks)
            .set({
              dispatchState: 'running',
              leaseOwner: owner,
              leaseExpiresAt: new Date(now.getTime() + RAW_LEASE_MS),
              dispatchAttempts: sql`${tasks.dispatchAttempts} + 1`,
              updatedAt: now,
            })
            .where(inArray(tasks.id, taken));
          return taken;
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

/** N tasks created (bulk), then funded one by one through the tasks service (x402 off, no chain). */
async function fund(s: Served, req: Extract<Request, { type: 'fund' }>): Promise<{ seconds: number }> {
  const ids = await insertTasks(s, req.agentId, req.tasks, false);
  await vacuum(s);
  const t0 = performance.now();
  for (const id of ids) await s.app.services.taskLifecycle.markFunded(id, { amount: BUDGET, txHash: null, actor: 'bench' });
  return { seconds: (performance.now() - t0) / 1000 };
}

// ---------------------------------------------------------------- child: dispatcher / settlement loops

interface RunningLoops {
  stop: boolean;
  startedAt: number;
  cpu: NodeJS.CpuUsage;
  stats: LoopStats;
  dispatchers: Dispatcher[];
  worker: SettlementWorker | null;
  done: Promise<unknown>;
}

async function dispatchLoop(d: Dispatcher, index: number, concurrency: number, loops: RunningLoops): Promise<void> {
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

async function settleLoop(worker: SettlementWorker, loops: RunningLoops): Promise<void> {
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

function startLoops(s: Served, req: Extract<Request, { type: 'loops-start' }>): { startedAt: number } {
  if (s.loops) throw new Error('loops already running');
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
  const loops: RunningLoops = { stop: false, startedAt: Date.now(), cpu: process.cpuUsage(), stats, dispatchers, worker, done: Promise.resolve() };
  const concurrency = s.app.config.DISPATCH_CONCURRENCY;
  loops.done = Promise.all([...dispatchers.map((d, i) => dispatchLoop(d, i, concurrency, loops)), ...(worker ? [settleLoop(worker, loops)] : [])]);
  s.loops = loops;
  return { startedAt: loops.startedAt };
}

async function stopLoops(s: Served): Promise<LoopStats> {
  const loops = s.loops;
  if (!loops) throw new Error('no loops running');
  loops.stop = true;
  await loops.done;
  await Promise.all(loops.dispatchers.map((d) => d.stop(5000)));
  s.loops = null;
  return loops.stats;
}

async function countDone(s: Served, agentId: string, until: 'finished' | 'released'): Promise<number> {
  if (until === 'finished') {
    const [row] = await s.app.db
      .select({ n: sql<number>`count(*)::int` })
      .from(tasks)
      .where(and(eq(tasks.agentId, agentId), sql`${tasks.finishedAt} is not null`));
    return Number(row?.n ?? 0);
  }
  // Settled one way or the other: a task's transfer (its release, or a refund if it failed) is final.
  const [row] = await s.app.db
    .select({ n: sql<number>`count(distinct ${tasks.id})::int` })
    .from(chainTransfers)
    .innerJoin(tasks, eq(tasks.id, chainTransfers.taskId))
    .where(and(eq(tasks.agentId, agentId), inArray(chainTransfers.status, ['confirmed', 'failed'])));
  return Number(row?.n ?? 0);
}

async function waitFor(s: Served, req: Extract<Request, { type: 'wait' }>): Promise<WaitResult> {
  const loops = s.loops;
  if (!loops) throw new Error('no loops running');
  const deadline = Date.now() + req.timeoutMs;
  let done = 0;
  let timedOut = false;
  for (;;) {
    done = await countDone(s, req.agentId, req.until);
    if (done >= req.expected) break;
    if (Date.now() > deadline) {
      timedOut = true;
      break;
    }
    await sleep(WAIT_POLL_MS);
  }
  return { done, timedOut, startedAt: loops.startedAt, endedAt: Date.now(), cpuMs: cpuMsSince(loops.cpu), stats: structuredClone(loops.stats) };
}

const ms = (d: Date | null | undefined) => (d ? d.getTime() : null);

async function report(s: Served, agentId: string): Promise<TaskReport[]> {
  const rows = await s.app.db
    .select({
      id: tasks.id,
      status: tasks.status,
      fundedAt: tasks.fundedAt,
      startedAt: tasks.startedAt,
      finishedAt: tasks.finishedAt,
      attempts: tasks.dispatchAttempts,
      lastError: tasks.lastDispatchError,
      releaseStatus: chainTransfers.status,
      releaseAmount: chainTransfers.amount,
      releaseConfirmedAt: chainTransfers.confirmedAt,
    })
    .from(tasks)
    .leftJoin(chainTransfers, and(eq(chainTransfers.taskId, tasks.id), eq(chainTransfers.kind, 'release')))
    .where(eq(tasks.agentId, agentId));
  const events = await s.app.db
    .select({ taskId: taskEvents.taskId, n: sql<number>`count(*)::int` })
    .from(taskEvents)
    .innerJoin(tasks, eq(tasks.id, taskEvents.taskId))
    .where(and(eq(tasks.agentId, agentId), eq(taskEvents.toStatus, 'completed'), sql`${taskEvents.fromStatus} is distinct from 'completed'`))
    .groupBy(taskEvents.taskId);
  const completed = new Map(events.map((e) => [e.taskId, Number(e.n)]));
  return rows.map((r) => ({
    id: r.id,
    status: r.status,
    fundedAt: ms(r.fundedAt),
    startedAt: ms(r.startedAt),
    finishedAt: ms(r.finishedAt),
    attempts: r.attempts,
    lastError: r.lastError,
    completedEvents: completed.get(r.id) ?? 0,
    releaseStatus: r.releaseStatus,
    releaseAmount: r.releaseAmount === null ? null : r.releaseAmount.toString(),
    releaseConfirmedAt: ms(r.releaseConfirmedAt),
  }));
}

async function paymentCounts(s: Served): Promise<Record<string, number>> {
  const rows = await s.app.db
    .select({ status: payments.status, kind: payments.kind, n: sql<number>`count(*)::int` })
    .from(payments)
    .groupBy(payments.status, payments.kind);
  return Object.fromEntries(rows.map((r) => [`${r.kind}:${r.status}`, Number(r.n)]));
}

async function handle(s: Served, req: Request): Promise<unknown> {
  switch (req.type) {
    case 'register-agent':
      return registerAgent(s, req);
    case 'raw-claim':
      return rawClaim(s, req);
    case 'fund':
      return fund(s, req);
    case 'loops-start':
      return startLoops(s, req);
    case 'wait':
      return waitFor(s, req);
    case 'loops-stop':
      return stopLoops(s);
    case 'report':
      return report(s, req.agentId);
    case 'payments':
      return paymentCounts(s);
    case 'cpu':
      return cpuMsSince({ user: 0, system: 0 });
    case 'warnings':
      return [...s.warnings];
  }
}

async function serve(): Promise<void> {
  const served = await serveApp();
  const closing = {
    app: served.app,
    close: async () => {
      if (served.loops) await stopLoops(served).catch(() => undefined);
      await served.close();
    },
  };
  await serveChild<Request & { id: number }>(closing, (msg) => {
    handle(served, msg).then(
      (value) => tell({ type: 'result', id: msg.id, ok: true, value } satisfies FromChild),
      (err: unknown) =>
        tell({ type: 'result', id: msg.id, ok: false, message: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies FromChild),
    );
  });
}

// ---------------------------------------------------------------- parent: settings

interface Settings {
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

const positiveInt = (name: string, fallback: number, max = Number.MAX_SAFE_INTEGER) => boundedInt(name, fallback, max);

function readSettings(): Settings {
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
function budgetSeconds(s: Settings): number {
  return 600 + Math.ceil(s.tasks / 5) + Math.ceil((s.claimRows * s.claimRepeat) / 25) + 8 * s.paidTasks;
}

// ---------------------------------------------------------------- parent: the instant webhook agent

/** A webhook agent on loopback: verifies every signature, answers 200 with a result at once, counts task ids. */
class InstantAgent {
  readonly assigned = new Map<string, number>();
  badSignatures = 0;
  otherEvents = 0;
  private server: Server | null = null;
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/tasks`;
    return this;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const ok = verifyWebhookSignature(AGENT_SECRET, req.headers[SIGNATURE_HEADER] as string | undefined, raw, Math.floor(Date.now() / 1000));
    if (!ok) {
      this.badSignatures++;
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"bad signature"}');
      return;
    }
    const body = JSON.parse(raw) as { type: string; task: { id: string } };
    if (body.type !== 'task.assigned') {
      this.otherEvents++;
      res.writeHead(200).end();
      return;
    }
    this.assigned.set(body.task.id, (this.assigned.get(body.task.id) ?? 0) + 1);
    const result = { result: { type: 'text', content: `done ${body.task.id}`, metadata: { tokens_used: 1, model: 'instant', duration_seconds: 0 } } };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(result));
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

// ---------------------------------------------------------------- parent: children

interface Child {
  base: string;
  proc: ChildProcess;
  call<T>(req: Request, timeoutMs?: number): Promise<T>;
}

async function startChild(env: Record<string, string>): Promise<Child> {
  const proc = forkSelf(import.meta.url, ['--serve'], { ...env, BENCH_AGENT_SECRET: AGENT_SECRET });
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  let seq = 0;
  const failAll = (why: string) => {
    for (const [id, p] of pending) {
      clearTimeout(p.timer);
      p.reject(new Error(why));
      pending.delete(id);
    }
  };
  proc.on('exit', (code, signal) => failAll(`child exited (${code ?? signal})`));
  const listening = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('child did not start within 120 s')), 120_000);
    proc.on('message', (raw: unknown) => {
      const msg = raw as FromChild;
      if (msg.type === 'listening') {
        clearTimeout(timer);
        resolve(msg.port);
      } else if (msg.type === 'failed') {
        clearTimeout(timer);
        reject(new Error(msg.message));
      } else if (msg.type === 'result') {
        const p = pending.get(msg.id);
        if (!p) return;
        pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.ok) p.resolve(msg.value);
        else p.reject(new Error(msg.message));
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`child exited (${code}) before listening`));
    });
  });
  const port = await listening;
  return {
    base: `http://127.0.0.1:${port}`,
    proc,
    call: <T>(req: Request, timeoutMs = 600_000) =>
      new Promise<T>((resolve, reject) => {
        const id = ++seq;
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`child did not answer "${req.type}" within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
        proc.send({ ...req, id } satisfies ToChild);
      }),
  };
}

async function stopChild(child: Child): Promise<void> {
  await stopProcess(child.proc, 20_000);
}

// ---------------------------------------------------------------- parent: databases

/** Where a child keeps its database: a fresh PGlite directory, or a fresh Postgres database. */
interface DbTarget {
  label: 'PGlite' | 'Postgres';
  env(): Promise<{ env: Record<string, string>; cleanup(): Promise<void> }>;
}

const pgliteTarget: DbTarget = {
  label: 'PGlite',
  env: async () => {
    const dir = makeTempDir('te-bench-dispatch-');
    return {
      env: { BENCH_DB_URL: '', BENCH_DATA_DIR: dir },
      cleanup: async () => removeTempDir(dir),
    };
  },
};

function postgresTarget(create: () => Promise<ThrowawayDb>): DbTarget {
  return {
    label: 'Postgres',
    env: async () => {
      const db = await create();
      return { env: { BENCH_DB_URL: db.url, BENCH_DATA_DIR: '' }, cleanup: () => db.drop() };
    },
  };
}

// ---------------------------------------------------------------- parent: statistics

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const mean = (values: number[]) => (values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN);
const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

// ---------------------------------------------------------------- parent: checks

class Problems {
  readonly list: string[] = [];
  add(where: string, what: string): void {
    this.list.push(`${where}: ${what}`);
    console.error(`  WARNING ${where}: ${what}`);
  }
}

/**
 * Every task of the phase ended completed exactly once (one `completed` event, first attempt,
 * no dispatch error) and the agent saw each id exactly once; with `released`, every release is
 * confirmed on chain.
 */
function checkTasks(where: string, rows: TaskReport[], expected: number, agent: InstantAgent, problems: Problems, released: boolean): void {
  if (rows.length !== expected) problems.add(where, `${rows.length} tasks in the database, expected ${expected}`);
  const bad = rows.filter((r) => r.status !== 'completed' || r.completedEvents !== 1 || r.attempts !== 1 || r.lastError !== null || r.finishedAt === null);
  if (bad.length) {
    const r = bad[0]!;
    problems.add(where, `${bad.length} tasks not completed exactly once on the first attempt (e.g. ${r.id}: ${r.status}, ${r.completedEvents} completed events, attempt ${r.attempts}, error ${r.lastError ?? 'none'})`);
  }
  const seen = rows.map((r) => agent.assigned.get(r.id) ?? 0);
  const notOnce = seen.filter((n) => n !== 1).length;
  if (notOnce) problems.add(where, `${notOnce} tasks not seen exactly once by the agent (${seen.filter((n) => n === 0).length} never, ${seen.filter((n) => n > 1).length} more than once)`);
  if (released) {
    const unpaid = rows.filter((r) => r.releaseStatus !== 'confirmed' || r.releaseConfirmedAt === null);
    if (unpaid.length) problems.add(where, `${unpaid.length} releases not confirmed (e.g. ${unpaid[0]!.releaseStatus ?? 'none'})`);
  } else {
    const missing = rows.filter((r) => r.releaseStatus === null);
    if (missing.length) problems.add(where, `${missing.length} completed tasks have no release planned`);
  }
}

function checkWait(where: string, w: WaitResult, expected: number, problems: Problems): void {
  if (w.timedOut) problems.add(where, `timed out with ${w.done}/${expected} done`);
  for (const e of w.stats.errors.slice(0, 5)) problems.add(where, e);
}

// ---------------------------------------------------------------- parent: measurements

interface Row {
  measure: string;
  db: string;
  n: number;
  seconds: number;
  rate: number;
  latency: string;
  p50: number;
  p99: number;
  cpuPerItem: number;
  /** CPU of the app process over the measured window, in % of one core. */
  cpuPct: number;
}

interface DbResult {
  label: string;
  /** Raw claim rates (rows/s) over all runs, and before / after the dispatch. */
  rawK1: number;
  rawKb: number;
  rawK1Sides: number[];
  rawKbSides: number[];
  dispatchRate: number;
  meanClaimBatch: number;
  settleRate: number;
  rows: Row[];
  paid?: PaidSummary;
}

interface PaidSummary {
  rate: number;
  payment: number;
  dispatch: number;
  settlement: number;
  createMs: number;
  fundMs: number;
}

async function rawRound(child: Child, agentId: string, rows: number, batch: number, repeat: number, where: string, problems: Problems): Promise<RawClaimResult> {
  const r = await child.call<RawClaimResult>({ type: 'raw-claim', agentId, rows, batch, repeat });
  if (r.claimed !== rows * repeat || r.duplicates > 0) problems.add(where, `raw claim k=${batch}: ${r.claimed}/${rows * repeat} claimed, ${r.duplicates} duplicates`);
  console.log(
    `  raw claim k=${batch}: ${repeat} × ${rows} rows in ${fmt(r.seconds, 2)} s = ${fmt(r.rows / r.seconds)} claims/s ` +
      `(${r.transactions} transactions, app CPU ${fmt((r.cpuMs / (r.seconds * 1000)) * 100)} %)`,
  );
  return r;
}

/** One dispatch run: fund, then the loops until every task is finished. */
async function dispatchRun(child: Child, agentId: string, n: number) {
  const funding = await child.call<{ seconds: number }>({ type: 'fund', agentId, tasks: n });
  await child.call({ type: 'loops-start', dispatch: true, settle: false });
  const wait = await child.call<WaitResult>({ type: 'wait', agentId, expected: n, until: 'finished', timeoutMs: 60_000 + n * 200 });
  await child.call({ type: 'loops-stop' });
  const rows = await child.call<TaskReport[]>({ type: 'report', agentId });
  return { funding, wait, rows };
}

async function settleRun(child: Child, agentId: string, n: number) {
  await child.call({ type: 'loops-start', dispatch: false, settle: true });
  const wait = await child.call<WaitResult>({ type: 'wait', agentId, expected: n, until: 'released', timeoutMs: 60_000 + n * 500 });
  await child.call({ type: 'loops-stop' });
  const rows = await child.call<TaskReport[]>({ type: 'report', agentId });
  return { wait, rows };
}

const freshAddress = (): Address => privateKeyToAccount(generatePrivateKey()).address;

async function checkPayout(where: string, chain: DevChain, payout: Address, rows: TaskReport[], problems: Problems): Promise<void> {
  const booked = rows.reduce((sum, r) => sum + (r.releaseStatus === 'confirmed' ? BigInt(r.releaseAmount ?? '0') : 0n), 0n);
  const onChain = await usdcBalance(chain.rpcUrl, payout);
  if (onChain !== booked) problems.add(where, `payout wallet holds ${onChain} on chain, releases confirmed ${booked}`);
}

async function checkWarnings(where: string, child: Child, problems: Problems): Promise<void> {
  const warnings = await child.call<string[]>({ type: 'warnings' });
  if (warnings.length) problems.add(where, `${warnings.length} warn/error log lines, first: ${warnings.slice(0, 3).join(' | ')}`);
}

/** Parts 1 and 2 on one database: raw claim, dispatch, raw claim again, settlement of the releases. */
async function benchUnpaid(target: DbTarget, chain: DevChain, agent: InstantAgent, s: Settings, problems: Problems): Promise<DbResult> {
  const where = `${target.label} dispatch`;
  const { env, cleanup } = await target.env();
  const wallets = resolveWallets(loadConfig({}));
  // The releases of part 2 are paid from the escrow wallet: give it what markFunded booked (no x402 here).
  await mintUsdc(chain, wallets.escrowAddress, BigInt(s.tasks + s.warmupTasks) * BUDGET);
  const child = await startChild({
    ...env,
    BENCH_RPC_URL: chain.rpcUrl,
    BENCH_X402: 'false',
    BENCH_DISPATCH_CONCURRENCY: String(s.concurrency),
    BENCH_DB_POOL_MAX: String(s.poolMax),
  });
  try {
    const reg = (name: string, payout: Address) => child.call<string>({ type: 'register-agent', url: agent.url, payout, name });
    const rawAgent = await reg('Raw claim rows', freshAddress());
    const batch = s.concurrency;
    const raw = async () => [
      await rawRound(child, rawAgent, s.claimRows, 1, s.claimRepeat, where, problems),
      await rawRound(child, rawAgent, s.claimRows, batch, s.claimRepeat * 4, where, problems),
    ];

    console.log(`${target.label}: raw claim over ${s.claimRows} queued rows (warm-up, then measured), ${CLAIMERS} claimers`);
    await rawRound(child, rawAgent, s.claimRows, 1, 1, where, problems);
    const before = await raw();

    console.log(`${target.label}: dispatch warm-up (${s.warmupTasks} tasks), and the settlement of their releases`);
    const warmPayout = freshAddress();
    const warmAgent = await reg('Warm-up agent', warmPayout);
    const warm = await dispatchRun(child, warmAgent, s.warmupTasks);
    checkWait(`${where} warm-up`, warm.wait, s.warmupTasks, problems);
    checkTasks(`${where} warm-up`, warm.rows, s.warmupTasks, agent, problems, false);
    // The settlement worker pays every pending transfer it finds: warm it up on these releases now,
    // before the measured dispatch leaves its own.
    const warmSettle = await settleRun(child, warmAgent, s.warmupTasks);
    checkWait(`${where} settlement warm-up`, warmSettle.wait, s.warmupTasks, problems);
    checkTasks(`${where} settlement warm-up`, warmSettle.rows, s.warmupTasks, agent, problems, true);
    await checkPayout(`${where} settlement warm-up`, chain, warmPayout, warmSettle.rows, problems);

    console.log(`${target.label}: dispatch of ${s.tasks} funded tasks, ${DISPATCHERS} dispatchers × ${s.concurrency} slots`);
    const payout = freshAddress();
    const mainAgent = await reg('Instant agent', payout);
    const main = await dispatchRun(child, mainAgent, s.tasks);
    checkWait(where, main.wait, s.tasks, problems);
    checkTasks(where, main.rows, s.tasks, agent, problems, false);
    const lastFinish = Math.max(...main.rows.map((r) => r.finishedAt ?? 0));
    const dispatchSeconds = (lastFinish - main.wait.startedAt) / 1000;
    const dispatchRate = s.tasks / dispatchSeconds;
    const fundedToDone = main.rows.filter((r) => r.fundedAt && r.finishedAt).map((r) => r.finishedAt! - r.fundedAt!);
    const claimedToDone = main.rows.filter((r) => r.startedAt && r.finishedAt).map((r) => r.finishedAt! - r.startedAt!);
    const st = main.wait.stats;
    console.log(
      `  ${fmt(dispatchRate)} tasks/s (${fmt(dispatchSeconds, 2)} s, app CPU ${fmt((main.wait.cpuMs / (main.wait.endedAt - main.wait.startedAt)) * 100)} %); ` +
        `funding before it: ${fmt(s.tasks / main.funding.seconds)} markFunded/s sequential; ` +
        `${st.claimCalls} claim transactions, ${st.nonEmptyClaims} non-empty, ${fmt(st.claimed / Math.max(1, st.nonEmptyClaims), 2)} tasks per non-empty claim, ` +
        `claimed per dispatcher ${Array.from({ length: DISPATCHERS }, (_, i) => st.claimedBy[i] ?? 0).join(' / ')}`,
    );

    console.log(`${target.label}: raw claim again (after the dispatch)`);
    const after = await raw();

    console.log(`${target.label}: settlement of the releases on anvil (1 worker)`);
    const settle = await settleRun(child, mainAgent, s.tasks);
    checkWait(`${where} settlement`, settle.wait, s.tasks, problems);
    checkTasks(`${where} settlement`, settle.rows, s.tasks, agent, problems, true);
    await checkPayout(`${where} settlement`, chain, payout, settle.rows, problems);
    const lastConfirm = Math.max(...settle.rows.map((r) => r.releaseConfirmedAt ?? 0));
    const settleSeconds = (lastConfirm - settle.wait.startedAt) / 1000;
    const settleRate = s.tasks / settleSeconds;
    console.log(`  ${fmt(settleRate)} releases/s (${fmt(settleSeconds, 2)} s)`);
    await checkWarnings(where, child, problems);

    const rawRow = (k: number, rounds: RawClaimResult[]): Row => {
      const secs = rounds.reduce((a, r) => a + r.seconds, 0);
      const n = rounds.reduce((a, r) => a + r.rows, 0);
      return {
        measure: `raw claim k=${k}, ${CLAIMERS} claimers`,
        db: target.label,
        n,
        seconds: secs,
        rate: n / secs,
        latency: '',
        p50: NaN,
        p99: NaN,
        cpuPerItem: rounds.reduce((a, r) => a + r.cpuMs, 0) / n,
        cpuPct: (rounds.reduce((a, r) => a + r.cpuMs, 0) / (secs * 1000)) * 100,
      };
    };
    const rows: Row[] = [
      rawRow(1, [before[0]!, after[0]!]),
      rawRow(batch, [before[1]!, after[1]!]),
      {
        measure: `dispatch, ${DISPATCHERS}×${s.concurrency} slots, instant agent`,
        db: target.label,
        n: s.tasks,
        seconds: dispatchSeconds,
        rate: dispatchRate,
        latency: 'funded→completed',
        p50: percentile(fundedToDone, 50),
        p99: percentile(fundedToDone, 99),
        cpuPerItem: main.wait.cpuMs / s.tasks,
        cpuPct: (main.wait.cpuMs / (main.wait.endedAt - main.wait.startedAt)) * 100,
      },
      {
        measure: '  (same run)',
        db: target.label,
        n: s.tasks,
        seconds: NaN,
        rate: NaN,
        latency: 'claimed→completed',
        p50: percentile(claimedToDone, 50),
        p99: percentile(claimedToDone, 99),
        cpuPerItem: NaN,
        cpuPct: NaN,
      },
      {
        measure: 'settlement of those releases, 1 worker',
        db: target.label,
        n: s.tasks,
        seconds: settleSeconds,
        rate: settleRate,
        // The releases waited for this worker since the dispatch (raw-claim rounds ran in between): no latency.
        latency: '',
        p50: NaN,
        p99: NaN,
        cpuPerItem: settle.wait.cpuMs / s.tasks,
        cpuPct: (settle.wait.cpuMs / (settle.wait.endedAt - settle.wait.startedAt)) * 100,
      },
    ];
    return {
      label: target.label,
      rawK1: rows[0]!.rate,
      rawKb: rows[1]!.rate,
      rawK1Sides: [before[0]!, after[0]!].map((r) => r.rows / r.seconds),
      rawKbSides: [before[1]!, after[1]!].map((r) => r.rows / r.seconds),
      dispatchRate,
      meanClaimBatch: st.claimed / Math.max(1, st.nonEmptyClaims),
      settleRate,
      rows,
    };
  } finally {
    await stopChild(child);
    await cleanup();
  }
}

// ---------------------------------------------------------------- parent: part 3, the paid flow

function payFetch(account: PrivateKeyAccount): typeof fetch {
  const client = x402ClientFor(account);
  client.setSpendControls({ maxAmountPerPayment: false });
  return wrapFetchWithPayment(fetch, client);
}

interface ClientTiming {
  taskId: string;
  createStart: number;
  createMs: number;
  fundMs: number;
}

/** `count` hires over `lanes` concurrent paying wallets: paid create, then paid fund. */
async function hire(base: string, agentId: string, count: number, lanes: number, failures: string[]): Promise<ClientTiming[]> {
  const timings: ClientTiming[] = [];
  let next = 0;
  const body = JSON.stringify({ agent_id: agentId, description: 'Write a blurb', budget: { amount: BUDGET.toString(), currency: 'USDC', chain: 'base' } });
  await Promise.all(
    Array.from({ length: Math.min(lanes, count) }, async (_, lane) => {
      const pay = payFetch(demo(lane));
      while (next < count) {
        next++;
        const createStart = Date.now();
        const created = await pay(`${base}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        const createdText = await created.text();
        const createEnd = Date.now();
        if (created.status !== 201) {
          failures.push(`create ${created.status}: ${createdText.slice(0, 300)}`);
          continue;
        }
        const taskId = String((JSON.parse(createdText) as { task_id: string }).task_id);
        const funded = await pay(`${base}/v1/tasks/${taskId}/fund`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ amount: BUDGET.toString() }),
        });
        const fundedText = await funded.text();
        if (funded.status !== 200) {
          failures.push(`fund ${funded.status}: ${fundedText.slice(0, 300)}`);
          continue;
        }
        timings.push({ taskId, createStart, createMs: createEnd - createStart, fundMs: Date.now() - createEnd });
      }
    }),
  );
  return timings;
}

async function paidRun(child: Child, agentId: string, count: number, lanes: number, where: string, agent: InstantAgent, problems: Problems) {
  const failures: string[] = [];
  const timings = await hire(child.base, agentId, count, lanes, failures);
  for (const f of failures.slice(0, 5)) problems.add(where, f);
  if (failures.length) problems.add(where, `${failures.length} paid requests failed`);
  const wait = await child.call<WaitResult>({ type: 'wait', agentId, expected: count, until: 'released', timeoutMs: 60_000 + count * 2000 });
  checkWait(where, wait, count, problems);
  const rows = await child.call<TaskReport[]>({ type: 'report', agentId });
  checkTasks(where, rows, count, agent, problems, true);
  return { timings, rows };
}

/** Part 3 on one database: the whole hire, paid with the stock @x402/fetch client. */
async function benchPaid(target: DbTarget, chain: DevChain, agent: InstantAgent, s: Settings, problems: Problems): Promise<{ row: Row; summary: PaidSummary }> {
  const where = `${target.label} paid`;
  const { env, cleanup } = await target.env();
  const child = await startChild({
    ...env,
    BENCH_RPC_URL: chain.rpcUrl,
    BENCH_X402: 'true',
    BENCH_DISPATCH_CONCURRENCY: String(s.concurrency),
    BENCH_DB_POOL_MAX: String(s.poolMax),
  });
  try {
    const lanes = Math.min(s.paidLanes, s.paidTasks);
    const reg = (name: string, payout: Address) => child.call<string>({ type: 'register-agent', url: agent.url, payout, name });
    await child.call({ type: 'loops-start', dispatch: true, settle: true });

    console.log(`${target.label}: paid warm-up (${lanes} hires)`);
    const warmPayout = freshAddress();
    const warmAgent = await reg('Paid warm-up agent', warmPayout);
    const warm = await paidRun(child, warmAgent, lanes, lanes, `${where} warm-up`, agent, problems);
    await checkPayout(`${where} warm-up`, chain, warmPayout, warm.rows, problems);

    console.log(`${target.label}: ${s.paidTasks} paid hires over ${lanes} wallets (create → fund → dispatch → complete → release confirmed)`);
    const payout = freshAddress();
    const mainAgent = await reg('Paid instant agent', payout);
    const cpuBefore = await child.call<number>({ type: 'cpu' });
    const main = await paidRun(child, mainAgent, s.paidTasks, lanes, where, agent, problems);
    const appCpuMs = (await child.call<number>({ type: 'cpu' })) - cpuBefore;
    await child.call({ type: 'loops-stop' });
    await checkPayout(where, chain, payout, main.rows, problems);

    const paymentsByKind = await child.call<Record<string, number>>({ type: 'payments' });
    const hires = s.paidTasks + lanes;
    if ((paymentsByKind['call_fee:booked'] ?? 0) !== hires || (paymentsByKind['escrow_funding:booked'] ?? 0) !== hires) {
      problems.add(where, `payments ${JSON.stringify(paymentsByKind)}, expected ${hires} settled call fees (create) and ${hires} settled escrow fundings`);
    }
    if (Object.keys(paymentsByKind).some((k) => k.endsWith(':claimed'))) problems.add(where, `payments left claimed: ${JSON.stringify(paymentsByKind)}`);
    await checkWarnings(where, child, problems);

    const byId = new Map(main.rows.map((r) => [r.id, r]));
    const t0 = Math.min(...main.timings.map((t) => t.createStart));
    const lastConfirm = Math.max(...main.rows.map((r) => r.releaseConfirmedAt ?? 0));
    const seconds = (lastConfirm - t0) / 1000;
    const segments = main.timings.flatMap((t) => {
      const r = byId.get(t.taskId);
      if (!r?.fundedAt || !r.finishedAt || !r.releaseConfirmedAt) return [];
      return [{ payment: r.fundedAt - t.createStart, dispatch: r.finishedAt - r.fundedAt, settlement: r.releaseConfirmedAt - r.finishedAt, total: r.releaseConfirmedAt - t.createStart }];
    });
    const summary: PaidSummary = {
      rate: s.paidTasks / seconds,
      payment: mean(segments.map((x) => x.payment)),
      dispatch: mean(segments.map((x) => x.dispatch)),
      settlement: mean(segments.map((x) => x.settlement)),
      createMs: mean(main.timings.map((t) => t.createMs)),
      fundMs: mean(main.timings.map((t) => t.fundMs)),
    };
    console.log(`  ${fmt(summary.rate, 1)} hires/s end to end (${fmt(seconds, 2)} s)`);
    const totals = segments.map((x) => x.total);
    return {
      row: {
        measure: `paid hire end to end, ${lanes} wallets`,
        db: target.label,
        n: s.paidTasks,
        seconds,
        rate: summary.rate,
        latency: 'create→release confirmed',
        p50: percentile(totals, 50),
        p99: percentile(totals, 99),
        cpuPerItem: appCpuMs / s.paidTasks,
        cpuPct: (appCpuMs / (seconds * 1000)) * 100,
      },
      summary,
    };
  } finally {
    await stopChild(child);
    await cleanup();
  }
}

// ---------------------------------------------------------------- parent: report

function printTable(rows: Row[]): void {
  const head = ['measure', 'database', 'n', 'seconds', 'per s', 'latency', 'p50 ms', 'p99 ms', 'app CPU ms/item', 'app CPU %'];
  const body = rows.map((r) => [
    r.measure,
    r.db,
    String(r.n),
    fmt(r.seconds, 2),
    fmt(r.rate, r.rate < 100 ? 1 : 0),
    r.latency || '-',
    fmt(r.p50, 1),
    fmt(r.p99, 1),
    fmt(r.cpuPerItem, 2),
    fmt(r.cpuPct),
  ]);
  printMarkdownTable(head, body, new Set([0, 1, 5]));
}

function printRatios(results: DbResult[], s: Settings): void {
  console.log('\ndispatcher vs bare claim (same run; raw rate = all raw runs, before and after the dispatch, pooled):');
  for (const r of results) {
    const raw1 = r.rawK1;
    const rawB = r.rawKb;
    const over = (raw: number) => (1 / r.dispatchRate - 1 / raw) * 1000;
    console.log(
      `  ${r.label.padEnd(8)} raw k=1 ${fmt(raw1)}/s (before ${fmt(r.rawK1Sides[0]!)}, after ${fmt(r.rawK1Sides[1]!)}), dispatch ${fmt(r.dispatchRate)} tasks/s → ` +
        `dispatch/raw ${fmt(r.dispatchRate / raw1, 3)}, overhead ${fmt(over(raw1), 2)} ms/task`,
    );
    console.log(
      `  ${''.padEnd(8)} raw k=${s.concurrency} ${fmt(rawB)}/s (before ${fmt(r.rawKbSides[0]!)}, after ${fmt(r.rawKbSides[1]!)}) → dispatch/raw ${fmt(r.dispatchRate / rawB, 4)}, ` +
        `overhead ${fmt(over(rawB), 2)} ms/task; the dispatchers claimed ${fmt(r.meanClaimBatch, 2)} tasks per non-empty claim`,
    );
  }
  const [a, b] = results;
  if (a && b) {
    console.log(
      `\n${b.label}/${a.label}: raw k=1 ${fmt(b.rawK1 / a.rawK1, 2)}, raw k=${s.concurrency} ${fmt(b.rawKb / a.rawKb, 2)}, ` +
        `dispatch ${fmt(b.dispatchRate / a.dispatchRate, 2)}, settlement ${fmt(b.settleRate / a.settleRate, 2)}` +
        (a.paid && b.paid ? `, paid hire ${fmt(b.paid.rate / a.paid.rate, 2)}` : ''),
    );
  }
  const paid = results.filter((r) => r.paid);
  if (paid.length) {
    console.log('\npaid hire, where the time goes (mean per task; payment = create start → funded_at, dispatch = funded_at → finished_at, settlement = finished_at → release confirmed_at):');
    for (const r of paid) {
      const p = r.paid!;
      const total = p.payment + p.dispatch + p.settlement;
      const pct = (x: number) => `${fmt((x / total) * 100)} %`;
      console.log(
        `  ${r.label.padEnd(8)} payment ${fmt(p.payment)} ms (${pct(p.payment)}; create call ${fmt(p.createMs)} ms, fund call ${fmt(p.fundMs)} ms), ` +
          `dispatch ${fmt(p.dispatch)} ms (${pct(p.dispatch)}), settlement ${fmt(p.settlement)} ms (${pct(p.settlement)}); ` +
          `dispatch rate / paid rate ${fmt(r.dispatchRate / p.rate, 1)}×`,
      );
    }
  }
}

function printIncluded(s: Settings): void {
  console.log(
    `\nincluded: the dispatch figure runs from the dispatchers' start to the last finished_at: claim (candidates + per-agent count + markStarted), ` +
      `agent row read, SSRF check, the signed POST to the agent and its answer, markCompleted (transition, agent stats, release planned in the outbox with its ledger ` +
      `movements). Not included: funding (all ${s.tasks} were funded before, so funded→completed includes waiting in that backlog) and the chain ` +
      `(x402 off; the releases stay pending until the separate settlement row pays them on anvil, 1 worker, automine, 1 confirmation). ` +
      `The paid row includes everything: two x402 payments settled on anvil per hire, dispatch, release confirmed. ` +
      `Loops: runOnce again at once after a claim, ${AT_CAPACITY_SLEEP_MS} ms sleep when all slots are busy, ${EMPTY_CLAIM_SLEEP_MS} ms after an empty claim; ` +
      `pool ${s.poolMax} connections on Postgres. app CPU: the child process running the app, its database client (PGlite: the database ` +
      `itself) and the dispatchers, in % of one core over the measured window; Postgres's own CPU is not counted.`,
  );
}

// ---------------------------------------------------------------- parent: main

let chainToStop: DevChain | undefined;

function killAll(): void {
  killChildren();
  void chainToStop?.stop();
  for (const dir of [...tempDirs]) removeTempDir(dir);
  for (const db of databases) void db.drop().catch(() => undefined);
}

async function main(): Promise<void> {
  const s = readSettings();
  startWatchdog(budgetSeconds(s) * 1000, { kill: killAll, exitDelayMs: 2000, signals: ['SIGINT', 'SIGTERM'] });
  console.log(
    `bench: ${s.tasks} tasks (warm-up ${s.warmupTasks}), raw claim over ${s.claimRows} rows (${2 * s.claimRepeat} runs at k=1, ${8 * s.claimRepeat} at k=${s.concurrency}), ` +
      `${s.paidTasks} paid hires; ${DISPATCHERS} dispatchers × ${s.concurrency} slots; node ${process.version}, ${cpus().length} cpus; ` +
      `budget ${budgetSeconds(s)} s`,
  );
  const problems = new Problems();
  const agent = await new InstantAgent().start();
  const t0 = Date.now();
  const chain = await startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] });
  chainToStop = chain;
  console.log(`anvil ${chain.rpcUrl} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; agent ${agent.url}`);

  const admin = await postgresAdmin(s.pgUrl);
  try {
    const targets: DbTarget[] = [pgliteTarget];
    if (typeof admin === 'string') console.log(`postgres: skipped — ${admin}`);
    else {
      console.log(`postgres: throwaway databases on ${redactUrl(s.pgUrl)}`);
      targets.push(postgresTarget(admin.create));
    }
    const results: DbResult[] = [];
    const rows: Row[] = [];
    for (const target of targets) {
      const r = await benchUnpaid(target, chain, agent, s, problems);
      const paid = await benchPaid(target, chain, agent, s, problems);
      r.paid = paid.summary;
      results.push(r);
      rows.push(...r.rows, paid.row);
    }
    if (agent.badSignatures || agent.otherEvents) {
      problems.add('agent', `${agent.badSignatures} requests with a bad signature, ${agent.otherEvents} other events (cancellations?)`);
    }
    console.log('');
    printTable(rows);
    printRatios(results, s);
    printIncluded(s);
  } finally {
    if (typeof admin !== 'string') {
      for (const db of [...databases]) await db.drop().catch((err: unknown) => problems.add('cleanup', String(err)));
      await admin.end().catch(() => undefined);
    }
    await agent.stop();
    await chain.stop();
    chainToStop = undefined;
  }
  if (problems.list.length) {
    for (const p of problems.list) console.error(`WARNING ${p}`);
    console.error('figures are not valid');
    process.exitCode = 1;
  }
}

runBench(process.argv.includes('--serve') ? serve : undefined, main, killAll);
