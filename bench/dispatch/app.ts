/**
 * Child side: the real app of one phase and what the parent asks of its database (the agent,
 * tasks inserted in bulk, funding, the report of a phase, the payments).
 */
import { and, eq, sql } from 'drizzle-orm';
import { RegisterAgentBody } from '../../src/agents/schemas.js';
import { resolveWallets } from '../../src/chain/wallets.js';
import { chainTransfers, dispatchJobs, payments, taskEvents, tasks } from '../../src/db/schema.js';
import { newId } from '../../src/ids.js';
import { freshAddress, serveApp, type Served } from '../lib.js';
import { AGENT_SECRET, BUDGET, type Request, type TaskReport } from './protocol.js';

export interface ChildApp extends Served {
  /** The app's warn+ log lines (a run with any is invalid). */
  warnings: string[];
}

/** One warn+ log line of pino's JSON, as a short text. */
function warningOf(line: string): string | undefined {
  try {
    const o = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string }; error?: string; reason?: string };
    if ((o.level ?? 0) < 40) return undefined;
    return `${o.msg ?? '?'}${o.err?.message ? `: ${o.err.message}` : ''}${o.error ? `: ${o.error}` : ''}${o.reason ? `: ${o.reason}` : ''}`;
  } catch {
    return line.slice(0, 300);
  }
}

/**
 * The real app on the parent's anvil (BENCH_RPC_URL), on Postgres (BENCH_DB_URL) or in the
 * parent's PGlite directory (BENCH_DATA_DIR); x402 by BENCH_X402; warn+ log lines are collected,
 * nothing else is logged.
 */
export async function serveDispatchApp(): Promise<ChildApp> {
  const rpcUrl = process.env.BENCH_RPC_URL;
  if (!rpcUrl) throw new Error('BENCH_RPC_URL is not set');
  const warnings: string[] = [];
  const served = await serveApp({
    dirPrefix: 'te-bench-dispatch-',
    dataDir: process.env.BENCH_DATA_DIR || undefined,
    config: {
      LOG_LEVEL: 'warn',
      DB_POOL_MAX: process.env.BENCH_DB_POOL_MAX,
      X402_ENABLED: process.env.BENCH_X402 === 'true' ? 'true' : 'false',
      DISPATCH_CONCURRENCY: process.env.BENCH_DISPATCH_CONCURRENCY,
      DISPATCH_PER_AGENT_CONCURRENCY: '1000',
    },
    chainRpcUrl: rpcUrl,
    logStream: {
      write(line: string) {
        const w = warningOf(line);
        if (w !== undefined) warnings.push(w);
      },
    },
  });
  return { ...served, warnings };
}

/** The instant webhook agent, registered through the agents service (online, paying out to `payout`). */
export async function registerAgent(s: ChildApp, req: Extract<Request, { type: 'register-agent' }>): Promise<string> {
  const input = RegisterAgentBody.parse({
    name: req.name,
    description: 'Instant webhook agent of the dispatch benchmark',
    capabilities: ['copywriting'],
    pricing: { base_rate: '500000' },
    payout_address: req.payout,
    availability: 'online',
    runtime: { kind: 'webhook', url: req.url, secret: AGENT_SECRET, timeout_ms: 30_000 },
  });
  const agent = await s.app.services.agents.register(freshAddress(), input);
  return agent.id;
}

/** Task rows inserted in bulk, as `create` (+ `markFunded` when queued) would leave them. */
export async function insertTasks(s: ChildApp, agentId: string, n: number, queued: boolean): Promise<string[]> {
  const now = new Date();
  const escrow = resolveWallets(s.app.config).escrowAddress.toLowerCase();
  const payer = freshAddress().toLowerCase();
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
        ...(queued ? { fundedAmount: BUDGET, fundedAt: now } : {}),
      };
    });
    await s.app.db.insert(tasks).values(rows);
    if (queued) {
      await s.app.db
        .insert(dispatchJobs)
        .values(rows.map((r) => ({ taskId: r.id, agentId, state: 'queued' as const, nextAt: now, createdAt: now, updatedAt: now })));
    }
  }
  return ids;
}

export async function vacuum(s: ChildApp): Promise<void> {
  await s.app.db.execute(sql`vacuum analyze tasks`);
  await s.app.db.execute(sql`vacuum analyze dispatch_jobs`);
}

/** N tasks created (bulk), then funded one by one through the tasks service (x402 off, no chain). */
export async function fund(s: ChildApp, req: Extract<Request, { type: 'fund' }>): Promise<{ seconds: number }> {
  const ids = await insertTasks(s, req.agentId, req.tasks, false);
  await vacuum(s);
  const t0 = performance.now();
  for (const id of ids) await s.app.services.taskLifecycle.markFunded(id, { amount: BUDGET, txHash: null, actor: 'bench' });
  return { seconds: (performance.now() - t0) / 1000 };
}

const ms = (d: Date | null | undefined) => (d ? d.getTime() : null);

/** Every task of the agent with its release and its number of transitions into `completed`. */
export async function report(s: ChildApp, agentId: string): Promise<TaskReport[]> {
  const rows = await s.app.db
    .select({
      id: tasks.id,
      status: tasks.status,
      fundedAt: tasks.fundedAt,
      startedAt: tasks.startedAt,
      finishedAt: tasks.finishedAt,
      attempts: dispatchJobs.attempts,
      lastError: dispatchJobs.lastError,
      releaseStatus: chainTransfers.status,
      releaseAmount: chainTransfers.amount,
      releaseConfirmedAt: chainTransfers.confirmedAt,
    })
    .from(tasks)
    .leftJoin(dispatchJobs, eq(dispatchJobs.taskId, tasks.id))
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
    attempts: r.attempts ?? 0,
    lastError: r.lastError,
    completedEvents: completed.get(r.id) ?? 0,
    releaseStatus: r.releaseStatus,
    releaseAmount: r.releaseAmount === null ? null : r.releaseAmount.toString(),
    releaseConfirmedAt: ms(r.releaseConfirmedAt),
  }));
}

/** Payments by `kind:status`. */
export async function paymentCounts(s: ChildApp): Promise<Record<string, number>> {
  const rows = await s.app.db
    .select({ status: payments.status, kind: payments.kind, n: sql<number>`count(*)::int` })
    .from(payments)
    .groupBy(payments.status, payments.kind);
  return Object.fromEntries(rows.map((r) => [`${r.kind}:${r.status}`, Number(r.n)]));
}
