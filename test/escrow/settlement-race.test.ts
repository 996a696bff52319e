import { eq, inArray } from 'drizzle-orm';
import type { Address } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { withTransaction, type Db } from '../../src/db/client.js';
import { chainTransfers, ledgerEntries } from '../../src/db/schema.js';
import type { CustodialEscrowWallet, EscrowCustody } from '../../src/escrow/custody.js';
import { planRelease } from '../../src/escrow/outbox.js';
import { reconcile } from '../../src/ledger/reconcile.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { ESCROW, escrowCustody, fundedTask, minedNonce, newClock, randomAddress, runUntilSettled, worker } from './support.js';

/**
 * Two workers race over the same outbox. Under DATABASE_URL they run on real Postgres with a
 * connection pool, so claims, nonce allocation and confirmations truly overlap; on PGlite (one
 * connection) the same code runs interleaved.
 */
let chain: DevChain;
let testDb: TestDatabase;
let db: Db;
let custody: CustodialEscrowWallet;
const clock = newClock();
const backend = process.env.DATABASE_URL ? 'Postgres' : 'PGlite';

beforeAll(async () => {
  [chain, testDb] = await Promise.all([startDevChain({ silent: true, fundIndices: [4, 5, 6, 7, 8, 9] }), createTestDatabase()]);
  db = testDb.database.db;
  custody = escrowCustody(chain);
});
afterAll(async () => {
  await chain.stop();
  await testDb.destroy();
});

/** Counts what each worker sends, to show no transaction went out twice from one worker's view. */
function countingCustody(inner: EscrowCustody, signed: string[]): EscrowCustody {
  return {
    address: inner.address,
    signTransfer: async (to, amount, nonce, fees) => {
      const result = await inner.signTransfer(to, amount, nonce, fees);
      signed.push(result.txHash);
      return result;
    },
    broadcast: (raw) => inner.broadcast(raw),
    receipt: (hash) => inner.receipt(hash),
    confirmations: (bn) => inner.confirmations(bn),
    pendingNonce: () => inner.pendingNonce(),
    usdcBalance: () => inner.usdcBalance(),
    feeQuote: () => inner.feeQuote(),
  };
}

describe(`two settlement workers racing (${backend})`, () => {
  it('ten transfers, two workers running at once: each payee is paid exactly once', async () => {
    const payees: Address[] = [];
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const task = await fundedTask(db, clock, 100_000n + BigInt(i), chain);
      const to = randomAddress();
      payees.push(to);
      const planned = await withTransaction(db, (tx) => planRelease(tx, clock, { task, payout: { to }, platformFeeBps: 0 }));
      ids.push(planned.transfer!.id);
    }
    const escrowBefore = await usdcBalance(chain.rpcUrl, ESCROW.address);
    const nonceBefore = await minedNonce(chain.rpcUrl);
    const signedByA: string[] = [];
    const signedByB: string[] = [];
    const a = worker(db, clock, countingCustody(custody, signedByA), { workerId: 'a', batchSize: 2 });
    const b = worker(db, clock, countingCustody(custody, signedByB), { workerId: 'b', batchSize: 2 });

    const started = performance.now();
    const [firstA, firstB] = await Promise.all([a.runOnce(), b.runOnce()]);
    const rest = await runUntilSettled([a, b], db);
    const elapsed = performance.now() - started;
    console.info(
      `[figures] ${backend}: 10 transfers by 2 racing workers in ${elapsed.toFixed(0)} ms; first round a=${firstA} b=${firstB}, then ${rest}`,
    );

    expect(firstA + firstB).toBeGreaterThanOrEqual(10); // between them, the first round moved every transfer
    const rows = await db.select().from(chainTransfers).where(inArray(chainTransfers.id, ids));
    expect(rows.map((r) => r.status)).toEqual(Array(10).fill('confirmed'));
    expect(new Set(rows.map((r) => r.nonce)).size).toBe(10);
    expect(new Set(rows.map((r) => r.txHash)).size).toBe(10);
    // each transfer was signed once, by one worker
    expect([...signedByA, ...signedByB].sort()).toEqual(rows.map((r) => r.txHash!).sort());
    for (const [i, to] of payees.entries()) expect(await usdcBalance(chain.rpcUrl, to), `payee ${i}`).toBe(100_000n + BigInt(i));
    expect(await usdcBalance(chain.rpcUrl, ESCROW.address)).toBe(escrowBefore - 1_000_045n);
    expect(await minedNonce(chain.rpcUrl)).toBe(nonceBefore + 10);

    const confirmations = await db.select().from(ledgerEntries).where(eq(ledgerEntries.kind, 'payout_confirmed'));
    expect(confirmations).toHaveLength(20); // one movement (two entries) per transfer
    const books = await reconcile(db, { escrow: custody });
    expect(books.ok).toBe(true);
    expect(books.wallets[0]!.onChain).toBe(0n);
  });

  it('a slow batch renews its leases: another worker cannot take a row still waiting in it', async () => {
    const leaseMs = 500;
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const task = await fundedTask(db, clock, 1_000n, chain);
      const planned = await withTransaction(db, (tx) => planRelease(tx, clock, { task, payout: { to: randomAddress() }, platformFeeBps: 0 }));
      ids.push(planned.transfer!.id);
    }
    const other = worker(db, clock, custody, { workerId: 'other', leaseMs });
    const takenByOther: number[] = [];
    // every fee quote of the slow worker takes 0.6 lease (real time: leases run on the database's
    // clock); meanwhile the other worker tries to claim
    const slowCustody: EscrowCustody = {
      ...countingCustody(custody, []),
      feeQuote: async () => {
        await new Promise((r) => setTimeout(r, leaseMs * 0.6));
        takenByOther.push(await other.runOnce());
        return custody.feeQuote();
      },
    };
    const slow = worker(db, clock, slowCustody, { workerId: 'slow', leaseMs, batchSize: 2 });
    expect(await slow.runOnce()).toBe(2);
    await runUntilSettled(slow, db);
    // 1.2 leases after the claim the second row was still the slow worker's: it had renewed the lease
    expect(takenByOther).toEqual([0, 0]);
    const rows = await db.select().from(chainTransfers).where(inArray(chainTransfers.id, ids));
    expect(rows.map((r) => r.status)).toEqual(['confirmed', 'confirmed']);
  });
});
