import { and, desc, eq, lt, or } from 'drizzle-orm';
import { getAddress, type Address } from 'viem';
import type { Clock } from '../clock.js';
import { isUniqueViolation, type Db, type Executor } from '../db/client.js';
import { payments, type PaymentRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import { postMovement } from '../ledger/ledger.js';

export type PaymentKind = 'call_fee' | 'escrow_funding';

export interface PaymentClaimInput {
  payer: Address;
  payTo: Address;
  amount: bigint;
  asset: string;
  network: string;
  authorizationNonce: string;
  endpoint: string;
  kind: PaymentKind;
  taskId?: string | undefined;
}

export interface Receipt {
  payment_id: string;
  payer: Address;
  pay_to: Address;
  amount: string;
  asset: string;
  network: string;
  authorization_nonce: string;
  tx_hash: string;
  endpoint: string;
  kind: PaymentKind;
  task_id: string | null;
  settled_at: string;
}

function toReceipt(row: PaymentRow): Receipt {
  return {
    payment_id: row.id,
    payer: getAddress(row.payerAddress),
    pay_to: getAddress(row.payTo),
    amount: row.amount.toString(),
    asset: getAddress(row.asset),
    network: row.network,
    authorization_nonce: row.authorizationNonce,
    tx_hash: row.txHash ?? '',
    endpoint: row.endpoint,
    kind: row.kind as PaymentKind,
    task_id: row.taskId,
    settled_at: (row.settledAt ?? row.createdAt).toISOString(),
  };
}

/**
 * Payments as the service sees them: a verified x402 authorization is *claimed* before the
 * handler runs (so one authorization can serve one request only, even concurrently), then
 * *settled* once the handler succeeded, or released when it failed (never charged).
 */
export class PaymentsService {
  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
  ) {}

  async claim(input: PaymentClaimInput): Promise<PaymentRow> {
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
          status: 'claimed',
          endpoint: input.endpoint,
          kind: input.kind,
          taskId: input.taskId ?? null,
          createdAt: this.clock.now(),
        })
        .returning();
      return row!;
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new AppError('payment_replayed', 'This payment authorization has already been used; sign a new one');
      }
      throw err;
    }
  }

  /** The request failed: forget the claim, the authorization was never settled. */
  async release(id: string): Promise<void> {
    await this.db.delete(payments).where(and(eq(payments.id, id), eq(payments.status, 'claimed')));
  }

  /**
   * The money moved: mark the payment settled and, for a call fee, book it
   * (`external` → `treasury:call_fees`). Escrow funding is booked by the escrow flow.
   */
  async settle(exec: Executor, id: string, txHash: string, taskId?: string): Promise<PaymentRow> {
    const [row] = await exec
      .update(payments)
      .set({ status: 'settled', txHash, settledAt: this.clock.now(), ...(taskId ? { taskId } : {}) })
      .where(and(eq(payments.id, id), eq(payments.status, 'claimed')))
      .returning();
    if (!row) throw new Error(`payment ${id} is not a claimed payment`);
    if (row.kind === 'call_fee') {
      await postMovement(exec, this.clock, {
        kind: 'call_fee',
        paymentId: row.id,
        taskId: row.taskId ?? undefined,
        entries: [
          { account: 'external', amount: -row.amount },
          { account: 'treasury:call_fees', amount: row.amount },
        ],
      });
    }
    return row;
  }

  async findSettled(network: string, asset: string, payer: string, authorizationNonce: string): Promise<PaymentRow | undefined> {
    const [row] = await this.db
      .select()
      .from(payments)
      .where(
        and(
          eq(payments.network, network),
          eq(payments.asset, asset.toLowerCase()),
          eq(payments.payerAddress, payer.toLowerCase()),
          eq(payments.authorizationNonce, authorizationNonce.toLowerCase()),
          eq(payments.status, 'settled'),
        ),
      );
    return row;
  }

  /** The payer's settled payments, newest first; `cursor` is the last payment_id of the previous page. */
  async receipts(payer: string, limit: number, cursor?: string): Promise<{ receipts: Receipt[]; next_cursor: string | null }> {
    const mine = and(eq(payments.payerAddress, payer.toLowerCase()), eq(payments.status, 'settled'));
    let where = mine;
    if (cursor) {
      const [last] = await this.db.select().from(payments).where(and(mine, eq(payments.id, cursor)));
      if (!last) throw new AppError('validation_error', 'Unknown cursor', { param: 'cursor' });
      where = and(mine, or(lt(payments.createdAt, last.createdAt), and(eq(payments.createdAt, last.createdAt), lt(payments.id, last.id))));
    }
    const rows = await this.db.select().from(payments).where(where).orderBy(desc(payments.createdAt), desc(payments.id)).limit(limit + 1);
    const page = rows.slice(0, limit);
    return { receipts: page.map(toReceipt), next_cursor: rows.length > limit ? page[page.length - 1]!.id : null };
  }
}
