/** The command line of bench/scale-out.ts and the constants of a run. */

export interface ScaleOutOptions {
  /** Measured seconds of load per configuration (after a warm-up). */
  durationS: number;
  /** Hires in flight at once (lanes). */
  inFlight: number;
  /** Paying wallets; lane i pays from wallet i mod payers. */
  payers: number;
  seed: number;
  /** Keep the scratch database (its URL is printed). */
  keepDb: boolean;
  /** Where each service process's log goes (default a new temp dir). */
  logDir?: string;
}

/** Unmeasured seconds of load at the start of each configuration (JIT, pools, the new processes). */
export const WARMUP_S = 3;
/** The phase-3 kills land this far into the measured window. */
export const KILL_AT_SHARE = 0.4;
/** Pause between two status polls of one hire. */
export const POLL_MS = 600;
/** A hire still not terminal after this long is given up (an error). */
export const HIRE_TIMEOUT_MS = 150_000;
/** timeout_seconds of every task: longer than a worker's takeover (lease) plus retries. */
export const TASK_TIMEOUT_S = 180;
/** Budgets in atomic USDC, drawn per hire. */
export const BUDGET: readonly [number, number] = [20_000, 200_000];
/** USDC minted to each payer (1000 USDC). */
export const PAYER_USDC = 1_000_000_000n;
/** The agents: four steady ones and one that answers 503 to ~20 % of its briefs (retried). */
export const ROSTER = ['steady', 'steady', 'steady', 'steady', 'flaky'] as const;
/** How long the service may take to drain after each configuration. */
export const QUIESCE_TIMEOUT_MS = 120_000;
export const ADMIN_KEY = 'scale-out-admin-key-0123456789abcdef';

export const USAGE = `npm run bench:scale-out -- [--duration-s 40] [--in-flight 16] [--payers 4] [--seed 42] [--keep-db] [--log-dir DIR]`;

export function parseOptions(argv: string[]): ScaleOutOptions {
  const values = new Map<string, string>();
  let keepDb = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') throw new Error(USAGE);
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}\n${USAGE}`);
    const [key, inline] = arg.slice(2).split('=', 2) as [string, string | undefined];
    if (key === 'keep-db') keepDb = true;
    else if (inline !== undefined) values.set(key, inline);
    else if (argv[i + 1] !== undefined) values.set(key, argv[++i]!);
    else throw new Error(`--${key} needs a value`);
  }
  const known = new Set(['duration-s', 'in-flight', 'payers', 'seed', 'log-dir']);
  for (const key of values.keys()) if (!known.has(key)) throw new Error(`unknown option --${key}\n${USAGE}`);
  const int = (key: string, fallback: number, min: number) => {
    const raw = values.get(key);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${key} must be an integer ≥ ${min}, got ${raw}`);
    return n;
  };
  return {
    durationS: int('duration-s', 40, 5),
    inFlight: int('in-flight', 16, 1),
    payers: int('payers', 4, 1),
    seed: int('seed', 42, 0),
    keepDb,
    ...(values.get('log-dir') ? { logDir: values.get('log-dir')! } : {}),
  };
}
