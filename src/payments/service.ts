import { and, desc, eq, inArray, lt, or } from 'drizzle-orm';
import { getAddress, type Address } from 'viem';
import type { Db } from '../db/client.js';
import { payments, type PaymentRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import type { PaymentKind } from './lifecycle.js';


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
  /** booked: the call was served; refunded: its effect did not happen and the payment went back; deferred: served, settled in a later batch. */
  status: 'booked' | 'refunded' | 'deferred';
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
    status: row.status === 'refunded' ? 'refunded' : row.status === 'deferred' ? 'deferred' : 'booked',
    settled_at: (row.settledAt ?? row.createdAt).toISOString(),
  };
}

/** Receipts: the payments that were settled on chain (booked or refunded) or served before settlement (deferred). Written by `lifecycle.ts`. */
export class PaymentsService {
  constructor(private readonly db: Db) {}

  /** The payer's settled payments (booked or refunded), newest first; `cursor` is the last payment_id of the previous page. */
  async receipts(payer: string, limit: number, cursor?: string): Promise<{ receipts: Receipt[]; next_cursor: string | null }> {
    const mine = and(eq(payments.payerAddress, payer.toLowerCase()), inArray(payments.status, ['booked', 'refunded', 'deferred']));
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
