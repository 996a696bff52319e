import { and, eq, inArray, lt, sql } from 'drizzle-orm';
import { getAddress, type Address } from 'viem';
import type { Clock } from '../clock.js';
import { isUniqueViolation, withTransaction, type Db, type Executor, type Tx } from '../db/client.js';
import { preparedQuery } from '../db/prepared.js';
import { payments, tasks, type PaymentRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { enqueuePaymentRefund } from '../escrow/outbox.js';
import { newId } from '../ids.js';
import { postMovement } from '../ledger/ledger.js';
import { leaseDue, leaseUntil } from '../queue/index.js';
import { EXTERNAL, TREASURY_CALL_FEES } from '../ledger/accounts.js';

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
 */
export type PaymentStatus = 'verified' | 'settling' | 'booked' | 'refunded' | 'failed';
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
  /** Who holds the payment (the request id). */
  owner: string;
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
 * The per-request statements outside a transaction, prepared once per database (db/prepared.ts):
 * the replay lookup of every paid request, verified → settling, and forgetting a failed request's
 * payment. Each is the same SQL as the query it stands for in the methods below.
 */
const paymentByHeaderHash = preparedQuery((db) =>
  db.select().from(payments).where(eq(payments.headerHash, sql.placeholder('hash'))).limit(1).prepare('payments_by_header_hash'),
);
const settlePayment = preparedQuery((db) =>
  db
    .update(payments)
    .set({
      status: 'settling',
      leaseExpiresAt: sql`now() + (${sql.placeholder('leaseMs')}::integer * interval '1 millisecond')`, // queue/leaseUntil
      updatedAt: sql`${sql.placeholder('now')}::timestamptz`, // an ISO string: a placeholder is not mapped by its column
    })
    .where(and(eq(payments.id, sql.placeholder('id')), eq(payments.status, 'verified'), eq(payments.leaseOwner, sql.placeholder('owner'))))
    .returning({ id: payments.id })
    .prepare('payments_begin_settling'),
);
const forgetPayment = preparedQuery((db) =>
  db
    .delete(payments)
    .where(and(eq(payments.id, sql.placeholder('id')), eq(payments.status, 'verified'), eq(payments.leaseOwner, sql.placeholder('owner'))))
    .prepare('payments_forget'),
);

export class PaymentLifecycle {
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
      const [row] = await this.db
        .insert(payments)
        .values({
          id: newId('pay'),
          payerAddress: input.payer.toLowerCase(),
          payTo: input.payTo.toLowerCase(),
          amount: input.amount,
          asset: input.asset.toLowerCase(),
          network: input.network,
          authorizationNonce: input.authorizationNonce.toLowerCase(),
          status: 'verified',
          endpoint: input.endpoint,
          kind: input.kind,
          purpose: input.purpose,
          taskId: holdsTask || !isTaskWrite(input.purpose) ? (input.taskId ?? null) : null,
          headerHash: input.headerHash,
          payload: input.payload,
          validBefore: input.validBefore,
          leaseOwner: input.owner,
          leaseExpiresAt: leaseUntil(this.leaseMs),
          createdAt: now,
          updatedAt: now,
        })
        .returning();
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
    const [task] = await this.db.select({ payer: tasks.payerAddress }).from(tasks).where(eq(tasks.id, taskId));
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
      throw new AppError('state_conflict', 'This payment took too long and was released; nothing was charged. Retry with a new payment.');
    }
  }

  /**
   * settling → booked, in the transaction of the effect it paid for. A call fee is booked here
   * (`external` → `treasury:call_fees`); escrow funding is booked by the funding effect.
   */
  async book(tx: Tx, id: string, owner: string, settled: { txHash: string; taskId?: string | undefined }): Promise<PaymentRow> {
    const now = this.clock.now();
    const [row] = await tx
      .update(payments)
      .set({
        status: 'booked',
        txHash: settled.txHash,
        settledAt: now,
        updatedAt: now,
        leaseOwner: null,
        leaseExpiresAt: null,
        ...(settled.taskId ? { taskId: settled.taskId } : {}),
      })
      .where(and(eq(payments.id, id), eq(payments.status, 'settling'), eq(payments.leaseOwner, owner)))
      .returning();
    if (!row) throw new PaymentFenceError(id, 'book');
    if (row.kind === 'call_fee') {
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
    const now = this.clock.now();
    const [row] = await tx
      .update(payments)
      .set({
        status: 'refunded',
        txHash: settled.txHash,
        settledAt: now,
        updatedAt: now,
        failureReason: settled.reason.slice(0, 1000),
        leaseOwner: null,
        leaseExpiresAt: null,
      })
      .where(and(eq(payments.id, id), eq(payments.status, 'settling'), eq(payments.leaseOwner, owner)))
      .returning();
    if (!row) throw new PaymentFenceError(id, 'refund');
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

  // ── recovery ──────────────────────────────────────────────────────────────

  /** Takes over payments still verified or settling after their lease: the sweep becomes their owner. */
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
