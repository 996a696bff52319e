/**
 * The guardian: a tiny Node process between the service and anvil, so that anvil dies with
 * the service even when the service gets SIGKILL (Node has no PR_SET_PDEATHSIG).
 *
 *   service ──stdin pipe──▶ guardian (`node -e GUARDIAN_SOURCE -- graceMs binary args…`) ──▶ anvil
 *
 * - The guardian spawns anvil and prints anvil's pid on stdout (one line).
 * - It relays anvil's stderr to its own stderr (the service keeps reading anvil's errors) and
 *   swallows EPIPE once the service is gone, so anvil never writes into a dead pipe.
 * - Shutdown: when its stdin reaches EOF (the service closed it, or died: the kernel closes a
 *   dead process's descriptors), when its parent pid changes (reparented: belt and braces), or
 *   on SIGTERM/SIGINT/SIGHUP, it sends anvil SIGTERM (anvil writes its `--state` file), then
 *   SIGKILL after `graceMs`.
 * - It exits once anvil has exited and its stderr is drained, with anvil's exit code
 *   (128 + signal number when anvil was killed by a signal).
 *
 * It is a plain CommonJS string run with `node -e` rather than a file next to this module:
 * nothing to resolve or copy, so it runs the same under tsx (src/*.ts), from dist/ (tsc does not
 * copy non-TS files) and from any bundle.
 */
export const GUARDIAN_SOURCE = String.raw`'use strict';
const { spawn } = require('node:child_process');
const { constants } = require('node:os');
const [graceArg, binary, ...args] = process.argv.slice(1);
const graceMs = Number(graceArg) > 0 ? Number(graceArg) : 5000;
const parentPid = process.ppid;
const say = (stream, text) => { try { stream.write(text); } catch {} };
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});
const anvil = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
anvil.stderr.on('data', (chunk) => say(process.stderr, chunk));
anvil.once('spawn', () => say(process.stdout, anvil.pid + '\n'));
anvil.once('error', (err) => { say(process.stderr, 'anvil guardian: ' + err.message + '\n'); process.exit(127); });
anvil.once('close', (code, signal) => process.exit(code ?? 128 + (constants.signals[signal] ?? 0)));
let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  anvil.kill('SIGTERM');
  setTimeout(() => anvil.kill('SIGKILL'), graceMs).unref();
}
process.stdin.on('data', () => {});
process.stdin.once('end', shutdown);
process.stdin.once('close', shutdown);
process.stdin.once('error', shutdown);
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, shutdown);
setInterval(() => { if (process.ppid !== parentPid) shutdown(); }, 500).unref();
`;

/** argv for `process.execPath` that runs `binary args…` under the guardian. */
export function guardianArgs(graceMs: number, binary: string, args: readonly string[]): string[] {
  return ['-e', GUARDIAN_SOURCE, '--', String(graceMs), binary, ...args];
}
