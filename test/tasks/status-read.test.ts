import type { FastifyInstance } from 'fastify';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { loadConfig } from '../../src/config.js';
import { rowsOf } from '../../src/db/client.js';
import { chainTransfers, tasks } from '../../src/db/schema.js';
import { payoutView } from '../../src/tasks/client.js';
import { buildTestApp, otherInstance as sharedInstance, TEST_DOMAIN, wallet, type TestApp } from '../helpers/app.js';
import { call, createTask, expectError, fundAndStart, registerAgent, textResult, type AgentFixture } from '../helpers/fixtures.js';

/**
 * The unpaid task reads (GET /v1/tasks/{id}/status and /result) in one statement (src/tasks/client.ts):
 * the task, its payouts and whether the reader's session token is revoked. What they answer, and
 * that a revocation holds on them at once, from any process. PGlite by default, Postgres with DATABASE_URL.
 */
const SECRET = 'session-secret-of-the-status-read-tests-0123456789';
let t: TestApp;
let agent: AgentFixture;
const owner = wallet(1);
const stranger = wallet(2);
const payer = wallet(3);

beforeAll(async () => {
  t = await buildTestApp({ SESSION_SECRET: SECRET, CANCELLATION_FEE_BPS: '1000' });
  agent = await registerAgent(t, owner, { pricing: { base_rate: '500000' } });
});
afterAll(() => t.close());

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

async function get(app: FastifyInstance, url: string, headers: Record<string, string>) {
  const res = await app.inject({ method: 'GET', url, headers });
  return { status: res.statusCode, body: res.json(), raw: res.body };
}

async function tokenFor(app: FastifyInstance, who = payer): Promise<string> {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/auth/session',
    headers: { authorization: await signInHeader(who, { domain: TEST_DOMAIN, uri: `https://${TEST_DOMAIN}`, now: t.clock.now() }) },
  });
  expect(res.statusCode, res.body).toBe(201);
  return res.json().token;
}

/** Another instance of the service on the same database, same clock and secret. */
const otherInstance = () =>
  sharedInstance(
    t,
    loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', AUTH_DOMAIN: TEST_DOMAIN, RATE_LIMIT_MAX: '100000', MAX_EVENT_LOOP_DELAY_MS: '0', X402_ENABLED: 'false', SESSION_SECRET: SECRET }),
  );

describe('the status read', () => {
  it('lists the payouts as the transfers table orders them, amounts exact past 2^53', async () => {
    const id = await createTask(t, payer, agent.id);
    await fundAndStart(t, id);
    await t.app.services.taskLifecycle.reportProgress(id, { progress_percent: 30 });
    // The fee's release and the refund are planned in one transaction: the same created_at.
    expect((await call(t, payer, 'POST', `/v1/tasks/${id}/cancel`, { accept_partial_refund: true })).status).toBe(200);
    const huge = 2n ** 53n + 1n; // a Number would round it (and the API takes 16 digits at most)
    const later = new Date(t.clock.now().getTime() + 1000);
    await t.db.database.db.insert(chainTransfers).values({
      id: 'xfer_statusreadtest000001',
      kind: 'refund',
      cause: `test:${id}:huge`,
      taskId: id,
      fromAddress: '0x0000000000000000000000000000000000000001',
      toAddress: payer.address.toLowerCase(),
      amount: huge,
      status: 'confirmed',
      txHash: `0x${'ab'.repeat(32)}`,
      nextAttemptAt: later,
      createdAt: later,
      updatedAt: later,
    });
    const transfers = await t.db.database.db.select().from(chainTransfers).where(eq(chainTransfers.taskId, id)).orderBy(chainTransfers.createdAt);
    expect(transfers.length).toBe(3);
    const res = await get(t.app, `/v1/tasks/${id}/status`, await t.auth(payer));
    expect(res.status, res.raw).toBe(200);
    expect(res.body.payouts).toEqual(transfers.map(payoutView));
    expect(res.body.payouts.map((p: { kind: string }) => p.kind).sort()).toEqual(['refund', 'refund', 'release']);
    expect(res.raw).toContain(`"amount":"${huge}","status":"confirmed"`);
    expect(res.body.payouts.find((p: { kind: string }) => p.kind === 'release').to).toBe(owner.address); // checksummed
    // The agent's owner reads the same bytes.
    expect((await get(t.app, `/v1/tasks/${id}/status`, await t.auth(owner))).raw).toBe(res.raw);
  });

  it('answers the same view on the event stream’s shared read', async () => {
    const id = await createTask(t, payer, agent.id);
    await fundAndStart(t, id);
    await t.app.services.taskLifecycle.reportProgress(id, { progress_percent: 55, intermediate_result: { draft: 'a "quoted" draft' } });
    // Microseconds, as the database keeps them: the view shows milliseconds, as a Date made from the text would.
    await t.db.database.db.update(tasks).set({ estimatedCompletion: sql`'2026-11-21 12:34:56.789987+00'::timestamptz` }).where(eq(tasks.id, id));
    const [row] = await t.db.database.db.select().from(tasks).where(eq(tasks.id, id));
    const view = (await get(t.app, `/v1/tasks/${id}/status`, await t.auth(payer))).body;
    expect(view).toMatchObject({
      progress_percent: 55,
      intermediate_result: { draft: 'a "quoted" draft' },
      updated_at: row!.updatedAt.toISOString(),
      expires_at: row!.expiresAt.toISOString(),
      deadline_at: row!.deadlineAt!.toISOString(),
      estimated_completion: '2026-11-21T12:34:56.789Z',
    });
    const shared = await t.app.services.tasks.sharedStatus(id);
    expect(await shared.viewFor(payer.address)).toEqual(view);
    await expect(shared.viewFor(stranger.address)).rejects.toMatchObject({ code: 'forbidden' });
  });

  it('takes ids as data: a quote in an id finds no task', async () => {
    await expect(t.app.services.tasks.status(payer.address, "task_' or '1'='1")).rejects.toMatchObject({ code: 'task_not_found' });
    await expect(t.app.services.tasks.result({ address: payer.address, session: "sess_'; select 1; --" }, 'task_x')).rejects.toMatchObject({
      code: 'task_not_found',
    });
  });
});

describe('a session token on the task reads', () => {
  it('reads status and result; once revoked, both answer 401 before anything about the task', async () => {
    const id = await createTask(t, payer, agent.id);
    await fundAndStart(t, id);
    await t.app.services.taskLifecycle.markCompleted(id, textResult());
    const token = await tokenFor(t.app);
    const other = await tokenFor(t.app);
    expect((await get(t.app, `/v1/tasks/${id}/status`, bearer(token))).body).toMatchObject({ task_id: id, status: 'completed' });
    expect((await get(t.app, `/v1/tasks/${id}/result`, bearer(token))).body).toMatchObject({ task_id: id, status: 'completed' });
    expectError(await get(t.app, `/v1/tasks/${id}/result`, bearer(await tokenFor(t.app, owner))), 403, 'forbidden');
    expectError(await get(t.app, '/v1/tasks/task_00000000000000000000/status', bearer(token)), 404, 'task_not_found');

    expect((await t.app.inject({ method: 'DELETE', url: '/v1/auth/session', headers: bearer(token) })).statusCode).toBe(200);
    for (const path of [`/v1/tasks/${id}/status`, `/v1/tasks/${id}/result`, '/v1/tasks/task_00000000000000000000/status', '/v1/tasks/task_00000000000000000000/result']) {
      expectError(await get(t.app, path, bearer(token)), 401, 'session_revoked');
    }
    expect((await get(t.app, `/v1/tasks/${id}/status`, bearer(other))).status).toBe(200); // other sessions live on
  });

  it('a revocation in another process holds on the next read here', async () => {
    const id = await createTask(t, payer, agent.id);
    const replica = await otherInstance();
    try {
      const token = await tokenFor(t.app);
      expect((await get(t.app, `/v1/tasks/${id}/status`, bearer(token))).status).toBe(200);
      expect((await get(replica.app, `/v1/tasks/${id}/status`, bearer(token))).status).toBe(200);
      expect((await replica.app.inject({ method: 'DELETE', url: '/v1/auth/session', headers: bearer(token) })).statusCode).toBe(200);
      expectError(await get(t.app, `/v1/tasks/${id}/status`, bearer(token)), 401, 'session_revoked');
      expectError(await get(t.app, `/v1/tasks/${id}/result`, bearer(token)), 401, 'session_revoked');
    } finally {
      await replica.close();
    }
  });

  it('refuses a forged or expired token, and no wallet at all; SIWE still works', async () => {
    const id = await createTask(t, payer, agent.id);
    const token = await tokenFor(t.app);
    expectError(await get(t.app, `/v1/tasks/${id}/status`, bearer(`${token.slice(0, -4)}AAAA`)), 401, 'invalid_signature');
    expectError(await get(t.app, `/v1/tasks/${id}/status`, {}), 401, 'authentication_required');
    expectError(await get(t.app, `/v1/tasks/${id}/result`, {}), 401, 'authentication_required');
    expect((await get(t.app, `/v1/tasks/${id}/status`, await t.auth(payer))).status).toBe(200);
    const before = t.clock.now();
    t.clock.set(new Date(before.getTime() + (t.config.SESSION_TTL_SECONDS + 10) * 1000));
    try {
      expectError(await get(t.app, `/v1/tasks/${id}/status`, bearer(token)), 401, 'session_expired');
    } finally {
      t.clock.set(before);
    }
  });
});
