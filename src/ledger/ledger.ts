import { and, eq, sql, type SQL } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { rowsOf, type Executor } from '../db/client.js';
import { preparedQuery } from '../db/prepared.js';
import { ledgerEntries } from '../db/schema.js';
import { newId } from '../ids.js';
import {
  ESCROW_PREFIX,
  EXTERNAL,
  TREASURY_CALL_FEES,
  TREASURY_FUND_FEES,
  escrowAccount,
  fixedAccountsOf,
  isKnownAccount,
  wallets,
  type Wallet,
} from './accounts.js';

/**
 * Double-entry ledger. A movement is a set of entries sharing one `movement_id` whose amounts
 * sum to zero; it is written in the caller's transaction, so it commits or vanishes with the
 * state change that caused it. Kinds (from → to; see accounts.ts for the accounts):
 *
 * - `call_fee`         external → treasury:call_fees          an x402 per-call fee was settled
 * - `escrow_in`        external → escrow:<task>               an escrow was funded
 * - `fund_fee`         escrow:<task> (or external) → treasury:fund_fees   fee kept on funding
 * - `release`          escrow:<task> → payout_pending         the agent's pay is decided
 * - `platform_fee`     escrow:<task> → treasury:platform_fees the platform's cut of a release
 * - `refund`           escrow:<task> → payout_pending         the payer's refund is decided
 * - `payout_confirmed` payout_pending → external              a payout transfer is confirmed on chain
 * - `dispute_split`    escrow:<task> → payout_pending         a share decided by dispute resolution
 * - `payment_refund`   external → payout_pending              a payment into the escrow wallet whose effect did not happen, owed back
 * - `fee_refund`       external → payout_pending:fee          a call fee whose effect did not happen, owed back from the fee wallet
 * - `fee_deferred`     external → receivable:call_fees        a micro-fee's call was served; its authorization is settled later
 * - `fee_collected`    receivable:call_fees → treasury:call_fees   a batch settlement moved a deferred micro-fee into the fee wallet
 * - `fee_defaulted`    receivable:call_fees → external        a deferred micro-fee's authorization failed at settlement: not collected
 * - `carve`            escrow:<parent> → escrow:<child>       a child hired by the parent task's hosted agent (delegate_task) is
 *                                                            funded from what remains of the parent's escrow (same wallet, no transfer)
 * - `carve_return`     escrow:<child> → escrow:<parent>       a child's refund (failed, cancelled, timed out, dispute share) goes back
 *                                                            to its parent's escrow while that escrow is held (escrow/carve.ts)
 * - `channel_fee`      external → receivable:channel_fees     a call paid by a batch-settlement voucher was served (charged on its channel)
 * - `channel_settled`  receivable:channel_fees → treasury:call_fees   the channel contract paid claimed vouchers into the fee wallet
 */
export const movementKinds = [
  'call_fee',
  'escrow_in',
  'fund_fee',
  'release',
  'platform_fee',
  'refund',
  'payout_confirmed',
  'dispute_split',
  'payment_refund',
  'fee_refund',
  'fee_deferred',
  'fee_collected',
  'fee_defaulted',
  'carve',
  'carve_return',
  'channel_fee',
  'channel_settled',
] as const;
export type MovementKind = (typeof movementKinds)[number];

export interface LedgerEntryInput {
  account: string;
  /** Signed atomic units: positive adds to the account, negative takes from it. */
  amount: bigint;
}

export interface MovementInput {
  kind: MovementKind;
  entries: readonly LedgerEntryInput[];
  taskId?: string | null | undefined;
  paymentId?: string | null | undefined;
  transferId?: string | null | undefined;
}

export class UnbalancedMovementError extends Error {
  constructor(message: string) {
    super(`ledger: ${message}`);
    this.name = 'UnbalancedMovementError';
  }
}

/** Throws (before anything is written) unless the movement is well formed and sums to zero. */
export function validateMovement(input: MovementInput): void {
  if (!movementKinds.includes(input.kind)) throw new UnbalancedMovementError(`unknown movement kind ${input.kind}`);
  if (input.entries.length < 2) throw new UnbalancedMovementError('a movement needs at least two entries');
  let sum = 0n;
  for (const entry of input.entries) {
    if (typeof entry.amount !== 'bigint') throw new UnbalancedMovementError(`amount of ${entry.account} is not a bigint`);
    if (entry.amount === 0n) throw new UnbalancedMovementError(`zero amount for ${entry.account}`);
    if (!isKnownAccount(entry.account)) throw new UnbalancedMovementError(`unknown account ${JSON.stringify(entry.account)}`);
    sum += entry.amount;
  }
  if (sum !== 0n) throw new UnbalancedMovementError(`${input.kind} entries sum to ${sum}, not 0`);
}

/**
 * A movement of two entries (most are: a paid call's fee, a transfer), prepared once per database
 * (db/prepared.ts): the statement of every paid request's booking.
 */
const insertPair = preparedQuery((db) =>
  db
    .insert(ledgerEntries)
    .values(
      [0, 1].map((i) => ({
        movementId: sql.placeholder('movementId'),
        kind: sql.placeholder('kind'),
        account: sql.placeholder(`account${i}`),
        amount: sql`${sql.placeholder(`amount${i}`)}::bigint`,
        taskId: sql.placeholder('taskId'),
        paymentId: sql.placeholder('paymentId'),
        transferId: sql.placeholder('transferId'),
        createdAt: sql`${sql.placeholder('createdAt')}::timestamptz`,
      })),
    )
    .prepare('ledger_post_pair'),
);

/** Writes one balanced movement in the caller's transaction; returns its movement id. */
export async function postMovement(tx: Executor, clock: Clock, input: MovementInput): Promise<string> {
  validateMovement(input);
  const movementId = newId('mov');
  const createdAt = clock.now();
  const [first, second, ...more] = input.entries;
  if (first && second && more.length === 0) {
    await insertPair(tx).execute({
      movementId,
      kind: input.kind,
      account0: first.account,
      amount0: first.amount.toString(),
      account1: second.account,
      amount1: second.amount.toString(),
      taskId: input.taskId ?? null,
      paymentId: input.paymentId ?? null,
      transferId: input.transferId ?? null,
      createdAt: createdAt.toISOString(),
    });
    return movementId;
  }
  await tx.insert(ledgerEntries).values(entryRows(input, movementId, createdAt));
  return movementId;
}

/**
 * Writes many balanced movements in the caller's transaction, in one statement per
 * `MOVEMENTS_PER_INSERT` (a batch's bookings at once); returns their movement ids in order.
 */
export async function postMovements(tx: Executor, clock: Clock, inputs: readonly MovementInput[]): Promise<string[]> {
  for (const input of inputs) validateMovement(input);
  const createdAt = clock.now();
  const ids = inputs.map(() => newId('mov'));
  for (let i = 0; i < inputs.length; i += MOVEMENTS_PER_INSERT) {
    const rows = inputs.slice(i, i + MOVEMENTS_PER_INSERT).flatMap((input, j) => entryRows(input, ids[i + j]!, createdAt));
    await tx.insert(ledgerEntries).values(rows);
  }
  return ids;
}

/** Movements per insert of `postMovements` (a few thousand parameters). */
const MOVEMENTS_PER_INSERT = 250;

function entryRows(input: MovementInput, movementId: string, createdAt: Date): (typeof ledgerEntries.$inferInsert)[] {
  return input.entries.map((entry) => ({
    movementId,
    kind: input.kind,
    account: entry.account,
    amount: entry.amount,
    taskId: input.taskId ?? null,
    paymentId: input.paymentId ?? null,
    transferId: input.transferId ?? null,
    createdAt,
  }));
}

/** A two-entry movement of `amount` (> 0) from one account to another. */
export function transferEntries(from: string, to: string, amount: bigint): LedgerEntryInput[] {
  return [
    { account: from, amount: -amount },
    { account: to, amount },
  ];
}

/** Funding of a task's escrow settled into the escrow wallet, minus an optional funding fee. */
export async function recordEscrowFunding(
  tx: Executor,
  clock: Clock,
  input: { taskId: string; amount: bigint; fundFee?: bigint; paymentId?: string | null },
): Promise<string[]> {
  const escrow = escrowAccount(input.taskId);
  const refs = { taskId: input.taskId, paymentId: input.paymentId ?? null };
  const ids = [await postMovement(tx, clock, { kind: 'escrow_in', entries: transferEntries(EXTERNAL, escrow, input.amount), ...refs })];
  if (input.fundFee && input.fundFee > 0n) {
    ids.push(await postMovement(tx, clock, { kind: 'fund_fee', entries: transferEntries(escrow, TREASURY_FUND_FEES, input.fundFee), ...refs }));
  }
  return ids;
}

/** A batch's one fee, paid into the escrow wallet with its escrows (the escrows are booked per task). */
export async function recordBatchFee(tx: Executor, clock: Clock, input: { amount: bigint; paymentId?: string | null }): Promise<string | undefined> {
  if (input.amount <= 0n) return undefined;
  return postMovement(tx, clock, {
    kind: 'fund_fee',
    entries: transferEntries(EXTERNAL, TREASURY_FUND_FEES, input.amount),
    paymentId: input.paymentId ?? null,
  });
}

/** An x402 per-call fee paid straight into the fee wallet. */
export async function recordCallFee(
  tx: Executor,
  clock: Clock,
  input: { amount: bigint; paymentId?: string | null },
): Promise<string> {
  return postMovement(tx, clock, {
    kind: 'call_fee',
    entries: transferEntries(EXTERNAL, TREASURY_CALL_FEES, input.amount),
    paymentId: input.paymentId ?? null,
  });
}

// ------------------------------------------------------------------------------- balances

const sumText = sql<string>`coalesce(sum(${ledgerEntries.amount}), 0)::text`;

/** What movements of one kind have added to one account, in all (atomic units). */
export async function kindTotal(exec: Executor, kind: MovementKind, account: string): Promise<bigint> {
  const [row] = await exec
    .select({ total: sql<string>`coalesce(sum(${ledgerEntries.amount}), 0)::text` })
    .from(ledgerEntries)
    .where(and(eq(ledgerEntries.kind, kind), eq(ledgerEntries.account, account)));
  return BigInt(row?.total ?? '0');
}

export async function accountBalance(exec: Executor, account: string): Promise<bigint> {
  const [row] = await exec.select({ total: sumText }).from(ledgerEntries).where(eq(ledgerEntries.account, account));
  return BigInt(row?.total ?? '0');
}

/** SQL condition: the account column names an account held in `wallet`. */
export function heldInWallet(wallet: Wallet): SQL {
  const fixed = sql.join(
    fixedAccountsOf(wallet).map((a) => sql`${a}`),
    sql`, `,
  );
  const inFixed = sql`${ledgerEntries.account} in (${fixed})`;
  return wallet === 'escrow' ? sql`(${inFixed} or ${ledgerEntries.account} like ${`${ESCROW_PREFIX}%`})` : inFixed;
}

/** Ledger balance of every wallet (the sum of the accounts it holds) and of `external`. */
export async function walletBalances(exec: Executor): Promise<Record<Wallet | 'external', bigint>> {
  const result: Record<Wallet | 'external', bigint> = { escrow: 0n, fee: 0n, external: 0n };
  for (const wallet of wallets) result[wallet] = await walletBalance(exec, wallet);
  result.external = await accountBalance(exec, EXTERNAL);
  return result;
}

export async function walletBalance(exec: Executor, wallet: Wallet): Promise<bigint> {
  const [row] = await exec.select({ total: sumText }).from(ledgerEntries).where(heldInWallet(wallet));
  return BigInt(row?.total ?? '0');
}

export interface LedgerCheck {
  ok: boolean;
  /** Sum of every entry: 0n in a sound ledger. */
  total: bigint;
  /** Movements whose entries do not sum to zero. */
  unbalancedMovements: string[];
}

export async function checkLedger(exec: Executor): Promise<LedgerCheck> {
  const [row] = await exec.select({ total: sumText }).from(ledgerEntries);
  const total = BigInt(row?.total ?? '0');
  const unbalanced = rowsOf<{ movement_id: string }>(
    await exec.execute(
      sql`select movement_id from ledger_entries group by movement_id having sum(amount) <> 0 order by movement_id`,
    ),
  );
  const unbalancedMovements = unbalanced.map((r) => r.movement_id);
  return { ok: total === 0n && unbalancedMovements.length === 0, total, unbalancedMovements };
}
