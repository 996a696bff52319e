import type { FacilitatorClient } from '@x402/core/server';
import type { Network } from '@x402/core/types';
import type { BatchSettlementChannelManager, Channel } from '@x402/evm/batch-settlement/server';
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import type { Address, Hex } from 'viem';
import type { ChannelContractReader } from '../../chain/channels.js';
import type { Clock } from '../../clock.js';
import { withTransaction, type Db } from '../../db/client.js';
import { failpoint } from '../../failpoints.js';
import { RECEIVABLE_CHANNEL_FEES, TREASURY_CALL_FEES } from '../../ledger/accounts.js';
import { kindTotal, postMovement, transferEntries } from '../../ledger/ledger.js';
import type { WorkerLog } from '../../queue/index.js';
import type { PaymentLifecycle } from '../lifecycle.js';
import type { Channels } from './index.js';
import { isSettlerHold, SETTLER_HOLD_PREFIX } from './storage.js';

/**
 * The channel settler (worker role): turns what the batch-settlement channels were charged into
 * USDC in the fee wallet, with the stock channel manager of @x402/evm, and books it.
 *
 * One run:
 * 1. **Refresh** every stored channel from the contract (balance, claimed total): the contract is
 *    the truth, and a run that crashed after a claim or refund left the stored copy behind. A
 *    channel drained on chain (all of it claimed or refunded, nothing charged beyond) is dropped.
 *    A reservation left by a request that died before recording its payment is released.
 * 2. **Claim** the charged, unclaimed vouchers of every channel in one transaction once
 *    `claimThreshold` is unclaimed or `claimIntervalMs` passed since the last claim. A channel
 *    with a payment still unresolved (verified or settling) is left out: that payment's charge may
 *    still be taken back (lifecycle `refund`), which a claim would make impossible.
 * 3. **Settle**: the contract pays everything claimed for the fee wallet into it.
 * 4. **Book** what the contract has paid the fee wallet and the ledger does not yet hold
 *    (`channel_settled`, receivable:channel_fees → treasury:call_fees): the contract's cumulative
 *    `totalSettled` minus what was booked, under a lock, so a crash between a settlement and its
 *    booking, or two workers at once, books each unit exactly once.
 * 5. **Refund** channels idle for `idleRefundMs` (no unresolved payment, no request in flight): the
 *    channel is held like a request holds it, then its last voucher is claimed and the remainder
 *    goes back to the payer, in one transaction (`refundHeld`).
 * Every step is idempotent on the contract (a claim at or below what was claimed changes nothing;
 * a settle with nothing claimed pays nothing), so a crash anywhere, or a second worker, costs at
 * most a wasted transaction.
 */
export interface ChannelSettlerOptions {
  db: Db;
  clock: Clock;
  channels: Channels;
  lifecycle: PaymentLifecycle;
  /** The in-process facilitator with the batch-settlement scheme (it sends from the operator wallet). */
  facilitator: FacilitatorClient;
  network: Network;
  token: Address;
  contract: ChannelContractReader;
  claimThreshold: bigint;
  claimIntervalMs: number;
  idleRefundMs: number;
  log?: WorkerLog;
}

export interface ChannelRun {
  refreshed: number;
  dropped: number;
  /** Reservations of requests that died before recording their payment, released. */
  released: number;
  claimed: number;
  settled: boolean;
  /** Atomic USDC booked as paid into the fee wallet. */
  booked: bigint;
  refunded: number;
}

/** Two workers booking settlements take turns (transaction-level advisory lock). */
const BOOKING_LOCK = 727_102;

export class ChannelSettler {
  private readonly manager: BatchSettlementChannelManager;
  private lastClaimAt: number;

  constructor(private readonly opts: ChannelSettlerOptions) {
    this.manager = opts.channels.scheme.createChannelManager(crashPoints(opts.facilitator), opts.network, opts.token);
    this.lastClaimAt = opts.clock.now().getTime();
  }

  /** One run; `force` claims, settles and refunds whatever it can now (tests, shutdown, the demo). */
  async runOnce(force: { claim?: boolean; refundIdleMs?: number } = {}): Promise<ChannelRun> {
    const run: ChannelRun = { refreshed: 0, dropped: 0, released: 0, claimed: 0, settled: false, booked: 0n, refunded: 0 };
    const held = await this.opts.lifecycle.unresolvedChannels();
    const channels = await this.releaseDead(await this.refresh(run), held, run);
    const now = this.opts.clock.now().getTime();
    const free = channels.filter((c) => !held.has(c.channelId.toLowerCase()) && !pendingLive(c, now));

    const claimable = free.filter((c) => BigInt(c.chargedCumulativeAmount) > BigInt(c.totalClaimed));
    const unclaimed = claimable.reduce((sum, c) => sum + BigInt(c.chargedCumulativeAmount) - BigInt(c.totalClaimed), 0n);
    if (claimable.length > 0 && (force.claim || unclaimed >= this.opts.claimThreshold || now - this.lastClaimAt >= this.opts.claimIntervalMs)) {
      const results = await this.manager.claim({ selectClaimChannels: () => claimable });
      run.claimed = results.reduce((n, r) => n + r.vouchers, 0);
      this.lastClaimAt = now;
    }

    run.settled = await this.settleClaimed();
    run.booked = await this.bookSettled();

    const idleMs = force.refundIdleMs ?? this.opts.idleRefundMs;
    const idle = free.filter((c) => now - c.lastRequestTimestamp >= idleMs && BigInt(c.balance) > BigInt(c.chargedCumulativeAmount));
    if (idle.length > 0) {
      const refunds: boolean[] = [];
      for (const channel of idle) refunds.push(await this.refundHeld(channel.channelId, idleMs));
      run.refunded = refunds.filter(Boolean).length;
      // A refund claims the channel's last vouchers, if any were unclaimed: pay them out and book them in this run too.
      if (run.refunded > 0 && (await this.settleClaimed())) {
        run.settled = true;
        run.booked += await this.bookSettled();
      }
    }
    if (run.claimed || run.refunded || run.booked || run.dropped || run.released) this.opts.log?.info({ ...run, booked: run.booked.toString() }, 'channels: settled');
    return run;
  }

  /** Step 1: the stored channels with their on-chain balance and claimed total; drained ones dropped. */
  private async refresh(run: ChannelRun): Promise<Channel[]> {
    const { storage } = this.opts.channels;
    const stored = await storage.list();
    if (stored.length === 0) return [];
    const onchain = await this.opts.contract.channels(stored.map((c) => c.channelId as Hex));
    const out: Channel[] = [];
    for (const [i, channel] of stored.entries()) {
      const truth = onchain[i]!;
      const balance = truth.balance.toString();
      const totalClaimed = truth.totalClaimed.toString();
      if (channel.balance === balance && channel.totalClaimed === totalClaimed && !drainedOn(channel, truth)) {
        out.push(channel);
        continue;
      }
      let kept: Channel | undefined;
      await storage.updateChannel(channel.channelId, (current) => {
        if (!current) return current;
        if (drainedOn(current, truth)) return undefined;
        kept = { ...current, balance, totalClaimed };
        return kept;
      });
      if (kept) {
        out.push(kept);
        run.refreshed++;
      } else run.dropped++;
    }
    return out;
  }

  /**
   * Step 1b: a request reserves its channel while the scheme verifies its voucher and records its
   * payment right after; the reservation lasts the route's x402 timeout (300 s by default). A
   * reservation older than `DEAD_RESERVATION_MS` with no unresolved payment on the channel was left
   * by a request that died in between (its payment, once recorded, is the recovery sweep's, which
   * releases it): it is released, so the payer's next call is not refused as "busy" until it
   * expires. Releasing a live one is safe too: that request's charge then finds its reservation
   * gone and fails, uncharged.
   */
  private async releaseDead(channels: Channel[], held: Set<string>, run: ChannelRun): Promise<Channel[]> {
    const now = Date.now(); // the scheme's reservations run on the wall clock
    const out: Channel[] = [];
    for (const channel of channels) {
      const pending = channel.pendingRequest;
      const dead =
        pending !== undefined &&
        pendingLive(channel, now) &&
        !isSettlerHold(pending) &&
        now - channel.lastRequestTimestamp >= DEAD_RESERVATION_MS &&
        !held.has(channel.channelId.toLowerCase());
      if (!dead || (await this.opts.lifecycle.unresolvedOnChannel(channel.channelId))) {
        out.push(channel);
        continue;
      }
      const { storage } = this.opts.channels;
      const result = await storage.endReservation(channel.channelId, pending.pendingId);
      if (result.status === 'updated') run.released++;
      if (result.channel) out.push(result.channel);
    }
    return out;
  }

  /**
   * Step 5 for one channel. It is held first, as a request holds it (the scheme's reservation,
   * taken only if no request holds it now and it is still idle): from then on no voucher can be
   * charged on it, so the refund, which claims the charged total and returns the rest, is computed
   * from what the channel really holds. Refunding from an earlier read let a call charged meanwhile
   * be served and booked while its money went back to the payer. A channel with an unresolved
   * payment is left (its charge may still be taken back). Refunded: the channel is dropped.
   */
  private async refundHeld(channelId: string, idleMs: number): Promise<boolean> {
    const { storage } = this.opts.channels;
    const holdId = `${SETTLER_HOLD_PREFIX}${randomUUID()}`;
    const now = Date.now(); // the scheme's reservations run on the wall clock
    let target: Channel | undefined;
    await storage.updateChannel(channelId, (c) => {
      if (!c || pendingLive(c, now) || this.opts.clock.now().getTime() - c.lastRequestTimestamp < idleMs) return c;
      if (BigInt(c.balance) <= BigInt(c.chargedCumulativeAmount)) return c;
      target = { ...c, pendingRequest: { pendingId: holdId, signedMaxClaimable: c.signedMaxClaimable, expiresAt: now + REFUND_HOLD_MS } };
      return target;
    });
    if (!target) return false;
    const letGo = () => storage.endReservation(channelId, holdId);
    if (await this.opts.lifecycle.unresolvedOnChannel(channelId)) {
      await letGo();
      return false;
    }
    try {
      await refundOne(this.manager, target);
    } catch (err) {
      await letGo();
      throw err;
    }
    await storage.updateChannel(channelId, (c) => (c?.pendingRequest?.pendingId === holdId ? undefined : c));
    return true;
  }

  /** Step 3, when the contract holds claimed money for the fee wallet (a settle of nothing is refused on chain). */
  private async settleClaimed(): Promise<boolean> {
    const totals = await this.opts.contract.receiver(this.opts.channels.receiver, this.opts.token);
    if (totals.totalClaimed <= totals.totalSettled) return false;
    await this.manager.settle();
    return true;
  }

  /** Step 4: books what the contract paid the fee wallet beyond what the ledger holds. */
  private async bookSettled(): Promise<bigint> {
    const { totalSettled } = await this.opts.contract.receiver(this.opts.channels.receiver, this.opts.token);
    return withTransaction(this.opts.db, async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${BOOKING_LOCK})`);
      const booked = await kindTotal(tx, 'channel_settled', TREASURY_CALL_FEES);
      const due = totalSettled - booked;
      if (due <= 0n) return 0n;
      await postMovement(tx, this.opts.clock, { kind: 'channel_settled', entries: transferEntries(RECEIVABLE_CHANNEL_FEES, TREASURY_CALL_FEES, due) });
      return due;
    });
  }
}

/** A request's reservation this old with no payment recorded on its channel belongs to a dead request (a live one records it within milliseconds). */
export const DEAD_RESERVATION_MS = 10_000;

/** How long the settler holds a channel it refunds (a crash leaves the hold; the next refresh drops the drained channel anyway). */
const REFUND_HOLD_MS = 5 * 60_000;

/**
 * The channel manager's refund of one channel from a given record (`refundChannel`: claim its
 * charged total, refund the rest, with the receiver authorizer's signatures). Its public `refund`
 * re-reads the channels and skips a held one, which is exactly what the settler's hold is.
 */
function refundOne(manager: BatchSettlementChannelManager, target: Channel): Promise<unknown> {
  const refundChannel = (manager as unknown as { refundChannel?: (c: Channel) => Promise<unknown> }).refundChannel;
  if (typeof refundChannel !== 'function') throw new Error('@x402/evm: BatchSettlementChannelManager has no refundChannel (the package changed)');
  return refundChannel.call(manager, target);
}

/**
 * Whether a stored channel is drained on chain and can be forgotten: everything in it was claimed
 * or refunded (balance == claimed), nothing was charged beyond the claim, and no request holds it
 * (a settler's refund hold counts for none: that refund is done). A client's cooperative refund
 * leaves the stored copy already matching the contract; it is dropped all the same.
 */
function drainedOn(channel: Channel, truth: { balance: bigint; totalClaimed: bigint }): boolean {
  const free = !pendingLive(channel, Date.now()) || isSettlerHold(channel.pendingRequest);
  return truth.balance === truth.totalClaimed && BigInt(channel.chargedCumulativeAmount) <= truth.totalClaimed && free;
}

/** Whether a request holds the channel now (the scheme reserves it from verify to settle). */
function pendingLive(channel: Channel, now: number): boolean {
  return channel.pendingRequest !== undefined && channel.pendingRequest.expiresAt > now;
}

/**
 * The facilitator the manager sends through, with the crash points of the kill tests after each
 * transaction it sends (`channel:after-claim`, `channel:after-settle`, `channel:after-refund`):
 * the chain moved, nothing about it is stored yet.
 */
function crashPoints(facilitator: FacilitatorClient): FacilitatorClient {
  return {
    verify: (payload, requirements) => facilitator.verify(payload, requirements),
    getSupported: () => facilitator.getSupported(),
    settle: async (payload, requirements) => {
      const result = await facilitator.settle(payload, requirements);
      const type = (payload.payload as { type?: string } | undefined)?.type;
      if (result.success && type) failpoint(`channel:after-${type}`);
      return result;
    },
  };
}
