/**
 * Acceptance: the service process killed for real (SIGKILL) right after a payment settled on
 * chain and before anything about it was recorded. A restarted service's recovery sweep finds
 * the payment, asks the chain, and refunds it in full: the payer ends whole, the effect never
 * happened, the ledger sums to zero and the wallets reconcile with the chain.
 *
 * Real processes (src/server.ts under tsx) on Postgres (DATABASE_URL, or the machine's
 * 127.0.0.1:5432): each run creates and drops its own database. No Postgres = the file FAILS.
 */
import { eq } from 'drizzle-orm';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Address } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wrapFetchWithPayment } from '@x402/fetch';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { agents, chainTransfers, payments, tasks } from '../../src/db/schema.js';
import { newId } from '../../src/ids.js';
import { checkLedger, walletBalance } from '../../src/ledger/ledger.js';
import { x402ClientFor } from '../helpers/paid.js';
import { scratchDatabase, serviceEnv, startService, waitFor, type ScratchDatabase, type ServiceProcess } from '../helpers/service-process.js';

const AGENT_ID = newId('agent');
const ESCROW = ANVIL_ACCOUNTS[DEV_ROLES.escrow]!.address;
const FEE_WALLET = ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.address;
let chain: DevChain;
let scratch: ScratchDatabase;
let database: Database;
const services: ServiceProcess[] = [];

beforeAll(async () => {
  [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('paykill')]);
  database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 3 });
});
afterAll(async () => {
  await Promise.allSettled(services.map((s) => s.kill()));
  await database?.close();
  await scratch?.drop();
  await chain?.stop();
});

/** Every process holds a payment for at most 2 s (the lease a dead request leaves behind). */
async function service(extra: Record<string, string>): Promise<ServiceProcess> {
  const s = await startService(serviceEnv(scratch.url, chain.rpcUrl, { PAYMENT_LEASE_MS: '2000', ...extra }));
  services.push(s);
  return s;
}

const balance = (a: Address) => usdcBalance(chain.rpcUrl, a);

describe('kill -9 between settlement and booking', () => {
  it('ends with every payment refunded in full by the restarted service, no effect, exact books', { timeout: 120_000 }, async () => {
    const payer = privateKeyToAccount(generatePrivateKey());
    const start = 1_000_000n;
    await mintUsdc(chain, payer.address, start);
    const pay = wrapFetchWithPayment(fetch, x402ClientFor(payer));

    const post = (base: string, path: string, body: unknown) =>
      pay(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const createTask = async (base: string) => {
      const created = await post(base, '/v1/tasks', {
        agent_id: AGENT_ID,
        description: 'A blurb',
        budget: { amount: '200000', currency: 'USDC', chain: 'base' },
      });
      expect(created.status, await created.clone().text()).toBe(201);
      return ((await created.json()) as { task_id: string }).task_id;
    };

    // an API process serves a funded task (the escrow wallet now holds money) and creates another
    const api = await service({ ROLE: 'api' }); // migrates the database
    const now = new Date();
    await database.db.insert(agents).values({
      id: AGENT_ID,
      ownerAddress: payer.address.toLowerCase(),
      payoutAddress: privateKeyToAccount(generatePrivateKey()).address.toLowerCase(),
      name: 'Writer',
      baseRate: 1000n,
      createdAt: now,
      updatedAt: now,
    });
    const kept = await createTask(api.baseUrl);
    expect((await post(api.baseUrl, `/v1/tasks/${kept}/fund`, { amount: '200000' })).status).toBe(200);
    const taskId = await createTask(api.baseUrl);
    await api.stop();

    // a service that dies right after a funding settles
    const first = await service({ ROLE: 'api', FAILPOINTS: 'payment:after-settle:fund_task' });
    await expect(post(first.baseUrl, `/v1/tasks/${taskId}/fund`, { amount: '200000' })).rejects.toThrow();
    expect((await first.exited).signal).toBe('SIGKILL');

    // the money moved and nothing recorded it beyond `settling`; the task is unfunded
    const spent = 2n * 5000n + 205_000n;
    expect(await balance(payer.address)).toBe(start - spent - 205_000n);
    const stranded = (await database.db.select().from(payments).where(eq(payments.purpose, 'fund_task'))).filter((r) => r.taskId === taskId);
    expect(stranded).toHaveLength(1);
    expect(stranded[0]).toMatchObject({ status: 'settling', amount: 205_000n });
    expect((await database.db.select().from(tasks).where(eq(tasks.id, taskId)))[0]).toMatchObject({ status: 'created', escrowStatus: 'none' });

    // a second service dies right after a paid read settles
    const second = await service({ ROLE: 'api', FAILPOINTS: 'payment:after-settle:task_status' });
    await expect(pay(`${second.baseUrl}/v1/tasks/${taskId}/status`)).rejects.toThrow();
    expect((await second.exited).signal).toBe('SIGKILL');
    expect(await balance(payer.address)).toBe(start - spent - 205_000n - 1000n);

    // restarted (API + workers): the sweep refunds both, the settlement worker pays the refunds
    // (the kept task's agent has no runtime: the dispatcher fails it and refunds its escrow too)
    const third = await service({ PAYMENT_RECOVERY_INTERVAL_MS: '200', SETTLEMENT_INTERVAL_MS: '200', DISPATCH_INTERVAL_MS: '200' });
    await waitFor('the refunds to be confirmed on chain', async () => {
      const rows = await database.db.select().from(payments);
      const transfers = await database.db.select().from(chainTransfers);
      return (
        rows.every((r) => r.status === 'booked' || r.status === 'refunded') &&
        transfers.length === 3 &&
        transfers.every((t) => t.status === 'confirmed')
      );
    });
    const rows = await database.db.select().from(payments);
    expect(rows.map((r) => `${r.purpose}:${r.status}`).sort()).toEqual([
      'create_task:booked',
      'create_task:booked',
      'fund_task:booked',
      'fund_task:refunded',
      'task_status:refunded',
    ]);
    expect(rows.find((r) => r.status === 'refunded' && r.purpose === 'fund_task')!.txHash).toMatch(/^0x[0-9a-f]{64}$/);
    // served: two creates and one funding (whose task failed: its escrow refunded, the fund fee kept)
    expect(await balance(payer.address)).toBe(start - 2n * 5000n - 5000n);
    expect((await database.db.select().from(tasks).where(eq(tasks.id, taskId)))[0]).toMatchObject({ status: 'created', escrowStatus: 'none' });
    expect((await database.db.select().from(tasks).where(eq(tasks.id, kept)))[0]).toMatchObject({ status: 'failed', escrowStatus: 'refunded' });
    expect(await checkLedger(database.db)).toMatchObject({ ok: true, total: 0n });
    expect(await balance(ESCROW)).toBe(await walletBalance(database.db, 'escrow'));
    expect(await balance(FEE_WALLET)).toBe(await walletBalance(database.db, 'fee'));
    await third.stop();
  });
});
