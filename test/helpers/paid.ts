import type { FastifyInstance } from 'fastify';
import { x402Client } from '@x402/core/client';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import { privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import type { Address } from 'viem';
import { buildApp } from '../../src/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { resolveWallets, type Wallets } from '../../src/chain/wallets.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createTestDatabase, type TestDatabase } from './db.js';

/** The service with x402 on, listening on loopback, against a fresh anvil and a fresh database. */
export interface PaidApp {
  app: FastifyInstance;
  chain: DevChain;
  db: TestDatabase;
  config: Config;
  wallets: Wallets;
  baseUrl: string;
  /** Demo wallet n (0..5) holding 10 000 test USDC. */
  demo(n: number): PrivateKeyAccount;
  /** A stock @x402/fetch client paying from `account` (spend cap lifted for escrow funding). */
  payFetch(account: PrivateKeyAccount): typeof fetch;
  balance(address: Address): Promise<bigint>;
  signIn(account: PrivateKeyAccount): Promise<string>;
  /** Runs the settlement worker until no payout is pending, signed or sent. */
  settleAll(): Promise<void>;
  close(): Promise<void>;
}

export function x402ClientFor(account: PrivateKeyAccount): x402Client {
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  client.setSpendControls({ maxAmountPerPayment: false });
  return client;
}

export async function startPaidApp(env: Record<string, string> = {}): Promise<PaidApp> {
  const chain = await startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] });
  const db = await createTestDatabase();
  const config = loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    RATE_LIMIT_MAX: '100000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    X402_ENABLED: 'true',
    // Every payment settles first here; the micro-fee tests (test/payments/micro-fees*.test.ts) turn deferral on.
    MICRO_FEES_DEFERRED: 'false',
    ...env,
  });
  const app = await buildApp({ config, database: db.database, logger: false, chainRpcUrl: chain.rpcUrl });
  const baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
  const host = new URL(baseUrl).host;
  return {
    app,
    chain,
    db,
    config,
    wallets: resolveWallets(config),
    baseUrl,
    demo: (n) => privateKeyToAccount(ANVIL_ACCOUNTS[DEV_ROLES.demo[n]!]!.privateKey),
    payFetch: (account) => wrapFetchWithPayment(fetch, x402ClientFor(account)),
    balance: (address) => usdcBalance(chain.rpcUrl, address),
    signIn: (account) => signInHeader(account, { domain: host, uri: baseUrl }),
    settleAll: async () => {
      const workers = app.escrow!.createWorkers(app.db, app.clock);
      for (let i = 0; i < 40; i++) {
        for (const worker of workers) await worker.runOnce();
        const active = await app.db.query.chainTransfers.findMany({ where: (t, { inArray }) => inArray(t.status, ['pending', 'signed', 'sent']) });
        if (active.length === 0) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error('payouts did not settle');
    },
    close: async () => {
      await app.close();
      await db.destroy();
      await chain.stop();
    },
  };
}
