import type { FastifyInstance } from 'fastify';
import type { Address } from 'viem';
import { privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { buildApp } from '../../src/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { resolveWallets, type Wallets } from '../../src/chain/wallets.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createTestDatabase, type TestDatabase } from './db.js';

/**
 * The service as `npm start` builds it in dev mode: x402 on, the embedded anvil chain and its dev
 * routes (the faucet, the demo-wallet signer), listening on loopback. `devRoutes: false` builds it
 * as on a real chain: the same chain and payments, no /dev routes (what server.ts does with CHAIN_RPC_URL).
 */
export interface DevPaidApp {
  app: FastifyInstance;
  chain: DevChain;
  db: TestDatabase;
  config: Config;
  wallets: Wallets;
  baseUrl: string;
  /** anvil account `index` (4-9 are the funded demo wallets). */
  account(index: number): PrivateKeyAccount;
  balance(address: Address): Promise<bigint>;
  signIn(account: PrivateKeyAccount): Promise<string>;
  close(): Promise<void>;
}

export async function startDevPaidApp(opts: { devRoutes?: boolean; env?: Record<string, string> } = {}): Promise<DevPaidApp> {
  const [chain, db] = await Promise.all([startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] }), createTestDatabase()]);
  const config = loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    RATE_LIMIT_MAX: '100000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    X402_ENABLED: 'true',
    ...opts.env,
  });
  const app = await buildApp({
    config,
    database: db.database,
    logger: false,
    chainRpcUrl: chain.rpcUrl,
    ...(opts.devRoutes === false ? {} : { devFaucet: { mint: (to: Address, amount: bigint) => mintUsdc(chain, to, amount) } }),
  });
  const baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
  const host = new URL(baseUrl).host;
  return {
    app,
    chain,
    db,
    config,
    wallets: resolveWallets(config),
    baseUrl,
    account: (index) => privateKeyToAccount(ANVIL_ACCOUNTS[index]!.privateKey),
    balance: (address) => usdcBalance(chain.rpcUrl, address),
    signIn: (account) => signInHeader(account, { domain: host, uri: baseUrl }),
    close: async () => {
      await app.close();
      await db.destroy();
      await chain.stop();
    },
  };
}
