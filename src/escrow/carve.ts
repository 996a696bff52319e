import { and, eq, inArray, ne, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import type { Executor, Tx } from '../db/client.js';
import { ledgerEntries, type TaskRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { escrowAccount } from '../ledger/accounts.js';
import { accountBalance, postMovement, transferEntries } from '../ledger/ledger.js';
import type { EscrowStatus } from './rules.js';

/**
 * The money of sub-delegation. A hosted agent working on a task (the parent) may hire children
 * with delegate_task; they are paid from the parent's escrow, never from a new payment:
 *
 * - **carve**: a child's escrow is moved from what remains of the parent's escrow
 *   (`escrow:<parent>` → `escrow:<child>`, both in the custodial escrow wallet, so no chain
 *   transfer) in the transaction that creates and funds the child, under the parent's row lock.
 *   What remains is the ledger balance of `escrow:<parent>`, so the children together can never
 *   take more than the parent holds, however many carve at once.
 * - **return**: a child's refund (failed, cancelled, timed out, a dispute's payer share) goes back
 *   to the parent's escrow (`carve_return`) while that escrow is still held (or frozen by a
 *   dispute of the parent), not to the payer on chain. Once the parent's escrow has been decided
 *   (released or refunded), a late refund of a child goes to the payer as any refund does.
 * - A child's release pays its agent from its own escrow as usual; when the parent ends, what its
 *   escrow still holds follows the release and refund rules of any task.
 */

/** What remains of a task's escrow: the balance of its escrow account. */
export function remainingEscrow(exec: Executor, taskId: string): Promise<bigint> {
  return accountBalance(exec, escrowAccount(taskId));
}

/**
 * What a task's escrow holds by its own record: its funding, less what its children took and did
 * not give back (its `carve` and `carve_return` movements). For a task that never delegated, its
 * funded amount. The refund and cancellation rules apply to this; the outbox then checks that the
 * ledger holds it (a row that disagrees with its ledger is parked for an operator, never paid).
 */
export async function heldEscrow(exec: Executor, task: Pick<TaskRow, 'id' | 'fundedAmount'>): Promise<bigint> {
  const [row] = await exec
    .select({ total: sql<string>`coalesce(sum(${ledgerEntries.amount}), 0)::text` })
    .from(ledgerEntries)
    // its side of its children's movements (each is booked under the child's id; the child's own side is its funding)
    .where(and(eq(ledgerEntries.account, escrowAccount(task.id)), inArray(ledgerEntries.kind, ['carve', 'carve_return']), ne(ledgerEntries.taskId, task.id)));
  return (task.fundedAmount ?? 0n) + BigInt(row?.total ?? '0');
}

/**
 * Throws unless `total` fits in what remains of the parent's escrow. Call it holding the parent's
 * row lock, in the transaction that carves.
 */
export async function assertCarvable(tx: Tx, parentId: string, total: bigint): Promise<bigint> {
  const remaining = await remainingEscrow(tx, parentId);
  if (total > remaining) {
    throw new AppError(
      'spend_limit_exceeded',
      `The children's escrows (${total} atomic USDC) exceed what remains of the escrow of task ${parentId} (${remaining} atomic USDC)`,
      { param: 'budget', details: { requested: total.toString(), remaining: remaining.toString(), parent_task_id: parentId } },
    );
  }
  return remaining;
}

/** `carve`: the child's escrow, from the parent's (the caller holds the parent's row lock and checked the total). */
export async function carveEscrow(tx: Tx, clock: Clock, input: { parentId: string; childId: string; amount: bigint }): Promise<string> {
  await assertCarvable(tx, input.parentId, input.amount);
  return postMovement(tx, clock, {
    kind: 'carve',
    entries: transferEntries(escrowAccount(input.parentId), escrowAccount(input.childId), input.amount),
    taskId: input.childId,
  });
}

/** Whether a child's refund goes back to its parent's escrow: while the parent's escrow is held (or frozen by a dispute). */
export function returnsToParent(parentEscrowStatus: string): boolean {
  return parentEscrowStatus === ('held' satisfies EscrowStatus) || parentEscrowStatus === ('frozen' satisfies EscrowStatus);
}

/**
 * `carve_return`: `amount` of the child's escrow back to its parent's. Planned once per child
 * (a second call writes nothing and returns false).
 */
export async function returnToParent(tx: Tx, clock: Clock, input: { parentId: string; childId: string; amount: bigint }): Promise<boolean> {
  if (input.amount <= 0n) return false;
  const [earlier] = await tx
    .select({ id: ledgerEntries.id })
    .from(ledgerEntries)
    .where(and(eq(ledgerEntries.taskId, input.childId), eq(ledgerEntries.kind, 'carve_return')))
    .limit(1);
  if (earlier) return false;
  const held = await remainingEscrow(tx, input.childId);
  if (held < input.amount) {
    throw new AppError('invalid_state', `The escrow of task ${input.childId} holds ${held} atomic USDC; ${input.amount} cannot go back to its parent`, {
      details: { held: held.toString(), requested: input.amount.toString() },
    });
  }
  await postMovement(tx, clock, {
    kind: 'carve_return',
    entries: transferEntries(escrowAccount(input.childId), escrowAccount(input.parentId), input.amount),
    taskId: input.childId,
  });
  return true;
}
