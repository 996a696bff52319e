import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname } from 'node:path';
import { BASE_CHAIN_ID } from '../constants.js';
import { resolveAnvilBinary } from './anvil-binary.js';
import { spawnAnvil, stopAnvil, type AnvilProcess } from './anvil-child.js';
import { DEV_POLL_INTERVAL_MS } from './client.js';
import type { DevChainOptions } from './devchain-types.js';

// ---------------------------------------------------------------------------- launch: port, readiness, retries

const DEFAULT_START_TIMEOUT_MS = 15_000;
const POLL_INTERVAL_MS = DEV_POLL_INTERVAL_MS;
const FREE_PORT_ATTEMPTS = 3;
const LOCALHOST = '127.0.0.1';

/** A port that was free a moment ago (bind to 0, read it, close). */
export async function pickFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, LOCALHOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('could not pick a free port'))));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function fetchChainId(rpcUrl: string): Promise<number | undefined> {
  try {
    const response = await fetch(rpcUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
      signal: AbortSignal.timeout(1_000),
    });
    if (!response.ok) return undefined;
    const body = (await response.json()) as { result?: unknown };
    return typeof body.result === 'string' ? Number(body.result) : undefined;
  } catch {
    return undefined; // not listening yet
  }
}

class AnvilStartError extends Error {
  constructor(
    message: string,
    readonly portInUse: boolean,
  ) {
    super(message);
    this.name = 'AnvilStartError';
  }
}

/** Polls eth_chainId until anvil answers; fails fast if the process dies. */
async function waitForRpc(anvil: AnvilProcess, rpcUrl: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (anvil.hasExited()) {
      const stderr = anvil.stderrTail();
      throw new AnvilStartError(
        `anvil exited before ${rpcUrl} answered (exit code ${anvil.exitCode()}): ${stderr || '<no stderr>'}`,
        /address already in use|addrinuse/i.test(stderr),
      );
    }
    const chainId = await fetchChainId(rpcUrl);
    if (chainId === BASE_CHAIN_ID) return;
    if (chainId !== undefined) {
      throw new AnvilStartError(`${rpcUrl} answered with chain id ${chainId}, expected ${BASE_CHAIN_ID}`, true);
    }
    await sleep(POLL_INTERVAL_MS);
  }
  throw new AnvilStartError(
    `anvil did not answer eth_chainId on ${rpcUrl} within ${timeoutMs} ms: ${anvil.stderrTail() || '<no stderr>'}`,
    false,
  );
}

function anvilArgs(port: number, stateFile: string | undefined): string[] {
  // Cancun, not anvil 1.7's default Prague: under Prague every mined block also writes the EIP-2935
  // block-hash history contract, and anvil 1.7 re-hashes its whole state per block, so each
  // transaction got slower as the chain grew (measured here: ~100 ms per transfer after 1 000 blocks,
  // several times that after 2 000; Cancun stays flat at ~45 ms). Fixed upstream after 1.7.1
  // (foundry-rs/foundry#15715). Nothing here needs Prague: the contracts target Cancun.
  const args = ['--chain-id', String(BASE_CHAIN_ID), '--host', LOCALHOST, '--port', String(port), '--silent', '--hardfork', 'cancun'];
  if (stateFile) args.push('--state', stateFile);
  return args;
}

export interface RunningAnvil {
  readonly anvil: AnvilProcess;
  /** anvil's own pid (not the guardian's). */
  readonly pid: number;
  /** anvil's command line (binary + arguments), to recognise it by its pid later. */
  readonly argv: readonly string[];
  readonly rpcUrl: string;
  readonly port: number;
}

/**
 * Spawns anvil (under its guardian) and waits until it answers; retries on another port if a
 * picked one was taken. `stateFile`, if any, must be absolute.
 */
export async function launchAnvil(opts: DevChainOptions): Promise<RunningAnvil> {
  const binary = opts.anvilBinary ?? resolveAnvilBinary();
  const fixedPort = opts.port ?? 0;
  if (opts.stateFile) mkdirSync(dirname(opts.stateFile), { recursive: true });
  for (let attempt = 1; ; attempt++) {
    const port = fixedPort || (await pickFreePort());
    const rpcUrl = `http://${LOCALHOST}:${port}`;
    const args = anvilArgs(port, opts.stateFile);
    const anvil = spawnAnvil(binary, args);
    try {
      await waitForRpc(anvil, rpcUrl, opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
      const pid = await anvil.pid; // printed by the guardian right after spawning anvil
      if (pid === undefined) throw new Error(`anvil guardian exited: ${anvil.stderrTail() || '<no stderr>'}`);
      return { anvil, pid, argv: [binary, ...args], rpcUrl, port };
    } catch (error) {
      await stopAnvil(anvil);
      const retry = !fixedPort && attempt < FREE_PORT_ATTEMPTS && error instanceof AnvilStartError && error.portInUse;
      if (!retry) throw error;
    }
  }
}
