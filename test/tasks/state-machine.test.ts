import { describe, expect, it } from 'vitest';
import { cancellationTerms } from '../../src/escrow/rules.js';
import { canTransition, isTerminal, predecessorsOf, taskStatuses, transitions } from '../../src/tasks/state-machine.js';

describe('task state machine', () => {
  it('allows exactly the lifecycle of the contract', () => {
    const allowed = taskStatuses.flatMap((from) => transitions[from].map((to) => `${from}→${to}`));
    expect(allowed.sort()).toEqual(
      [
        'created→funded', 'created→cancelled', 'created→expired',
        'funded→in_progress', 'funded→cancelled', 'funded→expired', 'funded→failed',
        'in_progress→completed', 'in_progress→failed', 'in_progress→cancelled', 'in_progress→expired', 'in_progress→disputed',
        'completed→disputed',
      ].sort(),
    );
  });

  it('never leaves a terminal state and never goes back', () => {
    for (const s of ['failed', 'cancelled', 'disputed', 'expired'] as const) {
      expect(isTerminal(s)).toBe(true);
      for (const to of taskStatuses) expect(canTransition(s, to)).toBe(false);
    }
    expect(canTransition('in_progress', 'funded')).toBe(false);
    expect(canTransition('completed', 'in_progress')).toBe(false);
    expect(predecessorsOf('created')).toEqual([]);
    expect(predecessorsOf('funded')).toEqual(['created']);
  });
});

describe('cancellation rule', () => {
  it('refunds in full before work and keeps max(flat fee, progress) during work', () => {
    expect(cancellationTerms('created', 0n, 0, 1000)).toEqual({ refund: 0n, cancellationFee: 0n, escrowStatus: 'none' });
    expect(cancellationTerms('funded', 1_000_000n, 0, 1000)).toEqual({ refund: 1_000_000n, cancellationFee: 0n, escrowStatus: 'refunded' });
    expect(cancellationTerms('in_progress', 1_000_000n, 5, 1000)).toMatchObject({ refund: 900_000n, cancellationFee: 100_000n });
    expect(cancellationTerms('in_progress', 1_000_000n, 65, 1000)).toMatchObject({ refund: 350_000n, cancellationFee: 650_000n });
    expect(cancellationTerms('in_progress', 1_000_001n, 0, 1000)).toMatchObject({ refund: 900_001n, cancellationFee: 100_000n });
    expect(cancellationTerms('in_progress', 1_000_000n, 100, 0)).toEqual({ refund: 0n, cancellationFee: 1_000_000n, escrowStatus: 'released' });
  });
});
