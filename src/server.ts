import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import { buildApp } from './app.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { openDatabase } from './db/client.js';
import { runMigrations } from './db/migrate.js';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Address } from 'viem';
import type { BuiltinAgents } from './agents/builtin/index.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from './chain/constants.js';
import type { DevChain } from './chain/dev/devchain.js';
import { UsdcReader } from './chain/usdc.js';
import type { DevFaucet } from './routes/dev.js';
import { startWorkers } from './workers/index.js';

/** `--role api|worker|all` on the command line wins over ROLE in the environment. */
function roleFromArgs(argv: string[]): string | undefined {
  const i = argv.findIndex((a) => a === '--role' || a.startsWith('--role='));
  if (i < 0) return undefined;
  const arg = argv[i]!;
  return arg.includes('=') ? arg.split('=')[1] : argv[i + 1];
}

async function main(): Promise<void> {
  let config: Config;
  try {
    const role = roleFromArgs(process.argv.slice(2));
    config = loadConfig({ ...process.env, ...(role ? { ROLE: role } : {}) });
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }

  const database = await openDatabase({ url: config.DATABASE_URL, dataDir: config.DATA_DIR, poolMax: config.DB_POOL_MAX });
  await runMigrations(database);
  const embedded = config.CHAIN_RPC_URL ? undefined : await startEmbeddedChain(config);
  const devChain = embedded?.chain;
  const app = await buildApp({
    config,
    database,
    ...(embedded ? { chainRpcUrl: embedded.chain.rpcUrl, devFaucet: embedded.faucet } : {}),
  });

  let stopWorkers = async (): Promise<void> => undefined;
  let builtin: BuiltinAgents | undefined;

  closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error');
    else app.log.info({ signal }, 'shutting down');
    await stopWorkers();
    await builtin?.stop();
    await app.close();
    await database.close();
    await devChain?.stop();
  });

  if (config.ROLE === 'worker') {
    await app.ready();
    stopWorkers = startWorkers(app);
    app.log.info({ role: config.ROLE, database: database.kind }, 'worker started (no HTTP listener)');
    return;
  }
  // Dev mode only: registered (or refreshed) before the dispatcher starts, so it reaches them where they now listen.
  if (embedded) builtin = await startBuiltinAgents(app);
  const address = await app.listen({ host: config.HOST, port: config.PORT });
  // Started after listen: with PORT=0 the origin agents call back is only known now.
  if (config.ROLE === 'all') stopWorkers = startWorkers(app, { publicBaseUrl: config.PUBLIC_BASE_URL ?? address });
  if (devChain) await printDemoWallets(devChain, address, builtin);
  app.log.info({ role: config.ROLE, database: database.kind }, `task-escrow listening on ${address} — Swagger UI at ${address}/docs`);
}

/**
 * No CHAIN_RPC_URL: anvil made to look like Base, its state kept in DATA_DIR so balances survive
 * restarts, with the dev faucet. The dev-chain code (chain/dev/) is loaded here only: a service
 * on a real chain never imports it.
 */
async function startEmbeddedChain(config: Config): Promise<{ chain: DevChain; faucet: DevFaucet }> {
  const { mintUsdc, startDevChain } = await import('./chain/dev/devchain.js');
  mkdirSync(config.DATA_DIR, { recursive: true });
  const chain = await startDevChain({
    stateFile: path.resolve(config.DATA_DIR, 'anvil-state.json'),
    fundIndices: [...DEV_ROLES.demo],
    silent: true,
  });
  return { chain, faucet: { mint: (to: Address, amount: bigint) => mintUsdc(chain, to, amount) } };
}

/**
 * The agents to hire on the first run (src/agents/builtin), served by this process on loopback.
 * Loaded here only, like the dev chain: a service on a real chain never imports them.
 */
async function startBuiltinAgents(app: FastifyInstance): Promise<BuiltinAgents> {
  const builtin = await import('./agents/builtin/index.js');
  return builtin.startBuiltinAgents(app);
}

async function printDemoWallets(chain: DevChain, address: string, builtin: BuiltinAgents | undefined): Promise<void> {
  const usdc = new UsdcReader(chain.rpcUrl, chain.usdc);
  const rows = await Promise.all(
    DEV_ROLES.demo.map(async (i) => {
      const a = ANVIL_ACCOUNTS[i]!.address;
      const balance = await usdc.balanceOf(a);
      return `  anvil account ${i}  ${a}  ${(Number(balance) / 1e6).toFixed(2)} USDC`;
    }),
  );
  console.log(
    [
      '',
      `Embedded dev chain (anvil, chain id 8453, USDC at ${chain.usdc}): ${chain.rpcUrl}`,
      'Demo wallets (anvil\'s well-known dev accounts; keys in src/chain/constants.ts):',
      ...rows,
      `More test USDC: POST ${address}/dev/faucet {"address":"0x…"}`,
      ...(builtin ? ['', ...builtin.banner, ''] : []),
      `Swagger UI: ${address}/docs`,
      '',
    ].join('\n'),
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
