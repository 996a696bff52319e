import type { Address } from 'viem';
import type { BASE_CHAIN_ID, DevAccount } from '../constants.js';

/** The dev chain's public types (re-exported by ./devchain.ts). */

/** Pino-compatible subset. */
export interface DevChainLogger {
  info(obj: object | string, msg?: string): void;
}

export interface DevChainOptions {
  /** TCP port on 127.0.0.1; 0 or omitted = pick a free port. */
  port?: number;
  /** anvil `--state` file: loaded if it exists, written when anvil stops. Omitted = in memory. */
  stateFile?: string;
  /** How many of the 10 dev accounts get USDC on a fresh chain (default 10). */
  fundAccounts?: number;
  /** Exactly which dev accounts (indices 0..9) get USDC; wins over fundAccounts. */
  fundIndices?: readonly number[];
  /** USDC (atomic, 6 decimals) minted to each funded account (default 10_000 USDC). */
  fundAmount?: bigint;
  /** No log lines at all (default false). */
  silent?: boolean;
  /** Where log lines go (default: one line per event on stderr). Never receives keys. */
  logger?: DevChainLogger;
  /** anvil binary to run instead of the one from @foundry-rs/anvil (also env ANVIL_BINARY). */
  anvilBinary?: string;
  /** Readiness timeout for the anvil JSON-RPC endpoint (default 15 000 ms). */
  startTimeoutMs?: number;
}

export interface DevChain {
  readonly rpcUrl: string;
  readonly chainId: typeof BASE_CHAIN_ID;
  /** TestUSDC at the Base USDC address. */
  readonly usdc: Address;
  readonly multicall3: Address;
  /** All 10 anvil dev accounts (each holds 10 000 ETH); the first `fundAccounts` hold USDC. */
  readonly accounts: readonly DevAccount[];
  /** The USDC minter (= accounts[0]). */
  readonly minter: DevAccount;
  /** True when the chain came from an existing state file with the token already installed. */
  readonly restored: boolean;
  /** Process id of anvil itself (its parent is a small guardian process, see anvil-guardian.ts). */
  readonly pid: number;
  /**
   * Stops anvil (SIGTERM; anvil writes the state file, if any, before exiting) and removes the
   * state file's pid file. Idempotent.
   */
  stop(): Promise<void>;
}
