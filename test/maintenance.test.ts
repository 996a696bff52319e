import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authNonces, idempotencyKeys } from '../src/db/schema.js';
import { runMaintenance } from '../src/maintenance.js';
import { buildTestApp, wallet, type TestApp } from './helpers/app.js';
import { call, createTask, registerAgent, rowCount } from './helpers/fixtures.js';

let t: TestApp;
beforeAll(async () => {
  t = await buildTestApp({ TASK_FUNDING_WINDOW_SECONDS: '600', IDEMPOTENCY_TTL_SECONDS: '3600' });
});
afterAll(() => t.close());

describe('maintenance', () => {
  it('expires unfunded tasks past their deadline and purges spent nonces and old idempotency keys', async () => {
    const payer = wallet(3);
    const agent = await registerAgent(t, wallet(1));
    const stale = await createTask(t, payer, agent.id);
    await call(t, payer, 'POST', '/v1/tasks', { agent_id: agent.id, description: 'keyed', budget: { amount: '1000000', currency: 'USDC', chain: 'base' } }, { 'idempotency-key': 'k1' });
    expect(await rowCount(t, authNonces)).toBeGreaterThan(0);
    expect(await rowCount(t, idempotencyKeys)).toBe(1);

    const early = await runMaintenance(t.app.db, t.clock, t.app.services);
    expect(early).toEqual({ expiredTasks: 0, timedOutTasks: 0, releasedEscrows: 0, purgedNonces: 0, purgedIdempotencyKeys: 0 });

    t.clock.advance(3_601_000);
    const fresh = await createTask(t, payer, agent.id);
    const report = await runMaintenance(t.app.db, t.clock, t.app.services);
    expect(report.expiredTasks).toBe(2);
    expect(report.purgedIdempotencyKeys).toBe(1);
    expect(report.purgedNonces).toBeGreaterThan(0);
    expect((await call(t, payer, 'GET', `/v1/tasks/${stale}/status`)).body.status).toBe('expired');
    expect((await call(t, payer, 'GET', `/v1/tasks/${fresh}/status`)).body.status).toBe('created');
  });
});
