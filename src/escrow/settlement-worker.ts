import { Loop } from '../workers/loop.js';
import { and, asc, eq, inArray, sql } from 'drizzle-orm';
import { getAddress, type Hash, type Hex } from 'viem';
import type { Clock } from '../clock.js';
import { withTransaction, type Db, type Tx } from '../db/client.js';
import { chainTransfers, type ChainTransferRow } from '../db/schema.js';
import { allocateNonce } from '../chain/nonces.js';
import { recordRefundTransfer } from '../tasks/state-machine.js';
import { backoffMs, leaseDue, leaseUntil, workerId, type WorkerLog } from '../queue/index.js';
import { EXTERNAL, PAYOUT_PENDING } from '../ledger/accounts.js';
import { postMovement, transferEntries } from '../ledger/ledger.js';
import { BroadcastRejectedError, describeChainError, type EscrowCustody, type TransferReceipt } from './custody.js';

/**
 * Settles the outbox (chain_transfers) on chain. Each transfer walks
 *
 *   pending ──sign (nonce, raw tx and hash committed)──▶ signed ──broadcast──▶ sent ──receipt──▶ confirmed
 *      └── maxAttempts errors before signing ──▶ failed            reverted on chain ──▶ failed
 *
 * The signed bytes are committed before they are broadcast, and a signed row is only ever
 * re-broadcast, never re-signed: a crash at any point resumes with the same transaction, so a
 * transfer is paid at most once. Several workers (in one process or many) share the table:
 * a row is claimed with `FOR UPDATE SKIP LOCKED` and leased (`lease_owner`, `lease_expires_at`);
 * every write is fenced on the lease owner and the expected status.
 */
export type SettlementWorkerLog = WorkerLog;

export interface SettlementWorkerOptions {
  db: Db;
  clock: Clock;
  custody: EscrowCustody;
  /** The ledger account of this wallet's decided payouts (default `payout_pending`, the escrow wallet's). */
  pendingAccount?: string;
  /** Blocks that must confirm a transfer before it counts as paid (1 = mined). */
  confirmations: number;
  /** How long a claim protects a row from other workers. Longer than one transfer's RPC calls. */
  leaseMs: number;
  /** Errors after which a transfer that was never signed is given up (`failed`). */
  maxAttempts: number;
  /** Retry delay after the n-th error: backoffBaseMs × 2^min(n−1, 10), jittered down to half. */
  backoffBaseMs: number;
  log?: SettlementWorkerLog;
  /** Rows claimed at a time (default 5). */
  batchSize?: number;
  /** Most transfers one runOnce handles (default 100). */
  maxPerRun?: number;
  /** This worker's lease owner name (default host:pid:random). */
  workerId?: string;
  /** Jitter source in [0, 1) (default Math.random). */
  random?: () => number;
}

export const ACTIVE_STATUSES = ['pending', 'signed', 'sent'] as const;

/** Our lease was taken over (or the row moved on): stop working on the row, write nothing. */
class LeaseLostError extends Error {
  constructor(id: string) {
    super(`settlement: lease on ${id} lost`);
    this.name = 'LeaseLostError';
  }
}

const WAITING = Symbol('waiting');
type StepResult = ChainTransferRow | { [WAITING]: true; blockNumber?: bigint };

const silentLog: SettlementWorkerLog = { info: () => {}, warn: () => {}, error: () => {} };

export class SettlementWorker {
  readonly id: string;
  private readonly db: Db;
  private readonly clock: Clock;
  private readonly custody: EscrowCustody;
  private readonly wallet: string;
  private readonly log: SettlementWorkerLog;
  private readonly random: () => number;
  private readonly loop = new Loop(
    () => this.runOnce(),
    (err) => this.log.error({ worker: this.id, error: describeChainError(err) }, 'settlement run failed'),
  );

  constructor(private readonly opts: SettlementWorkerOptions) {
    if (!Number.isInteger(opts.confirmations) || opts.confirmations < 1) throw new Error('settlement: confirmations must be ≥ 1');
    if (!(opts.leaseMs > 0) || !(opts.backoffBaseMs >= 0)) throw new Error('settlement: leaseMs > 0 and backoffBaseMs ≥ 0');
    if (!Number.isInteger(opts.maxAttempts) || opts.maxAttempts < 1) throw new Error('settlement: maxAttempts must be ≥ 1');
    this.id = opts.workerId ?? workerId();
    this.db = opts.db;
    this.clock = opts.clock;
    this.custody = opts.custody;
    this.wallet = opts.custody.address.toLowerCase();
    this.log = opts.log ?? silentLog;
    this.random = opts.random ?? Math.random;
  }

  /** Works every due transfer of this wallet once; returns how many changed status. */
  async runOnce(): Promise<number> {
    const seen: string[] = [];
    const maxPerRun = this.opts.maxPerRun ?? 100;
    let advanced = 0;
    while (seen.length < maxPerRun) {
      const claimedAt = performance.now();
      const batch = await this.lease(seen, Math.min(this.opts.batchSize ?? 5, maxPerRun - seen.length));
      if (batch.length === 0) break;
      for (const row of batch) {
        seen.push(row.id);
        if (!(await this.holdLease(row, claimedAt))) continue;
        if (await this.process(row)) advanced++;
      }
    }
    return advanced;
  }

  /** Runs every `intervalMs` until stop(); errors are logged, never thrown. */
  start(intervalMs: number): void {
    this.loop.start(intervalMs);
  }

  /** Stops the timer and waits for the run in progress. */
  async stop(): Promise<void> {
    await this.loop.stop();
  }

  // ----------------------------------------------------------------------------- claiming

  /**
   * Leases up to `limit` due rows of this wallet that no one holds: one statement, a CTE that
   * picks rows with FOR UPDATE SKIP LOCKED (so concurrent claimers never pick the same row)
   * and an UPDATE that stamps the lease.
   */
  private async lease(exclude: readonly string[], limit: number): Promise<ChainTransferRow[]> {
    const now = this.clock.now().toISOString();
    const claimed = await leaseDue(this.db, {
      table: 'chain_transfers',
      due: sql`status in ('pending', 'signed', 'sent') and next_attempt_at <= ${now}::timestamptz and from_address = ${this.wallet}`,
      owner: this.id,
      leaseMs: this.opts.leaseMs,
      orderBy: sql`next_attempt_at, id`,
      limit,
      exclude,
    });
    if (claimed.length === 0) return [];
    return this.db
      .select()
      .from(chainTransfers)
      .where(inArray(chainTransfers.id, claimed))
      .orderBy(asc(chainTransfers.nextAttemptAt), asc(chainTransfers.id));
  }

  /** Renews the lease of a row that waited in the batch for more than half of it; false if lost. */
  private async holdLease(row: ChainTransferRow, claimedAt: number): Promise<boolean> {
    if (performance.now() - claimedAt < this.opts.leaseMs / 2) return true;
    const renewed = await this.db
      .update(chainTransfers)
      .set({ leaseExpiresAt: leaseUntil(this.opts.leaseMs) })
      .where(this.fence(row))
      .returning({ id: chainTransfers.id });
    return renewed.length === 1;
  }

  // ----------------------------------------------------------------------------- stepping

  /** Advances one claimed row as far as it goes now. True when its status changed. */
  private async process(row: ChainTransferRow): Promise<boolean> {
    let current = row;
    let advanced = false;
    try {
      for (;;) {
        const next = await this.step(current);
        if (WAITING in next) {
          await this.releaseLease(current, next.blockNumber);
          return advanced;
        }
        advanced = true;
        current = next;
        if (!isActive(current.status)) return true;
      }
    } catch (err) {
      if (err instanceof LeaseLostError) return advanced;
      return (await this.recordError(current, err)) || advanced;
    }
  }

  private step(row: ChainTransferRow): Promise<StepResult> {
    switch (row.status) {
      case 'pending':
        return this.sign(row);
      case 'signed':
        return this.send(row);
      case 'sent':
        return this.check(row);
      default:
        throw new LeaseLostError(row.id); // not ours to work any more
    }
  }

  /**
   * pending → signed: allocates the wallet's next nonce, signs, and commits nonce, raw tx and
   * hash (and a refund's tx hash on the task) in one transaction, before anything is sent.
   */
  private async sign(row: ChainTransferRow): Promise<ChainTransferRow> {
    if (row.fromAddress !== this.wallet) throw new Error(`transfer is from ${row.fromAddress}, this custody is ${this.wallet}`);
    const [fees, chainNonce] = await Promise.all([this.custody.feeQuote(), this.custody.pendingNonce()]);
    const signed = await withTransaction(this.db, async (tx) => {
      const nonce = await allocateNonce(tx, this.wallet, chainNonce);
      const { rawTx, txHash } = await this.custody.signTransfer(getAddress(row.toAddress), row.amount, nonce, fees);
      const updated = await this.fencedUpdate(tx, row, { status: 'signed', nonce, rawTx, txHash, lastError: null });
      if (isTaskRefund(row)) {
        await recordRefundTransfer(tx, row.taskId!, { txHash });
      }
      return updated;
    });
    this.log.info({ ...describe(signed), nonce: signed.nonce, txHash: signed.txHash }, 'transfer signed');
    return signed;
  }

  /** signed → sent: broadcasts the stored bytes (idempotent). */
  private async send(row: ChainTransferRow): Promise<ChainTransferRow> {
    await this.custody.broadcast(row.rawTx as Hex);
    const sent = await this.fencedUpdate(this.db, row, { status: 'sent' });
    this.log.info({ ...describe(sent), txHash: sent.txHash }, 'transfer sent');
    return sent;
  }

  /** sent → confirmed | failed once the receipt has enough confirmations; re-sends while unmined. */
  private async check(row: ChainTransferRow): Promise<StepResult> {
    const receipt = await this.custody.receipt(row.txHash as Hash);
    if (!receipt) {
      await this.custody.broadcast(row.rawTx as Hex); // dropped from a pool? the same bytes again
      return { [WAITING]: true };
    }
    const confirmations = await this.custody.confirmations(receipt.blockNumber);
    if (confirmations < this.opts.confirmations) return { [WAITING]: true, blockNumber: receipt.blockNumber };
    return receipt.status === 'success' ? this.markConfirmed(row, receipt) : this.markReverted(row, receipt);
  }

  /** confirmed + the `payout_confirmed` movement (payout_pending → external), in one transaction. */
  private async markConfirmed(row: ChainTransferRow, receipt: TransferReceipt): Promise<ChainTransferRow> {
    const confirmed = await withTransaction(this.db, async (tx) => {
      const updated = await this.fencedUpdate(tx, row, {
        status: 'confirmed',
        blockNumber: Number(receipt.blockNumber),
        confirmedAt: this.clock.now(),
        lastError: null,
        ...noLease,
      });
      await postMovement(tx, this.clock, {
        kind: 'payout_confirmed',
        entries: transferEntries(this.opts.pendingAccount ?? PAYOUT_PENDING, EXTERNAL, row.amount),
        taskId: row.taskId,
        transferId: row.id,
      });
      await this.setRefundStatus(tx, row, 'confirmed');
      return updated;
    });
    this.log.info(
      { ...describe(confirmed), txHash: confirmed.txHash, blockNumber: confirmed.blockNumber, gasUsed: receipt.gasUsed?.toString() },
      'transfer confirmed',
    );
    return confirmed;
  }

  /** A reverted transfer: the money stays in payout_pending until an operator looks. */
  private async markReverted(row: ChainTransferRow, receipt: TransferReceipt): Promise<ChainTransferRow> {
    const lastError = `reverted on chain in block ${receipt.blockNumber}`;
    const failed = await withTransaction(this.db, async (tx) => {
      const updated = await this.fencedUpdate(tx, row, { status: 'failed', blockNumber: Number(receipt.blockNumber), lastError, ...noLease });
      await this.setRefundStatus(tx, row, 'failed');
      return updated;
    });
    this.log.error({ ...describe(failed), txHash: failed.txHash, error: lastError }, 'transfer reverted: operator action needed');
    return failed;
  }

  // ----------------------------------------------------------------------------- errors

  /**
   * An error while working a row: attempts + 1, retry after a jittered exponential delay. A row
   * never signed gives up after maxAttempts; a signed one is never abandoned (its nonce is spent:
   * only those bytes may ever pay). Returns whether the row's status changed.
   */
  private async recordError(row: ChainTransferRow, err: unknown): Promise<boolean> {
    const attempts = row.attempts + 1;
    const lastError = describeChainError(err, 500);
    const giveUp = row.status === 'pending' && attempts >= this.opts.maxAttempts;
    const nextAttemptAt = new Date(this.clock.now().getTime() + this.backoffMs(attempts));
    const changed = await withTransaction(this.db, async (tx) => {
      const [updated] = await tx
        .update(chainTransfers)
        .set({ attempts, lastError, updatedAt: this.clock.now(), ...noLease, ...(giveUp ? { status: 'failed' } : { nextAttemptAt }) })
        .where(this.fence(row))
        .returning();
      if (updated && giveUp) await this.setRefundStatus(tx, row, 'failed');
      return Boolean(updated);
    });
    const fields = { ...describe(row), status: row.status, attempts, error: lastError };
    if (giveUp && changed) this.log.error(fields, 'transfer failed before signing: operator action needed');
    else if (err instanceof BroadcastRejectedError) this.log.error({ ...fields, nextAttemptAt }, 'signed transfer refused by the node: operator action needed');
    else this.log.warn({ ...fields, nextAttemptAt }, 'transfer attempt failed; will retry');
    return giveUp && changed;
  }

  /** backoffBaseMs × 2^min(attempts − 1, 10), scaled by a random factor in [0.5, 1). */
  backoffMs(attempts: number): number {
    return backoffMs(this.opts.backoffBaseMs, attempts, this.random);
  }

  // ----------------------------------------------------------------------------- writes

  /** The row as we claimed it: same status, still leased by this worker. */
  private fence(row: ChainTransferRow) {
    return and(eq(chainTransfers.id, row.id), eq(chainTransfers.status, row.status), eq(chainTransfers.leaseOwner, this.id));
  }

  private async fencedUpdate(
    exec: Db | Tx,
    row: ChainTransferRow,
    set: Partial<typeof chainTransfers.$inferInsert>,
  ): Promise<ChainTransferRow> {
    const [updated] = await exec
      .update(chainTransfers)
      .set({ ...set, updatedAt: this.clock.now() })
      .where(this.fence(row))
      .returning();
    if (!updated) throw new LeaseLostError(row.id);
    return updated;
  }

  private async releaseLease(row: ChainTransferRow, blockNumber?: bigint): Promise<void> {
    await this.db
      .update(chainTransfers)
      .set({ ...noLease, ...(blockNumber !== undefined ? { blockNumber: Number(blockNumber) } : {}) })
      .where(this.fence(row));
  }

  private async setRefundStatus(tx: Tx, row: ChainTransferRow, status: 'confirmed' | 'failed'): Promise<void> {
    if (!isTaskRefund(row)) return;
    await recordRefundTransfer(tx, row.taskId!, { status });
  }
}

const noLease = { leaseOwner: null, leaseExpiresAt: null };

/** The task's own refund (its cancel, failure or dispute), as opposed to a refunded payment. */
function isTaskRefund(row: ChainTransferRow): boolean {
  return row.kind === 'refund' && row.taskId !== null && row.paymentId === null;
}

function isActive(status: string): boolean {
  return (ACTIVE_STATUSES as readonly string[]).includes(status);
}

function describe(row: ChainTransferRow): Record<string, unknown> {
  return { transferId: row.id, kind: row.kind, taskId: row.taskId, amount: row.amount.toString() };
}

