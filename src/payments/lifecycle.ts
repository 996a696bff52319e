import { and, eq, inArray, lt, sql, type SQL } from 'drizzle-orm';
import { getAddress, type Address } from 'viem';
import type { Clock } from '../clock.js';
import { isUniqueViolation, withTransaction, type Db, type Executor, type Tx } from '../db/client.js';
import { preparedQuery } from '../db/prepared.js';
import { payments, tasks, type PaymentRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { enqueuePaymentRefund } from '../escrow/outbox.js';
import { newId } from '../ids.js';
import { postMovement, postMovements, transferEntries } from '../ledger/ledger.js';
import { leaseDue, leaseUntilParam } from '../queue/index.js';
import { EXTERNAL, RECEIVABLE_CALL_FEES, RECEIVABLE_CHANNEL_FEES, TREASURY_CALL_FEES } from '../ledger/accounts.js';

/**
 * The lifecycle of one x402 payment, and the only code that writes `payments` rows:
 *
 *   verified ──begin──▶ settling ──book──▶ booked      (the money moved and the effect committed with it)
 *      │                   ├──refund──▶ refunded        (the money moved, the effect did not: paid back in full)
 *      └─forget (row deleted)   └──fail──▶ failed        (the chain did not move the money: nothing charged)
 *
 * A row is written (`verified`) before the chain is touched and becomes `settling` before the
 * settlement is sent, so after a crash at any line a row says how far the payment got. Each
 * step is one conditional UPDATE fenced by the status and the lease owner (the request, or the
 * recovery sweep that took the payment over after its lease expired).
 *
 * A micro-fee (payments/micro-fees.ts) may instead be served before it is settled:
 *
 *   verified ──defer──▶ deferred ──collect──▶ booked      (a batch settlement moved the money)
 *                          ├──writeOff──▶ failed          (it expired unsettled: our loss, not the payer's)
 *                          └──default──▶ defaulted ──repay──▶ repaid   (its authorization failed: the payer owes it)
 *
 * `deferred` is booked as owed (`receivable:call_fees`) in the transaction that serves the call;
 * the batch settler (payments/micro-fee-settler.ts) leases deferred rows like any queue.
 *
 * A payment over a batch-settlement channel (payments/channels/) takes the first path. Its
 * "settlement" is the charge of its voucher on the channel (and, for a deposit, the deposit on
 * chain first); `book` books it as owed by the channel (`receivable:channel_fees`) until the
 * channel settler claims and settles it on chain. Its refund takes the charge back on the channel
 * (nothing moved on chain, nothing to send), in the refund's transaction.
 */
export type PaymentStatus = 'verified' | 'settling' | 'booked' | 'refunded' | 'failed' | 'deferred' | 'defaulted' | 'repaid';
export type PaymentKind = 'call_fee' | 'escrow_funding';

export interface PaymentRecordInput {
  payer: Address;
  payTo: Address;
  amount: bigint;
  asset: string;
  network: string;
  authorizationNonce: string;
  endpoint: string;
  kind: PaymentKind;
  /** The route's price name: what the payment buys. */
  purpose: string;
  taskId?: string | undefined;
  headerHash: string;
  payload: { payload: unknown; requirements: unknown };
  validBefore: Date | null;
  /** A payment over a batch-settlement channel: the channel. */
  channelId?: string | undefined;
  /** Who holds the payment (the request id). */
  owner: string;
}

/** What a payer owes in micro-fees (atomic USDC). */
export interface Owed {
  /** Served, deferred, not yet settled. */
  unsettled: bigint;
  /** Defaulted: their authorizations failed at settlement; the payer is refused until it pays them. */
  arrears: bigint;
}

export interface PaymentWallets {
  escrow: Address;
  fee: Address;
}

/** Purposes that change a task: one of them at a time per task (payments_task_write_uq). */
export const TASK_WRITES = ['fund_task', 'cancel_task', 'dispute_task', 'rate_agent'] as const;

function isTaskWrite(purpose: string): boolean {
  return (TASK_WRITES as readonly string[]).includes(purpose);
}

/**
 * The statements of every paid request, prepared once per database (db/prepared.ts), on the database
 * or in the effect's transaction: the replay lookup, the payment's record, verified → settling,
 * forgetting a failed request's payment, and its end (booked, refunded, deferred). Each is the query
 * the method using it would otherwise build.
 */
const paymentByHeaderHash = preparedQuery((db) =>
  db.select().from(payments).where(eq(payments.headerHash, sql.placeholder('hash'))).limit(1).prepare('payments_by_header_hash'),
);
const p = sql.placeholder;
/** A time parameter, given as an ISO string: a placeholder is not mapped by its column. */
const at = (name: string) => sql`${p(name)}::timestamptz`;
/** The payment `id` in `status`, held by the request `owner`. */
const heldIn = (status: string) => and(eq(payments.id, p('id')), eq(payments.status, status), eq(payments.leaseOwner, p('owner')));

const settlePayment = preparedQuery((db) =>
  db
    .update(payments)
    .set({ status: 'settling', leaseExpiresAt: leaseUntilParam, updatedAt: at('now') })
    .where(heldIn('verified'))
    .returning({ id: payments.id })
    .prepare('payments_begin_settling'),
);
const forgetPayment = preparedQuery((db) => db.delete(payments).where(heldIn('verified')).prepare('payments_forget'));
const insertPayment = preparedQuery((db) =>
  db
    .insert(payments)
    .values({
      id: p('id'),
      payerAddress: p('payer'),
      payTo: p('payTo'),
      amount: sql`${p('amount')}::bigint`,
      asset: p('asset'),
      network: p('network'),
      authorizationNonce: p('nonce'),
      status: 'verified',
      endpoint: p('endpoint'),
      kind: p('kind'),
      purpose: p('purpose'),
      taskId: p('taskId'),
      headerHash: p('headerHash'),
      payload: sql`${p('payload')}::jsonb`,
      validBefore: at('validBefore'),
      channelId: p('channelId'),
      leaseOwner: p('owner'),
      leaseExpiresAt: leaseUntilParam,
      createdAt: at('now'),
      updatedAt: at('now'),
    })
    .returning()
    .prepare('payments_record'),
);
const taskPayer = preparedQuery((db) => db.select({ payer: tasks.payerAddress }).from(tasks).where(eq(tasks.id, p('taskId'))).prepare('payments_task_payer'));
/** A settling payment ends (`status`): its settlement's transaction, when, and the request's hold let go; `also` sets what that end adds. */
const endSettling = (name: string, status: 'booked' | 'refunded', also: Partial<Record<keyof typeof payments.$inferInsert, SQL>>) =>
  preparedQuery((db) =>
    db
      .update(payments)
      .set({ status, txHash: sql`${p('txHash')}`, settledAt: at('now'), updatedAt: at('now'), leaseOwner: null, leaseExpiresAt: null, ...also })
      .where(heldIn('settling'))
      .returning()
      .prepare(name),
  );
const bookPayment = endSettling('payments_book', 'booked', { taskId: sql`coalesce(${p('taskId')}::text, ${payments.taskId})` });
const refundPayment = endSettling('payments_refund', 'refunded', { failureReason: sql`${p('reason')}` });
const deferPayment = preparedQuery((db) =>
  db
    .update(payments)
    .set({ status: 'deferred', updatedAt: at('now'), leaseOwner: null, leaseExpiresAt: null })
    .where(heldIn('verified'))
    .returning()
    .prepare('payments_defer'),
);

/** A payer's unsettled and defaulted micro-fees (`owed` below), read on every paid request of a deferring service. */
const owedBy = preparedQuery((db) =>
  db
    .select({ status: payments.status, total: sql<string>`sum(${payments.amount})::text` })
    .from(payments)
    .where(and(eq(payments.payerAddress, sql.placeholder('payer')), inArray(payments.status, ['deferred', 'defaulted'])))
    .groupBy(payments.status)
    .prepare('payments_owed_by'),
);

/** Takes back a channel payment's charge (payments/channels/storage.ts `uncharge`), in the refund's transaction. */
export interface ChannelCharges {
  uncharge(tx: Tx, row: PaymentRow): Promise<boolean>;
  /**
   * Whether the payment's voucher was charged on its channel (what the recovery sweep asks); if it
   * was not, the channel's reservation ends in the same step, so a request still on its way cannot
   * charge it later (DbChannelStorage.chargedElseRelease).
   */
  chargedElseRelease(row: PaymentRow): Promise<boolean>;
  /** Ends any request's reservation of the payment's channel (the sweep, once a dead request's payment is resolved). */
  release(row: PaymentRow): Promise<void>;
}

export class PaymentLifecycle {
  /** Set when batch-settlement channels are on (app.ts): refunds of channel payments go through it. */
  channels: ChannelCharges | undefined;

  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    private readonly wallets: PaymentWallets,
    /** How long a request may hold a verified or settling payment before the recovery sweep takes it. */
    readonly leaseMs: number,
  ) {}

  /** Records a verified authorization: it serves this request only, even concurrently. */
  async record(input: PaymentRecordInput): Promise<PaymentRow> {
    const now = this.clock.now();
    // A paid write holds its task only when its payer owns the task: a stranger's request (refused
    // by its check, never charged) must not keep the owner's own requests out.
    const holdsTask = input.taskId !== undefined && isTaskWrite(input.purpose) && (await this.ownsTask(input.payer, input.taskId));
    try {
      const [row] = await insertPayment(this.db).execute({
        id: newId('pay'),
        payer: input.payer.toLowerCase(),
        payTo: input.payTo.toLowerCase(),
        amount: input.amount.toString(),
        asset: input.asset.toLowerCase(),
        network: input.network,
        nonce: input.authorizationNonce.toLowerCase(),
        endpoint: input.endpoint,
        kind: input.kind,
        purpose: input.purpose,
        taskId: holdsTask || !isTaskWrite(input.purpose) ? (input.taskId ?? null) : null,
        headerHash: input.headerHash,
        payload: JSON.stringify(input.payload),
        validBefore: input.validBefore?.toISOString() ?? null,
        channelId: input.channelId ?? null,
        owner: input.owner,
        leaseMs: Math.round(this.leaseMs),
        now: now.toISOString(),
      });
      return row!;
    } catch (err) {
      if (!isUniqueViolation(err)) throw err;
      if (holdsTask) {
        const [same] = await this.db.select({ id: payments.id }).from(payments).where(this.authorizationOf(input));
        if (!same) {
          throw new AppError('state_conflict', `Another paid request on task ${input.taskId} is in flight; nothing was charged. Retry once it has answered.`, {
            details: { task_id: input.taskId },
          });
        }
      }
      throw new AppError('payment_replayed', 'This payment authorization has already been used; sign a new one');
    }
  }

  private async ownsTask(payer: Address, taskId: string): Promise<boolean> {
    const [task] = await taskPayer(this.db).execute({ taskId });
    return task?.payer === payer.toLowerCase();
  }

  private authorizationOf(input: PaymentRecordInput) {
    return and(
      eq(payments.network, input.network),
      eq(payments.asset, input.asset.toLowerCase()),
      eq(payments.payerAddress, input.payer.toLowerCase()),
      eq(payments.authorizationNonce, input.authorizationNonce.toLowerCase()),
    );
  }

  /** The payment made with this exact PAYMENT-SIGNATURE header (by its SHA-256), if any. */
  async byHeaderHash(hash: string): Promise<PaymentRow | undefined> {
    const [row] = await paymentByHeaderHash(this.db).execute({ hash });
    return row;
  }

  /** The request failed before any settlement: forget the payment, nothing was charged. */
  async forget(id: string, owner: string): Promise<void> {
    await forgetPayment(this.db).execute({ id, owner });
  }

  /** verified → settling, just before the settlement is sent. Fails when the sweep took the payment over. */
  async beginSettling(id: string, owner: string): Promise<void> {
    const [row] = await settlePayment(this.db).execute({ id, owner, leaseMs: Math.round(this.leaseMs), now: this.clock.now().toISOString() });
    if (!row) {
      throw paymentReleased();
    }
  }

  /**
   * settling → booked, in the transaction of the effect it paid for. A call fee is booked here
   * (`external` → `treasury:call_fees`); escrow funding is booked by the funding effect.
   */
  async book(tx: Tx, id: string, owner: string, settled: { txHash: string; taskId?: string | undefined }): Promise<PaymentRow> {
    const [row] = await bookPayment(tx).execute({ id, owner, txHash: settled.txHash, taskId: settled.taskId || null, now: this.clock.now().toISOString() });
    if (!row) throw new PaymentFenceError(id, 'book');
    if (row.channelId) {
      // Charged on its channel: owed by the channel contract until the channel settler settles it.
      await postMovement(tx, this.clock, {
        kind: 'channel_fee',
        paymentId: row.id,
        taskId: row.taskId ?? undefined,
        entries: transferEntries(EXTERNAL, RECEIVABLE_CHANNEL_FEES, row.amount),
      });
    } else if (row.kind === 'call_fee') {
      await postMovement(tx, this.clock, {
        kind: 'call_fee',
        paymentId: row.id,
        taskId: row.taskId ?? undefined,
        entries: [
          { account: EXTERNAL, amount: -row.amount },
          { account: TREASURY_CALL_FEES, amount: row.amount },
        ],
      });
    }
    return row;
  }

  /** settling → refunded: the money moved but its effect did not happen; the whole payment goes back. */
  async refund(tx: Tx, id: string, owner: string, settled: { txHash: string | null; reason: string }): Promise<PaymentRow> {
    const [row] = await refundPayment(tx).execute({ id, owner, txHash: settled.txHash, reason: settled.reason.slice(0, 1000), now: this.clock.now().toISOString() });
    if (!row) throw new PaymentFenceError(id, 'refund');
    if (row.channelId) {
      if (!this.channels) throw new Error(`payment ${id} was made over a channel, but channels are off`);
      await this.channels.uncharge(tx, row);
      return row;
    }
    const paidInto = getAddress(row.payTo) === getAddress(this.wallets.escrow) ? 'escrow' : 'fee';
    await enqueuePaymentRefund(tx, this.clock, {
      paymentId: row.id,
      taskId: row.taskId,
      from: paidInto === 'escrow' ? this.wallets.escrow : this.wallets.fee,
      to: row.payerAddress,
      amount: row.amount,
      paidInto,
    });
    return row;
  }

  /** settling → failed: the settlement did not move the money (and never can), nothing was charged. */
  async fail(id: string, owner: string, reason: string): Promise<void> {
    const now = this.clock.now();
    await this.db
      .update(payments)
      .set({ status: 'failed', failureReason: reason.slice(0, 1000), updatedAt: now, leaseOwner: null, leaseExpiresAt: null })
      .where(and(eq(payments.id, id), eq(payments.status, 'settling'), eq(payments.leaseOwner, owner)));
  }

  /**
   * The settlement failed on the service's side, so whether money moved is unknown here: the
   * payment stays `settling` and its lease ends now, for the recovery sweep to resolve on chain.
   */
  async handOver(id: string, owner: string): Promise<void> {
    await this.db
      .update(payments)
      .set({ leaseExpiresAt: sql`now() - interval '1 millisecond'`, updatedAt: this.clock.now() })
      .where(and(eq(payments.id, id), eq(payments.status, 'settling'), eq(payments.leaseOwner, owner)));
  }

  /** Refunds in its own transaction (the effect's transaction rolled back). */
  async refundNow(id: string, owner: string, settled: { txHash: string | null; reason: string }): Promise<PaymentRow> {
    return withTransaction(this.db, (tx) => this.refund(tx, id, owner, settled));
  }

  // ── micro-fees served before settlement ────────────────────────────────────

  /** verified → deferred in the transaction that serves the call: the fee is owed (`receivable:call_fees`). */
  async defer(tx: Tx, id: string, owner: string): Promise<PaymentRow> {
    const [row] = await deferPayment(tx).execute({ id, owner, now: this.clock.now().toISOString() });
    if (!row) throw new PaymentFenceError(id, 'defer');
    await this.moveFee(tx, row, 'fee_deferred', EXTERNAL, RECEIVABLE_CALL_FEES);
    return row;
  }

  /** Names on a deferred payment the task its effect created (its receipt's task). */
  async attachTask(tx: Tx, id: string, taskId: string | undefined): Promise<void> {
    if (taskId) await tx.update(payments).set({ taskId }).where(and(eq(payments.id, id), eq(payments.status, 'deferred')));
  }

  /**
   * What a payer owes: its deferred fees not yet settled, and its fees whose authorizations failed
   * (arrears). In `tx` (under the payer's lock) by the query builder, else by the prepared statement.
   */
  async owed(payer: string, tx?: Tx): Promise<Owed> {
    const rows = tx
      ? await tx
          .select({ status: payments.status, total: sql<string>`sum(${payments.amount})::text` })
          .from(payments)
          .where(and(eq(payments.payerAddress, payer.toLowerCase()), inArray(payments.status, ['deferred', 'defaulted'])))
          .groupBy(payments.status)
      : await owedBy(this.db).execute({ payer: payer.toLowerCase() });
    const sum = (status: string) => BigInt(rows.find((r) => r.status === status)?.total ?? '0');
    return { unsettled: sum('deferred'), arrears: sum('defaulted') };
  }

  /** Leases deferred fees for the batch settler, the soonest to expire first. */
  async takeDeferred(owner: string, limit: number, leaseMs: number): Promise<PaymentRow[]> {
    const ids = await leaseDue(this.db, {
      table: 'payments',
      due: sql`status = 'deferred'`,
      owner,
      leaseMs,
      orderBy: sql`valid_before, id`,
      limit,
    });
    if (ids.length === 0) return [];
    return this.db.select().from(payments).where(inArray(payments.id, ids)).orderBy(payments.validBefore, payments.id);
  }

  /** Notes the batch transaction that carries these leased deferred fees (before its receipt is known). */
  async markBatchSent(ids: readonly string[], owner: string, txHash: string): Promise<void> {
    if (ids.length === 0) return;
    await this.db
      .update(payments)
      .set({ txHash, updatedAt: this.clock.now() })
      .where(and(inArray(payments.id, [...ids]), eq(payments.status, 'deferred'), eq(payments.leaseOwner, owner)));
  }

  /**
   * deferred → booked: the batch transaction `txHash` moved these fees into the fee wallet. One
   * update and one ledger insert for the whole batch, so a batch's booking holds the database (and
   * on PGlite, every request waiting on it) for a few statements, not two per fee.
   */
  async collect(tx: Tx, ids: readonly string[], owner: string, txHash: string): Promise<PaymentRow[]> {
    if (ids.length === 0) return [];
    const now = this.clock.now();
    const rows = await tx
      .update(payments)
      .set({ status: 'booked', txHash, settledAt: now, updatedAt: now, leaseOwner: null, leaseExpiresAt: null })
      .where(and(inArray(payments.id, [...ids]), eq(payments.status, 'deferred'), eq(payments.leaseOwner, owner)))
      .returning();
    if (rows.length !== new Set(ids).size) {
      const missing = ids.find((id) => !rows.some((r) => r.id === id))!;
      throw new PaymentFenceError(missing, 'collect');
    }
    await postMovements(
      tx,
      this.clock,
      rows.map((row) => ({ kind: 'fee_collected', paymentId: row.id, taskId: row.taskId ?? undefined, entries: transferEntries(RECEIVABLE_CALL_FEES, TREASURY_CALL_FEES, row.amount) })),
    );
    return rows;
  }

  /**
   * deferred → defaulted (the payer's authorization failed at settlement: it owes the fee and is
   * refused until it pays) or → failed (it expired before we settled it: our loss). Either way the
   * fee was not collected.
   */
  async uncollected(tx: Tx, id: string, owner: string, outcome: { defaulted: boolean; reason: string }): Promise<PaymentRow> {
    const row = await this.closeDeferred(tx, id, owner, {
      status: outcome.defaulted ? 'defaulted' : 'failed',
      txHash: null,
      failureReason: outcome.reason.slice(0, 1000),
    });
    await this.moveFee(tx, row, 'fee_defaulted', RECEIVABLE_CALL_FEES, EXTERNAL);
    return row;
  }

  /** A micro-fee's ledger movement (see ledger.ts): the whole payment from one account to another. */
  private async moveFee(tx: Tx, row: PaymentRow, kind: 'fee_deferred' | 'fee_defaulted', from: string, to: string): Promise<void> {
    await postMovement(tx, this.clock, { kind, paymentId: row.id, taskId: row.taskId ?? undefined, entries: transferEntries(from, to, row.amount) });
  }

  private async closeDeferred(tx: Tx, id: string, owner: string, set: Partial<typeof payments.$inferInsert>): Promise<PaymentRow> {
    const [row] = await tx
      .update(payments)
      .set({ ...set, updatedAt: this.clock.now(), leaseOwner: null, leaseExpiresAt: null })
      .where(and(eq(payments.id, id), eq(payments.status, 'deferred'), eq(payments.leaseOwner, owner)))
      .returning();
    if (!row) throw new PaymentFenceError(id, 'close');
    return row;
  }

  /** A deferred fee this run could not settle, for no fault of the payer's: its lease ends now, the next run takes it. */
  async releaseDeferred(tx: Tx, id: string, owner: string): Promise<void> {
    await tx
      .update(payments)
      .set({ leaseOwner: null, leaseExpiresAt: null, txHash: null, updatedAt: this.clock.now() })
      .where(and(eq(payments.id, id), eq(payments.status, 'deferred'), eq(payments.leaseOwner, owner)));
  }

  /** defaulted → repaid: `paymentId` paid the payer's arrears. Returns what they came to. */
  async repay(tx: Tx, payer: string, paymentId: string): Promise<bigint> {
    const rows = await tx
      .update(payments)
      .set({ status: 'repaid', failureReason: sql`coalesce(${payments.failureReason}, '') || ${` (repaid by ${paymentId})`}`, updatedAt: this.clock.now() })
      .where(and(eq(payments.payerAddress, payer.toLowerCase()), eq(payments.status, 'defaulted')))
      .returning({ amount: payments.amount });
    return rows.reduce((sum, r) => sum + r.amount, 0n);
  }

  // ── recovery ──────────────────────────────────────────────────────────────

  /** Takes over payments still verified or settling after their lease: the sweep becomes their owner. */
  /**
   * A payment on this channel still unresolved (verified or settling), if any, and until when its
   * request holds it. While one is, no other payment may be taken on the channel (x402.ts): so the
   * channel's charged total reaches that payment's voucher only by its own charge, which is how the
   * recovery sweep tells whether it was charged (payments/recovery.ts).
   */
  async unresolvedOnChannel(channelId: string): Promise<{ id: string; leaseExpiresAt: Date | null } | undefined> {
    const [row] = await this.db
      .select({ id: payments.id, leaseExpiresAt: payments.leaseExpiresAt })
      .from(payments)
      .where(and(eq(payments.channelId, channelId.toLowerCase()), inArray(payments.status, ['verified', 'settling'])))
      .limit(1);
    return row;
  }

  /** Channels with a payment not yet booked or refunded (verified or settling): their charges may still be taken back. */
  async unresolvedChannels(): Promise<Set<string>> {
    const rows = await this.db
      .selectDistinct({ channelId: payments.channelId })
      .from(payments)
      .where(and(sql`${payments.channelId} is not null`, inArray(payments.status, ['verified', 'settling'])));
    return new Set(rows.map((r) => r.channelId!));
  }

  async takeAbandoned(owner: string, limit: number): Promise<PaymentRow[]> {
    const now = this.clock.now();
    const ids = await leaseDue(this.db, {
      table: 'payments',
      due: sql`status in ('verified', 'settling')`,
      owner,
      leaseMs: this.leaseMs,
      set: sql`updated_at = ${now.toISOString()}::timestamptz`,
      orderBy: sql`lease_expires_at, id`,
      limit,
    });
    if (ids.length === 0) return [];
    return this.db.select().from(payments).where(inArray(payments.id, ids)).orderBy(payments.leaseExpiresAt);
  }

  /** Payments the sweep has not resolved for longer than `olderThanMs` (for the operator). */
  async unresolved(exec: Executor, olderThanMs: number): Promise<PaymentRow[]> {
    const before = new Date(this.clock.now().getTime() - olderThanMs);
    return exec
      .select()
      .from(payments)
      .where(and(inArray(payments.status, ['verified', 'settling']), lt(payments.createdAt, before)))
      .orderBy(payments.createdAt)
      .limit(100);
  }

  async counts(exec: Executor): Promise<Record<string, number>> {
    const rows = await exec
      .select({ status: payments.status, n: sql<number>`count(*)::int` })
      .from(payments)
      .groupBy(payments.status);
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }
}

/** The payment is no longer this owner's (the recovery sweep took it over): its booking is the sweep's. */
export class PaymentFenceError extends Error {
  constructor(id: string, step: string) {
    super(`payment ${id}: cannot ${step}, it is no longer held by this request`);
    this.name = 'PaymentFenceError';
  }
}

/** What a request is told when its payment was released before anything was charged (its lease ran out). */
export function paymentReleased(cause?: unknown): AppError {
  return new AppError('state_conflict', 'This payment took too long and was released; nothing was charged. Retry with a new payment.', cause ? { cause } : {});
}
