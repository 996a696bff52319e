/** The knobs of bench/operator-lane.ts (environment) and the constants of a run. */
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { positiveInt } from '../lib.js';

export interface OperatorLaneSettings {
  /** N: paid calls measured per HTTP configuration. */
  calls: number;
  /** C: paid calls in flight at once (spread round-robin over the API processes). */
  concurrency: number;
  /** Paying wallets (fresh keys, minted test USDC, no ETH). */
  payers: number;
  /** Sends measured per send-level option and round. */
  sends: number;
  /** No paid call starts after this many seconds of a configuration's measured window (the machine is shared). */
  maxSeconds: number;
  /** No send starts after this many seconds of a send-level option's measured window. */
  sendMaxSeconds: number;
  /** Sends in flight at once at the send level, split evenly over the two "processes". */
  sendConcurrency: number;
  /** Rounds of the send-level options (the order alternates from one round to the next). */
  sendRounds: number;
  databaseUrl: string;
}

export function readSettings(env: NodeJS.ProcessEnv = process.env): OperatorLaneSettings {
  const concurrency = positiveInt('BENCH_CONCURRENCY', 16, 256);
  return {
    calls: positiveInt('BENCH_CALLS', 400),
    concurrency,
    payers: positiveInt('BENCH_PAYERS', 8, 64),
    sends: positiveInt('BENCH_SENDS', 400),
    maxSeconds: positiveInt('BENCH_MAX_SECONDS', 25),
    sendMaxSeconds: positiveInt('BENCH_SEND_MAX_SECONDS', 10),
    sendConcurrency: positiveInt('BENCH_SEND_CONCURRENCY', concurrency, 256),
    sendRounds: positiveInt('BENCH_SEND_ROUNDS', 1, 10),
    databaseUrl: env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test',
  };
}

/**
 * Unmeasured paid calls before each HTTP configuration (per API process: JIT, pools, the first
 * chain_nonces row), and unmeasured sends before each send-level option.
 */
export const WARMUP_CALLS_PER_API = 16;
export const WARMUP_SENDS = 16;
/** Test USDC minted to each payer: 10 USDC, far more than the run's 0.001 USDC calls spend. */
export const PAYER_USDC = 10_000_000n;
/** What one send-level sender is given: ETH for gas (anvil_setBalance) and test USDC to transfer. */
export const SENDER_ETH_WEI = 100n * 10n ** 18n;
export const SENDER_USDC = 1_000_000_000n;
/** A paid call or a send taking longer than this is a failure (`timeout`). */
export const CALL_TIMEOUT_MS = 60_000;

/** The operator key every API process gets by default (serviceEnv): anvil account DEV_ROLES.operator. */
export const OPERATOR = ANVIL_ACCOUNTS[DEV_ROLES.operator]!;
/**
 * The second operator key of the key-pool configuration: the first demo wallet. With an external
 * CHAIN_RPC_URL the service funds no demo wallet and never sends from one (the demo wallets are the
 * embedded chain's clients), anvil gives it 10 000 ETH like every default account, and it is none
 * of the minter (account 0, which the faucet sends from), escrow, operator or fee wallet.
 */
export const SECOND_OPERATOR = ANVIL_ACCOUNTS[DEV_ROLES.demo[0]]!;
