/**
 * Events reach a stream from any process: an API process (a real `src/server.ts`, ROLE=api) serves
 * a paid event stream while the task changes in another process (this test's own app on the same
 * Postgres database). The changes travel by LISTEN/NOTIFY; the stream sees each one and ends when
 * the task completes. A change that rolls back is never streamed.
 */
import { wrapFetchWithPayment } from '@x402/fetch';
import type { FastifyInstance } from 'fastify';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { mintUsdc, startDevChain, type DevChain } from '../../src/chain/dev/devchain.js';
import { loadConfig } from '../../src/config.js';
import { openDatabase, withTransaction, type Database } from '../../src/db/client.js';
import { notifyTaskChanged, TaskChangeFeed } from '../../src/tasks/change-feed.js';
import { textResult } from '../helpers/fixtures.js';
import { x402ClientFor } from '../helpers/paid.js';
import { scratchDatabase, serviceEnv, startService, type ScratchDatabase, type ServiceProcess } from '../helpers/service-process.js';
import { readEvents } from '../helpers/sse.js';

const DOMAIN = 'events.test';
let chain: DevChain;
let scratch: ScratchDatabase;
let api: ServiceProcess;
let database: Database;
let other: FastifyInstance;

beforeAll(async () => {
  [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('events')]);
  api = await startService(serviceEnv(scratch.url, chain.rpcUrl, { ROLE: 'api', AUTH_DOMAIN: DOMAIN, EVENT_STREAM_HEARTBEAT_MS: '200' }));
  database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 3 });
  const config = loadConfig({ DATABASE_URL: scratch.url, AUTH_DOMAIN: DOMAIN, LOG_LEVEL: 'silent', X402_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' });
  other = await buildApp({ config, database, logger: false });
  await other.ready();
}, 60_000);
afterAll(async () => {
  await api?.stop();
  await other?.close();
  await database?.close();
  await scratch?.drop();
  await chain?.stop();
});

describe('a task’s event stream across processes (Postgres LISTEN/NOTIFY)', () => {
  it('streams the changes another process makes to the task, until it completes', { timeout: 90_000 }, async () => {
    const payer = privateKeyToAccount(generatePrivateKey());
    const owner = privateKeyToAccount(generatePrivateKey());
    await mintUsdc(chain, payer.address, 100_000n);
    const signed = async (account: typeof payer) => ({ authorization: await signInHeader(account, { domain: DOMAIN, uri: `https://${DOMAIN}` }) });
    const agent = await other.inject({
      method: 'POST',
      url: '/v1/agents',
      headers: await signed(owner),
      payload: { name: 'Far', capabilities: ['far'], pricing: { base_rate: '1' }, payout_address: owner.address },
    });
    const created = await other.inject({
      method: 'POST',
      url: '/v1/tasks',
      headers: await signed(payer),
      payload: { agent_id: agent.json().id, description: 'Across processes', budget: { amount: '1000', currency: 'USDC', chain: 'base' } },
    });
    const taskId = created.json().task_id as string;
    const { taskLifecycle } = other.services;
    await taskLifecycle.markFunded(taskId, { amount: 1000n, txHash: null, actor: 'test' });

    const res = await wrapFetchWithPayment(fetch, x402ClientFor(payer))(`${api.baseUrl}/v1/tasks/${taskId}/events`);
    expect(res.status).toBe(200);
    const reading = readEvents(res);
    const seen = () => reading.events.filter((e) => e.event === 'status').map((e) => JSON.parse(e.data) as Record<string, unknown>);
    await reading.until(() => seen().length === 1);

    await taskLifecycle.markStarted(taskId);
    await reading.until(() => seen().some((s) => s.stage === 'running'));
    await taskLifecycle.reportProgress(taskId, { progress_percent: 70 });
    await reading.until(() => seen().some((s) => s.progress_percent === 70));
    // A quiet stream gets heartbeats (every 200 ms here) while the task is still running.
    await reading.until(() => reading.events.some((e) => e.comment === 'heartbeat'));
    await taskLifecycle.markCompleted(taskId, textResult('from afar'));
    await reading.done;

    const statuses = seen();
    expect(statuses[0]).toMatchObject({ task_id: taskId, status: 'in_progress', stage: 'queued' });
    expect(statuses.at(-1)).toMatchObject({ status: 'completed', progress_percent: 100 });
    expect(reading.events.some((e) => e.comment === 'heartbeat')).toBe(true);
  });

  it('tells followers of committed changes only: a change that rolls back notifies nobody', { timeout: 30_000 }, async () => {
    const feed = new TaskChangeFeed(database);
    let told = 0;
    const stop = await feed.follow('task_feedprobe0000000000', () => told++);
    await expect(
      withTransaction(database.db, async (tx) => {
        await notifyTaskChanged(tx, 'task_feedprobe0000000000');
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    await withTransaction(database.db, (tx) => notifyTaskChanged(tx, 'task_feedprobe0000000000'));
    await withTransaction(database.db, (tx) => notifyTaskChanged(tx, 'task_someoneelse00000000'));
    const end = Date.now() + 5000;
    while (told === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300)); // anything late would show up by now
    expect(told).toBe(1);
    stop();
    await feed.close();
  });
});
