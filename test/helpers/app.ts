import type { FastifyInstance } from 'fastify';
import { privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { buildApp } from '../../src/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { ManualClock } from '../../src/clock.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createTestDatabase, type TestDatabase } from './db.js';

export const TEST_DOMAIN = 'task-escrow.test';

/** anvil's well-known dev keys: deterministic test wallets. */
const DEV_KEYS = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
  '0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a',
  '0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba',
] as const;

export function wallet(n: number): PrivateKeyAccount {
  return privateKeyToAccount(DEV_KEYS[n % DEV_KEYS.length]!);
}

/** Wall time, with the ManualClock API so helpers can still be handed it (advance = no-op). */
class RealTimeClock extends ManualClock {
  override now(): Date {
    return new Date();
  }
}

export interface TestApp {
  app: FastifyInstance;
  clock: ManualClock;
  config: Config;
  db: TestDatabase;
  /** `Authorization` header for one request by this wallet (fresh nonce each call). */
  auth(account: PrivateKeyAccount): Promise<{ authorization: string }>;
  close(): Promise<void>;
}

/** `clock: 'real'` for tests of background workers whose timers run on wall time (leases, backoff). */
export async function buildTestApp(env: Record<string, string> = {}, opts: { clock?: 'manual' | 'real' } = {}): Promise<TestApp> {
  const db = await createTestDatabase();
  const config = loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    AUTH_DOMAIN: TEST_DOMAIN,
    RATE_LIMIT_MAX: '100000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    // Identity by wallet signature; the x402 tests (test/payments) turn payments on against anvil.
    X402_ENABLED: 'false',
    ...env,
  });
  const clock = opts.clock === 'real' ? new RealTimeClock() : new ManualClock(new Date('2026-11-21T12:00:00.000Z'));
  const app = await buildApp({ config, database: db.database, clock, logger: false });
  await app.ready();
  return {
    app,
    clock,
    config,
    db,
    auth: async (account) => ({
      authorization: await signInHeader(account, { domain: TEST_DOMAIN, uri: `https://${TEST_DOMAIN}`, now: clock.now() }),
    }),
    close: async () => {
      await app.close();
      await db.destroy();
    },
  };
}
