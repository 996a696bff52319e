import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Address } from 'viem';
import { buildApp } from '../../src/app.js';
import { DEV_ROLES } from '../../src/chain/constants.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { loadConfig } from '../../src/config.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

let chain: DevChain;
let db: TestDatabase;
beforeAll(async () => {
  [chain, db] = await Promise.all([startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] }), createTestDatabase()]);
});
afterAll(async () => {
  await db.destroy();
  await chain.stop();
});

const config = () => loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', X402_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' });

describe('POST /dev/faucet', () => {
  it('mints test USDC on the embedded chain, within a limit', async () => {
    const app = await buildApp({
      config: config(),
      database: db.database,
      logger: false,
      chainRpcUrl: chain.rpcUrl,
      devFaucet: { mint: (to: Address, amount: bigint) => mintUsdc(chain, to, amount) },
    });
    try {
      const to = privateKeyToAccount(generatePrivateKey()).address;
      const res = await app.inject({ method: 'POST', url: '/dev/faucet', payload: { address: to, amount: '2500000' } });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ address: to, amount: '2500000' });
      expect(await usdcBalance(chain.rpcUrl, to)).toBe(2_500_000n);
      const tooMuch = await app.inject({ method: 'POST', url: '/dev/faucet', payload: { address: to, amount: '1000000001' } });
      expect(tooMuch.statusCode).toBe(400);
      expect(await usdcBalance(chain.rpcUrl, to)).toBe(2_500_000n);
    } finally {
      await app.close();
    }
  });

  it('does not exist without the embedded chain', async () => {
    const app = await buildApp({ config: config(), database: db.database, logger: false });
    try {
      const res = await app.inject({ method: 'POST', url: '/dev/faucet', payload: { address: '0x000000000000000000000000000000000000dEaD' } });
      expect(res.statusCode).toBe(404);
    } finally {
      await app.close();
    }
  });
});
