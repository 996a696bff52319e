/**
 * The scale-out benchmark and soak (see bench/README.md): 1 API + 1 worker, then 2 + 2, on one
 * Postgres database and one anvil, hired through by the stock x402 client across the API ports;
 * then, still 2 + 2 under load, a worker and an API are SIGKILLed and restarted; then the money and
 * exactly-once invariants.
 *
 *   npm run bench:scale-out
 *   npm run bench:scale-out -- --duration-s 15 --in-flight 16 --payers 4 --seed 7 --keep-db
 *
 * Needs Postgres (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test) allowed to
 * CREATE DATABASE. Exits 1 when an invariant fails (errors are reported, not failed on).
 */
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pickFreePort, startDevChain, type DevChain } from '../src/chain/dev/devchain.js';
import { loadConfig } from '../src/config.js';
import { openDatabase, type Database } from '../src/db/client.js';
import { scratchDatabase, type ScratchDatabase } from '../test/helpers/service-process.js';
import { runBench, startWatchdog } from './lib.js';
import { SoakAgents } from './soak/agents.js';
import { emptyLogFigures } from './soak/service.js';
import { fundedPayers } from './soak/wallets.js';
import { CallbackReceiver } from './scale-out/callbacks.js';
import { runChecks } from './scale-out/checks.js';
import { Cluster, OVERRIDES } from './scale-out/cluster.js';
import { CpuSampler } from './scale-out/cpu.js';
import { ADMIN_KEY, PAYER_USDC, POLL_MS, ROSTER, WARMUP_S, parseOptions, type ScaleOutOptions } from './scale-out/options.js';
import { runPhase, type PhaseEnv, type PhaseResult } from './scale-out/phases.js';
import { figuresOf, printChecks, printConfigurations, printCpu, printKill, printRatios } from './scale-out/report.js';

const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);

async function distinctPorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await pickFreePort());
  return [...ports];
}

async function main(): Promise<void> {
  let options: ScaleOutOptions;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error((err as Error).message);
    process.exitCode = 2;
    return;
  }
  startWatchdog((3 * (options.durationS + WARMUP_S) + 900) * 1000, { kill: () => undefined, exitDelayMs: 0, signals: ['SIGINT', 'SIGTERM'] });
  const started = Date.now();
  const logDir = options.logDir ?? path.join(tmpdir(), `task-escrow-scale-out-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(logDir, { recursive: true });
  const logs = emptyLogFigures();
  let chain: DevChain | undefined;
  let scratch: ScratchDatabase | undefined;
  let database: Database | undefined;
  let agents: SoakAgents | undefined;
  let callbacks: CallbackReceiver | undefined;
  let cluster: Cluster | undefined;
  const cpu = new CpuSampler();
  try {
    [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('scaleout')]);
    cluster = new Cluster({ databaseUrl: scratch.url, rpcUrl: chain.rpcUrl, apiPorts: await distinctPorts(2), adminKey: ADMIN_KEY, logDir, figures: logs });
    const payers = await fundedPayers(chain, options.payers, PAYER_USDC);
    agents = await new SoakAgents(options.seed, cluster.origin, ROSTER).start();
    const apiEnv = cluster.env('api', 0);
    const config = loadConfig(apiEnv);
    callbacks = await new CallbackReceiver(apiEnv.CALLBACK_SIGNING_SECRET!).start();
    cpu.track('bench', process.pid);
    cpu.track('anvil', chain.pid);
    cpu.start();
    log(`scale-out: seed ${options.seed}, ${options.payers} payers, ${options.inFlight} hires in flight, agents ${ROSTER.join(', ')}; logs in ${logDir}`);

    log(`starting 1 api + 1 worker (Postgres ${scratch.url.split('/').pop()}, anvil ${chain.rpcUrl})`);
    const start1 = await cluster.scaleTo(1);
    database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 4 });
    await agents.register();
    const env: PhaseEnv = {
      db: database.db,
      cluster,
      cpu,
      load: { seed: options.seed, cluster, payers, agents: agents.all, callbackUrl: callbacks.url },
      options,
      log,
    };
    const phases: PhaseResult[] = [await runPhase(env, 1, false)];
    log('starting the second api and worker');
    const start2 = await cluster.scaleTo(2);
    phases.push(await runPhase(env, 2, false));
    phases.push(await runPhase(env, 3, true));

    log('checking the invariants');
    const { checks } = await runChecks({
      db: database.db,
      parties: { rpcUrl: chain.rpcUrl, payers, agents: agents.all },
      baseUrl: cluster.apiUrl(0),
      domain: cluster.origin.domain,
      adminKey: ADMIN_KEY,
      platformFeeBps: config.PLATFORM_FEE_BPS,
      callbacks: callbacks.figures,
    });
    const briefs = agents.all.flatMap((a) => a.server.received.filter((r) => r.type === 'task.assigned'));
    const takeover = phases[2]!.kill?.takeover;
    if (takeover) takeover.briefs = briefs.filter((b) => takeover.ids.includes(b.taskId)).length;
    await cluster.stopAll();

    // ── the report ─────────────────────────────────────────────────────────
    const figures = phases.map((p) => figuresOf(p));
    console.log(`\n## scale-out: ${checks.every((c) => c.ok) && phases.every((p) => p.quiesce.quiet && p.callbacksPending === 0) ? 'every invariant held' : 'INVARIANTS FAILED'}\n`);
    console.log(
      `  ${options.durationS} s measured per configuration after a ${WARMUP_S} s warm-up; ${options.inFlight} hires in flight; ${options.payers} payers; ` +
        `status polled every ${POLL_MS} ms; processes started in ${(start1 / 1000).toFixed(1)} s (1+1) and ${(start2 / 1000).toFixed(1)} s (+1+1)`,
    );
    console.log(
      `  service settings besides the defaults: ${Object.entries(OVERRIDES).map(([k, v]) => `${k}=${v}`).join(' ')}; the dispatcher's are the defaults ` +
        `(DISPATCH_LEASE_MS=${config.DISPATCH_LEASE_MS} HEARTBEAT=${config.DISPATCH_HEARTBEAT_MS} MAX_ATTEMPTS=${config.DISPATCH_MAX_ATTEMPTS} BACKOFF=${config.DISPATCH_BACKOFF_MS} ` +
        `CONCURRENCY=${config.DISPATCH_CONCURRENCY}/${config.DISPATCH_PER_AGENT_CONCURRENCY} per agent)`,
    );
    console.log('  one database and one anvil for the whole run: the escrow and fee wallets and the payers carry their balances across configurations, so the books must too');
    printConfigurations(phases, figures);
    printCpu(phases, figures, options.inFlight);
    printRatios(figures);
    printKill(phases[2]!, figures[2]!);
    const perTask = new Map<string, number>();
    for (const b of briefs) perTask.set(b.taskId, (perTask.get(b.taskId) ?? 0) + 1);
    const spread: Record<string, number> = {};
    for (const n of perTask.values()) spread[`${n}×`] = (spread[`${n}×`] ?? 0) + 1;
    console.log(`\n  agents: ${briefs.length} briefs for ${perTask.size} tasks (tasks by briefs received: ${JSON.stringify(spread)}; a re-brief is a retry of the flaky agent or a takeover)`);
    printChecks(checks, phases, logs);
    console.log(`\n  wall time ${((Date.now() - started) / 1000).toFixed(0)} s; service logs ${logDir}; database ${options.keepDb ? scratch.url : '(dropped)'}`);
    const failed = checks.some((c) => !c.ok) || phases.some((p) => !p.quiesce.quiet || p.callbacksPending > 0);
    if (failed) process.exitCode = 1;
  } finally {
    cpu.stop();
    await cluster?.stopAll().catch(() => undefined);
    await agents?.stop().catch(() => undefined);
    await callbacks?.stop().catch(() => undefined);
    await database?.close().catch(() => undefined);
    if (scratch && !options.keepDb) await scratch.drop().catch(() => undefined);
    await chain?.stop().catch(() => undefined);
  }
}

runBench(undefined, main, () => undefined);
