/**
 * One configuration of the run: a warm-up, the measured window of load (CPU marked at both ends),
 * for phase 3 the kills (a worker and an API, SIGKILL, mid-window) and their restarts, then the
 * drain (hires in flight end; no new ones start) and the quiesce (nothing in flight in the
 * database, callbacks delivered) so that the next configuration starts clean.
 */
import type { Db } from '../../src/db/client.js';
import { quiesce, type Quiesce } from '../soak/invariants.js';
import { RequestStats } from '../soak/requests.js';
import type { Cluster, Kill } from './cluster.js';
import type { CpuSampler, CpuSplit } from './cpu.js';
import { runLoad, type Hire, type LoadContext } from './hires.js';
import { KILL_AT_SHARE, QUIESCE_TIMEOUT_MS, WARMUP_S, type ScaleOutOptions } from './options.js';
import { callbacksDrained, heldBy, waitFinished, type Takeover } from './takeover.js';

export interface KillFigures {
  worker: Kill;
  api: Kill;
  takeover: Takeover;
  /** How long each restart took until it listened / its workers ran. */
  restartMs: { worker: number; api: number };
}

export interface PhaseResult {
  n: number;
  label: string;
  /** `1+1`, `2+2`, `2+2 kills`: a column head. */
  short: string;
  apis: number;
  workers: number;
  windowStart: number;
  windowEnd: number;
  hires: Hire[];
  stats: RequestStats;
  cpu: CpuSplit;
  quiesce: Quiesce;
  callbacksPending: number;
  drainMs: number;
  kill?: KillFigures;
}

export interface PhaseEnv {
  db: Db;
  cluster: Cluster;
  cpu: CpuSampler;
  load: Omit<LoadContext, 'phase' | 'stats'>;
  options: ScaleOutOptions;
  log(line: string): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sleepUntil = (t: number) => sleep(Math.max(0, t - Date.now()));

export async function runPhase(env: PhaseEnv, n: number, kill: boolean): Promise<PhaseResult> {
  const { cluster, cpu, options } = env;
  const apis = cluster.apis.filter(Boolean).length;
  const workers = cluster.workers.filter(Boolean).length;
  const label = `${apis} api + ${workers} worker${kill ? ', kills' : ''}`;
  for (const m of cluster.running()) cpu.track(m.name, m.pid);
  const stats = new RequestStats();
  const windowStart = Date.now() + WARMUP_S * 1000;
  const windowEnd = windowStart + options.durationS * 1000;
  env.log(`phase ${n} (${label}): ${WARMUP_S} s warm-up, ${options.durationS} s measured, ${options.inFlight} hires in flight`);
  const load = runLoad({ ...env.load, phase: n, stats }, options.inFlight, windowEnd);
  await sleepUntil(windowStart);
  const from = cpu.mark();
  let killed: Promise<KillFigures> | undefined;
  if (kill) {
    await sleepUntil(windowStart + KILL_AT_SHARE * options.durationS * 1000);
    killed = killAndRestart(env);
  }
  await sleepUntil(windowEnd);
  const to = cpu.mark();
  const hires = await load;
  const drainMs = Date.now() - windowEnd;
  const killFigures = killed ? await killed : undefined;
  env.log(`phase ${n}: ${hires.length} hires, drained in ${(drainMs / 1000).toFixed(1)} s; waiting for the service to quiesce`);
  const q = await quiesce(env.db, QUIESCE_TIMEOUT_MS);
  const cb = await callbacksDrained(env.db, 60_000);
  env.log(`phase ${n}: quiesced ${q.quiet ? `in ${(q.ms / 1000).toFixed(1)} s` : `NOT (after ${q.ms / 1000} s)`}, callbacks pending ${cb.pending}`);
  return {
    n,
    label,
    short: `${apis}+${workers}${kill ? ' kills' : ''}`,
    apis,
    workers,
    windowStart,
    windowEnd,
    hires,
    stats,
    cpu: cpu.split(from, to),
    quiesce: q,
    callbacksPending: cb.pending,
    drainMs,
    ...(killFigures ? { kill: killFigures } : {}),
  };
}

/**
 * SIGKILLs the worker holding the most tasks (waiting up to 5 s for one that holds any) and the
 * second API at the same moment, records what the dead worker held, restarts both, and waits
 * until every task it held is finished (by the other worker or its own restart, once the lease
 * has expired).
 */
async function killAndRestart(env: PhaseEnv): Promise<KillFigures> {
  const { cluster, db } = env;
  const apiIndex = cluster.apis.length - 1;
  let victim = 0;
  for (const deadline = Date.now() + 5000; ; await sleep(100)) {
    const held = await Promise.all(cluster.workers.map((w) => (w ? heldBy(db, w.pid) : Promise.resolve([]))));
    victim = held.reduce((best, h, i) => (h.length > held[best]!.length ? i : best), 0);
    if (held[victim]!.length > 0 || Date.now() > deadline) break;
  }
  const [worker, api] = await Promise.all([cluster.kill('worker', victim), cluster.kill('api', apiIndex)]);
  // the dead worker's leases stay in the database until they expire: exactly what it held
  const held = await heldBy(db, worker.pid);
  env.log(`phase 3: SIGKILL ${worker.name} (pid ${worker.pid}, holding ${held.length} task${held.length === 1 ? '' : 's'}) and ${api.name} (pid ${api.pid}); restarting both`);
  const takeover = waitFinished(db, held, worker.pid, worker.at, 240_000);
  const restartStart = Date.now();
  const timed = async (p: Promise<unknown>) => {
    await p;
    return Date.now() - restartStart;
  };
  const [workerMs, apiMs] = await Promise.all([timed(cluster.start('worker', victim)), timed(cluster.start('api', apiIndex))]);
  for (const m of cluster.running()) env.cpu.track(m.name, m.pid);
  env.log(`phase 3: restarted ${worker.name} in ${(workerMs / 1000).toFixed(1)} s, ${api.name} in ${(apiMs / 1000).toFixed(1)} s`);
  const t = await takeover;
  env.log(`phase 3: the ${t.held} task${t.held === 1 ? '' : 's'} ${worker.name} held ${t.held === 1 ? 'was' : 'were'} taken over ${(t.takenOverMs / 1000).toFixed(1)} s and finished ${t.finished ? `${(t.ms / 1000).toFixed(1)} s after the kill` : 'NOT in time'}`);
  return { worker, api, takeover: t, restartMs: { worker: workerMs, api: apiMs } };
}
