import type { Channel, ChannelStorage, ChannelUpdateResult } from '@x402/evm/batch-settlement/server';
import { and, asc, eq, isNotNull, sql } from 'drizzle-orm';
import { withTransaction, type Db, type Tx } from '../../db/client.js';
import { preparedQuery } from '../../db/prepared.js';
import { paymentChannels } from '../../db/schema.js';

/**
 * The `ChannelStorage` of the x402 `batch-settlement` server scheme (`@x402/evm/batch-settlement/server`,
 * `BatchSettlementEvmScheme(receiver, { storage })`) on this service's database, Postgres or PGlite.
 * The only writer of `payment_channels`.
 *
 * What the scheme keeps per channel is the package's `Channel` record: the channel config, the
 * cumulative amount charged so far, the latest voucher (its signed cap and signature), the on-chain
 * balance and total claimed last seen, the pending request of a call in flight. It is stored as one
 * `jsonb` value, the JSON the package's own Redis and file storages write (`JSON.stringify` of the
 * record: every token amount is already a decimal string of atomic units, times are ms numbers, an
 * absent `pendingRequest` / `onchainSyncedAt` is left out), plus the payer and receiver (lowercase)
 * as columns for listing. Channel ids are keyed lowercase, as the package's storages key them.
 *
 * `updateChannel` is atomic across processes: one transaction per update, holding the channel's row
 * lock (`SELECT … FOR UPDATE`) from the read of `current` to the commit of what the callback
 * returned, so concurrent updaters of one channel (in this process or in other API processes on the
 * same database) run one after the other, each on the state the previous one committed. A channel
 * not stored yet gets a placeholder row first (`INSERT … ON CONFLICT DO NOTHING`, `channel` null) so
 * that the lock exists for it too; the same transaction fills the placeholder or deletes it, so no
 * placeholder is ever committed. A callback that throws rolls the transaction back: nothing changes.
 *
 * The callback runs inside the transaction; it is synchronous (the interface says so) and should be
 * a pure function of `current`: `withTransaction` re-runs the whole transaction, callback included,
 * on a serialization failure or a deadlock. With one row lock per transaction and Postgres' default
 * READ COMMITTED (which the whole service assumes) neither happens here.
 */
export interface DbChannelStorageOptions {
  /**
   * List only the channels paying this receiver. The scheme's channel manager claims, settles and
   * refunds every channel `list()` returns as its own receiver's, so a table shared by several
   * receivers must be scoped; unset: every channel.
   */
  receiver?: string;
}

/**
 * The channel settler holds a channel it refunds the way a request reserves it (settler.ts
 * `refundHeld`), with a pending id of this prefix. Only the settler ends its own hold: a request's
 * reservation may be ended by others (the recovery sweep, a dead request's release), a hold never,
 * or a call could be charged on a channel whose remainder is going back to the payer.
 */
export const SETTLER_HOLD_PREFIX = 'settler-refund:';

/** Whether a channel's pending request is the settler's refund hold. */
export function isSettlerHold(pending: Channel['pendingRequest']): boolean {
  return pending !== undefined && pending.pendingId.startsWith(SETTLER_HOLD_PREFIX);
}

/** The channel without its request's reservation (a settler's hold stays). */
function withoutRequest(channel: Channel): Channel {
  return channel.pendingRequest && !isSettlerHold(channel.pendingRequest) ? { ...channel, pendingRequest: undefined } : channel;
}

/** How many times an update looks for (or creates) its row before giving up: only a storm of deletes could need a second. */
const MAX_LOCK_ATTEMPTS = 20;

const CHANNEL_ID = /^0x[0-9a-fA-F]{64}$/;

/** The storage key of a channel id: a bytes32 hex string, lowercase (as the package's storages key it). */
export function channelKey(channelId: string): string {
  if (typeof channelId !== 'string' || !CHANNEL_ID.test(channelId)) throw new Error(`invalid batch-settlement channel id: ${String(channelId)}`);
  return channelId.toLowerCase();
}

/**
 * The statements of a voucher call (the scheme's read, then its updates under the row lock),
 * prepared once per database (db/prepared.ts); each is the query it stands for.
 */
const byKey = eq(paymentChannels.channelId, sql.placeholder('key'));
const readChannel = preparedQuery((db) =>
  db.select({ channel: paymentChannels.channel }).from(paymentChannels).where(and(byKey, isNotNull(paymentChannels.channel))).prepare('channels_get'),
);
const lockChannel = preparedQuery((db) => db.select({ channel: paymentChannels.channel }).from(paymentChannels).where(byKey).for('update').prepare('channels_lock'));
const insertPlaceholder = preparedQuery((db) =>
  db
    .insert(paymentChannels)
    .values({ channelId: sql.placeholder('key') })
    .onConflictDoNothing({ target: paymentChannels.channelId })
    .prepare('channels_placeholder'),
);
const deleteChannel = preparedQuery((db) => db.delete(paymentChannels).where(byKey).prepare('channels_delete'));
const storeChannel = preparedQuery((db) =>
  db
    .update(paymentChannels)
    .set({
      channel: sql`${sql.placeholder('channel')}::jsonb`, // the record's JSON, as the column writes it
      payer: sql`${sql.placeholder('payer')}`,
      receiver: sql`${sql.placeholder('receiver')}`,
      updatedAt: sql`now()`,
    })
    .where(byKey)
    .prepare('channels_store'),
);

export class DbChannelStorage implements ChannelStorage {
  private readonly receiver: string | undefined;

  constructor(
    private readonly db: Db,
    opts: DbChannelStorageOptions = {},
  ) {
    this.receiver = opts.receiver?.toLowerCase();
  }

  async get(channelId: string): Promise<Channel | undefined> {
    const [row] = await readChannel(this.db).execute({ key: channelKey(channelId) });
    return row?.channel ?? undefined;
  }

  /** Every stored channel (of the receiver, when scoped), by channel id like the package's storages. */
  async list(): Promise<Channel[]> {
    const rows = await this.db
      .select({ channel: paymentChannels.channel })
      .from(paymentChannels)
      .where(and(isNotNull(paymentChannels.channel), this.receiver === undefined ? undefined : eq(paymentChannels.receiver, this.receiver)))
      .orderBy(asc(paymentChannels.channelId));
    return rows.flatMap((r) => (r.channel ? [r.channel] : []));
  }

  /**
   * Runs `update` on the channel's current record under its row lock and stores what it returns, in
   * one transaction: the same object back = unchanged, `undefined` = delete, anything else = the new
   * record (its `channelId` must be this channel's).
   */
  async updateChannel(channelId: string, update: (current: Channel | undefined) => Channel | undefined): Promise<ChannelUpdateResult> {
    return withTransaction(this.db, (tx) => this.updateChannelIn(tx, channelId, update));
  }

  /** `updateChannel` inside the caller's transaction (the row lock is held until it ends). */
  async updateChannelIn(tx: Tx, channelId: string, update: (current: Channel | undefined) => Channel | undefined): Promise<ChannelUpdateResult> {
    const key = channelKey(channelId);
    const current = await lockRow(tx, key);
    const next = update(current);
    if (next === current) {
      if (current === undefined) await deleteRow(tx, key); // our placeholder
      return { channel: current, status: 'unchanged' };
    }
    if (next === undefined) {
      await deleteRow(tx, key);
      return { channel: undefined, status: current ? 'deleted' : 'unchanged' };
    }
    if (channelKey(next.channelId) !== key) throw new Error(`channel ${key}: the update returned the record of channel ${next.channelId}`);
    await storeChannel(tx).execute({
      key,
      channel: JSON.stringify(next),
      payer: next.channelConfig.payer.toLowerCase(),
      receiver: next.channelConfig.receiver.toLowerCase(),
    });
    return { channel: next, status: 'updated' };
  }

  /**
   * Whether the voucher of cumulative amount `cap` was charged on this channel: the charged total
   * reached it. Vouchers of one channel are charged one at a time and our books hold one live
   * payment per voucher, so a total at or past `cap` includes that voucher's charge.
   */
  async chargedThrough(channelId: string, cap: bigint): Promise<boolean> {
    const channel = await this.get(channelId);
    return channel !== undefined && BigInt(channel.chargedCumulativeAmount) >= cap;
  }

  /**
   * The recovery sweep's question about a dead or stalled request's voucher, answered under the
   * channel's row lock: was it charged (true: nothing changes)? If not (false), the channel's
   * reservation is ended in the same step, so that the request, if it is still on its way, can no
   * longer charge it (the scheme charges only under the reservation its request took): once the
   * sweep resolves the payment as never charged, it stays so. (A settler's refund hold stays.)
   */
  async chargedElseRelease(channelId: string, cap: bigint): Promise<boolean> {
    let charged = false;
    await this.updateChannel(channelId, (current) => {
      if (!current) return current;
      charged = BigInt(current.chargedCumulativeAmount) >= cap;
      return charged ? current : withoutRequest(current);
    });
    return charged;
  }

  /** Ends the reservation `pendingId` of the channel if it still holds it (a request's or the settler's own hold: the caller names which). */
  async endReservation(channelId: string, pendingId: string): Promise<ChannelUpdateResult> {
    return this.updateChannel(channelId, (c) => (c?.pendingRequest?.pendingId === pendingId ? { ...c, pendingRequest: undefined } : c));
  }

  /** Ends a request's reservation of the channel, if one holds it (never the settler's refund hold). */
  async releaseRequest(channelId: string): Promise<void> {
    await this.updateChannel(channelId, (current) => (current ? withoutRequest(current) : current));
  }

  /**
   * Takes back the charge of the voucher of cumulative amount `cap` (`amount`, the call's price)
   * in `tx`: the call it paid for was not served. Nothing moved on chain; the channel's charged
   * total drops by `amount` and the client, whose next voucher then runs ahead of it, is told the
   * channel's state by the scheme's corrective 402 and signs again. False: the voucher was never
   * charged, there is nothing to take back. Throws when the charge was already claimed on chain
   * (the channel settler leaves channels with unresolved payments unclaimed, so it cannot be).
   */
  async uncharge(tx: Tx, channelId: string, cap: bigint, amount: bigint): Promise<boolean> {
    let outcome = false;
    await this.updateChannelIn(tx, channelId, (current) => {
      if (!current || BigInt(current.chargedCumulativeAmount) < cap) return current;
      const charged = BigInt(current.chargedCumulativeAmount) - amount;
      if (charged < BigInt(current.totalClaimed)) {
        throw new Error(`channel ${channelId}: the charge of ${amount} up to ${cap} was already claimed on chain`);
      }
      outcome = true;
      return { ...current, chargedCumulativeAmount: charged.toString() };
    });
    return outcome;
  }
}

/**
 * Takes the row lock of channel `key` for the rest of `tx` and returns its record (undefined: not
 * stored; the row locked is then a placeholder inserted by this transaction).
 *
 * Read committed: each statement sees what was committed before it began. The `SELECT … FOR
 * UPDATE` waits for a transaction holding the lock and then reads the row as that one left it. When
 * there is no row, the insert creates the placeholder; if another transaction inserted the row
 * first (committed or not), the insert waits for it and does nothing, and the next `SELECT … FOR
 * UPDATE` locks that row. A row deleted by its holder while this one waited is not found again:
 * the loop inserts a placeholder anew.
 */
async function lockRow(tx: Tx, key: string): Promise<Channel | undefined> {
  for (let attempt = 0; attempt < MAX_LOCK_ATTEMPTS; attempt++) {
    const [row] = await lockChannel(tx).execute({ key });
    if (row) return row.channel ?? undefined;
    await insertPlaceholder(tx).execute({ key });
  }
  throw new Error(`channel ${key}: could not lock its row after ${MAX_LOCK_ATTEMPTS} attempts`);
}

async function deleteRow(tx: Tx, key: string): Promise<void> {
  await deleteChannel(tx).execute({ key });
}
