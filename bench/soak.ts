/**
 * The crash-point soak: the money path under SIGKILL (see bench/README.md and bench/soak/run.ts).
 *
 *   npm run soak -- --iterations 200 --seed 42
 *   npm run soak -- --iterations 50 --seed 7 --payers 6 --failpoint-share 0.7 --keep-db
 *   npm run soak -- --iterations 200 --time-budget-s 1500   (stops after the iteration past 25 min)
 *   npm run soak -- --iterations 50 --channel-payers 0       (no channel lanes: the kill plans of the soak before channels)
 *   npm run soak -- --iterations 50 --race-channel-refunds   (channel calls may land while the settler refunds their channel)
 *
 * Needs Postgres (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test) allowed to
 * CREATE DATABASE. Prints a line per iteration, then the figures; exits 1 on any violation.
 */
import { formatReport } from './soak/report.js';
import { runSoak, type SoakOptions } from './soak/run.js';
import { runBench } from './lib.js';

function parseArgs(argv: string[]): SoakOptions {
  const args = new Map<string, string>();
  const flags = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const [k, inline] = a.slice(2).split('=', 2) as [string, string | undefined];
    if (k === 'keep-db' || k === 'race-channel-refunds') flags.add(k);
    else if (inline !== undefined) args.set(k, inline);
    else if (argv[i + 1] !== undefined) args.set(k, argv[++i]!);
    else throw new Error(`--${k} needs a value`);
  }
  const known = new Set([
    'iterations',
    'seed',
    'payers',
    'channel-payers',
    'failpoint-share',
    'kill-delay-max-ms',
    'workload-max-ms',
    'quiesce-timeout-ms',
    'drain-timeout-ms',
    'time-budget-s',
    'log-dir',
  ]);
  for (const k of args.keys()) if (!known.has(k)) throw new Error(`unknown option --${k}`);
  const int = (k: string, fallback: number, min = 1) => {
    const raw = args.get(k);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${k} must be an integer ≥ ${min}, got ${raw}`);
    return n;
  };
  const share = Number(args.get('failpoint-share') ?? '0.5');
  if (!(share >= 0 && share <= 1)) throw new Error('--failpoint-share must be in [0, 1]');
  return {
    iterations: int('iterations', 200),
    seed: int('seed', 42, 0),
    payers: int('payers', 4),
    channelPayers: int('channel-payers', 2, 0),
    failpointShare: share,
    killDelayMaxMs: int('kill-delay-max-ms', 2000, 0),
    workloadMaxMs: int('workload-max-ms', 3000),
    quiesceTimeoutMs: int('quiesce-timeout-ms', 120_000),
    drainTimeoutMs: int('drain-timeout-ms', 60_000),
    ...(args.has('time-budget-s') ? { timeBudgetMs: int('time-budget-s', 0) * 1000 } : {}),
    ...(args.get('log-dir') ? { logDir: args.get('log-dir')! } : {}),
    keepDatabase: flags.has('keep-db'),
    raceChannelRefunds: flags.has('race-channel-refunds'),
  };
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  const others = process.argv.slice(2).join(' ').replace(/--(iterations|seed)(=|\s+)\S+/g, '').replace(/\s+/g, ' ').trim();
  const report = await runSoak({
    ...options,
    log: (line) => console.log(line),
    rerun: (n) => `npm run soak -- --iterations ${n} --seed ${options.seed}${others ? ` ${others}` : ''}`,
  });
  console.log(formatReport(report));
  if (report.violations.length > 0 || report.lostWorst !== 0n) process.exitCode = 1;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
runBench(undefined, main, () => undefined);
