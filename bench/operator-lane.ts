/**
 * The operator wallet's sends, three ways (see bench/README.md): (a) per-process nonce counters,
 * (b) the database lane (src/chain/nonces.ts, what the facilitator uses), (c) a pool of operator
 * keys, one per process. Paid calls through real API processes (lane with 1 and 2 APIs on one key;
 * the key pool as 2 APIs with a key each), then the sends alone at the viem level, like for like.
 *
 *   npm run bench:operator
 *   BENCH_CALLS=800 BENCH_CONCURRENCY=32 BENCH_SENDS=1000 npm run bench:operator
 *
 * Needs Postgres (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test) allowed to
 * CREATE DATABASE: one scratch database for the run, dropped at the end, as are the API processes
 * and anvil.
 */
import { startDevChain, type DevChain } from '../src/chain/dev/devchain.js';
import { createDevClient } from '../src/chain/dev/client.js';
import { scratchDatabase, type ScratchDatabase } from '../test/helpers/service-process.js';
import { runBench, startWatchdog } from './lib.js';
import { LockSampler } from './operator-lane/lock-sampler.js';
import { ApiProcesses, paidCalls, type Api } from './operator-lane/paid-calls.js';
import { printHttp, printRatios, printSends, type HttpPhase } from './operator-lane/report.js';
import { runSendOption, SEND_OPTIONS, type SendRun } from './operator-lane/sends.js';
import { OPERATOR, PAYER_USDC, readSettings, SECOND_OPERATOR, WARMUP_CALLS_PER_API } from './operator-lane/settings.js';
import { failed, rate } from './operator-lane/stats.js';
import { CpuSampler } from './scale-out/cpu.js';
import { fundedPayers, type Payer } from './soak/wallets.js';

const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
const TIME_BUDGET_MS = 600_000;

async function main(): Promise<void> {
  const settings = readSettings();
  const started = Date.now();
  let chain: DevChain | undefined;
  let scratch: ScratchDatabase | undefined;
  let apis: ApiProcesses | undefined;
  let sampler: LockSampler | undefined;
  const cpu = new CpuSampler();
  // On the budget or a signal: the API processes die with this process (service-process.ts kills
  // them on exit), anvil with its guardian; the scratch database is dropped on a best-effort basis.
  startWatchdog(TIME_BUDGET_MS, { kill: () => void scratch?.drop(), exitDelayMs: 2000, signals: ['SIGINT', 'SIGTERM'] });
  try {
    [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('oplane', settings.databaseUrl)]);
    const dev = createDevClient(chain.rpcUrl);
    cpu.track('bench', process.pid);
    cpu.track('anvil', chain.pid);
    cpu.start();
    const payers = await fundedPayers(chain, settings.payers, PAYER_USDC);
    log(`anvil ${chain.rpcUrl}, database ${scratch.url.split('/').pop()}, ${payers.length} payers with ${PAYER_USDC / 1_000_000n} USDC each`);
    const cluster = (apis = new ApiProcesses(scratch.url, chain.rpcUrl, cpu));
    const lockSampler = (sampler = await new LockSampler(scratch.url).open());

    const phase = async (label: string, list: Api[]): Promise<HttpPhase> => {
      const urls = list.map((a) => a.svc.baseUrl);
      const warm = await paidCalls('warm-up', urls, payers, WARMUP_CALLS_PER_API * list.length, settings.concurrency);
      if (failed(warm) > 0) log(`  warm-up: ${failed(warm)} of ${warm.attempted} failed: ${JSON.stringify(warm.failures)}`);
      cluster.takeLogTally();
      const operators = [...new Set(list.map((a) => a.operator))];
      const nonces = () => Promise.all(operators.map((address) => dev.getTransactionCount({ address })));
      const before = await nonces();
      const mark = cpu.mark();
      lockSampler.start();
      const figures = await paidCalls(label, urls, payers, settings.calls, settings.concurrency, settings.maxSeconds);
      const lock = await lockSampler.stop();
      const split = cpu.split(mark, cpu.mark());
      const after = await nonces();
      const result: HttpPhase = {
        figures,
        apis: list.map((a) => a.name),
        operatorKeys: operators.length,
        operatorTxs: after.reduce((s, n, i) => s + n - before[i]!, 0),
        logs: cluster.takeLogTally(),
        cpu: split,
        lock,
      };
      log(`  ${label}: ${figures.ok}/${figures.attempted} ok, ${rate(figures).toFixed(1)} calls/s, ${failed(figures)} failed`);
      return result;
    };

    const http: HttpPhase[] = [];
    log('1. lane, 1 API process');
    const api1 = await cluster.start('api-1', OPERATOR.privateKey);
    http.push(await phase('lane, 1 API', [api1]));
    // the second API of each 2-API configuration, started together (api-2b idles through configuration 2)
    const [api2, api2b] = await Promise.all([cluster.start('api-2', OPERATOR.privateKey), cluster.start('api-2b', SECOND_OPERATOR.privateKey)]);
    log('2. lane, 2 API processes, one operator key');
    http.push(await phase('lane, 2 APIs', [api1, api2]));
    await cluster.stop(api2);
    log(`3. key pool: 2 API processes, the second with its own operator key (${SECOND_OPERATOR.address})`);
    http.push(await phase('key pool, 2 APIs', [api1, api2b]));
    await cluster.stopAll();

    const runs: SendRun[] = [];
    const env = { chain, dev, databaseUrl: scratch.url, sends: settings.sends, maxSeconds: settings.sendMaxSeconds, concurrency: settings.sendConcurrency, lockSampler };
    for (let round = 0; round < settings.sendRounds; round++) {
      const order = round % 2 === 0 ? [...SEND_OPTIONS] : [...SEND_OPTIONS].reverse();
      log(`send level, round ${round + 1}: ${order.join(', ')}`);
      for (const option of order) {
        const run = await runSendOption(option, env);
        log(`  ${option}: ${run.figures.ok}/${run.figures.attempted} ok, ${rate(run.figures).toFixed(1)} sends/s`);
        runs.push(run);
      }
    }

    console.log(`\n## operator lane: (a) per-process counters, (b) the database lane, (c) a key pool\n`);
    console.log(
      `  one anvil (automine) and one scratch Postgres database; ${settings.calls} paid calls per configuration (none started after ${settings.maxSeconds} s) ` +
        `after ${WARMUP_CALLS_PER_API} warm-up calls per API; ${settings.sends} sends per send-level option (none started after ${settings.sendMaxSeconds} s); ` +
        `operator keys: anvil #2 (DEV_ROLES.operator) and, for the key pool's second API, anvil #4 (first demo wallet, unused by the service on an external chain)`,
    );
    printHttp(http, settings.concurrency);
    printSends(runs, settings.sends, settings.sendConcurrency, settings.sendRounds);
    printRatios(http, runs);
    console.log(`\n  wall time ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    cpu.stop();
    await sampler?.close().catch(() => undefined);
    await apis?.stopAll().catch(() => undefined);
    await scratch?.drop().catch(() => undefined);
    await chain?.stop().catch(() => undefined);
  }
}

runBench(undefined, main, () => undefined);
