import type { TaskStatus } from '../tasks/statuses.js';

/**
 * The escrow's own state, kept beside the task's:
 *   none ──fund──▶ held ──▶ released | refunded | partially_refunded | frozen (dispute)
 * and the money rules that decide who gets what.
 */
export const escrowStatuses = ['none', 'held', 'released', 'refunded', 'partially_refunded', 'frozen'] as const;
export type EscrowStatus = (typeof escrowStatuses)[number];

export const BPS = 10_000n;

export interface CancellationTerms {
  /** What goes back to the payer. */
  refund: bigint;
  /** What the agent keeps for work started. */
  cancellationFee: bigint;
  escrowStatus: EscrowStatus;
}

/**
 * Cancellation rule (documented in README):
 * - not funded: nothing moves;
 * - funded, work not started: full refund, no fee;
 * - work in progress: the agent keeps `max(CANCELLATION_FEE_BPS, progress_percent × 100)` basis
 *   points of the escrow (at least the flat fee, more when it reported more progress); the rest is
 *   refunded. Rounded down in the payer's favour on the fee.
 */
export function cancellationTerms(
  status: TaskStatus,
  escrow: bigint,
  progressPercent: number,
  feeBps: number,
): CancellationTerms {
  if (status === 'created') return { refund: 0n, cancellationFee: 0n, escrowStatus: 'none' };
  if (status === 'funded') return { refund: escrow, cancellationFee: 0n, escrowStatus: 'refunded' };
  const progressBps = BigInt(Math.max(0, Math.min(100, Math.floor(progressPercent)))) * 100n;
  const bps = BigInt(feeBps) > progressBps ? BigInt(feeBps) : progressBps;
  const fee = (escrow * bps) / BPS;
  const refund = escrow - fee;
  return { refund, cancellationFee: fee, escrowStatus: refund === 0n ? 'released' : 'partially_refunded' };
}

/** Escrow that a dispute may freeze: money still held for the task. */
export function isDisputable(escrowStatus: EscrowStatus): boolean {
  return escrowStatus === 'held';
}
