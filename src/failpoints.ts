/**
 * Crash points for the tests that kill real processes: with `FAILPOINTS=name[,name…]` (never in
 * production) the process SIGKILLs itself when it reaches a named point, exactly as a power cut
 * or an OOM kill would stop it there.
 *
 * - `payment:after-settle`: a payment moved on chain, nothing about it is recorded yet
 *   (`payment:after-settle:<purpose>` for one purpose only, e.g. `payment:after-settle:fund_task`).
 * - `payment:after-verify`: a payment was verified (a channel payment's channel is reserved by
 *   the request), nothing about it is recorded yet (`:<purpose>` likewise).
 */
const active = new Set(
  process.env.NODE_ENV === 'production' ? [] : (process.env.FAILPOINTS ?? '').split(',').map((s) => s.trim()).filter(Boolean),
);

export function failpoint(name: string, qualifier?: string): void {
  if (active.size === 0) return;
  if (active.has(name) || (qualifier !== undefined && active.has(`${name}:${qualifier}`))) process.kill(process.pid, 'SIGKILL');
}
