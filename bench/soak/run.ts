/**
 * The crash-point soak (the acceptance test of the money path), shared by `bench/soak.ts` and
 * `test/soak.test.ts`. One anvil and one Postgres database for the whole run; each iteration:
 *
 *  1. the service process (ROLE=all) runs a seeded random workload: payers hire agents, fund
 *     tasks (sometimes several authorizations at once), poll, read results, cancel, dispute;
 *  2. it is killed with SIGKILL, either after a random delay or at a named crash point
 *     (`FAILPOINTS=payment:after-settle:<purpose>`: a payment moved on chain, or a channel
 *     payment's voucher was charged, nothing recorded; `microfee:after-send` /
 *     `microfee:after-receipt`: a batch of deferred micro-fees moved on chain, nothing booked;
 *     `channel:after-claim` / `after-settle` / `after-refund`: the channel settler's transaction
 *     went through, nothing stored or booked);
 *  3. the next service process (the restart) resolves the wreckage: the soak waits until nothing
 *     is in flight, then checks every invariant (invariants.ts) and records the figures.
 *
 * Channel payers (`channelPayers`, default 2) are extra lanes whose fixed-price calls go over a
 * batch-settlement channel (wallets.ts). After the last iteration the final service drains the
 * channels (claims, settles, books and refunds them all) and the channel invariants are checked
 * once more in their drained form.
 */
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import type { Hex } from 'viem';
import { ChannelContractReader } from '../../src/chain/channels.js';
import { pickFreePort, startDevChain, type DevChain } from '../../src/chain/dev/devchain.js';
import { openDatabase, rowsOf, type Database } from '../../src/db/client.js';
import { RECEIVABLE_CHANNEL_FEES } from '../../src/ledger/accounts.js';
import { accountBalance } from '../../src/ledger/ledger.js';
import { scratchDatabase, type ScratchDatabase } from '../../test/helpers/service-process.js';
import { SoakAgents, type AgentCallStats } from './agents.js';
import { bookFigures, channelTotals, checkInvariants, describeInFlight, inFlight, quiesce, type BookFigures, type InFlight } from './invariants.js';
import { mulberry32, seedOf } from './prng.js';
import { RequestStats } from './requests.js';
import { emptyLogFigures, serviceOrigin, startSoakService, type LogFigures, type ServiceSettings, type SoakService } from './service.js';
import { fundedPayers, type ChannelClientStats, type Payer } from './wallets.js';
import { CHANNEL_PURPOSES, Lane, PURPOSES, type ChannelPurpose, type Purpose, type WorkloadSettings } from './workload.js';

export interface SoakOptions {
  iterations: number;
  seed: number;
  /** Paying wallets, one workload lane each (default 4). */
  payers?: number;
  /**
   * More paying wallets, one lane each, whose fixed-price calls go over a batch-settlement channel
   * (funding stays exact) (default 2, so that claims and refunds span channels; 0: no channels, and
   * the kill plans of a soak without them).
   */
  channelPayers?: number;
  /** How long the final service may take to claim, settle, book and refund every channel (default 60 s). */
  drainTimeoutMs?: number;
  /**
   * Let the channel lanes' calls race the channel settler's idle refund (default false: a call on
   * a channel idle for a second or more waits until the refund has happened). A src bug lost the
   * racing call's charge (bench/soak/channel-refund-race.ts); with this on, the soak exercises the
   * settler's refund hold against live calls.
   */
  raceChannelRefunds?: boolean;
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
  /** `payment:after-settle:<purpose>` aimed at by a channel payer: its voucher charged, the payment not booked. */
  | { kind: 'channel-failpoint'; purpose: ChannelPurpose }
  | { kind: 'microfee'; point: (typeof MICROFEE_POINTS)[number] }
  | { kind: 'channel'; point: (typeof CHANNEL_POINTS)[number] };

/** The crash points of the micro-fee batch settler (payments/micro-fee-settler.ts). */
export const MICROFEE_POINTS = ['after-send', 'after-receipt'] as const;
/** The crash points of the channel settler (payments/channels/settler.ts): after its transaction, before anything is stored or booked. */
export const CHANNEL_POINTS = ['after-claim', 'after-settle', 'after-refund'] as const;

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
  /** How long the iteration waited, before its workload, for a channel reserved by a dead request (channel points only). */
  reservedMs: number;
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
  /** What each channel payer's client saw, and how long the final drain took (absent without channel payers). */
  channelClients?: { address: string; stats: ChannelClientStats }[];
  /** Whether the channel lanes' calls were let race the settler's idle refund. */
  raceChannelRefunds?: boolean;
  drain?: { ms: number; drained: boolean };
  /** Problems a check saw and a second look (a second later, quiesced again) did not: not violations, listed for the record. */
  transient: string[];
  /** Every violation, prefixed with the iteration after which it was seen. */
  violations: string[];
  logDir: string;
  databaseUrl: string;
  rerun: string;
}

const ADMIN_KEY = 'soak-admin-key-0123456789abcdef';
/** In a channel-failpoint iteration, the lanes other than the aiming channel lane start this much later. */
const AIM_HEAD_START_MS = 400;
/** How long past the workload a channel settler's crash point may take before the fallback kill. */
const CHANNEL_POINT_GRACE_MS = 2000;
/**
 * At most this long for a dead request's channel reservation (the channel settler releases one
 * with no payment recorded 10 s after the request): a longer one is not waited out (the crash
 * point then likely falls back).
 */
const RESERVATION_WAIT_MAX_MS = 12_000;
const PAYER_USDC = 1_000_000_000n; // 1000 USDC each
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * An iteration's kill, without channels: a quarter of the crash points are the micro-fee
 * settler's, the rest `payment:after-settle:<purpose>` (lane 0 aims at it).
 */
export function killPlan(seed: number, iteration: number, failpointShare: number, killDelayMaxMs: number): KillPlan {
  const rng = mulberry32(seedOf(seed, iteration, 'kill'));
  if (rng.chance(failpointShare)) {
    return rng.chance(0.25) ? { kind: 'microfee', point: rng.pick(MICROFEE_POINTS) } : { kind: 'failpoint', purpose: rng.pick(PURPOSES) };
  }
  return { kind: 'delay', delayMs: rng.int(0, killDelayMaxMs) };
}

/**
 * With channels, the crash-point iterations take their kind in turn from this cycle (from an
 * offset the seed picks), so that a short soak still reaches every kind: exact payments'
 * `payment:after-settle`, the channel settler's points (themselves in turn: claim, settle,
 * refund), channel payments' `payment:after-settle` (a channel lane aims at it), the micro-fee
 * settler's. The purposes and micro-fee points are drawn from the iteration's own stream.
 */
const CRASH_CYCLE = ['failpoint', 'channel', 'channel-failpoint', 'failpoint', 'channel', 'microfee'] as const;

/** Every iteration's kill (`killPlan` for each, the crash points' kinds in turn when there are channels). */
export function killPlans(seed: number, iterations: number, failpointShare: number, killDelayMaxMs: number, channels: boolean): KillPlan[] {
  if (!channels) return Array.from({ length: iterations }, (_, i) => killPlan(seed, i + 1, failpointShare, killDelayMaxMs));
  let crashes = seed % CRASH_CYCLE.length;
  let channelPoints = seed % CHANNEL_POINTS.length;
  return Array.from({ length: iterations }, (_, i): KillPlan => {
    const rng = mulberry32(seedOf(seed, i + 1, 'kill'));
    if (!rng.chance(failpointShare)) return { kind: 'delay', delayMs: rng.int(0, killDelayMaxMs) };
    const kind = CRASH_CYCLE[crashes++ % CRASH_CYCLE.length]!;
    if (kind === 'microfee') return { kind, point: rng.pick(MICROFEE_POINTS) };
    if (kind === 'channel') return { kind, point: CHANNEL_POINTS[channelPoints++ % CHANNEL_POINTS.length]! };
    if (kind === 'channel-failpoint') return { kind, purpose: rng.pick(CHANNEL_PURPOSES) };
    return { kind, purpose: rng.pick(PURPOSES) };
  });
}

/** The FAILPOINTS a plan arms. */
export function failpointsOf(plan: KillPlan | undefined): string | undefined {
  switch (plan?.kind) {
    case 'failpoint':
    case 'channel-failpoint':
      return `payment:after-settle:${plan.purpose}`;
    case 'microfee':
      return `microfee:${plan.point}`;
    case 'channel':
      return `channel:${plan.point}`;
    default:
      return undefined;
  }
}

/** The crash points that fire in the worker part: armed in a fresh process after the previous wreckage is checked. */
const armedLater = (plan: KillPlan | undefined) => plan?.kind === 'microfee' || plan?.kind === 'channel';

/** A plan's name in the figures (`failpoint:<it>` when it fired, `fallback:<it>` when it did not). */
function pointNameOf(plan: KillPlan): string {
  switch (plan.kind) {
    case 'failpoint':
    case 'channel-failpoint':
      return plan.purpose;
    case 'microfee':
      return `microfee:${plan.point}`;
    case 'channel':
      return `channel:${plan.point}`;
    default:
      return '';
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const o = {
    payers: 4,
    channelPayers: 2,
    drainTimeoutMs: 60_000,
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
  /** Problems a check saw that a second look did not (the live service moved between two reads of a check). */
  const transient: string[] = [];
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
    const payers: Payer[] = await fundedPayers(chain, o.payers, PAYER_USDC, o.channelPayers);
    const channelLanes = payers.flatMap((p, lane) => (p.channel ? [lane] : []));
    const rpcUrl = chain.rpcUrl;
    agents = await new SoakAgents(o.seed, origin).start();
    o.log(
      `soak: seed ${o.seed}, ${o.iterations} iterations, ${o.payers} payers${o.channelPayers > 0 ? ` + ${o.channelPayers} paying over channels` : ''}, ` +
        `service on ${origin.baseUrl}, logs in ${logDir}`,
    );

    const plans = killPlans(o.seed, o.iterations, o.failpointShare, o.killDelayMaxMs, channelLanes.length > 0);
    service = await startSoakService(settings, 'service-001', failpointsOf(plans[0]), logs);
    database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 4 });
    await agents.register();
    const parties = { rpcUrl: chain.rpcUrl, payers, agents: agents.all };

    for (let i = 1; i <= o.iterations; i++) {
      const plan = plans[i - 1]!;
      const current: SoakService = service!;
      // A channel point needs a free channel: one reserved by a request the last kill cut off stays
      // busy until the settler releases it (10 s) or the sweep resolves its payment; wait that out first.
      const reservedMs = plan.kind === 'channel' || plan.kind === 'channel-failpoint' ? await waitUnreserved(database.db, payers, RESERVATION_WAIT_MAX_MS) : 0;
      // ── the workload, and the kill ───────────────────────────────────────
      let alive = true;
      const iterationStats = new RequestStats();
      const workStart = Date.now();
      const exit = current.closed.then((e) => {
        alive = false;
        return e;
      });
      // A channel failpoint is aimed at by the first channel lane; the other lanes start a moment
      // later so that its payment, rather than an exact one of the same purpose, reaches the point
      // first. The channel settler's idle refund needs a channel lane that stops early.
      const aimer = plan.kind === 'channel-failpoint' ? channelLanes[0] : plan.kind === 'failpoint' ? 0 : undefined;
      const lanes = payers.map(async (payer, lane) => {
        if (plan.kind === 'channel-failpoint' && lane !== aimer) await sleep(AIM_HEAD_START_MS);
        // For the idle refund: a channel lane makes one call over its channel (a hire, the funding
        // exact: the restart refunded what the channel held before, so this deposits anew), and
        // once a call was served over it leaves the channel idle.
        const refunding = plan.kind === 'channel' && plan.point === 'after-refund' && payer.channel !== undefined;
        const served = payer.channel?.stats.served ?? 0;
        const stop = refunding ? () => payer.channel!.stats.served > served : undefined;
        const first: Purpose | undefined =
          lane === aimer && (plan.kind === 'failpoint' || plan.kind === 'channel-failpoint') ? plan.purpose : refunding ? 'create_task' : undefined;
        return new Lane(
          {
            iteration: i,
            baseUrl: origin.baseUrl,
            db: database!.db,
            agents: agents!,
            stats: iterationStats,
            settings: workload,
            alive: () => alive,
            until: workStart + o.workloadMaxMs,
            raceChannelRefunds: o.raceChannelRefunds ?? false,
          },
          payer,
          mulberry32(seedOf(o.seed, i, 'lane', lane)),
        ).run(first, stop);
      });
      // The channel settler acts on its own schedule (claims every second, refunds after 2 s idle):
      // its crash points get a moment past the workload before the fallback kill.
      const waitMs = plan.kind === 'delay' ? plan.delayMs : o.workloadMaxMs + (plan.kind === 'channel' ? CHANNEL_POINT_GRACE_MS : 0);
      const diedFirst = await Promise.race([exit.then(() => true), sleep(waitMs).then(() => false)]);
      const workloadMs = Date.now() - workStart;
      alive = false;
      if (!diedFirst) await current.process.kill();
      const ended = await exit;
      const laneOutcomes = await Promise.allSettled(lanes);
      stats.add(iterationStats);
      const killed = ended.signal === 'SIGKILL';
      const fired = plan.kind !== 'delay' && diedFirst && killed;
      // Which payment reached `payment:after-settle:<purpose>` (any lane's may): the one left settling.
      const paidBy = fired && (plan.kind === 'failpoint' || plan.kind === 'channel-failpoint') ? await settlingPaidBy(database.db, plan.purpose) : '';
      const killKind = plan.kind === 'delay' ? 'delay' : fired ? `failpoint:${paidBy}${pointNameOf(plan)}` : `fallback:${pointNameOf(plan)}`;
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
      // The batch settlers' crash points would fire while the restart settles the wreckage's own
      // micro-fees and channels: that restart runs without them, and a fresh process is armed after the checks.
      const armNow = !armedLater(next);
      try {
        service = await startSoakService(settings, name, armNow ? failpointsOf(next) : undefined, logs);
      } catch (err) {
        service = undefined;
        violations.push(`iteration ${i} (${killKind}): the restarted service did not start (log ${path.join(logDir, name)}.log): ${String(err)}`);
        o.log(`soak: the restart after iteration ${i} failed; stopping`);
        break;
      }
      const restartMs = Date.now() - restartStart;
      const wreckage = await inFlight(database.db, rpcUrl);
      const q = await quiesce(database.db, o.quiesceTimeoutMs, rpcUrl);
      if (!q.quiet) problems.push(`did not quiesce in ${o.quiesceTimeoutMs} ms; still in flight:\n    ${q.remaining.join('\n    ')}`);
      let inv = await checkInvariants(database.db, parties);
      // The service stays up during the checks and its settlers may still act (a channel's
      // reservation by a dead request expires, and it is claimed or refunded): a problem must
      // still be there on a second look, once nothing is in flight again, to count.
      for (let again = 0; again < 2 && inv.problems.length > 0; again++) {
        await sleep(1000);
        await quiesce(database.db, o.quiesceTimeoutMs, rpcUrl);
        const second = await checkInvariants(database.db, parties);
        for (const p of inv.problems) if (!second.problems.includes(p)) transient.push(`iteration ${i}: ${p}`);
        inv = second;
      }
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
        reservedMs,
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

    // The last restart stays up. With channels: it drains them (claims, settles, books and refunds
    // every one: the settler's loop, no kill), then the channel invariants are checked drained.
    let drain: { ms: number; drained: boolean } | undefined;
    if (service && channelLanes.length > 0) {
      const drainStart = Date.now();
      const drained = await waitDrained(database.db, rpcUrl, o.drainTimeoutMs);
      drain = { ms: Date.now() - drainStart, drained };
      let inv = await checkInvariants(database.db, parties, { final: true });
      for (let again = 0; again < 2 && inv.problems.length > 0; again++) {
        await sleep(1000);
        await waitDrained(database.db, rpcUrl, 5_000);
        const second = await checkInvariants(database.db, parties, { final: true });
        for (const p of inv.problems) if (!second.problems.includes(p)) transient.push(`final drain: ${p}`);
        inv = second;
      }
      lostFinal = inv.lost;
      unpaidFinal = inv.unpaid;
      if (inv.lost > lostWorst) lostWorst = inv.lost;
      if (!drained) violations.push(`final drain: the channels were not drained in ${o.drainTimeoutMs} ms: ${(await describeDrain(database.db, rpcUrl)).join('; ')}`);
      for (const p of inv.problems) if (!seenProblems.has(p)) violations.push(`final drain: ${p}`);
      o.log(`soak: final drain of the channels ${drained ? 'done' : 'NOT done'} in ${(drain.ms / 1000).toFixed(1)} s · ${inv.problems.length === 0 ? 'invariants hold' : `${inv.problems.length} VIOLATIONS`}`);
    }
    // a clean stop
    if (service) {
      await service.process.stop(10_000);
      await service.closed;
    }
    const books = await bookFigures(database.db, { rpcUrl, payers });
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
      transient,
      ...(channelLanes.length > 0
        ? {
            channelClients: payers.flatMap((p) => (p.channel ? [{ address: p.address, stats: p.channel.stats }] : [])),
            raceChannelRefunds: o.raceChannelRefunds ?? false,
            ...(drain ? { drain } : {}),
          }
        : {}),
      violations,
      logDir,
      databaseUrl: o.keepDatabase ? scratch.url : '(dropped)',
      rerun: o.rerun
        ? o.rerun(records.length)
        : `npm run soak -- --iterations ${records.length} --seed ${o.seed} --payers ${o.payers} --channel-payers ${o.channelPayers}`,
    };
  } catch (err) {
    if (database) {
      const rows = await describeInFlight(database.db, chain?.rpcUrl).catch(() => []);
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

/**
 * Waits until no channel payer's channel is reserved by a request (a dead one's reservation
 * expires), unless that would take more than `maxMs` (then at once); the time waited.
 */
async function waitUnreserved(db: Database['db'], payers: readonly Payer[], maxMs: number): Promise<number> {
  const addresses = payers.filter((p) => p.channel).map((p) => p.address.toLowerCase());
  if (addresses.length === 0) return 0;
  const started = Date.now();
  for (;;) {
    const rows = rowsOf<{ until: string | null }>(
      await db.execute(sql`select channel->'pendingRequest'->>'expiresAt' as until from payment_channels
                           where channel is not null and payer in (${sql.join(addresses.map((a) => sql`${a}`), sql`, `)})`),
    );
    const until = Math.max(0, ...rows.map((r) => Number(r.until ?? 0)));
    // Released (the settler ends a dead request's reservation 10 s after it), expired, or waited long enough.
    if (until <= Date.now() || Date.now() - started >= maxMs) return Date.now() - started;
    await sleep(Math.min(200, maxMs - (Date.now() - started)));
  }
}

/** `channel-paid:` when the payment left settling at `payment:after-settle:<purpose>` was a channel payment, else ''. */
async function settlingPaidBy(db: Database['db'], purpose: string): Promise<string> {
  const rows = rowsOf<{ channel: boolean }>(
    await db.execute(sql`select channel_id is not null as channel from payments where status = 'settling' and purpose = ${purpose}`),
  );
  return rows.some((r) => r.channel) ? 'channel-paid:' : '';
}

/** The channels' state that the final drain waits out: stored channels, receivable, contract totals against the books. */
async function describeDrain(db: Database['db'], rpcUrl: string): Promise<string[]> {
  const stored = rowsOf<{ id: string; charged: string; claimed: string; balance: string; pending: string | null; last: string }>(
    await db.execute(sql`select channel_id as id, channel->>'chargedCumulativeAmount' as charged, channel->>'totalClaimed' as claimed,
                                channel->>'balance' as balance, channel->'pendingRequest'->>'expiresAt' as pending,
                                channel->>'lastRequestTimestamp' as last
                         from payment_channels where channel is not null`),
  );
  const t = await channelTotals(db, rpcUrl);
  return [
    `receivable:channel_fees ${await accountBalance(db, RECEIVABLE_CHANNEL_FEES)}`,
    `contract: claimed ${t.claimed}, settled ${t.settled}; booked ${t.booked}`,
    ...stored.map((c) => `stored channel ${JSON.stringify(c)}`),
  ];
}

/**
 * Waits until every channel was claimed, settled, booked and refunded: nothing receivable, the
 * contract's totals booked, and no channel of a payer holding anything beyond what was claimed
 * from it (a channel drained this way may stay in the table: the settler drops only channels whose
 * stored copy it had to correct).
 */
async function waitDrained(db: Database['db'], rpcUrl: string, timeoutMs: number): Promise<boolean> {
  const reader = new ChannelContractReader(rpcUrl);
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ids = rowsOf<{ id: string }>(await db.execute(sql`select distinct channel_id as id from payments where channel_id is not null`)).map((r) => r.id as Hex);
    const open = ids.length === 0 ? [] : (await reader.channels(ids)).filter((c) => c.balance !== c.totalClaimed);
    const t = await channelTotals(db, rpcUrl);
    const receivable = await accountBalance(db, RECEIVABLE_CHANNEL_FEES);
    if (open.length === 0 && receivable === 0n && t.claimed === t.settled && t.settled === t.booked) return true;
    if (Date.now() > until) return false;
    await sleep(250);
  }
}

function progressLine(r: IterationRecord, of: number, fresh: number): string {
  const w = r.wreckage;
  return (
    `soak ${String(r.iteration).padStart(String(of).length)}/${of} ` +
    `kill ${r.killKind}${r.plan.kind === 'delay' ? ` @${r.plan.delayMs}ms` : ''} (${r.exit.signal ?? `exit ${r.exit.code}`} after ${r.workloadMs} ms) · ` +
    `${r.requests.sent} req, ${r.requests.answered} answered · restart ${(r.restartMs / 1000).toFixed(1)} s · ` +
    `in flight: ${w.payments} payments, ${w.transfers} transfers, ${w.tasks} tasks${w.channels ? `, ${w.channels} channel units` : ''} · ` +
    `quiesced in ${(r.quiesceMs / 1000).toFixed(1)} s · ` +
    (r.problems.length === 0 ? 'invariants hold' : `${r.problems.length} VIOLATIONS (${fresh} new), ${r.lost} atomic units lost`)
  );
}
