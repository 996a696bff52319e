/**
 * Embedded local dev chain: an anvil child process made to look like Base mainnet.
 *
 * - chain id 8453, automining (no --block-time), the 10 default anvil accounts;
 * - a USDC-like token (contracts/TestUSDC.sol) at the Base USDC address, minter = account 0;
 * - a Multicall3-compatible contract at the canonical Multicall3 address;
 * - this project's x402 batch-settlement channel contract and its ERC-3009 deposit collector at
 *   the addresses @x402/evm expects (batch-settlement-contracts.ts);
 * - optional persistence with anvil's `--state FILE` (loaded at start, written when anvil
 *   exits on SIGTERM/SIGINT); a restored chain is not funded again;
 * - anvil dies with this process, even on SIGKILL: it runs under a guardian process that stops it
 *   (SIGTERM, so the state file is written) when our end of its stdin pipe closes
 *   (anvil-guardian.ts);
 * - one anvil per state file: `FILE.pid` names the running anvil, and a start first ends an anvil
 *   still running on FILE (anvil-processes.ts); a clean stop() removes `FILE.pid`;
 * - more test USDC from the faucet (faucet.ts, re-exported here as `mintUsdc`).
 *
 * Dev only: the service imports this module only when it runs the embedded chain (no CHAIN_RPC_URL).
 *
 * This module is the public API (startDevChain, with re-exports); the parts live next to it:
 * anvil-binary.ts (which anvil to run), anvil-child.ts (anvil under its guardian: spawn, stop),
 * anvil-launch.ts (port, readiness, retries), chain-setup.ts (contracts and funding),
 * devchain-types.ts (the public types).
 */
import { resolve } from 'node:path';
import { ANVIL_ACCOUNTS, BASE_CHAIN_ID, BASE_USDC, MULTICALL3 } from '../constants.js';
import { STOP_GRACE_MS, stopAnvil } from './anvil-child.js';
import { launchAnvil } from './anvil-launch.js';
import { endAnvilsOnStateFile, removePidFile, runsCommandLine, terminate, writePidFile } from './anvil-processes.js';
import { fundingFrom, installContracts, type SetupResult } from './chain-setup.js';
import { createDevClient } from './client.js';
import type { DevChain, DevChainLogger, DevChainOptions } from './devchain-types.js';

export type { DevAccount } from '../constants.js';
/** The faucet and a balance read, for callers of the dev chain (tests, scripts, the embedded service). */
export { mintUsdc, usdcBalance } from './faucet.js';
export type { DevChain, DevChainLogger, DevChainOptions } from './devchain-types.js';
export { DEFAULT_FUND_AMOUNT } from './chain-setup.js';
export { resolveAnvilBinary } from './anvil-binary.js';
export { pickFreePort } from './anvil-launch.js';

// ---------------------------------------------------------------------------- public API

function stderrLogger(): DevChainLogger {
  return {
    info(obj, msg) {
      const text = typeof obj === 'string' ? obj : `${msg ?? ''} ${JSON.stringify(obj)}`.trim();
      process.stderr.write(`[devchain] ${text}\n`);
    },
  };
}

function chooseLogger(opts: DevChainOptions): DevChainLogger | undefined {
  if (opts.silent) return undefined;
  return opts.logger ?? stderrLogger();
}

/** Starts anvil as Base mainnet with USDC and Multicall3 installed and dev accounts funded. */
export async function startDevChain(opts: DevChainOptions = {}): Promise<DevChain> {
  const logger = chooseLogger(opts);
  const funding = fundingFrom(opts);
  const stateFile = opts.stateFile ? resolve(opts.stateFile) : undefined;
  const startedAt = performance.now();
  // One anvil per state file: an orphan still on it (its service was killed) is stopped first,
  // so that it writes the file now rather than overwrite it with an old chain later.
  const staleEnded = stateFile ? await endAnvilsOnStateFile(stateFile, STOP_GRACE_MS) : [];
  if (staleEnded.length > 0) logger?.info({ stateFile, pids: staleEnded }, 'ended stale anvil on the state file');
  const launched = await launchAnvil({ ...opts, stateFile });
  const { anvil, pid, rpcUrl, port } = launched;
  const stop = async (): Promise<void> => {
    await stopAnvil(anvil);
    // The guardian already gone (killed on its own) but anvil left running: end it ourselves.
    if (runsCommandLine(pid, launched.argv)) await terminate(pid, STOP_GRACE_MS);
    if (stateFile) removePidFile(stateFile, pid);
  };
  const anvilMs = Math.round(performance.now() - startedAt);
  let setup: SetupResult;
  try {
    if (stateFile) {
      writePidFile({
        pid,
        ...(anvil.guardian.pid ? { guardianPid: anvil.guardian.pid } : {}),
        ownerPid: process.pid,
        port,
        stateFile,
        startedAt: new Date().toISOString(),
      });
    }
    setup = await installContracts(createDevClient(rpcUrl), rpcUrl, funding);
  } catch (error) {
    await stop();
    throw error;
  }
  const setupMs = Math.round(performance.now() - startedAt) - anvilMs;
  logger?.info(
    { rpcUrl, port, pid, stateFile: stateFile ?? null, ...setup, anvilMs, setupMs },
    'dev chain ready',
  );
  let stopped: Promise<void> | undefined;
  return {
    rpcUrl,
    chainId: BASE_CHAIN_ID,
    usdc: BASE_USDC,
    multicall3: MULTICALL3,
    accounts: ANVIL_ACCOUNTS,
    minter: ANVIL_ACCOUNTS[0]!,
    restored: setup.restored,
    pid,
    stop: () =>
      (stopped ??= stop().then(() => logger?.info({ rpcUrl, stateFile: stateFile ?? null }, 'dev chain stopped'))),
  };
}
