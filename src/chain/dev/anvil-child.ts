import { spawn, type ChildProcess } from 'node:child_process';
import { guardianArgs } from './anvil-guardian.js';

// ---------------------------------------------------------------------------- child process

export const STOP_GRACE_MS = 5_000;
const STDERR_TAIL_CHARS = 4_000;

/**
 * anvil runs under a guardian (./anvil-guardian.ts) that ends it when this process dies, even
 * by SIGKILL: the guardian holds a pipe from us on its stdin and stops anvil when it closes.
 */
export interface AnvilProcess {
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

export function spawnAnvil(binary: string, args: readonly string[]): AnvilProcess {
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
export async function stopAnvil(anvil: AnvilProcess): Promise<void> {
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
