import { count, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { withTransaction, type Db } from '../../src/db/client.js';
import { ledgerEntries } from '../../src/db/schema.js';
import {
  EXTERNAL,
  PAYOUT_PENDING,
  TREASURY_CALL_FEES,
  TREASURY_FUND_FEES,
  TREASURY_PLATFORM_FEES,
  escrowAccount,
  isKnownAccount,
  walletOf,
} from '../../src/ledger/accounts.js';
import {
  UnbalancedMovementError,
  accountBalance,
  checkLedger,
  postMovement,
  postMovements,
  recordCallFee,
  recordEscrowFunding,
  transferEntries,
  walletBalances,
} from '../../src/ledger/ledger.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

let testDb: TestDatabase;
let db: Db;
const clock = new ManualClock(new Date('2026-11-21T12:00:00.000Z'));

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = testDb.database.db;
});
afterAll(() => testDb.destroy());

async function entryCount(): Promise<number> {
  const [row] = await db.select({ n: count() }).from(ledgerEntries);
  return row!.n;
}

describe('accounts', () => {
  it('maps every account to the wallet that holds it', () => {
    expect(walletOf(escrowAccount('task_abc'))).toBe('escrow');
    expect(walletOf(TREASURY_FUND_FEES)).toBe('escrow');
    expect(walletOf(TREASURY_PLATFORM_FEES)).toBe('escrow');
    expect(walletOf(PAYOUT_PENDING)).toBe('escrow');
    expect(walletOf(TREASURY_CALL_FEES)).toBe('fee');
    expect(walletOf(EXTERNAL)).toBeNull();
    expect(() => walletOf('treasury:other')).toThrow(/unknown account/);
    expect(isKnownAccount('escrow:')).toBe(false);
    expect(() => escrowAccount("x' or 1=1")).toThrow(/invalid task id/);
  });
});

describe('postMovement', () => {
  it('writes a balanced movement and returns its id', async () => {
    const before = await entryCount();
    const id = await postMovement(db, clock, {
      kind: 'escrow_in',
      entries: transferEntries(EXTERNAL, escrowAccount('task_l1'), 2_500_000n),
      taskId: 'task_l1',
      paymentId: 'pay_1',
    });
    expect(id).toMatch(/^mov_[0-9a-z]{20}$/);
    const rows = await db.select().from(ledgerEntries).where(eq(ledgerEntries.movementId, id));
    expect(rows.map((r) => [r.account, r.amount, r.kind, r.taskId, r.paymentId])).toEqual([
      [EXTERNAL, -2_500_000n, 'escrow_in', 'task_l1', 'pay_1'],
      [escrowAccount('task_l1'), 2_500_000n, 'escrow_in', 'task_l1', 'pay_1'],
    ]);
    expect(await entryCount()).toBe(before + 2);
    expect(await accountBalance(db, escrowAccount('task_l1'))).toBe(2_500_000n);
  });

  it.each([
    ['entries that do not sum to zero', [{ account: EXTERNAL, amount: -5n }, { account: PAYOUT_PENDING, amount: 4n }], /sum to -1/],
    ['a zero amount', [{ account: EXTERNAL, amount: 0n }, { account: PAYOUT_PENDING, amount: 0n }], /zero amount/],
    ['a single entry', [{ account: EXTERNAL, amount: 1n }], /at least two/],
    ['an unknown account', [{ account: EXTERNAL, amount: -1n }, { account: 'treasury:misc', amount: 1n }], /unknown account/],
    ['a zero leg in an otherwise balanced set', [{ account: EXTERNAL, amount: -1n }, { account: PAYOUT_PENDING, amount: 1n }, { account: TREASURY_CALL_FEES, amount: 0n }], /zero amount/],
  ])('refuses %s and writes nothing', async (_name, entries, message) => {
    const before = await entryCount();
    await expect(postMovement(db, clock, { kind: 'release', entries })).rejects.toThrow(message);
    await expect(postMovement(db, clock, { kind: 'release', entries })).rejects.toBeInstanceOf(UnbalancedMovementError);
    expect(await entryCount()).toBe(before);
  });

  it('refuses an unknown kind', async () => {
    await expect(
      postMovement(db, clock, { kind: 'gift' as never, entries: transferEntries(EXTERNAL, PAYOUT_PENDING, 1n) }),
    ).rejects.toThrow(/unknown movement kind/);
  });

  it('writes in the caller’s transaction: a rollback takes the movement with it', async () => {
    const before = await entryCount();
    await expect(
      withTransaction(db, async (tx) => {
        await postMovement(tx, clock, { kind: 'call_fee', entries: transferEntries(EXTERNAL, TREASURY_CALL_FEES, 7n) });
        throw new Error('the state change failed');
      }),
    ).rejects.toThrow(/state change failed/);
    expect(await entryCount()).toBe(before);
  });
});

describe('postMovements', () => {
  it('writes many movements at once, across several inserts, each balanced with its own id', async () => {
    const before = await entryCount();
    const treasury = await accountBalance(db, TREASURY_CALL_FEES);
    const inputs = Array.from({ length: 260 }, (_, i) => ({
      kind: 'fee_collected' as const,
      paymentId: `pay_many_${i}`,
      entries: i === 7 ? [...transferEntries(EXTERNAL, TREASURY_CALL_FEES, 3n), ...transferEntries(EXTERNAL, PAYOUT_PENDING, 2n)] : transferEntries(EXTERNAL, TREASURY_CALL_FEES, BigInt(i + 1)),
    }));
    const ids = await postMovements(db, clock, inputs);
    expect(new Set(ids).size).toBe(260);
    expect(await entryCount()).toBe(before + 2 * 260 + 2);
    const rows = await db.select().from(ledgerEntries).where(eq(ledgerEntries.movementId, ids[259]!));
    expect(rows.map((r) => [r.account, r.amount, r.paymentId])).toEqual([
      [EXTERNAL, -260n, 'pay_many_259'],
      [TREASURY_CALL_FEES, 260n, 'pay_many_259'],
    ]);
    expect(await db.select().from(ledgerEntries).where(eq(ledgerEntries.movementId, ids[7]!))).toHaveLength(4);
    const sum = inputs.reduce((n, _, i) => n + (i === 7 ? 3n : BigInt(i + 1)), 0n);
    expect(await accountBalance(db, TREASURY_CALL_FEES)).toBe(treasury + sum);
    expect((await checkLedger(db)).ok).toBe(true);
  });

  it('refuses the whole set when one movement is not balanced, and writes nothing', async () => {
    const before = await entryCount();
    const good = { kind: 'fee_collected' as const, entries: transferEntries(EXTERNAL, TREASURY_CALL_FEES, 1n) };
    await expect(postMovements(db, clock, [good, { ...good, entries: [{ account: EXTERNAL, amount: -2n }, { account: TREASURY_CALL_FEES, amount: 1n }] }])).rejects.toThrow(
      /sum to -1/,
    );
    expect(await entryCount()).toBe(before);
  });
});

describe('balances and the ledger check', () => {
  it('sums per wallet and finds an unbalanced movement written behind its back', async () => {
    const start = await walletBalances(db);
    await withTransaction(db, async (tx) => {
      await recordEscrowFunding(tx, clock, { taskId: 'task_w1', amount: 1_000_000n, fundFee: 10_000n, paymentId: 'pay_w1' });
      await recordCallFee(tx, clock, { amount: 1_000n, paymentId: 'pay_w2' });
      await postMovement(tx, clock, { kind: 'release', entries: transferEntries(escrowAccount('task_w1'), PAYOUT_PENDING, 900_000n) });
      await postMovement(tx, clock, { kind: 'platform_fee', entries: transferEntries(escrowAccount('task_w1'), TREASURY_PLATFORM_FEES, 90_000n) });
    });
    const after = await walletBalances(db);
    expect(after.escrow - start.escrow).toBe(1_000_000n);
    expect(after.fee - start.fee).toBe(1_000n);
    expect(after.external - start.external).toBe(-1_001_000n);
    expect(await accountBalance(db, escrowAccount('task_w1'))).toBe(0n);
    expect(await accountBalance(db, TREASURY_FUND_FEES)).toBe(10_000n);
    expect(await accountBalance(db, TREASURY_PLATFORM_FEES)).toBe(90_000n);
    expect(await checkLedger(db)).toEqual({ ok: true, total: 0n, unbalancedMovements: [] });

    await db.insert(ledgerEntries).values({ movementId: 'mov_broken', kind: 'release', account: PAYOUT_PENDING, amount: 3n, createdAt: clock.now() });
    expect(await checkLedger(db)).toEqual({ ok: false, total: 3n, unbalancedMovements: ['mov_broken'] });
    await db.delete(ledgerEntries).where(eq(ledgerEntries.movementId, 'mov_broken'));
    expect((await checkLedger(db)).ok).toBe(true);
  });
});
