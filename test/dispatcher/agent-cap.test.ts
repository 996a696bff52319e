import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { loadConfig } from '../../src/config.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';
import { tasks } from '../../src/db/schema.js';
import { AgentServer } from '../helpers/agent-server.js';
import { wallet } from '../helpers/app.js';
import { scratchDatabase, type ScratchDatabase } from '../helpers/service-process.js';

/**
 * DISPATCH_PER_AGENT_CONCURRENCY holds across worker processes: two dispatcher processes on one
 * Postgres database, many tasks for one slow agent; the agent never sees more briefs in flight at
 * once than the cap (and does see the cap reached, so the work ran in parallel).
 */
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dispatcher-child.ts');
const SECRET = 'agent-cap-webhook-secret-0123456789';
const CAP = 2;
const TASKS = 16;
const ENV = {
  DISPATCH_LEASE_MS: '5000',
  DISPATCH_HEARTBEAT_MS: '500',
  // A claim locks 4 × concurrency candidate rows: few enough that the other worker finds rows of its own.
  DISPATCH_CONCURRENCY: '2',
  DISPATCH_PER_AGENT_CONCURRENCY: String(CAP),
  AUTH_DOMAIN: 'cap.test',
};

let scratch: ScratchDatabase;
let dbUrl: string;
let database: Database;
let app: FastifyInstance;
const children: ChildProcess[] = [];

beforeAll(async () => {
  scratch = await scratchDatabase('cap');
  dbUrl = scratch.url;
  database = await openDatabase({ url: dbUrl, dataDir: '', poolMax: 5 });
  await runMigrations(database);
  const config = loadConfig({ ...ENV, DATABASE_URL: dbUrl, LOG_LEVEL: 'silent', X402_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' });
  app = await buildApp({ config, database, logger: false });
  await app.ready();
});
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await app?.close();
  await database?.close();
  await scratch?.drop();
});

describe('the per-agent cap across two worker processes', () => {
  it(`never runs more than ${CAP} briefs of one agent at once`, { timeout: 90_000 }, async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const agentServer = await new AgentServer(SECRET, async () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setTimeout(r, 250));
      inFlight--;
      return { status: 200, body: { result: { type: 'text', content: 'done', metadata: {} } } };
    }).start();
    try {
      const owner = wallet(1);
      const auth = async () => ({ authorization: await signInHeader(owner, { domain: 'cap.test', uri: 'https://cap.test' }) });
      const reg = await app.inject({
        method: 'POST',
        url: '/v1/agents',
        headers: await auth(),
        payload: { name: 'Slow', capabilities: ['slow'], pricing: { base_rate: '1' }, payout_address: owner.address, runtime: { kind: 'webhook', url: agentServer.url, secret: SECRET } },
      });
      expect(reg.statusCode).toBe(201);
      const agentId = reg.json().id as string;
      const ids: string[] = [];
      for (let i = 0; i < TASKS; i++) {
        const created = await app.inject({
          method: 'POST',
          url: '/v1/tasks',
          headers: await auth(),
          payload: { agent_id: agentId, description: `Slow task ${i}`, budget: { amount: '1000', currency: 'USDC', chain: 'base' } },
        });
        ids.push(created.json().task_id as string);
      }
      for (const id of ids) await app.services.taskLifecycle.markFunded(id, { amount: 1000n, txHash: null, actor: 'test' });
      // Widen the race this test is about: every claim holds its transaction 300 ms after leasing
      // a task, so two workers always overlap between counting an agent's runs and committing.
      const scratch = new pg.Client({ connectionString: dbUrl });
      await scratch.connect();
      await scratch.query(`create function slow_claim() returns trigger language plpgsql as $$ begin perform pg_sleep(0.3); return new; end $$`);
      await scratch.query(
        `create trigger slow_claim before update on dispatch_jobs for each row
         when (new.state = 'running' and old.state is distinct from 'running') execute function slow_claim()`,
      );
      await scratch.end();

      for (const name of ['worker-a', 'worker-b']) {
        const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
          env: { ...process.env, ...ENV, DATABASE_URL: dbUrl, WORKER_ID: name },
          stdio: ['pipe', 'pipe', 'inherit'],
        });
        children.push(child);
      }
      const end = Date.now() + 60_000;
      for (;;) {
        const rows = await app.db.select({ status: tasks.status }).from(tasks).where(eq(tasks.agentId, agentId));
        if (rows.every((r) => r.status === 'completed')) break;
        if (Date.now() > end) throw new Error(`not all tasks completed: ${JSON.stringify(rows)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(agentServer.received.filter((r) => r.type === 'task.assigned')).toHaveLength(TASKS);
      expect(maxInFlight).toBe(CAP);
    } finally {
      await agentServer.stop();
    }
  });
});
