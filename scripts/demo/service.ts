import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Address } from 'viem';
import { buildApp } from '../../src/app.js';
import { DEV_ROLES } from '../../src/chain/constants.js';
import { mintUsdc, startDevChain, type DevChain } from '../../src/chain/dev/devchain.js';
import { loadConfig, type Config } from '../../src/config.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';
import { startWorkers } from '../../src/workers/index.js';

/**
 * The whole service in this process, the way `npm start` runs it with role `all`, but throwaway:
 * a fresh PGlite database in a temp directory, a fresh anvil chain (no state file), the HTTP API
 * on 127.0.0.1 (a free port) and the worker role's background work (dispatcher, settlement
 * worker, signed callbacks, maintenance) on short intervals.
 */
export interface EmbeddedService {
  app: FastifyInstance;
  config: Config;
  chain: DevChain;
  database: Database;
  dataDir: string;
  baseUrl: string;
  /** Stops everything that was started, in reverse order; idempotent, never throws. */
  stop(): Promise<void>;
}

/** Settings of the demo run; nothing is read from the environment except `extra`. */
export function demoConfig(dataDir: string, extra: Record<string, string> = {}): Config {
  return loadConfig({
    NODE_ENV: 'development',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'silent',
    ROLE: 'all',
    DATA_DIR: dataDir,
    X402_ENABLED: 'true',
    CHAIN_CONFIRMATIONS: '1',
    SETTLEMENT_INTERVAL_MS: '200',
    SETTLEMENT_BACKOFF_MS: '100',
    DISPATCH_INTERVAL_MS: '200',
    DISPATCH_BACKOFF_MS: '100',
    DISPATCH_HEARTBEAT_MS: '500',
    MAINTENANCE_INTERVAL_MS: '1000',
    SHUTDOWN_GRACE_MS: '2000',
    // PGlite and anvil share this process: do not answer 503 on a busy event loop.
    MAX_EVENT_LOOP_DELAY_MS: '0',
    ...extra,
  });
}

export async function startEmbeddedService(opts: { extraConfig?: Record<string, string> } = {}): Promise<EmbeddedService> {
  const cleanups: (() => Promise<void> | void)[] = [];
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const errors: unknown[] = [];
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) process.stderr.write(`demo: ${errors.length} error(s) while shutting down: ${String(errors[0])}\n`);
  };

  try {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'task-escrow-demo-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));

    const config = demoConfig(dataDir, opts.extraConfig);
    // anvil (a child process) and PGlite (initdb and migrations in this process) start side by side.
    const [chainStarted, databaseOpened] = await Promise.allSettled([
      startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] }),
      openDatabase({ dataDir, poolMax: config.DB_POOL_MAX }).then(async (database) => {
        try {
          await runMigrations(database);
          return database;
        } catch (err) {
          await database.close();
          throw err;
        }
      }),
    ]);
    if (chainStarted.status === 'fulfilled') cleanups.push(() => chainStarted.value.stop());
    if (databaseOpened.status === 'fulfilled') cleanups.push(() => databaseOpened.value.close());
    if (chainStarted.status === 'rejected') throw chainStarted.reason;
    if (databaseOpened.status === 'rejected') throw databaseOpened.reason;
    const chain = chainStarted.value;
    const database = databaseOpened.value;

    const app = await buildApp({
      config,
      database,
      logger: false,
      chainRpcUrl: chain.rpcUrl,
      devFaucet: { mint: (to: Address, amount: bigint) => mintUsdc(chain, to, amount) },
    });
    cleanups.push(() => app.close());
    const baseUrl = await app.listen({ host: config.HOST, port: config.PORT });
    // The port was 0 (any free one): agents call back at the address listen() found.
    cleanups.push(startWorkers(app, { publicBaseUrl: baseUrl, callbacksMs: 500 }));
    return { app, config, chain, database, dataDir, baseUrl, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
