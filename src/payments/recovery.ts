import type { FacilitatorClient } from '@x402/core/server';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { getAddress, type Hex } from 'viem';
import type { PaymentRow } from '../db/schema.js';
import { newId } from '../ids.js';
import type { WorkerLog } from '../queue/index.js';
import type { PaymentLifecycle } from './lifecycle.js';

/** What the sweep asks the chain about one EIP-3009 authorization. */
export interface AuthorizationProbe {
  authorizationState(authorizer: `0x${string}`, nonce: Hex): Promise<boolean>;
  authorizationTx(authorizer: `0x${string}`, nonce: Hex): Promise<Hex | null>;
}

export type RecoveryLog = WorkerLog;

export interface RecoveryOutcome {
  /** Verified, never sent: forgotten, nothing charged. */
  released: number;
  /** Sent but never moved money, and now never can: failed, nothing charged. */
  failed: number;
  /** Moved money without its effect committing: refunded in full. */
  refunded: number;
}

/**
 * The recovery sweep (worker role). A payment still `verified` or `settling` after its lease
 * belongs to a request that crashed or lost its database. The sweep takes it over and asks the
 * chain what happened:
 * - `verified`: no settlement was ever sent (a payment becomes `settling` first), so the payment
 *   is forgotten: nothing charged.
 * - `settling`, authorization used on chain: the money moved but the effect did not commit with
 *   its booking (they commit together), so the payment is refunded in full through the outbox.
 * - `settling`, authorization unused: the settlement may still be pending somewhere, so the
 *   sweep settles the stored authorization itself. If that moves the money, it is refunded in
 *   full; if the chain refuses it and the authorization is still unused, it never moved money
 *   (and the sweep's own attempt consumed nothing): failed, nothing charged.
 * - a channel payment `settling`: its voucher was charged on the channel or not. While it is
 *   unresolved the channel takes no other payment (http/x402.ts), so the channel's charged total
 *   reached its voucher's amount only by its own charge. Charged, the charge is taken back; not, it
 *   failed. Either way the dead request's reservation of the channel ends, so the client pays on.
 * Every step is fenced by the sweep's lease, so several workers can sweep at once.
 */
export class PaymentRecovery {
  readonly owner = newId('sweep');

  constructor(
    private readonly opts: {
      lifecycle: PaymentLifecycle;
      chain: AuthorizationProbe;
      facilitator: FacilitatorClient | undefined;
      log?: RecoveryLog;
    },
  ) {}

  async runOnce(limit = 50): Promise<RecoveryOutcome> {
    const outcome: RecoveryOutcome = { released: 0, failed: 0, refunded: 0 };
    const taken = await this.opts.lifecycle.takeAbandoned(this.owner, limit);
    for (const payment of taken) {
      try {
        outcome[await this.resolve(payment)]++;
      } catch (err) {
        // The chain or the database is unreachable: the payment keeps the sweep's lease and is retried after it.
        this.opts.log?.error({ err, payment: payment.id }, 'payment recovery: could not resolve; will retry');
      }
    }
    if (taken.length > 0) this.opts.log?.info({ ...outcome }, 'payment recovery: abandoned payments resolved');
    return outcome;
  }

  private async resolve(payment: PaymentRow): Promise<keyof RecoveryOutcome> {
    const { lifecycle } = this.opts;
    if (payment.status === 'verified') {
      await lifecycle.forget(payment.id, this.owner);
      if (payment.channelId) await lifecycle.channels?.release(payment);
      return 'released';
    }
    if (payment.channelId) return this.resolveChannelPayment(payment);
    const payer = getAddress(payment.payerAddress);
    const nonce = payment.authorizationNonce as Hex;
    let used = await this.opts.chain.authorizationState(payer, nonce);
    let txHash: string | null = null;
    if (!used) {
      const settled = await this.settleStored(payment);
      if (settled) {
        used = true;
        txHash = settled;
      } else {
        used = await this.opts.chain.authorizationState(payer, nonce);
      }
    }
    if (!used) {
      await lifecycle.fail(payment.id, this.owner, 'The settlement never moved the money; nothing was charged');
      return 'failed';
    }
    txHash ??= await this.opts.chain.authorizationTx(payer, nonce);
    await lifecycle.refundNow(payment.id, this.owner, {
      txHash,
      reason: 'The request did not complete after its payment settled (crash or outage); refunded in full by the recovery sweep',
    });
    this.opts.log?.warn({ payment: payment.id, purpose: payment.purpose, amount: payment.amount.toString(), tx: txHash }, 'payment recovery: refunded');
    return 'refunded';
  }

  /**
   * A payment over a batch-settlement channel, `settling`: its voucher was charged on the channel
   * or not. Charged: the call was not served with it, so the charge is taken back (refunded, nothing
   * to send). Not charged: it never will be now (the request is gone), nothing was charged.
   */
  private async resolveChannelPayment(payment: PaymentRow): Promise<keyof RecoveryOutcome> {
    const { lifecycle } = this.opts;
    // Not charged: the reservation ends with the answer, so the payment stays uncharged once failed.
    if (!lifecycle.channels || !(await lifecycle.channels.chargedElseRelease(payment))) {
      await lifecycle.fail(payment.id, this.owner, 'The voucher was never charged; nothing was charged');
      return 'failed';
    }
    await lifecycle.refundNow(payment.id, this.owner, {
      txHash: null,
      reason: 'The request did not complete after its voucher was charged (crash or outage); the charge was taken back by the recovery sweep',
    });
    await lifecycle.channels.release(payment);
    this.opts.log?.warn({ payment: payment.id, purpose: payment.purpose, amount: payment.amount.toString(), channel: payment.channelId }, 'payment recovery: channel charge taken back');
    return 'refunded';
  }

  /** Settles the stored authorization; its tx hash when that moved the money, else null. */
  private async settleStored(payment: PaymentRow): Promise<string | null> {
    if (!this.opts.facilitator || !payment.payload) return null;
    try {
      const result = await this.opts.facilitator.settle(
        payment.payload.payload as PaymentPayload,
        payment.payload.requirements as PaymentRequirements,
      );
      return result.success ? result.transaction : null;
    } catch (err) {
      this.opts.log?.warn({ err, payment: payment.id }, 'payment recovery: settling the stored authorization failed');
      return null;
    }
  }
}
