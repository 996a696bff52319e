import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { and, eq } from 'drizzle-orm';
import { ratings, taskEvents } from '../src/db/schema.js';
import { buildTestApp, wallet, type TestApp } from './helpers/app.js';
import { call, createTask, fundAndStart, registerAgent, textResult, type AgentFixture } from './helpers/fixtures.js';

/**
 * Racing transitions. Under DATABASE_URL this runs on real Postgres with a connection pool, where
 * the requests truly overlap; on PGlite (one connection) it checks the same outcome serially.
 */
let t: TestApp;
let agent: AgentFixture;
const payer = wallet(3);

beforeAll(async () => {
  t = await buildTestApp();
  agent = await registerAgent(t, wallet(1));
});
afterAll(() => t.close());

async function settle<T>(ps: Promise<T>[]): Promise<{ ok: Awaited<T>[]; failed: unknown[] }> {
  const results = await Promise.allSettled(ps);
  return {
    ok: results.filter((r): r is PromiseFulfilledResult<Awaited<T>> => r.status === 'fulfilled').map((r) => r.value),
    failed: results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason),
  };
}

describe(`racing transitions (${process.env.DATABASE_URL ? 'Postgres' : 'PGlite'})`, () => {
  it('ten simultaneous cancels of one funded task: exactly one wins, one refund', async () => {
    const id = await createTask(t, payer, agent.id);
    await t.app.services.taskLifecycle.markFunded(id, { amount: 1_000_000n, txHash: null, actor: 'test' });
    const responses = await Promise.all(Array.from({ length: 10 }, () => call(t, payer, 'POST', `/v1/tasks/${id}/cancel`, {})));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(9);
    for (const r of responses.filter((x) => x.status === 409)) expect(['state_conflict', 'invalid_state']).toContain(r.body.error.code);
    const events = await t.db.database.db.select().from(taskEvents).where(and(eq(taskEvents.taskId, id), eq(taskEvents.toStatus, 'cancelled')));
    expect(events).toHaveLength(1);
  });

  it('start versus cancel on twenty tasks: one of the two wins each time and the state agrees', async () => {
    const ids = await Promise.all(Array.from({ length: 20 }, () => createTask(t, payer, agent.id)));
    for (const id of ids) await t.app.services.taskLifecycle.markFunded(id, { amount: 1_000_000n, txHash: null, actor: 'test' });
    await Promise.all(
      ids.map(async (id) => {
        const [start, cancel] = await Promise.allSettled([
          t.app.services.taskLifecycle.markStarted(id),
          t.app.services.tasks.cancel(payer.address, id, { accept_partial_refund: false }),
        ]);
        const status = (await call(t, payer, 'GET', `/v1/tasks/${id}/status`)).body;
        if (start.status === 'fulfilled') {
          // cancel lost the race: it either conflicted or saw work in progress
          expect(cancel.status).toBe('rejected');
          expect(['state_conflict', 'work_in_progress']).toContain((cancel as PromiseRejectedResult).reason.code);
          expect(status).toMatchObject({ status: 'in_progress', escrow_status: 'held' });
        } else {
          expect(cancel.status).toBe('fulfilled');
          expect((start as PromiseRejectedResult).reason.code).toBe('state_conflict');
          expect(status).toMatchObject({ status: 'cancelled', escrow_status: 'refunded' });
        }
      }),
    );
  });

  it('two completions of one task: exactly one stores its result and counts for the agent', async () => {
    const id = await createTask(t, payer, agent.id);
    await fundAndStart(t, id);
    const before = (await call(t, null, 'GET', `/v1/agents/${agent.id}`)).body.tasks_completed;
    const { ok, failed } = await settle([
      t.app.services.taskLifecycle.markCompleted(id, textResult('first')),
      t.app.services.taskLifecycle.markCompleted(id, textResult('second')),
    ]);
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(1);
    expect((failed[0] as { code: string }).code).toBe('state_conflict');
    const result = await call(t, payer, 'GET', `/v1/tasks/${id}/result`);
    expect(result.body.result.content).toBe((ok[0]!.result as { content: string }).content);
    expect((await call(t, null, 'GET', `/v1/agents/${agent.id}`)).body.tasks_completed).toBe(before + 1);
  });

  it('five simultaneous ratings of one task: one is kept', async () => {
    const id = await createTask(t, payer, agent.id);
    await fundAndStart(t, id);
    await t.app.services.taskLifecycle.markCompleted(id, textResult());
    const responses = await Promise.all(
      [1, 2, 3, 4, 5].map((stars) => call(t, payer, 'POST', `/v1/agents/${agent.id}/rate`, { task_id: id, rating: stars })),
    );
    expect(responses.filter((r) => r.status === 201)).toHaveLength(1);
    expect(responses.filter((r) => r.status === 409).every((r) => r.body.error.code === 'already_rated')).toBe(true);
    expect(await t.db.database.db.select().from(ratings).where(eq(ratings.taskId, id))).toHaveLength(1);
  });
});
