import { and, eq, inArray, lt, or, sql } from 'drizzle-orm';
import { isAddress } from 'viem';
import type { Clock } from '../clock.js';
import type { Executor, Tx } from '../db/client.js';
import { chainTransfers, ledgerEntries, tasks, type ChainTransferRow, type TaskRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import { EXTERNAL, PAYOUT_PENDING, PAYOUT_PENDING_FEE, TREASURY_PLATFORM_FEES, escrowAccount } from '../ledger/accounts.js';
import { accountBalance, postMovement, transferEntries } from '../ledger/ledger.js';
import { recordRefundReturned } from '../tasks/state-machine.js';
import { returnsToParent, returnToParent } from './carve.js';
import { BPS } from './rules.js';

/**
 * The outbox of payouts from the escrow wallet. Every function here writes in the caller's
 * transaction: the task service calls them inside the transition that decides the payout, so
 * the new task state, the ledger movement and the chain_transfers row commit together (or not
 * at all). The settlement worker then signs, sends and confirms the rows.
 *
 * Every transfer has a cause, unique: `task:<id>:release` and `task:<id>:refund` for what a
 * task's transitions decide, `payment:<id>:refund` for a payment whose effect did not happen.
 * A task can owe several refunds (its own, and one per losing payment); planning the same
 * cause again returns what was planned the first time and writes nothing.
 */
export type TransferKind = 'release' | 'refund';
/** Ledger kind of the escrow → payout_pending movement: the transfer's kind, or a dispute's split. */
export type PayoutMovementKind = TransferKind | 'dispute_split';

export interface EnqueueTransferInput {
  kind: TransferKind;
  taskId: string;
  /** The escrow wallet that holds the task's money and sends the payout. */
  from: string;
  to: string;
  /** Atomic USDC, > 0. */
  amount: bigint;
  movementKind?: PayoutMovementKind;
}

export interface EnqueuedTransfer {
  transfer: ChainTransferRow;
  /** False when this cause was already enqueued: nothing was written. */
  created: boolean;
}

export function taskCause(taskId: string, kind: TransferKind): string {
  return `task:${taskId}:${kind}`;
}

export function paymentRefundCause(paymentId: string): string {
  return `payment:${paymentId}:refund`;
}

interface InsertTransferInput {
  kind: TransferKind;
  cause: string;
  taskId: string | null;
  paymentId?: string | null;
  from: string;
  to: string;
  amount: bigint;
}

/** Inserts a pending transfer for its cause, or returns the one planned before (same terms, else 409). */
async function insertTransfer(tx: Tx, clock: Clock, input: InsertTransferInput): Promise<EnqueuedTransfer> {
  const from = normalizeAddress(input.from, 'from');
  const to = normalizeAddress(input.to, 'to');
  if (input.amount <= 0n) throw new Error(`outbox: transfer amount must be positive, got ${input.amount}`);
  const wanted = { ...input, from, to };
  const existing = await findByCause(tx, input.cause);
  if (existing) return { transfer: sameTermsOrThrow(existing, wanted), created: false };
  const now = clock.now();
  const [row] = await tx
    .insert(chainTransfers)
    .values({
      id: newId('xfer'),
      kind: input.kind,
      cause: input.cause,
      taskId: input.taskId,
      paymentId: input.paymentId ?? null,
      fromAddress: from,
      toAddress: to,
      amount: input.amount,
      status: 'pending',
      nextAttemptAt: now,
      createdAt: now,
      updatedAt: now,
    })
    .onConflictDoNothing({ target: chainTransfers.cause })
    .returning();
  if (row) return { transfer: row, created: true };
  // A concurrent transaction enqueued it first (the caller did not lock the task).
  return { transfer: sameTermsOrThrow((await findByCause(tx, input.cause))!, wanted), created: false };
}

/** Inserts a pending transfer of the task's own decision and moves its amount `escrow:<task>` → `payout_pending`. */
export async function enqueueTransfer(tx: Tx, clock: Clock, input: EnqueueTransferInput): Promise<EnqueuedTransfer> {
  const cause = taskCause(input.taskId, input.kind);
  if (!(await findByCause(tx, cause))) await requireEscrow(tx, input.taskId, input.amount);
  const result = await insertTransfer(tx, clock, { kind: input.kind, cause, taskId: input.taskId, from: input.from, to: input.to, amount: input.amount });
  if (!result.created) return result;
  await postMovement(tx, clock, {
    kind: input.movementKind ?? input.kind,
    entries: transferEntries(escrowAccount(input.taskId), PAYOUT_PENDING, input.amount),
    taskId: input.taskId,
    transferId: result.transfer.id,
  });
  return result;
}

export interface PaymentRefundInput {
  paymentId: string;
  taskId: string | null;
  /** The wallet the payment was paid into, which sends the refund back. */
  from: string;
  /** The payer. */
  to: string;
  amount: bigint;
  /** Which wallet that is: the escrow wallet (fundings) or the fee wallet (call fees). */
  paidInto: 'escrow' | 'fee';
}

/**
 * A settled payment whose effect did not happen goes back to its payer in full, from the very
 * wallet it was paid into: the money came in (from `external`) and is owed back (that wallet's
 * pending payouts). No wallet ever pays out money another payment brought.
 */
export async function enqueuePaymentRefund(tx: Tx, clock: Clock, input: PaymentRefundInput): Promise<EnqueuedTransfer> {
  const result = await insertTransfer(tx, clock, {
    kind: 'refund',
    cause: paymentRefundCause(input.paymentId),
    taskId: input.taskId,
    paymentId: input.paymentId,
    from: input.from,
    to: input.to,
    amount: input.amount,
  });
  if (!result.created) return result;
  await postMovement(tx, clock, {
    kind: input.paidInto === 'escrow' ? 'payment_refund' : 'fee_refund',
    entries: transferEntries(EXTERNAL, input.paidInto === 'escrow' ? PAYOUT_PENDING : PAYOUT_PENDING_FEE, input.amount),
    taskId: input.taskId,
    paymentId: input.paymentId,
    transferId: result.transfer.id,
  });
  return result;
}

// ------------------------------------------------------------------------------- release

export interface PlanReleaseInput {
  task: Pick<TaskRow, 'id'>;
  /** The agent's payout wallet and the gross amount (default: all the task's escrow holds). */
  payout: { to: string; amount?: bigint };
  /** Platform fee in basis points of the gross amount, rounded down. */
  platformFeeBps: number;
  /** The wallet holding the escrow (default and check: the task's escrow_address). */
  escrowWallet?: string;
  movementKind?: 'release' | 'dispute_split';
}

export interface PlannedRelease {
  /** The agent's transfer (gross − fee), or null when nothing is left after the fee. */
  transfer: ChainTransferRow | null;
  fee: bigint;
  net: bigint;
  /** False when the release had been planned before: nothing was written this time. */
  created: boolean;
}

/**
 * Pays the agent: `platform_fee` escrow:<task> → treasury:platform_fees, and a `release`
 * transfer of the rest to the agent's payout wallet. Locks the task row.
 */
export async function planRelease(tx: Tx, clock: Clock, input: PlanReleaseInput): Promise<PlannedRelease> {
  const task = await lockTask(tx, input.task.id);
  const from = escrowWalletOf(task, input.escrowWallet);
  const earlier = await earlierRelease(tx, task.id);
  if (earlier) return earlier;
  const gross = input.payout.amount ?? (await accountBalance(tx, escrowAccount(task.id)));
  const fee = platformFee(gross, input.platformFeeBps);
  const net = gross - fee;
  if (gross === 0n) return { transfer: null, fee: 0n, net: 0n, created: false };
  await requireEscrow(tx, task.id, gross);
  if (fee > 0n) {
    await postMovement(tx, clock, {
      kind: 'platform_fee',
      entries: transferEntries(escrowAccount(task.id), TREASURY_PLATFORM_FEES, fee),
      taskId: task.id,
    });
  }
  const transfer =
    net > 0n
      ? await enqueueTransfer(tx, clock, {
          kind: 'release',
          taskId: task.id,
          from,
          to: input.payout.to,
          amount: net,
          movementKind: input.movementKind ?? 'release',
        })
      : null;
  return { transfer: transfer?.transfer ?? null, fee, net, created: true };
}

/** `gross × bps / 10 000`, rounded down (in the agent's favour). */
export function platformFee(gross: bigint, bps: number): bigint {
  if (gross < 0n) throw new Error(`outbox: negative amount ${gross}`);
  if (!Number.isInteger(bps) || bps < 0 || bps > 10_000) throw new Error(`outbox: fee bps must be 0..10000, got ${bps}`);
  return (gross * BigInt(bps)) / BPS;
}

async function earlierRelease(tx: Tx, taskId: string): Promise<PlannedRelease | null> {
  const transfer = await findTransfer(tx, taskId, 'release');
  const fee = await movedByKind(tx, taskId, 'platform_fee', TREASURY_PLATFORM_FEES);
  if (!transfer && fee === 0n) return null;
  return { transfer: transfer ?? null, fee, net: transfer?.amount ?? 0n, created: false };
}

// ------------------------------------------------------------------------------- refund

export interface PlanRefundInput {
  task: Pick<TaskRow, 'id'>;
  /** Back to the payer (the task's payer_address); 0n = no refund transfer. */
  refund: bigint;
  /** What the agent keeps (a cancellation fee, a dispute share), released to `agentPayout`. */
  agentShare?: bigint;
  agentPayout?: string;
  /** Platform fee on the agent's share (default 0). */
  platformFeeBps?: number;
  escrowWallet?: string;
  movementKind?: 'refund' | 'dispute_split';
}

export interface PlannedRefund {
  refund: ChainTransferRow | null;
  /** What went back to the parent's escrow instead of a refund transfer (a sub-delegated child; else 0n). */
  returned: bigint;
  release: PlannedRelease | null;
  /** What the task's escrow still holds afterwards (0n when the whole escrow was decided). */
  remaining: bigint;
}

/**
 * Full refund (`refund` = the escrow) or partial refund where the agent keeps `agentShare`,
 * paid as a second transfer of kind `release`. Zero amounts enqueue nothing. Locks the task row.
 * A sub-delegated child's refund goes back to its parent's escrow while that is held (carve.ts):
 * a ledger movement, no transfer, and the task's refund reads `returned`.
 */
export async function planRefund(tx: Tx, clock: Clock, input: PlanRefundInput): Promise<PlannedRefund> {
  const agentShare = input.agentShare ?? 0n;
  if (input.refund < 0n || agentShare < 0n) throw new Error('outbox: refund and agent share must not be negative');
  if (agentShare > 0n && !input.agentPayout) throw new Error('outbox: an agent share needs the agent payout address');
  const task = await lockTask(tx, input.task.id);
  const from = escrowWalletOf(task, input.escrowWallet);
  const parent = input.refund > 0n && task.parentTaskId ? await lockParent(tx, task.parentTaskId) : undefined;
  let returned = 0n;
  if (parent?.returns) {
    if (await returnToParent(tx, clock, { parentId: parent.id, childId: task.id, amount: input.refund })) returned = input.refund;
    await recordRefundReturned(tx, task.id);
  }
  const refund =
    input.refund > 0n && !parent?.returns
      ? await enqueueTransfer(tx, clock, {
          kind: 'refund',
          taskId: task.id,
          from,
          to: task.payerAddress,
          amount: input.refund,
          movementKind: input.movementKind ?? 'refund',
        })
      : null;
  const release =
    agentShare > 0n
      ? await planRelease(tx, clock, {
          task,
          payout: { to: input.agentPayout!, amount: agentShare },
          platformFeeBps: input.platformFeeBps ?? 0,
          escrowWallet: from,
          movementKind: input.movementKind === 'dispute_split' ? 'dispute_split' : 'release',
        })
      : null;
  const remaining = await accountBalance(tx, escrowAccount(task.id));
  return { refund: refund?.transfer ?? null, returned, release, remaining };
}

export interface PlanDisputeSplitInput {
  task: Pick<TaskRow, 'id'>;
  payerAmount: bigint;
  agentAmount: bigint;
  agentPayout?: string;
  platformFeeBps?: number;
  escrowWallet?: string;
}

/** A dispute's resolution: the payer's and the agent's shares, booked as `dispute_split`. */
export async function planDisputeSplit(tx: Tx, clock: Clock, input: PlanDisputeSplitInput): Promise<PlannedRefund> {
  return planRefund(tx, clock, {
    task: input.task,
    refund: input.payerAmount,
    agentShare: input.agentAmount,
    ...(input.agentPayout !== undefined ? { agentPayout: input.agentPayout } : {}),
    ...(input.platformFeeBps !== undefined ? { platformFeeBps: input.platformFeeBps } : {}),
    ...(input.escrowWallet !== undefined ? { escrowWallet: input.escrowWallet } : {}),
    movementKind: 'dispute_split',
  });
}

// ------------------------------------------------------------------------------- helpers

/** The transfer a task's own decision planned (its release, or its refund). */
export async function findTransfer(exec: Executor, taskId: string, kind: TransferKind): Promise<ChainTransferRow | undefined> {
  return findByCause(exec, taskCause(taskId, kind));
}

async function findByCause(exec: Executor, cause: string): Promise<ChainTransferRow | undefined> {
  const [row] = await exec.select().from(chainTransfers).where(eq(chainTransfers.cause, cause));
  return row;
}

/**
 * Transfers an operator must look at: given up (`failed`), or still unsent or unconfirmed after
 * `stalledAfterMs` (for instance a refund from a wallet whose key the service does not have).
 */
export async function transfersNeedingAttention(exec: Executor, now: Date, stalledAfterMs: number): Promise<ChainTransferRow[]> {
  const stalled = new Date(now.getTime() - stalledAfterMs);
  return exec
    .select()
    .from(chainTransfers)
    .where(or(eq(chainTransfers.status, 'failed'), and(inArray(chainTransfers.status, ['pending', 'signed', 'sent']), lt(chainTransfers.createdAt, stalled))))
    .orderBy(chainTransfers.createdAt)
    .limit(100);
}

type TaskMoney = Pick<TaskRow, 'id' | 'payerAddress' | 'escrowAddress' | 'parentTaskId'>;

async function lockTask(tx: Tx, taskId: string): Promise<TaskMoney> {
  const [task] = await tx
    .select({ id: tasks.id, payerAddress: tasks.payerAddress, escrowAddress: tasks.escrowAddress, parentTaskId: tasks.parentTaskId })
    .from(tasks)
    .where(eq(tasks.id, taskId))
    .for('update');
  if (!task) throw new AppError('task_not_found', `Task ${taskId} does not exist`);
  return task;
}

/**
 * A child's parent, locked: whether the child's refund goes back to its escrow is decided under the
 * lock the parent's own end takes, so a refund never lands in an escrow that was already paid out.
 * (Transitions of a child to failed or cancelled lock the parent first: state-machine.ts.)
 */
async function lockParent(tx: Tx, parentId: string): Promise<{ id: string; escrowStatus: string; returns: boolean }> {
  const [parent] = await tx.select({ id: tasks.id, escrowStatus: tasks.escrowStatus }).from(tasks).where(eq(tasks.id, parentId)).for('update');
  if (!parent) throw new AppError('task_not_found', `Task ${parentId} does not exist`);
  return { ...parent, returns: returnsToParent(parent.escrowStatus) };
}

function escrowWalletOf(task: TaskMoney, requested: string | undefined): string {
  const held = normalizeAddress(task.escrowAddress, 'task escrow_address');
  if (requested !== undefined && normalizeAddress(requested, 'escrowWallet') !== held) {
    throw new Error(`outbox: task ${task.id} is escrowed in ${held}, not in ${requested}`);
  }
  return held;
}

/** Refuses to pay out more than the task's escrow account holds. */
async function requireEscrow(tx: Executor, taskId: string, amount: bigint): Promise<void> {
  const held = await accountBalance(tx, escrowAccount(taskId));
  if (held < amount) {
    throw new AppError('invalid_state', `The escrow of task ${taskId} holds ${held} atomic USDC; ${amount} cannot be paid out`, {
      details: { held: held.toString(), requested: amount.toString() },
    });
  }
}

/** Total credited to `account` by movements of `kind` for the task. */
async function movedByKind(tx: Executor, taskId: string, kind: string, account: string): Promise<bigint> {
  const [row] = await tx
    .select({ total: sql<string>`coalesce(sum(${ledgerEntries.amount}), 0)::text` })
    .from(ledgerEntries)
    .where(and(eq(ledgerEntries.taskId, taskId), eq(ledgerEntries.kind, kind), eq(ledgerEntries.account, account)));
  return BigInt(row?.total ?? '0');
}

function sameTermsOrThrow(
  existing: ChainTransferRow,
  wanted: { kind: TransferKind; cause: string; from: string; to: string; amount: bigint },
): ChainTransferRow {
  const same = existing.fromAddress === wanted.from && existing.toAddress === wanted.to && existing.amount === wanted.amount;
  if (!same) {
    throw new AppError('invalid_state', `The ${wanted.kind} for ${wanted.cause} is already planned on other terms`, {
      details: { transfer_id: existing.id, amount: existing.amount.toString(), to: existing.toAddress },
    });
  }
  return existing;
}

function normalizeAddress(address: string, what: string): string {
  if (!isAddress(address, { strict: false })) throw new Error(`outbox: ${what} is not an address: ${address}`);
  return address.toLowerCase();
}
