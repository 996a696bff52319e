import type { FastifyInstance } from 'fastify';
import { privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { buildApp } from '../../src/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { siweDomain } from '../../src/auth/siwe.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { ManualClock } from '../../src/clock.js';
import { loadConfig, type Config } from '../../src/config.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { createTestDatabase, type TestDatabase } from './db.js';

export const TEST_DOMAIN = 'task-escrow.test';

/**
 * anvil's well-known dev keys: deterministic test wallets. The demo accounts (4-9), never the
 * service's own dev wallets (1 escrow, 2 operator, 3 fees), which are refused as payout addresses.
 */
const DEV_KEYS = DEV_ROLES.demo.map((i) => ANVIL_ACCOUNTS[i]!.privateKey);

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
  /** The SIWE domain this app accepts (from its configuration: AUTH_DOMAIN by default). */
  domain: string;
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
  // Sign for the domain the app is configured to accept (TEST_DOMAIN unless `env` says otherwise).
  const domain = siweDomain(config).domain ?? TEST_DOMAIN;
  return {
    app,
    clock,
    config,
    db,
    domain,
    auth: async (account) => ({
      authorization: await signInHeader(account, { domain, uri: `https://${domain}`, now: clock.now() }),
    }),
    close: async () => {
      await app.close();
      await db.destroy();
    },
  };
}

/** Another instance of the service on a test app's database (its own pool on Postgres), sharing its clock. */
export async function otherInstance(t: TestApp, config: Config): Promise<{ app: FastifyInstance; close(): Promise<void> }> {
  const database: Database = t.db.url ? await openDatabase({ url: t.db.url, dataDir: '', poolMax: 5 }) : t.db.database;
  const app = await buildApp({ config, database, clock: t.clock, logger: false });
  await app.ready();
  return {
    app,
    close: async () => {
      await app.close();
      if (t.db.url) await database.close();
    },
  };
}
