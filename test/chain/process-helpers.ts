/** Real-process helpers for the dev chain lifecycle tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DEVCHAIN_URL = pathToFileURL(join(REPO_ROOT, 'src/chain/dev/devchain.ts')).href;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Alive = exists and is not a zombie (an orphan waits for a possibly slow init to reap it). */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  if (process.platform !== 'linux') return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Polls until `pid` is gone; returns how long that took, or undefined after `timeoutMs`. */
export async function waitUntilGone(pid: number, timeoutMs: number): Promise<number | undefined> {
  const startedAt = Date.now();
  while (isRunning(pid)) {
    if (Date.now() - startedAt > timeoutMs) return undefined;
    await sleep(25);
  }
  return Date.now() - startedAt;
}

/** Signals `pid` if it is still there (test cleanup). */
export function killQuietly(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (!pid) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

export interface ChainChild {
  readonly child: ChildProcess;
  /** What the child printed once its chain was up. */
  readonly info: { pid: number; rpcUrl: string };
}

/**
 * A Node process (tsx) that starts the dev chain on `stateFile`, mints `mint.amount` USDC to
 * `mint.to`, prints `{ pid, rpcUrl }` and then stays up until killed: a service in miniature.
 */
export async function startChainInChild(
  dir: string,
  stateFile: string,
  mint: { to: string; amount: bigint },
): Promise<ChainChild> {
  const script = join(dir, 'chain-child.mts');
  writeFileSync(
    script,
    `import { mintUsdc, startDevChain } from ${JSON.stringify(DEVCHAIN_URL)};\n` +
      `const chain = await startDevChain({ stateFile: ${JSON.stringify(stateFile)}, silent: true, fundAccounts: 0 });\n` +
      `await mintUsdc(chain, ${JSON.stringify(mint.to)}, ${mint.amount}n);\n` +
      `console.log(JSON.stringify({ pid: chain.pid, rpcUrl: chain.rpcUrl }));\n` +
      `setInterval(() => undefined, 1 << 30);\n`,
  );
  const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => (stderr += chunk));
  const info = await new Promise<ChainChild['info']>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`chain child printed nothing within 20 s: ${stderr}`));
    }, 20_000);
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk;
      const newline = stdout.indexOf('\n');
      if (newline < 0) return;
      clearTimeout(timer);
      resolve(JSON.parse(stdout.slice(0, newline)) as ChainChild['info']);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`chain child exited (${code}) before printing: ${stderr}`));
    });
  });
  return { child, info };
}

/** SIGKILLs a child process and waits until it has been reaped. */
export async function sigkill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Polls eth_chainId at `rpcUrl` until it answers (or throws after `timeoutMs`). */
export async function waitForRpc(rpcUrl: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const response = await fetch(rpcUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
      });
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${rpcUrl} did not answer within ${timeoutMs} ms`);
    await sleep(25);
  }
}
