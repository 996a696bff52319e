import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withTransaction, type Db } from '../../src/db/client.js';
import { chainTransfers, ledgerEntries } from '../../src/db/schema.js';
import { enqueueTransfer, planDisputeSplit, planRefund, planRelease, platformFee } from '../../src/escrow/outbox.js';
import { PAYOUT_PENDING, TREASURY_PLATFORM_FEES, escrowAccount } from '../../src/ledger/accounts.js';
import { accountBalance, checkLedger } from '../../src/ledger/ledger.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { ESCROW, fundedTask, newClock, randomAddress, transferCount } from './support.js';

let testDb: TestDatabase;
let db: Db;
const clock = newClock();

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = testDb.database.db;
});
afterAll(() => testDb.destroy());

const tx = <T>(fn: Parameters<typeof withTransaction<T>>[1]) => withTransaction(db, fn);

async function transfersOf(taskId: string) {
  return db.select().from(chainTransfers).where(eq(chainTransfers.taskId, taskId)).orderBy(chainTransfers.kind);
}

async function movementKinds(taskId: string): Promise<string[]> {
  const rows = await db
    .select({ kind: ledgerEntries.kind })
    .from(ledgerEntries)
    .where(eq(ledgerEntries.taskId, taskId))
    .orderBy(ledgerEntries.id);
  return [...new Set(rows.map((r) => r.kind))];
}

describe('enqueueTransfer', () => {
  it('enqueues once per (task, kind): a second enqueue returns the first row and writes nothing', async () => {
    const task = await fundedTask(db, clock, 1_000_000n);
    const to = randomAddress();
    const input = { kind: 'refund' as const, taskId: task.id, from: ESCROW.address, to, amount: 1_000_000n };
    const before = await transferCount(db);
    const first = await tx((t) => enqueueTransfer(t, clock, input));
    const second = await tx((t) => enqueueTransfer(t, clock, input));
    expect(first.created).toBe(true);
    expect(second).toEqual({ transfer: first.transfer, created: false });
    expect(await transferCount(db)).toBe(before + 1);
    expect(first.transfer).toMatchObject({
      kind: 'refund',
      status: 'pending',
      fromAddress: ESCROW.address.toLowerCase(),
      toAddress: to.toLowerCase(),
      amount: 1_000_000n,
      attempts: 0,
      nonce: null,
      rawTx: null,
    });
    expect(await accountBalance(db, escrowAccount(task.id))).toBe(0n);
    const entries = await db.select().from(ledgerEntries).where(eq(ledgerEntries.transferId, first.transfer.id));
    expect(entries.map((e) => [e.kind, e.account, e.amount])).toEqual([
      ['refund', escrowAccount(task.id), -1_000_000n],
      ['refund', PAYOUT_PENDING, 1_000_000n],
    ]);
  });

  it('refuses other terms for an enqueued (task, kind), more than the escrow holds, and zero', async () => {
    const task = await fundedTask(db, clock, 500n);
    const base = { kind: 'release' as const, taskId: task.id, from: ESCROW.address, to: randomAddress() };
    await tx((t) => enqueueTransfer(t, clock, { ...base, amount: 200n }));
    await expect(tx((t) => enqueueTransfer(t, clock, { ...base, amount: 201n }))).rejects.toMatchObject({ code: 'invalid_state' });
    const other = await fundedTask(db, clock, 500n);
    const count = await transferCount(db);
    await expect(
      tx((t) => enqueueTransfer(t, clock, { ...base, taskId: other.id, amount: 501n })),
    ).rejects.toMatchObject({ code: 'invalid_state', details: { held: '500', requested: '501' } });
    await expect(tx((t) => enqueueTransfer(t, clock, { ...base, taskId: other.id, amount: 0n }))).rejects.toThrow(/positive/);
    await expect(tx((t) => enqueueTransfer(t, clock, { ...base, taskId: other.id, to: 'not-an-address', amount: 1n }))).rejects.toThrow(
      /not an address/,
    );
    expect(await transferCount(db)).toBe(count);
    expect(await accountBalance(db, escrowAccount(other.id))).toBe(500n);
  });
});

describe('planRelease', () => {
  it('takes the platform fee and enqueues the rest to the agent, once', async () => {
    const task = await fundedTask(db, clock, 1_000_003n);
    const agent = randomAddress();
    const planned = await tx((t) => planRelease(t, clock, { task, payout: { to: agent }, platformFeeBps: 250, escrowWallet: ESCROW.address }));
    // 2.5 % of 1 000 003 = 25 000.075, rounded down
    expect(planned).toMatchObject({ fee: 25_000n, net: 975_003n, created: true });
    expect(planned.transfer).toMatchObject({ kind: 'release', toAddress: agent.toLowerCase(), amount: 975_003n, status: 'pending' });
    expect(await accountBalance(db, escrowAccount(task.id))).toBe(0n);
    expect(await movementKinds(task.id)).toEqual(['escrow_in', 'platform_fee', 'release']);

    const fees = await accountBalance(db, TREASURY_PLATFORM_FEES);
    const again = await tx((t) => planRelease(t, clock, { task, payout: { to: agent }, platformFeeBps: 250 }));
    expect(again).toEqual({ transfer: planned.transfer, fee: 25_000n, net: 975_003n, created: false });
    expect(await accountBalance(db, TREASURY_PLATFORM_FEES)).toBe(fees);
    expect(await transfersOf(task.id)).toHaveLength(1);
    expect((await checkLedger(db)).ok).toBe(true);
  });

  it('a 100 % fee enqueues nothing; a wrong escrow wallet or an unknown task is refused', async () => {
    const task = await fundedTask(db, clock, 1_000n);
    const planned = await tx((t) => planRelease(t, clock, { task, payout: { to: randomAddress() }, platformFeeBps: 10_000 }));
    expect(planned).toEqual({ transfer: null, fee: 1_000n, net: 0n, created: true });
    expect(await transfersOf(task.id)).toHaveLength(0);
    const replay = await tx((t) => planRelease(t, clock, { task, payout: { to: randomAddress() }, platformFeeBps: 10_000 }));
    expect(replay.created).toBe(false);
    expect(await accountBalance(db, escrowAccount(task.id))).toBe(0n);

    const other = await fundedTask(db, clock, 1_000n);
    await expect(
      tx((t) => planRelease(t, clock, { task: other, payout: { to: randomAddress() }, platformFeeBps: 0, escrowWallet: randomAddress() })),
    ).rejects.toThrow(/is escrowed in/);
    await expect(
      tx((t) => planRelease(t, clock, { task: { id: 'task_missing' }, payout: { to: randomAddress() }, platformFeeBps: 0 })),
    ).rejects.toMatchObject({ code: 'task_not_found' });
    expect(() => platformFee(1n, 10_001)).toThrow(/0\.\.10000/);
  });
});

describe('planRefund', () => {
  it('full refund: one transfer to the payer', async () => {
    const task = await fundedTask(db, clock, 700_000n);
    const planned = await tx((t) => planRefund(t, clock, { task, refund: 700_000n }));
    expect(planned.refund).toMatchObject({ kind: 'refund', toAddress: task.payer.toLowerCase(), amount: 700_000n });
    expect(planned.release).toBeNull();
    expect(planned.remaining).toBe(0n);
    expect(await transfersOf(task.id)).toHaveLength(1);
  });

  it('partial refund: the agent keeps its share as a second transfer of kind release', async () => {
    const task = await fundedTask(db, clock, 1_000_000n);
    const agent = randomAddress();
    const input = { task, refund: 900_000n, agentShare: 100_000n, agentPayout: agent };
    const planned = await tx((t) => planRefund(t, clock, input));
    expect(planned.remaining).toBe(0n);
    const rows = await transfersOf(task.id);
    expect(rows.map((r) => [r.kind, r.toAddress, r.amount])).toEqual([
      ['refund', task.payer.toLowerCase(), 900_000n],
      ['release', agent.toLowerCase(), 100_000n],
    ]);
    const replay = await tx((t) => planRefund(t, clock, input));
    expect(replay.refund?.id).toBe(planned.refund?.id);
    expect(replay.release?.created).toBe(false);
    expect(await transfersOf(task.id)).toHaveLength(2);
    expect(await accountBalance(db, escrowAccount(task.id))).toBe(0n);
  });

  it('zero amounts are not enqueued; all or nothing when the escrow cannot cover it', async () => {
    const task = await fundedTask(db, clock, 300n);
    const onlyAgent = await tx((t) => planRefund(t, clock, { task, refund: 0n, agentShare: 300n, agentPayout: randomAddress() }));
    expect(onlyAgent.refund).toBeNull();
    expect((await transfersOf(task.id)).map((r) => r.kind)).toEqual(['release']);

    const nothing = await fundedTask(db, clock, 300n);
    expect(await tx((t) => planRefund(t, clock, { task: nothing, refund: 0n, agentShare: 0n }))).toEqual({
      refund: null,
      returned: 0n,
      release: null,
      remaining: 300n,
    });

    const short = await fundedTask(db, clock, 300n);
    await expect(
      tx((t) => planRefund(t, clock, { task: short, refund: 200n, agentShare: 101n, agentPayout: randomAddress() })),
    ).rejects.toMatchObject({ code: 'invalid_state' });
    expect(await transfersOf(short.id)).toHaveLength(0);
    expect(await accountBalance(db, escrowAccount(short.id))).toBe(300n);
    await expect(tx((t) => planRefund(t, clock, { task: short, refund: 0n, agentShare: 1n }))).rejects.toThrow(/payout address/);
  });

  it('rolls back with the caller’s transaction', async () => {
    const task = await fundedTask(db, clock, 1_000n);
    await expect(
      tx(async (t) => {
        await planRefund(t, clock, { task, refund: 1_000n });
        throw new Error('transition conflict');
      }),
    ).rejects.toThrow(/transition conflict/);
    expect(await transfersOf(task.id)).toHaveLength(0);
    expect(await accountBalance(db, escrowAccount(task.id))).toBe(1_000n);
  });
});

describe('planDisputeSplit', () => {
  it('books both shares as dispute_split, with the platform fee on the agent’s share', async () => {
    const task = await fundedTask(db, clock, 1_000_000n);
    const agent = randomAddress();
    const planned = await tx((t) =>
      planDisputeSplit(t, clock, { task, payerAmount: 400_000n, agentAmount: 600_000n, agentPayout: agent, platformFeeBps: 1_000 }),
    );
    expect(planned.refund?.amount).toBe(400_000n);
    expect(planned.release).toMatchObject({ fee: 60_000n, net: 540_000n });
    expect(planned.remaining).toBe(0n);
    expect(await movementKinds(task.id)).toEqual(['escrow_in', 'dispute_split', 'platform_fee']);
    expect((await checkLedger(db)).ok).toBe(true);
  });
});
