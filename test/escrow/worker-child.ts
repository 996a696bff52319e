/**
 * Child-process entry for test/escrow/worker-kill.test.ts: a settlement worker in its own OS
 * process, so the test can kill it for real (SIGKILL) at a chosen point and restart another.
 *
 * Run with tsx (`node --import tsx test/escrow/worker-child.ts`). Environment:
 * - WORKER_DATABASE_URL  Postgres URL of the database the test process uses (required)
 * - WORKER_RPC_URL       the test's anvil JSON-RPC URL (required)
 * - WORKER_ID            lease owner name (required)
 * - WORKER_CONFIRMATIONS blocks that confirm a transfer (default 3)
 * - WORKER_LEASE_MS      lease length (default 2000)
 * - WORKER_KILL_BEFORE_BROADCAST=1  the first broadcast kills this process (SIGKILL) before
 *                        anything is sent: the transfer stays `signed`, its bytes never leave.
 *
 * - WORKER_MAX_LIFETIME_MS  exits on its own after this long (default 120000), so that a
 *                        child can never outlive a test run that forgot it
 *
 * Prints `worker-child started …` on stdout when the worker is built, then calls runOnce()
 * every 50 ms until killed. Log lines of the worker go to stderr as JSON. Exits when its stdin
 * closes (the parent died).
 */
import { writeSync } from 'node:fs';
import type { Hex } from 'viem';
import { ANVIL_ACCOUNTS, BASE_CHAIN_ID, BASE_USDC, DEV_ROLES } from '../../src/chain/constants.js';
import { systemClock } from '../../src/clock.js';
import { openDatabase } from '../../src/db/client.js';
import { CustodialEscrowWallet, describeChainError, type EscrowCustody } from '../../src/escrow/custody.js';
import { SettlementWorker, type SettlementWorkerLog } from '../../src/escrow/settlement-worker.js';

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    writeSync(2, `worker-child: ${name} is not set\n`);
    process.exit(2);
  }
  return value;
}

/** Synchronous writes: a line written right before a SIGKILL still reaches the parent. */
const out = (line: string): void => void writeSync(1, `${line}\n`);
const err = (line: string): void => void writeSync(2, `${line}\n`);

const databaseUrl = required('WORKER_DATABASE_URL');
const rpcUrl = required('WORKER_RPC_URL');
const workerId = required('WORKER_ID');
const confirmations = Number(process.env.WORKER_CONFIRMATIONS ?? '3');
const leaseMs = Number(process.env.WORKER_LEASE_MS ?? '2000');
const killBeforeBroadcast = process.env.WORKER_KILL_BEFORE_BROADCAST === '1';
const maxLifetimeMs = Number(process.env.WORKER_MAX_LIFETIME_MS ?? '120000');

// Never outlive the parent: its end of our stdin closes when it dies.
process.stdin.on('end', () => process.exit(3));
process.stdin.on('error', () => process.exit(3));
process.stdin.resume();
setTimeout(() => {
  err(`worker-child: still alive after ${maxLifetimeMs} ms, exiting`);
  process.exit(4);
}, maxLifetimeMs).unref();

const escrow = ANVIL_ACCOUNTS[DEV_ROLES.escrow]!;
const custody: EscrowCustody = new CustodialEscrowWallet({
  rpcUrl,
  chainId: BASE_CHAIN_ID,
  usdc: BASE_USDC,
  privateKey: escrow.privateKey,
});

if (killBeforeBroadcast) {
  // The worker commits `signed` (nonce, raw tx, hash) before it calls broadcast: dying here is
  // a crash after signing and before anything reached the node.
  const inner = custody.broadcast.bind(custody);
  let calls = 0;
  custody.broadcast = async (rawTx: Hex): Promise<void> => {
    if (calls++ === 0) {
      out(`worker-child dying before broadcast pid=${process.pid}`);
      process.kill(process.pid, 'SIGKILL');
      await new Promise<never>(() => {}); // never returns: the signal is on its way
    }
    return inner(rawTx);
  };
}

const json = (level: string, msg: string, obj: object): string =>
  JSON.stringify({ level, msg, ...obj }, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value));
const log: SettlementWorkerLog = {
  info: (obj, msg) => err(json('info', msg, obj)),
  warn: (obj, msg) => err(json('warn', msg, obj)),
  error: (obj, msg) => err(json('error', msg, obj)),
};

const database = await openDatabase({ url: databaseUrl, dataDir: '', poolMax: 2 });
const worker = new SettlementWorker({
  db: database.db,
  clock: systemClock,
  custody,
  confirmations,
  leaseMs,
  maxAttempts: 5,
  backoffBaseMs: 100,
  workerId,
  log,
});

out(`worker-child started pid=${process.pid} worker=${worker.id} confirmations=${confirmations}`);

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
for (;;) {
  try {
    await worker.runOnce();
  } catch (error) {
    err(json('error', 'runOnce failed', { error: describeChainError(error) }));
  }
  await sleep(50);
}
