/**
 * A dispatcher process for dispatcher-kill.test.ts: runs the worker role's dispatcher against
 * the database in DATABASE_URL until it is killed.
 */
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { openDatabase } from '../../src/db/client.js';
import { createDispatcher } from '../../src/dispatcher/index.js';

const config = loadConfig({ ...process.env, LOG_LEVEL: 'silent', X402_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' });
const database = await openDatabase({ url: config.DATABASE_URL, dataDir: '', poolMax: 4 });
const app = await buildApp({ config, database, logger: false });
const dispatcher = createDispatcher(app, { workerId: process.env.WORKER_ID ?? 'child' });
dispatcher.start(50);
console.log('dispatcher-child started');
// Die with the test process (stdin closes), and never outlive a minute.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 60_000).unref();
