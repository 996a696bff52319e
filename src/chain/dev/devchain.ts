/**
 * Embedded local dev chain: an anvil child process made to look like Base mainnet.
 *
 * - chain id 8453, automining (no --block-time), the 10 default anvil accounts;
 * - a USDC-like token (contracts/TestUSDC.sol) at the Base USDC address, minter = account 0;
 * - a Multicall3-compatible contract at the canonical Multicall3 address;
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
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { encodeDeployData, type Address, type Hex } from 'viem';
import { ANVIL_ACCOUNTS, BASE_CHAIN_ID, BASE_USDC, MULTICALL3, type DevAccount } from '../constants.js';
import { guardianArgs } from './anvil-guardian.js';
import { endAnvilsOnStateFile, removePidFile, runsCommandLine, terminate, writePidFile } from './anvil-processes.js';
import { createDevClient, DEV_POLL_INTERVAL_MS, type DevClient } from './client.js';
import { multicall3Artifact, testUsdcArtifact } from './contracts.js';
import { requireSuccess, sendMint } from './faucet.js';

export type { DevAccount } from '../constants.js';
/** The faucet and a balance read, for callers of the dev chain (tests, scripts, the embedded service). */
export { mintUsdc, usdcBalance } from './faucet.js';

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

export const DEFAULT_FUND_AMOUNT = 10_000_000_000n; // 10 000 USDC
const DEFAULT_START_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 5_000;
const POLL_INTERVAL_MS = DEV_POLL_INTERVAL_MS;
const STDERR_TAIL_CHARS = 4_000;
const FREE_PORT_ATTEMPTS = 3;
const LOCALHOST = '127.0.0.1';

// ---------------------------------------------------------------------------- anvil binary

/** npm platform packages of @foundry-rs/anvil, keyed by `${process.platform}-${process.arch}`. */
const ANVIL_PLATFORM_PACKAGES: Readonly<Record<string, string>> = {
  'linux-x64': '@foundry-rs/anvil-linux-amd64',
  'linux-arm64': '@foundry-rs/anvil-linux-arm64',
  'darwin-x64': '@foundry-rs/anvil-darwin-amd64',
  'darwin-arm64': '@foundry-rs/anvil-darwin-arm64',
  'win32-x64': '@foundry-rs/anvil-win32-amd64',
};

/**
 * Path of the native anvil binary. @foundry-rs/anvil's own bin (bin.mjs) is a Node wrapper
 * that spawns `<platform package>/bin/anvil`; we resolve that file directly (from the
 * wrapper package's location, so it also works where only the wrapper is a direct dependency).
 */
export function resolveAnvilBinary(): string {
  const override = process.env.ANVIL_BINARY;
  if (override) return override;
  const platformPackage = ANVIL_PLATFORM_PACKAGES[`${process.platform}-${process.arch}`];
  if (!platformPackage) {
    throw new Error(`@foundry-rs/anvil ships no binary for ${process.platform}-${process.arch}`);
  }
  const fromHere = createRequire(import.meta.url);
  const fromWrapper = createRequire(fromHere.resolve('@foundry-rs/anvil/package.json'));
  const binaryName = process.platform === 'win32' ? 'anvil.exe' : 'anvil';
  return fromWrapper.resolve(`${platformPackage}/bin/${binaryName}`);
}

// ---------------------------------------------------------------------------- child process

/**
 * anvil runs under a guardian (./anvil-guardian.ts) that ends it when this process dies, even
 * by SIGKILL: the guardian holds a pipe from us on its stdin and stops anvil when it closes.
 */
interface AnvilProcess {
  /** The guardian: our direct child, anvil's parent. */
  readonly guardian: ChildProcess;
  /** Resolves with anvil's pid once the guardian reported it (undefined if it never did). */
  readonly pid: Promise<number | undefined>;
  /** Resolves when the guardian has exited (after anvil), or failed to spawn. */
  readonly exited: Promise<void>;
  hasExited(): boolean;
  exitCode(): number | null;
  stderrTail(): string;
}

const liveGuardians = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * On exit, tells every guardian still running to stop its anvil (synchronous: signals only).
 * Not needed for correctness (our end of their stdin pipe closes as we exit), just faster.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const guardian of liveGuardians) guardian.kill('SIGTERM');
  });
}

function spawnAnvil(binary: string, args: readonly string[]): AnvilProcess {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // no --inspect, loaders or heap flags meant for the service
  const guardian = spawn(process.execPath, guardianArgs(STOP_GRACE_MS, binary, args), {
    stdio: ['pipe', 'pipe', 'pipe'],
    env,
    // Own process group: a terminal's Ctrl-C (SIGINT to the foreground group) reaches the
    // service only, which stops the chain itself; no second, competing signal to anvil.
    detached: process.platform !== 'win32',
    windowsHide: true,
  });
  let stderr = '';
  let stdout = '';
  let exited = false;
  let resolvePid!: (pid: number | undefined) => void;
  const pid = new Promise<number | undefined>((resolve) => (resolvePid = resolve));
  guardian.stdin?.on('error', () => undefined); // EPIPE if the guardian is gone: nothing to tell it
  guardian.stdout?.setEncoding('utf8');
  guardian.stdout?.on('data', (chunk: string) => {
    stdout += chunk;
    const newline = stdout.indexOf('\n');
    if (newline >= 0) resolvePid(Number(stdout.slice(0, newline)) || undefined);
  });
  guardian.stderr?.setEncoding('utf8');
  guardian.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_TAIL_CHARS);
  });
  const exitedPromise = new Promise<void>((resolve) => {
    const markExited = (): void => {
      exited = true;
      liveGuardians.delete(guardian);
      resolvePid(undefined);
      resolve();
    };
    guardian.once('exit', markExited);
    guardian.once('error', (err) => {
      stderr += `\n${err.message}`;
      markExited();
    });
  });
  liveGuardians.add(guardian);
  installExitHook();
  return {
    guardian,
    pid,
    exited: exitedPromise,
    hasExited: () => exited,
    exitCode: () => guardian.exitCode,
    stderrTail: () => stderr.trim(),
  };
}

/**
 * Closing the guardian's stdin (plus SIGTERM) makes it SIGTERM anvil, which writes its state
 * file and exits; the guardian SIGKILLs anvil after STOP_GRACE_MS. Should the guardian itself
 * hang, its whole process group (guardian + anvil) gets SIGKILL a little later.
 */
async function stopAnvil(anvil: AnvilProcess): Promise<void> {
  if (anvil.hasExited()) return;
  anvil.guardian.stdin?.end();
  anvil.guardian.kill('SIGTERM');
  const forceKill = setTimeout(() => {
    if (anvil.hasExited()) return;
    try {
      if (process.platform !== 'win32' && anvil.guardian.pid) process.kill(-anvil.guardian.pid, 'SIGKILL');
      else anvil.guardian.kill('SIGKILL');
    } catch {
      anvil.guardian.kill('SIGKILL');
    }
  }, STOP_GRACE_MS + 2_000);
  await anvil.exited;
  clearTimeout(forceKill);
}

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
  const args = ['--chain-id', String(BASE_CHAIN_ID), '--host', LOCALHOST, '--port', String(port), '--silent'];
  if (stateFile) args.push('--state', stateFile);
  return args;
}

interface RunningAnvil {
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
async function launchAnvil(opts: DevChainOptions): Promise<RunningAnvil> {
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

// ---------------------------------------------------------------------------- chain setup

/**
 * Runtime code of TestUSDC with `minter` baked in as its immutable: the result of an eth_call
 * of the creation code (a simulated deployment; no transaction, no stray contract).
 */
async function usdcRuntimeCode(client: DevClient, minter: Address): Promise<Hex> {
  const { abi, bytecode } = testUsdcArtifact();
  const { data } = await client.call({ data: encodeDeployData({ abi, bytecode, args: [minter] }) });
  if (!data || data === '0x') throw new Error('TestUSDC creation code returned no runtime code');
  return data;
}

/** Puts `code` at `address` unless it is already there. Returns whether the address was empty. */
async function ensureCode(client: DevClient, address: Address, code: Hex): Promise<boolean> {
  const current = await client.getCode({ address });
  if (current?.toLowerCase() === code.toLowerCase()) return false;
  await client.setCode({ address, bytecode: code });
  return !current || current === '0x';
}

async function fundAccounts(
  client: DevClient,
  rpcUrl: string,
  recipients: readonly DevAccount[],
  amount: bigint,
): Promise<void> {
  const hashes = await Promise.all(recipients.map(({ address }) => sendMint(client, rpcUrl, BASE_USDC, address, amount)));
  await Promise.all(hashes.map((hash, i) => requireSuccess(client, hash, `mint to ${recipients[i]!.address}`)));
}

interface SetupResult {
  readonly restored: boolean;
  readonly funded: number;
}

interface Funding {
  readonly indices: readonly number[];
  readonly amount: bigint;
}

function fundingFrom(opts: DevChainOptions): Funding {
  const count = opts.fundAccounts ?? ANVIL_ACCOUNTS.length;
  const amount = opts.fundAmount ?? DEFAULT_FUND_AMOUNT;
  if (!Number.isInteger(count) || count < 0 || count > ANVIL_ACCOUNTS.length) {
    throw new RangeError(`fundAccounts must be an integer in 0..${ANVIL_ACCOUNTS.length}`);
  }
  const indices = opts.fundIndices ?? [...Array(count).keys()];
  if (indices.some((i) => !Number.isInteger(i) || i < 0 || i >= ANVIL_ACCOUNTS.length)) {
    throw new RangeError(`fundIndices must be integers in 0..${ANVIL_ACCOUNTS.length - 1}`);
  }
  if (amount <= 0n) throw new RangeError('fundAmount must be positive');
  return { indices, amount };
}

async function installContracts(client: DevClient, rpcUrl: string, funding: Funding): Promise<SetupResult> {
  const minter = ANVIL_ACCOUNTS[0]!.address;
  const [usdcCode] = await Promise.all([
    usdcRuntimeCode(client, minter),
    ensureCode(client, MULTICALL3, multicall3Artifact().deployedBytecode),
  ]);
  const usdcWasEmpty = await ensureCode(client, BASE_USDC, usdcCode);
  if (!usdcWasEmpty) {
    // A restored chain's latest block carries the timestamp of its last run: mine one so that
    // eth_call simulations (EIP-3009 validBefore/validAfter) see the current time.
    await client.mine({ blocks: 1 });
    return { restored: true, funded: 0 };
  }
  await fundAccounts(client, rpcUrl, funding.indices.map((i) => ANVIL_ACCOUNTS[i]!), funding.amount);
  return { restored: false, funded: funding.indices.length };
}

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
