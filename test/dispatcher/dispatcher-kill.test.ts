import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { and, eq, ne } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';
import { agents, chainTransfers, dispatchJobs, taskEvents, tasks } from '../../src/db/schema.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { FastifyInstance } from 'fastify';
import { AgentServer } from '../helpers/agent-server.js';
import { withDatabase } from '../helpers/global-setup.js';
import { wallet } from '../helpers/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';

/**
 * A dispatcher process killed with SIGKILL while its agent works; a dispatcher started after it
 * takes the task over once the lease expired and finishes it exactly once. Two processes share
 * one database, so this runs on Postgres (DATABASE_URL, or the machine's 127.0.0.1:5432/test).
 */
const BASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dispatcher-child.ts');
const SECRET = 'dispatcher-kill-webhook-secret-0123456789';
const ENV = { DISPATCH_LEASE_MS: '1000', DISPATCH_HEARTBEAT_MS: '200', DISPATCH_BACKOFF_MS: '20', AUTH_DOMAIN: 'kill.test' };

let admin: pg.Client;
let dbName: string;
let dbUrl: string;
let database: Database;
let app: FastifyInstance;
let child: ChildProcess | undefined;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: BASE_URL });
  await admin.connect().catch((err: Error) => {
    throw new Error(`dispatcher-kill.test.ts needs Postgres at ${BASE_URL}: ${err.message}`);
  });
  dbName = `te_dkill_${randomBytes(6).toString('hex')}`;
  await admin.query(`create database ${dbName}`);
  dbUrl = withDatabase(BASE_URL, dbName);
  database = await openDatabase({ url: dbUrl, dataDir: '', poolMax: 5 });
  await runMigrations(database);
  const config = loadConfig({ ...ENV, DATABASE_URL: dbUrl, LOG_LEVEL: 'silent', X402_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' });
  app = await buildApp({ config, database, logger: false });
  await app.ready();
});
afterAll(async () => {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await app?.close();
  await database?.close();
  await admin.query(`drop database if exists ${dbName} with (force)`);
  await admin.end();
});

async function until(what: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await what())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('a dispatcher process killed mid-task (SIGKILL)', () => {
  it('another dispatcher finishes the task exactly once, and the crash costs the task no attempt', { timeout: 60_000 }, async () => {
    let briefs = 0;
    const agentServer = await new AgentServer(SECRET, () =>
      ++briefs === 1 ? 'hang' : { status: 200, body: { result: { type: 'text', content: 'done after the crash', metadata: {} } } },
    ).start();
    try {
      const owner = wallet(1);
      const auth = async () => ({ authorization: await signInHeader(owner, { domain: 'kill.test', uri: 'https://kill.test' }) });
      const reg = await app.inject({
        method: 'POST',
        url: '/v1/agents',
        headers: await auth(),
        payload: { name: 'K', capabilities: ['k'], pricing: { base_rate: '1' }, payout_address: owner.address, runtime: { kind: 'webhook', url: agentServer.url, secret: SECRET } },
      });
      const agentId = reg.json().id as string;
      const created = await app.inject({
        method: 'POST',
        url: '/v1/tasks',
        headers: await auth(),
        payload: { agent_id: agentId, description: 'Survive a crash', budget: { amount: '1000000', currency: 'USDC', chain: 'base' } },
      });
      const taskId = created.json().task_id as string;
      await app.services.taskLifecycle.markFunded(taskId, { amount: 1_000_000n, txHash: null, actor: 'test' });

      child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
        env: { ...process.env, ...ENV, DATABASE_URL: dbUrl, WORKER_ID: 'doomed' },
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      await until(() => agentServer.requestsFor(taskId).length === 1);
      const [leased] = await app.db.select().from(tasks).where(eq(tasks.id, taskId));
      expect(leased).toMatchObject({ status: 'in_progress' });
      const [job] = await app.db.select().from(dispatchJobs).where(eq(dispatchJobs.taskId, taskId));
      expect(job).toMatchObject({ state: 'running', leaseOwner: 'doomed', attempts: 1, lostRuns: 0 });
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child!.once('exit', (_code, signal) => resolve(signal)));
      child.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');

      const survivor = createDispatcher(app, { workerId: 'survivor' });
      await until(async () => {
        await survivor.runOnce();
        const [row] = await app.db.select({ status: tasks.status }).from(tasks).where(eq(tasks.id, taskId));
        return row!.status === 'completed';
      });
      await survivor.stop(0);

      // the run lost with its worker is not an attempt: the survivor's brief is attempt 1 again
      expect(agentServer.requestsFor(taskId).map((r) => r.attempt)).toEqual([1, 1]);
      const [after] = await app.db.select().from(dispatchJobs).where(eq(dispatchJobs.taskId, taskId));
      expect(after).toMatchObject({ state: 'done', attempts: 1, lostRuns: 1 });
      // transitions into completed (an escrow-only event, such as the release, keeps the status)
      const completions = await app.db
        .select()
        .from(taskEvents)
        .where(and(eq(taskEvents.taskId, taskId), eq(taskEvents.toStatus, 'completed'), ne(taskEvents.fromStatus, 'completed')));
      expect(completions).toHaveLength(1);
      expect(completions[0]!.actor).toBe(`agent:${agentId}`);
      const releases = await app.db.select().from(chainTransfers).where(eq(chainTransfers.taskId, taskId));
      expect(releases.map((x) => `${x.kind}:${x.amount}`)).toEqual(['release:975000']);
      const [agentRow] = await app.db.select().from(agents).where(eq(agents.id, agentId));
      expect(agentRow!.tasksCompleted).toBe(1);
    } finally {
      await agentServer.stop();
    }
  });
});
