/**
 * Acceptance: a settlement worker killed for real (SIGKILL on its OS process) in the middle of a
 * release, then restarted, pays the agent exactly once, and the books balance and reconcile.
 *
 * The worker runs in a child process (test/escrow/worker-child.ts, under tsx) that shares the
 * database with this process, so this file runs on Postgres (PGlite is single-process):
 * DATABASE_URL, or postgres://postgres@127.0.0.1:5432/test. Each run creates its own throwaway
 * database `te_kill_<random>` there and drops it afterwards. No Postgres = the file FAILS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { and, eq } from 'drizzle-orm';
import pg from 'pg';
import { getAddress, keccak256, type Address, type Hash, type Hex } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { ManualClock, systemClock } from '../../src/clock.js';
import { openDatabase, withTransaction, type Database, type Db } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';
import { ledgerEntries, type ChainTransferRow } from '../../src/db/schema.js';
import type { CustodialEscrowWallet, EscrowCustody } from '../../src/escrow/custody.js';
import { planRelease } from '../../src/escrow/outbox.js';
import { SettlementWorker } from '../../src/escrow/settlement-worker.js';
import { PAYOUT_PENDING, escrowAccount } from '../../src/ledger/accounts.js';
import { accountBalance, checkLedger } from '../../src/ledger/ledger.js';
import { reconcile } from '../../src/ledger/reconcile.js';
import { ESCROW, chainClient, escrowCustody, fundedTask, minedNonce, randomAddress, transferRow } from './support.js';
import { redactPassword, withDatabase } from '../helpers/global-setup.js';

const BASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CHILD_ENTRY = path.join(REPO_ROOT, 'test/escrow/worker-child.ts');
/** Upper bound of every wait in this file. */
const WAIT_MS = 20_000;
const CONFIRMATIONS = 3;
/** The child's lease: a row it held when it died is free again after this long. */
const CHILD_LEASE_MS = 2_000;

let admin: pg.Client | undefined;
let dbName: string | undefined;
let database: Database | undefined;
let db: Db;
let dbUrl: string;
let chain: DevChain | undefined;
let custody: CustodialEscrowWallet;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  admin = await connectAdmin(BASE_URL);
  dbName = `te_kill_${randomBytes(6).toString('hex')}`;
  await admin.query(`create database ${dbName}`);
  dbUrl = withDatabase(BASE_URL, dbName);
  const opened = openDatabase({ url: dbUrl, dataDir: '', poolMax: 5 });
  [database, chain] = await Promise.all([opened, startDevChain({ silent: true, fundIndices: [4, 5, 6, 7, 8, 9] })]);
  await runMigrations(database);
  db = database.db;
  custody = escrowCustody(chain);
});

afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await Promise.allSettled([...children].map((child) => exitOf(child, 5_000)));
  await chain?.stop();
  await database?.close();
  if (admin) {
    if (dbName) await admin.query(`drop database if exists ${dbName} with (force)`);
    await admin.end();
  }
});

describe('a settlement worker process killed mid-release (real SIGKILL), then restarted', () => {
  it('killed between sending and confirming → paid once, ledger sums to zero and reconciles', { timeout: 90_000 }, async () => {
    const { transfer, payee, amount } = await plannedRelease(700_000n);
    const nonceBefore = await minedNonce(chain!.rpcUrl);

    const child = spawnWorker('kill-after-send');
    await child.started;
    const sent = await waitForRow(transfer.id, (r) => r.status === 'sent' && r.txHash !== null, 'the child to move the transfer to sent', child);
    expect(sent).toMatchObject({ nonce: nonceBefore, attempts: 0, lastError: null });
    expect(keccak256(sent.rawTx as Hex)).toBe(sent.txHash);

    const killedAt = performance.now();
    expect(child.proc.kill('SIGKILL')).toBe(true);
    expect(await exitOf(child.proc, WAIT_MS)).toEqual({ code: null, signal: 'SIGKILL' });
    expect(isAlive(child.proc.pid!)).toBe(false);

    // Mined (anvil automines) but short of 3 confirmations: the dead child never confirmed it.
    const receipt = await chainClient(chain!.rpcUrl).getTransactionReceipt({ hash: sent.txHash as Hash });
    expect(receipt.status).toBe('success');
    expect(await custody.confirmations(receipt.blockNumber)).toBeLessThan(CONFIRMATIONS);
    expect((await transferRow(db, transfer.id)).status).toBe('sent');
    expect(await usdcBalance(chain!.rpcUrl, payee)).toBe(amount);
    expect(await minedNonce(chain!.rpcUrl)).toBe(nonceBefore + 1);
    const midway = await reconcile(db, { escrow: custody });
    expect(midway.ledger.ok).toBe(true);
    expect(midway.wallets[0]).toMatchObject({ difference: -amount, inFlight: amount }); // exactly the transfer in flight

    await chainClient(chain!.rpcUrl).mine({ blocks: CONFIRMATIONS - 1 });
    expect(await custody.confirmations(receipt.blockNumber)).toBeGreaterThanOrEqual(CONFIRMATIONS);

    const restarted = recordingCustody(custody);
    const confirmed = await settle(restartedWorker(restarted, 'restart-after-send'), transfer.id, { mine: false });
    const killToConfirmedMs = performance.now() - killedAt;

    expect(confirmed).toMatchObject({
      status: 'confirmed',
      txHash: sent.txHash,
      rawTx: sent.rawTx,
      nonce: sent.nonce,
      blockNumber: Number(receipt.blockNumber),
      leaseOwner: null,
    });
    expect(restarted.signed).toBe(0); // never re-signed
    expect(restarted.broadcasts.every((raw) => raw === sent.rawTx)).toBe(true); // at most the same bytes again
    await expectPaidOnce(transfer.id, payee, amount, nonceBefore);
    console.info(
      `[figures] worker-kill after send: kill → restarted worker confirmed in ${killToConfirmedMs.toFixed(0)} ms (child lease ${CHILD_LEASE_MS} ms)`,
    );
  });

  it('killed after signing, before broadcasting → the restarted worker sends the SAME raw tx; paid once', { timeout: 90_000 }, async () => {
    const { transfer, payee, amount } = await plannedRelease(350_000n);
    const nonceBefore = await minedNonce(chain!.rpcUrl);

    const child = spawnWorker('kill-before-broadcast', { WORKER_KILL_BEFORE_BROADCAST: '1' });
    await child.started;
    expect(await exitOf(child.proc, WAIT_MS)).toEqual({ code: null, signal: 'SIGKILL' }); // it killed itself
    expect(isAlive(child.proc.pid!)).toBe(false);
    expect(child.output()).toContain('worker-child dying before broadcast');

    const signed = await transferRow(db, transfer.id);
    expect(signed).toMatchObject({ status: 'signed', nonce: nonceBefore, leaseOwner: 'kill-before-broadcast' });
    expect(signed.rawTx).toMatch(/^0x[0-9a-f]+$/);
    expect(keccak256(signed.rawTx as Hex)).toBe(signed.txHash);
    // nothing reached the node
    expect(await custody.receipt(signed.txHash as Hash)).toBeNull();
    expect(await chainClient(chain!.rpcUrl).getTransactionCount({ address: ESCROW.address, blockTag: 'pending' })).toBe(nonceBefore);
    expect(await usdcBalance(chain!.rpcUrl, payee)).toBe(0n);

    const restartedAt = performance.now();
    const restarted = recordingCustody(custody);
    const confirmed = await settle(restartedWorker(restarted, 'restart-after-sign'), transfer.id, { mine: true });
    const restartToConfirmedMs = performance.now() - restartedAt;

    expect(confirmed).toMatchObject({ status: 'confirmed', txHash: signed.txHash, rawTx: signed.rawTx, nonce: signed.nonce });
    expect(restarted.signed).toBe(0);
    expect(restarted.broadcasts.length).toBeGreaterThanOrEqual(1);
    expect(restarted.broadcasts[0]).toBe(signed.rawTx);
    expect(restarted.broadcasts.every((raw) => raw === signed.rawTx)).toBe(true);
    expect(keccak256(restarted.broadcasts[0]!)).toBe(signed.txHash);
    const onChain = await chainClient(chain!.rpcUrl).getTransaction({ hash: signed.txHash as Hash });
    expect({ from: getAddress(onChain.from), nonce: onChain.nonce }).toEqual({ from: ESCROW.address, nonce: signed.nonce });
    await expectPaidOnce(transfer.id, payee, amount, nonceBefore);
    console.info(
      `[figures] worker-kill after sign: restarted worker signed → confirmed in ${restartToConfirmedMs.toFixed(0)} ms (incl. waiting out the ${CHILD_LEASE_MS} ms lease)`,
    );
  });
});

// ------------------------------------------------------------------------------- setup helpers

/** A funded task (USDC minted to the escrow wallet, `escrow_in` booked) and its planned release. */
async function plannedRelease(amount: bigint): Promise<{ transfer: ChainTransferRow; payee: Address; amount: bigint }> {
  const clock = new ManualClock(new Date()); // rows due at once for the child's system clock
  const task = await fundedTask(db, clock, amount, chain!);
  const payee = randomAddress();
  const planned = await withTransaction(db, (tx) => planRelease(tx, clock, { task, payout: { to: payee }, platformFeeBps: 0 }));
  expect(planned).toMatchObject({ created: true, fee: 0n, net: amount });
  expect(planned.transfer).toMatchObject({ status: 'pending', amount, toAddress: payee.toLowerCase() });
  return { transfer: planned.transfer!, payee, amount };
}

async function connectAdmin(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
    await client.query('select 1');
    return client;
  } catch (err) {
    await client.end().catch(() => undefined);
    throw new Error(
      `worker-kill.test.ts needs Postgres (a worker process and this test share one database; PGlite cannot be shared ` +
        `between processes), but ${redactPassword(url)} is unreachable: ${err instanceof Error ? err.message : String(err)}. ` +
        `Start Postgres there or set DATABASE_URL.`,
    );
  }
}


// ------------------------------------------------------------------------------- the child

interface WorkerChild {
  proc: ChildProcess;
  /** Resolves on the child's `worker-child started` line; rejects if it exits first or is slow. */
  started: Promise<void>;
  /** Everything the child wrote (stdout and stderr), for assertions and failure messages. */
  output(): string;
}

function spawnWorker(workerId: string, env: Record<string, string> = {}): WorkerChild {
  const proc = spawn(process.execPath, ['--import', 'tsx', CHILD_ENTRY], {
    cwd: REPO_ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: {
      ...process.env,
      WORKER_DATABASE_URL: dbUrl,
      WORKER_RPC_URL: chain!.rpcUrl,
      WORKER_ID: workerId,
      WORKER_CONFIRMATIONS: String(CONFIRMATIONS),
      WORKER_LEASE_MS: String(CHILD_LEASE_MS),
      ...env,
    },
  });
  children.add(proc);
  let output = '';
  proc.stdout!.setEncoding('utf8');
  proc.stderr!.setEncoding('utf8');
  proc.stdin!.on('error', () => undefined); // EPIPE once the child is gone
  const started = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker child did not start within ${WAIT_MS} ms:\n${output}`)), WAIT_MS);
    const onData = (chunk: string): void => {
      output += chunk;
      if (output.includes('worker-child started')) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (chunk: string) => void (output += chunk));
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (!output.includes('worker-child started')) reject(new Error(`worker child exited (${code ?? signal}) before starting:\n${output}`));
    });
  });
  started.catch(() => undefined); // observed by the test; never an unhandled rejection
  return { proc, started, output: () => output };
}

/** The child's exit (code, signal), waiting at most `timeoutMs`. */
function exitOf(proc: ChildProcess, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve({ code: proc.exitCode, signal: proc.signalCode });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child ${proc.pid} still running after ${timeoutMs} ms`)), timeoutMs);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

// ------------------------------------------------------------------------------- restart

/** The real custody, counting signatures and recording every raw tx the worker broadcasts. */
function recordingCustody(inner: EscrowCustody): EscrowCustody & { broadcasts: Hex[]; signed: number } {
  const recorder = {
    address: inner.address,
    broadcasts: [] as Hex[],
    signed: 0,
    signTransfer: (to: Address, amount: bigint, nonce: number, fees: Parameters<EscrowCustody['signTransfer']>[3]) => {
      recorder.signed++;
      return inner.signTransfer(to, amount, nonce, fees);
    },
    broadcast: async (rawTx: Hex) => {
      recorder.broadcasts.push(rawTx);
      await inner.broadcast(rawTx);
    },
    receipt: (hash: Hash) => inner.receipt(hash),
    confirmations: (blockNumber: bigint) => inner.confirmations(blockNumber),
    pendingNonce: () => inner.pendingNonce(),
    usdcBalance: () => inner.usdcBalance(),
    feeQuote: () => inner.feeQuote(),
  };
  return recorder;
}

/** A new worker in this process, as a restarted service would build it (real clock, same wallet). */
function restartedWorker(workerCustody: EscrowCustody, workerId: string): SettlementWorker {
  return new SettlementWorker({
    db,
    clock: systemClock,
    custody: workerCustody,
    confirmations: CONFIRMATIONS,
    leaseMs: 10_000,
    maxAttempts: 5,
    backoffBaseMs: 100,
    workerId,
  });
}

/**
 * Runs the worker until the transfer is confirmed (bounded). A row the dead child still leased
 * is skipped until its lease runs out. With `mine`, one block is mined per round while the
 * transfer is mined but short of confirmations.
 */
async function settle(worker: SettlementWorker, id: string, opts: { mine: boolean }): Promise<ChainTransferRow> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    await worker.runOnce();
    const row = await transferRow(db, id);
    if (row.status === 'confirmed') return row;
    if (row.status !== 'pending' && row.status !== 'signed' && row.status !== 'sent') {
      throw new Error(`transfer ${id} ended ${row.status}: ${row.lastError ?? ''}`);
    }
    if (Date.now() > deadline) throw new Error(`transfer ${id} still ${row.status} after ${WAIT_MS} ms (last error: ${row.lastError ?? 'none'})`);
    if (opts.mine && row.status === 'sent' && (await custody.receipt(row.txHash as Hash))) {
      await chainClient(chain!.rpcUrl).mine({ blocks: 1 });
    }
    await sleep(50);
  }
}

// ------------------------------------------------------------------------------- checks

/** The payee holds exactly `amount`, the wallet sent exactly one transaction, the books balance and reconcile. */
async function expectPaidOnce(transferId: string, payee: Address, amount: bigint, nonceBefore: number): Promise<void> {
  expect(await usdcBalance(chain!.rpcUrl, payee)).toBe(amount);
  expect(await minedNonce(chain!.rpcUrl)).toBe(nonceBefore + 1);
  expect(await chainClient(chain!.rpcUrl).getTransactionCount({ address: ESCROW.address, blockTag: 'pending' })).toBe(nonceBefore + 1);

  const confirmedMovements = await db
    .select()
    .from(ledgerEntries)
    .where(and(eq(ledgerEntries.transferId, transferId), eq(ledgerEntries.kind, 'payout_confirmed')));
  expect(confirmedMovements).toHaveLength(2); // one movement: payout_pending → external, once
  const row = await transferRow(db, transferId);
  expect(await accountBalance(db, escrowAccount(row.taskId!))).toBe(0n);
  expect(await accountBalance(db, PAYOUT_PENDING)).toBe(0n);

  expect(await checkLedger(db)).toEqual({ ok: true, total: 0n, unbalancedMovements: [] });
  const books = await reconcile(db, { escrow: custody });
  expect(books.wallets[0]).toMatchObject({ wallet: 'escrow', difference: 0n, inFlight: 0n });
  expect(books.ok).toBe(true);
}

async function waitForRow(
  id: string,
  done: (row: ChainTransferRow) => boolean,
  what: string,
  child: WorkerChild,
): Promise<ChainTransferRow> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const row = await transferRow(db, id);
    if (done(row)) return row;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what} (row is ${row.status}); child output:\n${child.output()}`);
    }
    if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
      throw new Error(`the worker child exited (${child.proc.exitCode ?? child.proc.signalCode}) while waiting for ${what}:\n${child.output()}`);
    }
    await sleep(20);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
