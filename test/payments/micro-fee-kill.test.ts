/**
 * Acceptance (issue 9 point 4): a worker process killed for real (SIGKILL) in the middle of a
 * micro-fee batch settlement, at each crash point of the settler:
 * - `microfee:after-send`: the Multicall3 transaction is sent (the money moves), nothing booked;
 * - `microfee:after-receipt`: its receipt is read, the outcomes not yet booked.
 * A restarted worker takes the rows again after the dead one's lease, finds every authorization
 * used by the dead run's transaction, and books it with that transaction: each payer charged
 * exactly once per call, nothing owed left over, the ledger at zero and the fee wallet equal to
 * its accounts on chain.
 *
 * Real processes (src/server.ts under tsx) on Postgres: an API process serves the calls with
 * deferral on, worker processes settle them. Each run creates and drops its own database.
 */
import { eq } from 'drizzle-orm';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Address } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wrapFetchWithPayment } from '@x402/fetch';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { payments } from '../../src/db/schema.js';
import { RECEIVABLE_CALL_FEES, TREASURY_CALL_FEES } from '../../src/ledger/accounts.js';
import { accountBalance, checkLedger, walletBalance } from '../../src/ledger/ledger.js';
import { reconcile } from '../../src/ledger/reconcile.js';
import { x402ClientFor } from '../helpers/paid.js';
import { scratchDatabase, serviceEnv, startService, waitFor, type ScratchDatabase, type ServiceProcess } from '../helpers/service-process.js';

const FEE_WALLET = ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.address;
const ESCROW_WALLET = ANVIL_ACCOUNTS[DEV_ROLES.escrow]!.address;
const PRICE = 1000n; // search_agents
let chain: DevChain;
let scratch: ScratchDatabase;
let database: Database;
const services: ServiceProcess[] = [];

beforeAll(async () => {
  [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('feekill')]);
  database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 3 });
});
afterAll(async () => {
  await Promise.allSettled(services.map((s) => s.kill()));
  await database?.close();
  await scratch?.drop();
  await chain?.stop();
});

/** Deferral on; a dead worker's rows are free again 2 s after it took them. */
async function service(extra: Record<string, string>): Promise<ServiceProcess> {
  const s = await startService(
    serviceEnv(scratch.url, chain.rpcUrl, { MICRO_FEES_DEFERRED: 'true', PAYMENT_LEASE_MS: '2000', MICRO_FEE_SETTLE_INTERVAL_MS: '200', ...extra }),
  );
  services.push(s);
  return s;
}

const balance = (a: Address) => usdcBalance(chain.rpcUrl, a);

describe('kill -9 during a micro-fee batch settlement', () => {
  it.each(['microfee:after-send', 'microfee:after-receipt'])('%s: the restarted worker books every fee once, with the dead run’s transaction', { timeout: 120_000 }, async (point) => {
    const payers = Array.from({ length: 3 }, () => privateKeyToAccount(generatePrivateKey()));
    const start = 1_000_000n;
    for (const payer of payers) await mintUsdc(chain, payer.address, start);
    const feeBefore = await balance(FEE_WALLET);

    // An API process (no workers) serves 4 calls per payer before any is settled.
    const api = await service({ ROLE: 'api' });
    const served = await Promise.all(
      payers.flatMap((payer) => Array.from({ length: 4 }, () => wrapFetchWithPayment(fetch, x402ClientFor(payer))(`${api.baseUrl}/v1/agents?query=x`))),
    );
    expect(served.map((r) => [r.status, r.headers.get('x-payment-settlement')])).toEqual(Array(12).fill([200, 'deferred']));
    for (const payer of payers) expect(await balance(payer.address)).toBe(start);
    const ids = (await database.db.select({ id: payments.id }).from(payments).where(eq(payments.status, 'deferred'))).map((r) => r.id);
    // (each case starts with nothing deferred: the previous case's worker booked everything)
    expect(ids).toHaveLength(12);

    // A worker dies at the crash point, after its one transaction moved all twelve fees (maybe before it says it started).
    const worker = { ROLE: 'worker', PUBLIC_BASE_URL: api.baseUrl };
    const died = await service({ ...worker, FAILPOINTS: point }).then(
      async (dying) => (await dying.exited).signal,
      (err: Error) => /service exited \((SIGKILL)\)/.exec(err.message)?.[1] ?? err.message,
    );
    expect(died).toBe('SIGKILL');
    for (const payer of payers) expect(await balance(payer.address)).toBe(start - 4n * PRICE);
    const stranded = await database.db.select().from(payments).where(eq(payments.status, 'deferred'));
    expect(stranded).toHaveLength(12);
    const deadTx = stranded[0]!.txHash;
    expect(deadTx).toMatch(/^0x[0-9a-f]{64}$/);
    expect(new Set(stranded.map((r) => r.txHash))).toEqual(new Set([deadTx]));
    // Reconciliation sees the fee wallet ahead of its books by exactly the batch sent and not booked.
    const probe = (address: Address) => ({ address, usdcBalance: () => balance(address) });
    const books = await reconcile(database.db, { escrow: probe(ESCROW_WALLET), feeWallet: probe(FEE_WALLET) });
    const fee = books.wallets.find((w) => w.wallet === 'fee')!;
    expect({ difference: fee.difference, incoming: fee.incoming }).toEqual({ difference: 12n * PRICE, incoming: 12n * PRICE });

    // A restarted worker settles them with the dead run's transaction: nothing moves twice.
    const restarted = await service(worker);
    await waitFor('every deferred fee to be booked', async () => {
      const left = await database.db.select({ id: payments.id }).from(payments).where(eq(payments.status, 'deferred'));
      return left.length === 0;
    });
    await restarted.stop();
    await api.stop();

    const rows = await database.db.select().from(payments).where(eq(payments.purpose, 'search_agents'));
    const mine = rows.filter((r) => ids.includes(r.id));
    expect(mine.map((r) => r.status)).toEqual(Array(12).fill('booked'));
    expect(new Set(mine.map((r) => r.txHash))).toEqual(new Set([deadTx]));
    for (const payer of payers) expect(await balance(payer.address)).toBe(start - 4n * PRICE);
    expect(await accountBalance(database.db, RECEIVABLE_CALL_FEES)).toBe(0n);
    const ledger = await checkLedger(database.db);
    expect(ledger.ok).toBe(true);
    // The fee wallet holds on chain what its accounts say it took in this run.
    expect((await balance(FEE_WALLET)) - feeBefore).toBe(12n * PRICE);
    expect(await walletBalance(database.db, 'fee')).toBe(await balance(FEE_WALLET)); // reconciled: the ledger's fee wallet is the chain's
    expect(await accountBalance(database.db, TREASURY_CALL_FEES)).toBe(await balance(FEE_WALLET));
  });
});
