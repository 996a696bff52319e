/**
 * The crash-point soak (the acceptance test of the money path), shared by `bench/soak.ts` and
 * `test/soak.test.ts`. One anvil and one Postgres database for the whole run; each iteration:
 *
 *  1. the service process (ROLE=all) runs a seeded random workload: payers hire agents, fund
 *     tasks (sometimes several authorizations at once), poll, read results, cancel, dispute;
 *  2. it is killed with SIGKILL, either after a random delay or at a named crash point
 *     (`FAILPOINTS=payment:after-settle:<purpose>`: a payment moved on chain, nothing recorded;
 *     `microfee:after-send` / `microfee:after-receipt`: a batch of deferred micro-fees moved on
 *     chain, nothing booked);
 *  3. the next service process (the restart) resolves the wreckage: the soak waits until nothing
 *     is in flight, then checks every invariant (invariants.ts) and records the figures.
 */
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pickFreePort, startDevChain, type DevChain } from '../../src/chain/dev/devchain.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { scratchDatabase, type ScratchDatabase } from '../../test/helpers/service-process.js';
import { SoakAgents, type AgentCallStats } from './agents.js';
import { bookFigures, checkInvariants, describeInFlight, inFlight, quiesce, type BookFigures, type InFlight } from './invariants.js';
import { mulberry32, seedOf } from './prng.js';
import { RequestStats } from './requests.js';
import { emptyLogFigures, serviceOrigin, startSoakService, type LogFigures, type ServiceSettings, type SoakService } from './service.js';
import { fundedPayers, type Payer } from './wallets.js';
import { Lane, PURPOSES, type Purpose, type WorkloadSettings } from './workload.js';

export interface SoakOptions {
  iterations: number;
  seed: number;
  /** Paying wallets, one workload lane each (default 4). */
  payers?: number;
  /** Share of iterations killed at a named crash point rather than after a random delay (default 0.5). */
  failpointShare?: number;
  /** A delay kill lands in [0, this] ms into the workload (default 2000). */
  killDelayMaxMs?: number;
  /** A crash point not reached by then is replaced by a kill at this time (default 3000). */
  workloadMaxMs?: number;
  /** timeout_seconds of the tasks (default [2, 6]). */
  taskTimeoutSeconds?: readonly [number, number];
  /** How long the restarted service may take to resolve an iteration's wreckage (default 120 s). */
  quiesceTimeoutMs?: number;
  /** Postgres to create the scratch database on (default DATABASE_URL or the local test server). */
  databaseUrl?: string;
  /** Where the service logs go (default a new directory under the OS temp dir). */
  logDir?: string;
  /** Stop after the iteration that ends past this much wall time (default: no limit). */
  timeBudgetMs?: number;
  /** Keep the scratch database (default: drop it). */
  keepDatabase?: boolean;
  /** The command that reruns this soak, given the iterations run (default: npm run soak with the seed). */
  rerun?: (iterations: number) => string;
  /** Progress lines (default none). */
  log?: (line: string) => void;
}

export type KillPlan =
  | { kind: 'delay'; delayMs: number }
  | { kind: 'failpoint'; purpose: Purpose }
  | { kind: 'microfee'; point: (typeof MICROFEE_POINTS)[number] };

/** The crash points of the micro-fee batch settler (payments/micro-fee-settler.ts). */
export const MICROFEE_POINTS = ['after-send', 'after-receipt'] as const;

export interface IterationRecord {
  iteration: number;
  plan: KillPlan;
  /** `delay`, `failpoint:<purpose>` (it fired) or `fallback:<purpose>` (not reached; killed at the end of the workload). */
  killKind: string;
  /** The process died by SIGKILL (a kill point). */
  killed: boolean;
  exit: { code: number | null; signal: string | null };
  workloadMs: number;
  requests: { sent: number; answered: number; failed: number };
  /** What was in flight right after the kill (seen by the restarted service's first look). */
  wreckage: InFlight;
  restartMs: number;
  quiesceMs: number;
  quiesced: boolean;
  lost: bigint;
  problems: string[];
  logFile: string;
}

export interface SoakReport {
  seed: number;
  /** Iterations run (fewer than planned when the time budget ran out). */
  iterations: number;
  planned: number;
  wallMs: number;
  kills: { total: number; byKind: Record<string, number> };
  requests: RequestStats;
  agentCalls: AgentCallStats;
  books: BookFigures;
  logs: LogFigures;
  /** Atomic units lost at the last check, and the worst of every check. */
  lostFinal: bigint;
  lostWorst: bigint;
  /** Atomic units owed and given up (failed chain transfers) at the last check. */
  unpaidFinal: bigint;
  records: IterationRecord[];
  /** Every violation, prefixed with the iteration after which it was seen. */
  violations: string[];
  logDir: string;
  databaseUrl: string;
  rerun: string;
}

const ADMIN_KEY = 'soak-admin-key-0123456789abcdef';
const PAYER_USDC = 1_000_000_000n; // 1000 USDC each
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function killPlan(seed: number, iteration: number, failpointShare: number, killDelayMaxMs: number): KillPlan {
  const rng = mulberry32(seedOf(seed, iteration, 'kill'));
  if (rng.chance(failpointShare)) {
    return rng.chance(0.25) ? { kind: 'microfee', point: rng.pick(MICROFEE_POINTS) } : { kind: 'failpoint', purpose: rng.pick(PURPOSES) };
  }
  return { kind: 'delay', delayMs: rng.int(0, killDelayMaxMs) };
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const o = {
    payers: 4,
    failpointShare: 0.5,
    killDelayMaxMs: 2000,
    workloadMaxMs: 3000,
    taskTimeoutSeconds: [2, 6] as const,
    quiesceTimeoutMs: 120_000,
    log: () => undefined,
    ...options,
  };
  const started = Date.now();
  const logDir = o.logDir ?? path.join(tmpdir(), `task-escrow-soak-${o.seed}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(logDir, { recursive: true });
  const stats = new RequestStats();
  const logs = emptyLogFigures();
  const records: IterationRecord[] = [];
  const violations: string[] = [];
  const seenProblems = new Set<string>();
  const workload: WorkloadSettings = { taskTimeoutSeconds: o.taskTimeoutSeconds, budget: [20_000, 200_000], adminKey: ADMIN_KEY };

  let chain: DevChain | undefined;
  let scratch: ScratchDatabase | undefined;
  let database: Database | undefined;
  let agents: SoakAgents | undefined;
  let service: SoakService | undefined;
  let lostFinal = 0n;
  let lostWorst = 0n;
  let unpaidFinal = 0n;
  try {
    [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('soak', o.databaseUrl)]);
    const port = await pickFreePort();
    const origin = serviceOrigin(port);
    const settings: ServiceSettings = { databaseUrl: scratch.url, rpcUrl: chain.rpcUrl, port, adminKey: ADMIN_KEY, logDir };
    const payers: Payer[] = await fundedPayers(chain, o.payers, PAYER_USDC);
    agents = await new SoakAgents(o.seed, origin).start();
    o.log(`soak: seed ${o.seed}, ${o.iterations} iterations, ${o.payers} payers, service on ${origin.baseUrl}, logs in ${logDir}`);

    const failpointsOf = (plan: KillPlan | undefined) =>
      plan?.kind === 'failpoint' ? `payment:after-settle:${plan.purpose}` : plan?.kind === 'microfee' ? `microfee:${plan.point}` : undefined;
    const plans = Array.from({ length: o.iterations }, (_, i) => killPlan(o.seed, i + 1, o.failpointShare, o.killDelayMaxMs));
    service = await startSoakService(settings, 'service-001', failpointsOf(plans[0]), logs);
    database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 4 });
    await agents.register();
    const parties = { rpcUrl: chain.rpcUrl, payers, agents: agents.all };

    for (let i = 1; i <= o.iterations; i++) {
      const plan = plans[i - 1]!;
      const current: SoakService = service!;
      // ── the workload, and the kill ───────────────────────────────────────
      let alive = true;
      const iterationStats = new RequestStats();
      const workStart = Date.now();
      const exit = current.closed.then((e) => {
        alive = false;
        return e;
      });
      const lanes = payers.map((payer, lane) =>
        new Lane(
          {
            iteration: i,
            baseUrl: origin.baseUrl,
            db: database!.db,
            agents: agents!,
            stats: iterationStats,
            settings: workload,
            alive: () => alive,
            until: workStart + o.workloadMaxMs,
          },
          payer,
          mulberry32(seedOf(o.seed, i, 'lane', lane)),
        ).run(lane === 0 && plan.kind === 'failpoint' ? plan.purpose : undefined),
      );
      const waitMs = plan.kind === 'delay' ? plan.delayMs : o.workloadMaxMs;
      const diedFirst = await Promise.race([exit.then(() => true), sleep(waitMs).then(() => false)]);
      const workloadMs = Date.now() - workStart;
      alive = false;
      if (!diedFirst) await current.process.kill();
      const ended = await exit;
      const laneOutcomes = await Promise.allSettled(lanes);
      stats.add(iterationStats);
      const killed = ended.signal === 'SIGKILL';
      const pointName = plan.kind === 'failpoint' ? plan.purpose : plan.kind === 'microfee' ? `microfee:${plan.point}` : '';
      const killKind = plan.kind === 'delay' ? 'delay' : diedFirst && killed ? `failpoint:${pointName}` : `fallback:${pointName}`;
      const problems: string[] = [];
      if (diedFirst && !(plan.kind !== 'delay' && killed)) {
        problems.push(`the service died on its own (${JSON.stringify(ended)}) before the kill; see ${current.logFile}`);
      }
      for (const l of laneOutcomes) if (l.status === 'rejected') problems.push(`a workload lane crashed (a bug of the soak): ${String(l.reason)}`);
      for (const e of iterationStats.serverErrors) {
        problems.push(`HTTP ${e.status} on ${e.label} (request ${e.requestId ?? '?'}, code ${e.code ?? '?'}): ${e.body.slice(0, 300)}`);
      }

      // ── the restart resolves the wreckage ────────────────────────────────
      const outOfTime = o.timeBudgetMs !== undefined && Date.now() - started > o.timeBudgetMs;
      // undefined after the last iteration: a final service without crash points
      const next = outOfTime ? undefined : plans[i];
      const restartStart = Date.now();
      const name = `service-${String(i + 1).padStart(3, '0')}`;
      // The batch settler's crash points would fire while the restart settles the wreckage's own
      // micro-fees: that restart runs without them, and a fresh process is armed after the checks.
      const armNow = next?.kind !== 'microfee';
      try {
        service = await startSoakService(settings, name, armNow ? failpointsOf(next) : undefined, logs);
      } catch (err) {
        service = undefined;
        violations.push(`iteration ${i} (${killKind}): the restarted service did not start (log ${path.join(logDir, name)}.log): ${String(err)}`);
        o.log(`soak: the restart after iteration ${i} failed; stopping`);
        break;
      }
      const restartMs = Date.now() - restartStart;
      const wreckage = await inFlight(database.db);
      const q = await quiesce(database.db, o.quiesceTimeoutMs);
      if (!q.quiet) problems.push(`did not quiesce in ${o.quiesceTimeoutMs} ms; still in flight:\n    ${q.remaining.join('\n    ')}`);
      const inv = await checkInvariants(database.db, parties);
      problems.push(...inv.problems);
      lostFinal = inv.lost;
      unpaidFinal = inv.unpaid;
      if (inv.lost > lostWorst) lostWorst = inv.lost;
      const record: IterationRecord = {
        iteration: i,
        plan,
        killKind,
        killed,
        exit: { code: ended.code, signal: ended.signal },
        workloadMs,
        requests: { sent: iterationStats.sent, answered: iterationStats.answered, failed: iterationStats.failed },
        wreckage,
        restartMs,
        quiesceMs: q.ms,
        quiesced: q.quiet,
        lost: inv.lost,
        problems,
        logFile: current.logFile,
      };
      records.push(record);
      // a problem that persists (a failed transfer stays failed) is reported once, where it first showed
      let fresh = 0;
      for (const p of problems) {
        if (seenProblems.has(p)) continue;
        seenProblems.add(p);
        fresh++;
        violations.push(`iteration ${i} (${killKind}): ${p}`);
      }
      o.log(progressLine(record, o.iterations, fresh));
      if (!armNow && service) {
        await service.process.stop(10_000);
        await service.closed;
        try {
          service = await startSoakService(settings, `${name}-armed`, failpointsOf(next), logs);
        } catch (err) {
          service = undefined;
          violations.push(`iteration ${i}: the service armed with ${failpointsOf(next)} did not start: ${String(err)}`);
          break;
        }
      }
      if (outOfTime) {
        o.log(`soak: the time budget of ${Math.round(o.timeBudgetMs! / 1000)} s ran out after ${i} iterations`);
        break;
      }
    }

    // the last restart stays up: a clean stop
    if (service) {
      await service.process.stop(10_000);
      await service.closed;
    }
    const books = await bookFigures(database.db);
    for (const e of agents.stats.serverErrors) violations.push(`agent callback answered ${e.status} (${e.url}): ${e.body}`);
    const killsByKind: Record<string, number> = {};
    for (const r of records) if (r.killed) killsByKind[r.killKind] = (killsByKind[r.killKind] ?? 0) + 1;
    return {
      seed: o.seed,
      iterations: records.length,
      planned: o.iterations,
      wallMs: Date.now() - started,
      kills: { total: records.filter((r) => r.killed).length, byKind: killsByKind },
      requests: stats,
      agentCalls: agents.stats,
      books,
      logs,
      lostFinal,
      lostWorst,
      unpaidFinal,
      records,
      violations,
      logDir,
      databaseUrl: o.keepDatabase ? scratch.url : '(dropped)',
      rerun: o.rerun ? o.rerun(records.length) : `npm run soak -- --iterations ${records.length} --seed ${o.seed} --payers ${o.payers}`,
    };
  } catch (err) {
    if (database) {
      const rows = await describeInFlight(database.db).catch(() => []);
      if (rows.length > 0) o.log(`in flight when the soak stopped:\n  ${rows.join('\n  ')}`);
    }
    throw err;
  } finally {
    await service?.process.kill().catch(() => undefined);
    await agents?.stop().catch(() => undefined);
    await database?.close().catch(() => undefined);
    if (scratch && !o.keepDatabase) await scratch.drop().catch(() => undefined);
    await chain?.stop().catch(() => undefined);
  }
}

function progressLine(r: IterationRecord, of: number, fresh: number): string {
  const w = r.wreckage;
  return (
    `soak ${String(r.iteration).padStart(String(of).length)}/${of} ` +
    `kill ${r.killKind}${r.plan.kind === 'delay' ? ` @${r.plan.delayMs}ms` : ''} (${r.exit.signal ?? `exit ${r.exit.code}`} after ${r.workloadMs} ms) · ` +
    `${r.requests.sent} req, ${r.requests.answered} answered · restart ${(r.restartMs / 1000).toFixed(1)} s · ` +
    `in flight: ${w.payments} payments, ${w.transfers} transfers, ${w.tasks} tasks · ` +
    `quiesced in ${(r.quiesceMs / 1000).toFixed(1)} s · ` +
    (r.problems.length === 0 ? 'invariants hold' : `${r.problems.length} VIOLATIONS (${fresh} new), ${r.lost} atomic units lost`)
  );
}
