/**
 * One anvil per state file: `<stateFile>.pid` records the anvil that runs on a state file, and a
 * start first ends any anvil still running on that file (an orphan of a killed service, which
 * would otherwise keep the file and overwrite it with an old chain when it finally stops).
 *
 * "Still running on that file" is checked on the process's command line (`--state <file>`), so a
 * recycled pid is never signalled: /proc/<pid>/cmdline on Linux, `ps` elsewhere (if `ps` is not
 * there, the pid file alone is trusted). On Linux, /proc is also scanned for anvil processes on
 * the file that have no pid file (orphans of a version without one, a deleted pid file).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, isAbsolute, resolve } from 'node:path';

export interface AnvilPidFile {
  /** The anvil process. */
  readonly pid: number;
  /** Its guardian (parent of anvil), if any. */
  readonly guardianPid?: number;
  /** The service process that started it. */
  readonly ownerPid: number;
  readonly port: number;
  readonly stateFile: string;
  readonly startedAt: string;
}

export const pidFilePath = (stateFile: string): string => `${stateFile}.pid`;

/** Written atomically (temp file + rename). */
export function writePidFile(info: AnvilPidFile): void {
  const file = pidFilePath(info.stateFile);
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, `${JSON.stringify(info)}\n`);
  renameSync(temp, file);
}

export function readPidFile(stateFile: string): AnvilPidFile | undefined {
  try {
    const parsed = JSON.parse(readFileSync(pidFilePath(stateFile), 'utf8')) as Partial<AnvilPidFile>;
    return Number.isInteger(parsed.pid) && parsed.pid! > 0 ? (parsed as AnvilPidFile) : undefined;
  } catch {
    return undefined; // missing or unreadable: nothing recorded
  }
}

/** Removes the pid file if it still names `pid` (a newer start may have replaced it). */
export function removePidFile(stateFile: string, pid: number): void {
  if (readPidFile(stateFile)?.pid === pid) rmSync(pidFilePath(stateFile), { force: true });
}

/** Alive = exists and, on Linux, is not a zombie (an exited orphan waiting for init to reap it). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (process.platform !== 'linux') return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) !== 'Z';
  } catch {
    return false;
  }
}

interface CommandLine {
  readonly args: readonly string[];
  /** Working directory (to resolve a relative `--state`), when known. */
  readonly cwd?: string;
}

function linuxCommandLine(pid: number): CommandLine | undefined {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (args.at(-1) === '') args.pop();
    let cwd: string | undefined;
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      cwd = undefined; // another user's process: only absolute --state paths can match
    }
    return { args, ...(cwd ? { cwd } : {}) };
  } catch {
    return undefined;
  }
}

/** `ps` prints the command line space-joined: good enough to find `--state <file>` in it. */
function psCommandLine(pid: number): string | undefined | null {
  try {
    return execFileSync('ps', ['-o', 'args=', '-p', String(pid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch (error) {
    // ps exits 1 for an unknown pid; no ps at all (ENOENT): cannot tell.
    return (error as NodeJS.ErrnoException).code === 'ENOENT' ? null : undefined;
  }
}

function statePath(arg: string, cwd: string | undefined): string | undefined {
  if (isAbsolute(arg)) return resolve(arg);
  return cwd ? resolve(cwd, arg) : undefined;
}

function runsOnStateFile({ args, cwd }: CommandLine, stateFile: string): boolean {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const value = arg === '--state' ? args[i + 1] : arg.startsWith('--state=') ? arg.slice('--state='.length) : undefined;
    if (value !== undefined && statePath(value, cwd) === stateFile) return true;
  }
  return false;
}

const isAnvilBinary = (arg0: string | undefined): boolean => /^anvil(\.exe)?$/i.test(basename(arg0 ?? ''));

/** Whether `pid` is alive and runs with `--state stateFile` (`stateFile` absolute). */
function pidRunsOnStateFile(pid: number, stateFile: string): boolean {
  if (pid === process.pid || !isProcessAlive(pid)) return false;
  if (process.platform === 'linux') {
    const commandLine = linuxCommandLine(pid);
    return commandLine !== undefined && runsOnStateFile(commandLine, stateFile);
  }
  const line = psCommandLine(pid);
  if (line === null) return true; // no way to look: trust the pid file
  return line !== undefined && (line.includes(`--state ${stateFile}`) || line.includes(`--state=${stateFile}`));
}

/** Linux: anvil processes (argv[0] named anvil) running with `--state stateFile`. */
function scanForAnvils(stateFile: string): number[] {
  if (process.platform !== 'linux') return [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const found: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const commandLine = linuxCommandLine(pid);
    if (commandLine && isAnvilBinary(commandLine.args[0]) && runsOnStateFile(commandLine, stateFile) && isProcessAlive(pid)) {
      found.push(pid);
    }
  }
  return found;
}

/** Anvil processes that currently run on `stateFile` (absolute): the pid file's, then a /proc scan. */
export function findAnvilsOnStateFile(stateFile: string): number[] {
  const pids = new Set<number>();
  const recorded = readPidFile(stateFile);
  if (recorded && pidRunsOnStateFile(recorded.pid, stateFile)) pids.add(recorded.pid);
  for (const pid of scanForAnvils(stateFile)) pids.add(pid);
  return [...pids];
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(25);
  }
  return true;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error; // gone already: fine
  }
}

/** Whether `pid` is alive with exactly this command line (our own anvil, not a recycled pid). */
export function runsCommandLine(pid: number, argv: readonly string[]): boolean {
  if (pid <= 0 || pid === process.pid || !isProcessAlive(pid)) return false;
  if (process.platform === 'linux') {
    const commandLine = linuxCommandLine(pid);
    return commandLine !== undefined && commandLine.args.join('\0') === argv.join('\0');
  }
  const line = psCommandLine(pid);
  return line === null || line === argv.join(' ');
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once `pid` is gone, throws if it stays. */
export async function terminate(pid: number, graceMs: number): Promise<void> {
  signal(pid, 'SIGTERM');
  if (await waitForExit(pid, graceMs)) return;
  signal(pid, 'SIGKILL');
  if (!(await waitForExit(pid, 2_000))) throw new Error(`pid ${pid} is still running after SIGTERM and SIGKILL`);
}

/**
 * Ends every anvil still running on `stateFile` (absolute): SIGTERM (anvil writes the state file
 * as it exits), SIGKILL after `graceMs`; then removes the pid file. Returns the pids it ended.
 * Throws if one of them cannot be ended (e.g. EPERM): two anvils on one file is worse.
 */
export async function endAnvilsOnStateFile(stateFile: string, graceMs: number): Promise<number[]> {
  const pids = findAnvilsOnStateFile(stateFile);
  for (const pid of pids) signal(pid, 'SIGTERM');
  for (const pid of pids) {
    if (await waitForExit(pid, graceMs)) continue;
    signal(pid, 'SIGKILL');
    if (!(await waitForExit(pid, 2_000))) {
      throw new Error(`anvil pid ${pid} on ${stateFile} is still running after SIGTERM and SIGKILL`);
    }
  }
  rmSync(pidFilePath(stateFile), { force: true });
  return pids;
}
