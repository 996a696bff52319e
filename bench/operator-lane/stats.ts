/** What one measured run of calls or sends yields, and the arithmetic on it. */

export interface RunFigures {
  label: string;
  /** Calls or sends attempted in the measured window. */
  attempted: number;
  /** Those that succeeded (HTTP 200 / the node took the transaction). */
  ok: number;
  /** Wall time of the measured window: first start to last end. */
  seconds: number;
  /** Latency of each successful call or send, ms. */
  latencies: number[];
  /** Failures by error (status + code + message, or the RPC error). */
  failures: Record<string, number>;
}

export const rate = (f: RunFigures): number => f.ok / f.seconds;
export const failed = (f: RunFigures): number => f.attempted - f.ok;

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function tally(into: Record<string, number>, key: string, n = 1): void {
  into[key] = (into[key] ?? 0) + n;
}

/** Several runs of one option as one: counts and latencies pooled, seconds summed. */
export function pool(label: string, runs: readonly RunFigures[]): RunFigures {
  const failures: Record<string, number> = {};
  for (const r of runs) for (const [k, n] of Object.entries(r.failures)) tally(failures, k, n);
  return {
    label,
    attempted: runs.reduce((s, r) => s + r.attempted, 0),
    ok: runs.reduce((s, r) => s + r.ok, 0),
    seconds: runs.reduce((s, r) => s + r.seconds, 0),
    latencies: runs.flatMap((r) => r.latencies),
    failures,
  };
}

/**
 * Union length of [start, end] intervals (ms): how long at least one of them was open. Used for
 * the share of the window during which the lane's row lock was held.
 */
export function unionMs(intervals: ReadonlyArray<readonly [number, number]>): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let [curStart, curEnd] = [NaN, NaN];
  for (const [s, e] of sorted) {
    if (!(s <= curEnd)) {
      if (Number.isFinite(curStart)) total += curEnd - curStart;
      [curStart, curEnd] = [s, e];
    } else if (e > curEnd) curEnd = e;
  }
  if (Number.isFinite(curStart)) total += curEnd - curStart;
  return total;
}

/**
 * Runs `count` jobs with at most `concurrency` in flight; job i gets its index. No job starts after
 * `deadline` (performance.now() ms), if given: resolves with the number of jobs started.
 */
export async function inFlight(count: number, concurrency: number, job: (i: number) => Promise<void>, deadline = Infinity): Promise<number> {
  let next = 0;
  const lane = async () => {
    while (next < count && performance.now() < deadline) await job(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  return next;
}

/** A short, stable key for an error: viem's `details` or short message, else the message; numbers and hex masked. */
export function errorKey(err: unknown): string {
  const e = err as { details?: unknown; shortMessage?: unknown; message?: unknown; name?: unknown } | undefined;
  const text =
    (typeof e?.details === 'string' && e.details) ||
    (typeof e?.shortMessage === 'string' && e.shortMessage) ||
    (typeof e?.message === 'string' && e.message) ||
    String(err);
  return maskVariable(text.split('\n')[0]!).slice(0, 140);
}

/** Hex strings and long numbers replaced by placeholders so that errors differing only by them count together. */
export function maskVariable(text: string): string {
  return text.replace(/0x[0-9a-fA-F]{8,}/g, '0x…').replace(/\b\d{2,}\b/g, 'N');
}
