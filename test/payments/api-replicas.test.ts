/**
 * Acceptance: API replicas settle from one operator key without colliding. Two `--role api`
 * processes and one `--role worker` process on one Postgres database and one anvil; 60 paid calls
 * from the stock x402 client, spread over both APIs and sent at once, all succeed. Each was
 * settled by its own operator transaction (nonces allocated in the database, chain/nonces.ts),
 * booked once, and the fee wallet holds exactly their sum.
 *
 * Real processes (src/server.ts under tsx) on Postgres (DATABASE_URL, or the machine's
 * 127.0.0.1:5432): the run creates and drops its own database.
 */
import { wrapFetchWithPayment } from '@x402/fetch';
import { createPublicClient, http } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { payments } from '../../src/db/schema.js';
import { x402ClientFor } from '../helpers/paid.js';
import { scratchDatabase, serviceEnv, startService, type ScratchDatabase, type ServiceProcess } from '../helpers/service-process.js';

const OPERATOR = ANVIL_ACCOUNTS[DEV_ROLES.operator]!.address;
const FEE_WALLET = ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.address;
const CALLS = 60;
const PAYERS = 4;

let chain: DevChain;
let scratch: ScratchDatabase;
let database: Database;
const services: ServiceProcess[] = [];

beforeAll(async () => {
  [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('replicas')]);
  const env = (role: string) => serviceEnv(scratch.url, chain.rpcUrl, { ROLE: role, PUBLIC_BASE_URL: 'http://127.0.0.1:9' });
  // the first API migrates; then the second API and the worker start on the migrated database
  services.push(await startService(env('api')));
  services.push(...(await Promise.all([startService(env('api')), startService(env('worker'))])));
  database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 2 });
}, 120_000);
afterAll(async () => {
  await Promise.allSettled(services.map((s) => s.stop()));
  await database?.close();
  await scratch?.drop();
  await chain?.stop();
});

describe('two API processes settling from one operator key', () => {
  it(`${CALLS} concurrent paid calls across both APIs all succeed, one operator transaction each`, { timeout: 120_000 }, async () => {
    const apis = services.filter((s) => s.baseUrl !== '').map((s) => s.baseUrl);
    expect(apis).toHaveLength(2);
    const payers = Array.from({ length: PAYERS }, () => privateKeyToAccount(generatePrivateKey()));
    for (const p of payers) await mintUsdc(chain, p.address, 1_000_000n);
    const chainClient = createPublicClient({ transport: http(chain.rpcUrl) });
    const operatorNonceBefore = await chainClient.getTransactionCount({ address: OPERATOR });
    const feeBefore = await usdcBalance(chain.rpcUrl, FEE_WALLET);

    const results = await Promise.all(
      Array.from({ length: CALLS }, async (_, i) => {
        const pay = wrapFetchWithPayment(fetch, x402ClientFor(payers[i % PAYERS]!));
        const res = await pay(`${apis[i % 2]}/v1/agents?query=replica-${i}`);
        return { status: res.status, body: res.status === 200 ? null : await res.text() };
      }),
    );

    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    // every call settled by its own operator transaction, none lost to a nonce collision
    expect(await chainClient.getTransactionCount({ address: OPERATOR })).toBe(operatorNonceBefore + CALLS);
    const booked = await database.db.select().from(payments);
    expect(booked.filter((p) => p.status === 'booked')).toHaveLength(CALLS);
    expect(booked.filter((p) => p.status !== 'booked')).toEqual([]);
    const fees = booked.reduce((sum, p) => sum + p.amount, 0n);
    expect(await usdcBalance(chain.rpcUrl, FEE_WALLET)).toBe(feeBefore + fees);
    const spent = await Promise.all(payers.map((p) => usdcBalance(chain.rpcUrl, p.address)));
    expect(spent.reduce((a, b) => a + (1_000_000n - b), 0n)).toBe(fees);
  });
});
