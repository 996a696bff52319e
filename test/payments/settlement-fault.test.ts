/**
 * A settlement that fails on the service's side is not blamed on the payer. The operator wallet
 * has no ETH for gas (a real anvil, the stock x402 client): the paid call answers 503
 * `retryable`, an error line with the request id says why, and the payment goes to the recovery
 * sweep at once, which finds that no money moved and fails it. The payer keeps every unit, and
 * pays normally once the wallet has gas again. The payer's own faults still answer 402.
 */
import type { FastifyInstance } from 'fastify';
import { wrapFetchWithPayment } from '@x402/fetch';
import { parseEther } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { createDevClient } from '../../src/chain/dev/client.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { loadConfig } from '../../src/config.js';
import { payments } from '../../src/db/schema.js';
import { PaymentRecovery } from '../../src/payments/recovery.js';
import { judgeSettlement, settlementFault } from '../../src/payments/settlement-fault.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { x402ClientFor } from '../helpers/paid.js';

const OPERATOR = ANVIL_ACCOUNTS[DEV_ROLES.operator]!.address;

describe('whose fault a failed settlement is', () => {
  it.each([
    ['invalid_exact_evm_insufficient_balance', 'payer', 'insufficient_funds'],
    ['invalid_exact_evm_nonce_already_used', 'payer', 'payment_replayed'],
    ['invalid_exact_evm_payload_authorization_valid_before', 'payer', 'payment_invalid'],
    ['invalid_exact_evm_signature', 'payer', 'payment_invalid'],
    ['invalid_exact_evm_payload_authorization_value_mismatch', 'payer', 'amount_mismatch'],
    ['invalid_exact_evm_transaction_failed', 'service', 'service_unavailable'],
    ['nonce too low: next nonce 12, tx nonce 11', 'service', 'service_unavailable'],
    ['The total cost (gas * gas fee + value) of executing this transaction exceeds the balance of the account.', 'service', 'service_unavailable'],
    ['insufficient funds for gas * price + value', 'service', 'service_unavailable'],
    ['HTTP request failed. URL: http://127.0.0.1:8545', 'service', 'service_unavailable'],
  ])('%s → %s', (reason, by, code) => {
    expect(settlementFault(reason)).toEqual({ by, code });
  });
});

describe('judging a settlement the facilitator blames on the transaction', () => {
  const reverted = 'invalid_exact_evm_transaction_failed';
  it('the payer, when nothing moved and the payment no longer verifies for the payer’s reason (its balance was spent meanwhile)', async () => {
    const fault = await judgeSettlement(reverted, { authorizationUsed: async () => false, reverify: async () => 'invalid_exact_evm_insufficient_balance' });
    expect(fault).toEqual({ by: 'payer', code: 'insufficient_funds' });
  });
  it('ours, when the money moved, when it still verifies, when the chain cannot be asked, or for a replay seen only now', async () => {
    const cases = [
      { authorizationUsed: async () => true, reverify: async () => 'invalid_exact_evm_insufficient_balance' },
      { authorizationUsed: async () => false, reverify: async () => null },
      { authorizationUsed: async () => Promise.reject(new Error('rpc down')), reverify: async () => null },
      { authorizationUsed: async () => false, reverify: async () => 'invalid_exact_evm_nonce_already_used' },
    ];
    for (const probe of cases) expect(await judgeSettlement(reverted, probe)).toEqual({ by: 'service', code: 'service_unavailable' });
  });
});

describe('a settlement that fails on our side (the operator wallet has no gas)', () => {
  let chain: DevChain;
  let db: TestDatabase;
  let app: FastifyInstance;
  let baseUrl: string;
  const logs: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    chain = await startDevChain({ silent: true, fundIndices: [] });
    db = await createTestDatabase();
    const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'info', RATE_LIMIT_MAX: '100000', MAX_EVENT_LOOP_DELAY_MS: '0', X402_ENABLED: 'true', MICRO_FEES_DEFERRED: 'false' });
    app = await buildApp({
      config,
      database: db.database,
      chainRpcUrl: chain.rpcUrl,
      logStream: { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) },
    });
    baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await app?.close();
    await db?.destroy();
    await chain?.stop();
  });

  it('answers 503 retryable, logs why with the request id, and the sweep finds nothing moved: the payer keeps its money', { timeout: 60_000 }, async () => {
    const payer = privateKeyToAccount(generatePrivateKey());
    await mintUsdc(chain, payer.address, 10_000n);
    const pay = wrapFetchWithPayment(fetch, x402ClientFor(payer));
    const dev = createDevClient(chain.rpcUrl);
    const gas = await dev.getBalance({ address: OPERATOR });
    await dev.setBalance({ address: OPERATOR, value: 0n });

    const res = await pay(`${baseUrl}/v1/agents?query=writing`);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: { code: string; retryable: boolean; request_id: string } };
    expect(body.error).toMatchObject({ code: 'service_unavailable', retryable: true });
    expect(res.headers.get('payment-response')).toBeNull();
    expect(await usdcBalance(chain.rpcUrl, payer.address)).toBe(10_000n);

    // an error line with the request id, and the operator wallet's cause under the same authorization
    const logged = logs.find((l) => l.level === 50 && String(l.msg).includes('settlement failed on our side'));
    expect(logged).toMatchObject({ reqId: body.error.request_id, reason: 'invalid_exact_evm_transaction_failed' });
    const cause = logs.find((l) => l.level === 50 && String(l.msg).includes('operator wallet could not send'));
    expect(cause).toMatchObject({ authorization: logged!.authorization });
    expect(String(cause!.cause)).toMatch(/gas|balance|funds/i);

    // handed to the sweep at once: settling, its lease already over
    const [row] = await app.db.select().from(payments);
    expect(row).toMatchObject({ status: 'settling' });
    expect(row!.leaseExpiresAt!.getTime()).toBeLessThan(Date.now());
    const sweep = new PaymentRecovery({ lifecycle: app.services.paymentLifecycle, chain: app.escrow!.usdc, facilitator: app.facilitator });
    expect(await sweep.runOnce()).toEqual({ released: 0, failed: 1, refunded: 0 });
    expect((await app.db.select().from(payments))[0]).toMatchObject({ status: 'failed' });
    expect(await usdcBalance(chain.rpcUrl, payer.address)).toBe(10_000n);

    // gas again: the same client pays and is served
    await dev.setBalance({ address: OPERATOR, value: gas > 0n ? gas : parseEther('10') });
    const served = await pay(`${baseUrl}/v1/agents?query=writing`);
    expect(served.status).toBe(200);
    expect(await usdcBalance(chain.rpcUrl, payer.address)).toBe(9_000n);
  });
});
