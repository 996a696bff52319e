import closeWithGrace from 'close-with-grace';
import { buildApp } from './app.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { openDatabase } from './db/client.js';
import { runMigrations } from './db/migrate.js';
import { runMaintenance, startMaintenance } from './maintenance.js';

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
  const app = await buildApp({ config, database });

  const stopWorkers =
    config.ROLE === 'api'
      ? async () => undefined
      : startMaintenance(() => runMaintenance(app.db, app.clock, app.services), config.MAINTENANCE_INTERVAL_MS, app.log);

  closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error');
    else app.log.info({ signal }, 'shutting down');
    await stopWorkers();
    await app.close();
    await database.close();
  });

  if (config.ROLE === 'worker') {
    await app.ready();
    app.log.info({ role: config.ROLE, database: database.kind }, 'worker started (no HTTP listener)');
    return;
  }
  const address = await app.listen({ host: config.HOST, port: config.PORT });
  app.log.info({ role: config.ROLE, database: database.kind }, `task-escrow listening on ${address} — Swagger UI at ${address}/docs`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
