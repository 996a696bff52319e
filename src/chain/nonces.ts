import { eq } from 'drizzle-orm';
import { withTransaction, type Db, type Tx } from '../db/client.js';
import { chainNonces } from '../db/schema.js';

/**
 * Nonces of the wallets the service sends from (`chain_nonces`, one row per wallet; this module
 * is its only writer). Every process that sends from one key allocates under that row's lock, so
 * API replicas and workers sharing a key never pick the same nonce.
 */

/**
 * The wallet's next nonce, under the chain_nonces row lock: max(what we allocated, the chain's
 * pending count), so a transaction sent from the wallet outside the service does not wedge us.
 */
export async function allocateNonce(tx: Tx, wallet: string, chainPendingNonce: number): Promise<number> {
  await tx.insert(chainNonces).values({ address: wallet, nextNonce: chainPendingNonce }).onConflictDoNothing();
  const [row] = await tx.select().from(chainNonces).where(eq(chainNonces.address, wallet)).for('update');
  const nonce = Math.max(row!.nextNonce, chainPendingNonce);
  await tx.update(chainNonces).set({ nextNonce: nonce + 1 }).where(eq(chainNonces.address, wallet));
  return nonce;
}

/**
 * One sender lane per hot wallet, across every process on the database: a send allocates its
 * nonce and broadcasts while holding the wallet's chain_nonces row lock, and the nonce is kept
 * only if the node took the transaction (a failed send rolls the allocation back, so no nonce is
 * skipped and nothing waits behind a hole). Within a process sends queue in memory first, so
 * waiting sends hold no database connection.
 *
 * For senders that sign and broadcast in one call (the x402 facilitator's `writeContract`). The
 * settlement worker, which stores each signed payout before broadcasting it, uses `allocateNonce`
 * directly.
 */
export class SendLane {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: Db,
    /** Lower-case address of the sending wallet. */
    readonly wallet: string,
  ) {}

  /**
   * Runs `send(nonce)` alone among all senders of this wallet; resolves with what it returns.
   * `chainPending` is the chain's pending transaction count of the wallet, read before the turn
   * (a count a little stale only defers to the stored nonce). Keep `send` to signing and one
   * broadcast: everything slower (gas estimation, fees) belongs before the turn.
   */
  send<T>(chainPending: Promise<number>, send: (nonce: number) => Promise<T>): Promise<T> {
    chainPending.catch(() => undefined); // awaited in the turn; never an unhandled rejection meanwhile
    const run = this.tail.then(() =>
      // No retry of the transaction: `send` may already have reached the node.
      withTransaction(this.db, async (tx) => send(await allocateNonce(tx, this.wallet, await chainPending)), 0),
    );
    this.tail = run.catch(() => undefined);
    return run;
  }
}
