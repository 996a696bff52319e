import { eq } from 'drizzle-orm';
import { createWalletClient, http, type Address, type Hash } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { withTransaction, type Db } from '../../src/db/client.js';
import { chainNonces, tasks } from '../../src/db/schema.js';
import type { CustodialEscrowWallet } from '../../src/escrow/custody.js';
import { planRefund, planRelease } from '../../src/escrow/outbox.js';
import type { SettlementWorkerLog } from '../../src/escrow/settlement-worker.js';
import { PAYOUT_PENDING, TREASURY_PLATFORM_FEES, escrowAccount } from '../../src/ledger/accounts.js';
import { accountBalance, checkLedger } from '../../src/ledger/ledger.js';
import { reconcile } from '../../src/ledger/reconcile.js';
import { ANVIL_ACCOUNTS } from '../../src/chain/constants.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import {
  CrashingCustody,
  ESCROW,
  chainClient,
  closedPortUrl,
  escrowCustody,
  fundedTask,
  minedNonce,
  newClock,
  randomAddress,
  runUntilSettled,
  splitCustody,
  transferRow,
  waitForReceipt,
  worker,
  type FundedTask,
} from './support.js';

let chain: DevChain;
let testDb: TestDatabase;
let db: Db;
let custody: CustodialEscrowWallet;
const clock = newClock();

beforeAll(async () => {
  [chain, testDb] = await Promise.all([startDevChain({ silent: true, fundIndices: [4, 5, 6, 7, 8, 9] }), createTestDatabase()]);
  db = testDb.database.db;
  custody = escrowCustody(chain);
});
afterAll(async () => {
  await chain.stop();
  await testDb.destroy();
});

async function release(task: FundedTask, to: Address, feeBps = 0) {
  const planned = await withTransaction(db, (tx) => planRelease(tx, clock, { task, payout: { to }, platformFeeBps: feeBps }));
  return planned.transfer!;
}

async function expectBooksBalance(): Promise<void> {
  const books = await reconcile(db, { escrow: custody });
  expect(books.ledger).toEqual({ ok: true, total: 0n, unbalancedMovements: [] });
  expect(books.wallets[0]).toMatchObject({ wallet: 'escrow', difference: 0n, inFlight: 0n });
  expect(books.ok).toBe(true);
}

/** Log lines, to check what the worker says (and that it never says a key). */
function captureLog(): SettlementWorkerLog & { lines: { level: string; obj: object; msg: string }[] } {
  const lines: { level: string; obj: object; msg: string }[] = [];
  const at = (level: string) => (obj: object, msg: string) => void lines.push({ level, obj, msg });
  return { lines, info: at('info'), warn: at('warn'), error: at('error') };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('settlement on a real chain', () => {
  it('a release lands: agent paid amount − fee, fee kept in the wallet, ledger balanced and reconciled', async () => {
    const task = await fundedTask(db, clock, 2_000_000n, chain);
    const agent = randomAddress();
    const transfer = await release(task, agent, 500);
    const escrowBefore = await usdcBalance(chain.rpcUrl, ESCROW.address);
    const log = captureLog();

    const started = performance.now();
    await runUntilSettled(worker(db, clock, custody, { log }), db);
    const elapsed = performance.now() - started;

    const row = await transferRow(db, transfer.id);
    expect(row).toMatchObject({ status: 'confirmed', attempts: 0, lastError: null, leaseOwner: null, confirmedAt: clock.now() });
    expect(row.blockNumber).toBeGreaterThan(0);
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(1_900_000n);
    expect(await usdcBalance(chain.rpcUrl, ESCROW.address)).toBe(escrowBefore - 1_900_000n);
    expect(await accountBalance(db, PAYOUT_PENDING)).toBe(0n);
    expect(await accountBalance(db, escrowAccount(task.id))).toBe(0n);
    expect(await accountBalance(db, TREASURY_PLATFORM_FEES)).toBe(100_000n);
    await expectBooksBalance();

    const receipt = await chainClient(chain.rpcUrl).getTransactionReceipt({ hash: row.txHash as `0x${string}` });
    console.info(`[figures] one release, pending → confirmed: ${elapsed.toFixed(0)} ms, gas ${receipt.gasUsed}`);
    expect(log.lines.map((l) => l.msg)).toEqual(['transfer signed', 'transfer sent', 'transfer confirmed']);
    expect(JSON.stringify(log.lines)).not.toContain(ESCROW.privateKey.slice(2));
  });

  it('a partial refund lands as two transfers; the task gets the refund tx hash and status', async () => {
    const task = await fundedTask(db, clock, 1_000_000n, chain);
    const agent = randomAddress();
    const planned = await withTransaction(db, (tx) =>
      planRefund(tx, clock, { task, refund: 900_000n, agentShare: 100_000n, agentPayout: agent }),
    );
    await db.update(tasks).set({ refundStatus: 'pending', refundAmount: 900_000n }).where(eq(tasks.id, task.id));
    await runUntilSettled(worker(db, clock, custody), db);

    expect(await usdcBalance(chain.rpcUrl, task.payer)).toBe(900_000n);
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(100_000n);
    const refund = await transferRow(db, planned.refund!.id);
    const [taskRow] = await db.select().from(tasks).where(eq(tasks.id, task.id));
    expect(taskRow).toMatchObject({ refundTxHash: refund.txHash, refundStatus: 'confirmed' });
    await expectBooksBalance();
  });

  it('crash after signing, before broadcast: a new worker sends the SAME bytes; paid once', async () => {
    const task = await fundedTask(db, clock, 300_000n, chain);
    const agent = randomAddress();
    const transfer = await release(task, agent);
    const nonceBefore = await minedNonce(chain.rpcUrl);

    const crashing = new CrashingCustody(custody, 'before-broadcast');
    const dead = worker(db, clock, crashing, { workerId: 'dead', leaseMs: 600 });
    const deadRun = dead.runOnce(); // hangs in broadcast, like a process that died there
    const signed = await waitForStatus(transfer.id, 'signed');
    expect(crashing.broadcasts).toEqual([signed.rawTx]);
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(0n);

    // the lease protects the row until it expires (on the database's clock)
    const next = worker(db, clock, custody, { workerId: 'next', leaseMs: 600 });
    expect(await next.runOnce()).toBe(0);
    expect((await transferRow(db, transfer.id)).status).toBe('signed');
    await sleep(650);
    expect(await next.runOnce()).toBe(1); // signed → sent (→ confirmed once the receipt is there)
    await runUntilSettled(next, db);

    const done = await transferRow(db, transfer.id);
    expect(done).toMatchObject({ status: 'confirmed', nonce: signed.nonce, txHash: signed.txHash, rawTx: signed.rawTx });
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(300_000n);
    expect(await minedNonce(chain.rpcUrl)).toBe(nonceBefore + 1);

    crashing.release(); // the dead worker wakes up: its lease is gone, it writes nothing
    expect(await deadRun).toBe(1);
    expect(await transferRow(db, transfer.id)).toEqual(done);
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(300_000n);
    await expectBooksBalance();
  });

  it('crash after broadcast, before recording it: re-sending the mined bytes is harmless; paid once', async () => {
    const task = await fundedTask(db, clock, 400_000n, chain);
    const agent = randomAddress();
    const transfer = await release(task, agent);
    const nonceBefore = await minedNonce(chain.rpcUrl);

    const crashing = new CrashingCustody(custody, 'after-broadcast');
    const deadRun = worker(db, clock, crashing, { workerId: 'dead2', leaseMs: 600 }).runOnce();
    await waitFor(async () => (await usdcBalance(chain.rpcUrl, agent)) === 400_000n);
    const signed = await transferRow(db, transfer.id);
    expect(signed.status).toBe('signed'); // on chain, but the DB never heard
    await waitForReceipt(custody, signed.txHash as Hash);

    await waitFor(async () => (await transferRow(db, transfer.id)).leaseExpiresAt! < new Date(Date.now() - 50));
    expect(await worker(db, clock, custody, { workerId: 'next2' }).runOnce()).toBe(1); // signed → sent → confirmed
    expect(await transferRow(db, transfer.id)).toMatchObject({ status: 'confirmed' });
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(400_000n);
    expect(await minedNonce(chain.rpcUrl)).toBe(nonceBefore + 1);
    crashing.release();
    await deadRun;
    await expectBooksBalance();
  });

  it('crash after sent, before confirmation: a new worker confirms it; paid once', async () => {
    const task = await fundedTask(db, clock, 500_000n, chain);
    const agent = randomAddress();
    const transfer = await release(task, agent);
    expect(await worker(db, clock, custody, { confirmations: 3 }).runOnce()).toBe(1); // pending → signed → sent, then waits
    const sent = await transferRow(db, transfer.id);
    expect(sent).toMatchObject({ status: 'sent', leaseOwner: null });
    await waitForReceipt(custody, sent.txHash as Hash);
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(500_000n);

    // mined but not yet confirmed: the wallet is short of the ledger by exactly what is in flight
    const inFlight = await reconcile(db, { escrow: custody });
    expect(inFlight.ok).toBe(false);
    expect(inFlight.wallets[0]).toMatchObject({ difference: -500_000n, inFlight: 500_000n });

    await chainClient(chain.rpcUrl).mine({ blocks: 2 });
    expect(await worker(db, clock, custody, { confirmations: 3 }).runOnce()).toBe(1);
    expect(await transferRow(db, transfer.id)).toMatchObject({ status: 'confirmed', txHash: sent.txHash, nonce: sent.nonce });
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(500_000n);
    await expectBooksBalance();
  });

  it('waits for the configured confirmations, block by block', async () => {
    const task = await fundedTask(db, clock, 10_000n, chain);
    const transfer = await release(task, randomAddress());
    const w = worker(db, clock, custody, { confirmations: 4 });
    const testClient = chainClient(chain.rpcUrl);
    expect(await w.runOnce()).toBe(1);
    const mined = await waitForReceipt(custody, (await transferRow(db, transfer.id)).txHash as Hash);
    expect(await custody.confirmations(mined.blockNumber)).toBe(1);
    for (const more of [1, 2]) {
      await testClient.mine({ blocks: 1 });
      expect(await w.runOnce(), `after ${more} more block(s)`).toBe(0);
      expect((await transferRow(db, transfer.id)).status).toBe('sent');
      expect(await accountBalance(db, PAYOUT_PENDING)).toBe(10_000n);
    }
    await testClient.mine({ blocks: 1 });
    expect(await w.runOnce()).toBe(1);
    expect((await transferRow(db, transfer.id)).status).toBe('confirmed');
    expect(await accountBalance(db, PAYOUT_PENDING)).toBe(0n);
  });

  it('an RPC outage backs off (attempts, next_attempt_at), gives up an unsigned transfer after maxAttempts, and recovers', async () => {
    const down = escrowCustody(chain, await closedPortUrl());
    const log = captureLog();
    const outage = worker(db, clock, down, { maxAttempts: 3, backoffBaseMs: 1_000, random: () => 0.5, log });
    const first = await release(await fundedTask(db, clock, 20_000n, chain), randomAddress());

    expect(await outage.runOnce()).toBe(0);
    let row = await transferRow(db, first.id);
    expect(row).toMatchObject({ status: 'pending', attempts: 1, leaseOwner: null });
    expect(row.lastError).toMatch(/fetch failed|HTTP request failed|ECONNREFUSED/i);
    expect(row.lastError).not.toMatch(/127\.0\.0\.1/);
    expect(row.nextAttemptAt.getTime() - clock.now().getTime()).toBe(750); // base × 2^0, jittered by 0.5 + 0.5 × 0.5

    expect(await outage.runOnce()).toBe(0); // not due yet
    expect((await transferRow(db, first.id)).attempts).toBe(1);

    clock.advance(1_000);
    await outage.runOnce();
    row = await transferRow(db, first.id);
    expect(row).toMatchObject({ status: 'pending', attempts: 2 });
    expect(row.nextAttemptAt.getTime() - clock.now().getTime()).toBe(1_500); // base × 2^1 × 0.75

    expect([outage.backoffMs(3), outage.backoffMs(11), outage.backoffMs(50)]).toEqual([3_000, 768_000, 768_000]); // capped at 2^10

    clock.advance(2_000);
    expect(await worker(db, clock, custody).runOnce()).toBe(1); // the node is back
    await runUntilSettled(worker(db, clock, custody), db);
    expect(await transferRow(db, first.id)).toMatchObject({ status: 'confirmed', attempts: 2 });
    expect(await usdcBalance(chain.rpcUrl, first.toAddress as Address)).toBe(20_000n);

    // a transfer that never gets signed gives up after maxAttempts
    const second = await release(await fundedTask(db, clock, 30_000n, chain), randomAddress());
    for (let i = 0; i < 3; i++) {
      await outage.runOnce();
      clock.advance(10_000);
    }
    expect(await transferRow(db, second.id)).toMatchObject({ status: 'failed', attempts: 3, nonce: null });
    expect(await accountBalance(db, PAYOUT_PENDING)).toBe(30_000n); // decided, never paid: an operator must look
    expect(log.lines.filter((l) => l.level === 'warn')).toHaveLength(4);
    expect(log.lines.at(-1)).toMatchObject({ level: 'error', msg: 'transfer failed before signing: operator action needed' });
    await expectBooksBalance(); // the USDC is still in the wallet, booked in payout_pending
  });

  it('a signed transfer is never abandoned: the same bytes are re-sent until the node takes them', async () => {
    const down = escrowCustody(chain, await closedPortUrl());
    const agent = randomAddress();
    const transfer = await release(await fundedTask(db, clock, 40_000n, chain), agent);
    const flaky = worker(db, clock, splitCustody(custody, down), { maxAttempts: 2, backoffBaseMs: 100 });
    for (let i = 0; i < 5; i++) {
      await flaky.runOnce();
      clock.advance(200_000);
    }
    const stuck = await transferRow(db, transfer.id);
    expect(stuck).toMatchObject({ status: 'signed', attempts: 5 });
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(0n);

    await runUntilSettled(worker(db, clock, custody), db);
    expect(await transferRow(db, transfer.id)).toMatchObject({ status: 'confirmed', txHash: stuck.txHash, nonce: stuck.nonce });
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(40_000n);
  });

  it('a transaction sent from the wallet outside the service does not wedge the nonce', async () => {
    const transfer = await release(await fundedTask(db, clock, 1_000n, chain), randomAddress());
    const [stored] = await db.select().from(chainNonces).where(eq(chainNonces.address, ESCROW.address.toLowerCase()));
    // someone uses the escrow key by hand (gas money, no USDC)
    const outside = createWalletClient({ account: privateKeyToAccount(ESCROW.privateKey), transport: http(chain.rpcUrl) });
    const hash = await outside.sendTransaction({ chain: null, to: ANVIL_ACCOUNTS[4]!.address, value: 1n });
    const outsideNonce = (await chainClient(chain.rpcUrl).getTransaction({ hash })).nonce;

    await runUntilSettled(worker(db, clock, custody), db);
    const row = await transferRow(db, transfer.id);
    expect(row.status).toBe('confirmed');
    expect(row.nonce).toBe(outsideNonce + 1);
    expect(row.nonce).toBeGreaterThan(stored!.nextNonce);
    const [after] = await db.select().from(chainNonces).where(eq(chainNonces.address, ESCROW.address.toLowerCase()));
    expect(after!.nextNonce).toBe(row.nonce! + 1);
  });

  it('a transfer that reverts on chain fails; the money stays in payout_pending, the refund is marked failed', async () => {
    // the ledger says the escrow holds it, but the wallet never received it on chain
    const task = await fundedTask(db, clock, 10n ** 15n);
    const planned = await withTransaction(db, (tx) => planRefund(tx, clock, { task, refund: 10n ** 15n }));
    const log = captureLog();
    await runUntilSettled(worker(db, clock, custody, { log }), db);
    const row = await transferRow(db, planned.refund!.id);
    expect(row).toMatchObject({ status: 'failed' });
    expect(row.lastError).toMatch(/^reverted on chain in block \d+$/);
    const [taskRow] = await db.select().from(tasks).where(eq(tasks.id, task.id));
    expect(taskRow).toMatchObject({ refundStatus: 'failed', refundTxHash: row.txHash });
    expect(await accountBalance(db, PAYOUT_PENDING)).toBe(10n ** 15n + 30_000n);
    expect(log.lines.at(-1)).toMatchObject({ level: 'error', msg: 'transfer reverted: operator action needed' });
    expect((await checkLedger(db)).ok).toBe(true);
    await mintUsdc(chain, ESCROW.address, 10n ** 15n); // what the operator would look into; the books balance again
    await expectBooksBalance();
  });

  it('start() works due transfers on a timer and stop() waits for the run in progress', async () => {
    const agent = randomAddress();
    const transfer = await release(await fundedTask(db, clock, 5_000n, chain), agent);
    const w = worker(db, clock, custody);
    w.start(20);
    await waitForStatus(transfer.id, 'confirmed');
    await w.stop();
    expect(await usdcBalance(chain.rpcUrl, agent)).toBe(5_000n);
  });
});

async function waitFor(cond: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function waitForStatus(id: string, status: string) {
  await waitFor(async () => (await transferRow(db, id)).status === status);
  return transferRow(db, id);
}

