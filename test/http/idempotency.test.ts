import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { and, eq } from 'drizzle-orm';
import { idempotencyKeys, tasks } from '../../src/db/schema.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, expectError, registerAgent, rowCount, type AgentFixture } from '../helpers/fixtures.js';

let t: TestApp;
let agent: AgentFixture;
const payer = wallet(3);
const other = wallet(4);

beforeAll(async () => {
  t = await buildTestApp({ IDEMPOTENCY_TTL_SECONDS: '3600' });
  agent = await registerAgent(t, wallet(1));
});
afterAll(() => t.close());

const body = () => ({ agent_id: agent.id, description: 'Idempotent task', budget: { amount: '1000000', currency: 'USDC', chain: 'base' } });
const taskCount = () => rowCount(t, tasks);

describe('Idempotency-Key', () => {
  it('replays the first response to a retry and creates one task', async () => {
    const before = await taskCount();
    const first = await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-create-1' });
    const retry = await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-create-1' });
    expect(first.status).toBe(201);
    expect(retry.status).toBe(201);
    expect(retry.body).toEqual(first.body);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    expect(await taskCount()).toBe(before + 1);
  });

  it('refuses the same key with another body', async () => {
    await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-create-2' });
    const res = await call(t, payer, 'POST', '/v1/tasks', { ...body(), description: 'different' }, { 'idempotency-key': 'k-create-2' });
    expectError(res, 422, 'idempotency_key_reused');
  });

  it('scopes keys to the calling wallet', async () => {
    const a = await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-shared' });
    const b = await call(t, other, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-shared' });
    expect(b.status).toBe(201);
    expect(b.body.task_id).not.toBe(a.body.task_id);
  });

  it('lets one of two simultaneous duplicates run; the other waits (409) or gets the replay', async () => {
    const first = call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-race' });
    const second = call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-race' });
    const results = await Promise.all([first, second]);
    const statuses = results.map((r) => r.status).sort();
    // Either the second arrived while the first was running (409) or after it finished (replayed 201).
    expect(statuses[0]).toBe(201);
    expect([201, 409]).toContain(statuses[1]);
    if (statuses[1] === 409) expect(results.find((r) => r.status === 409)!.body.error.code).toBe('idempotency_in_progress');
    else expect(results[1]!.body.task_id).toBe(results[0]!.body.task_id);
  });

  it('takes over a key whose first request died (lock expired)', async () => {
    const before = await taskCount();
    const first = await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-dead' });
    expect(first.status).toBe(201);
    // Simulate a crash after the key was taken but before the response was stored.
    await t.db.database.db
      .update(idempotencyKeys)
      .set({ state: 'in_flight', responseStatus: null, responseBody: null, lockedUntil: new Date(t.clock.now().getTime() + 60_000) })
      .where(and(eq(idempotencyKeys.key, 'k-dead'), eq(idempotencyKeys.scope, payer.address.toLowerCase())));
    expectError(await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-dead' }), 409, 'idempotency_in_progress');
    t.clock.advance(61_000);
    const retry = await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-dead' });
    expect(retry.status).toBe(201);
    expect(await taskCount()).toBe(before + 2);
  });

  it('does not store failures a retry may cure, and stores client errors', async () => {
    const offline = await registerAgent(t, wallet(5), { availability: 'offline' });
    const refused = await call(t, payer, 'POST', '/v1/tasks', { ...body(), agent_id: offline.id }, { 'idempotency-key': 'k-409' });
    expectError(refused, 409, 'agent_unavailable');
    await call(t, wallet(5), 'PATCH', `/v1/agents/${offline.id}`, { availability: 'online' });
    const retried = await call(t, payer, 'POST', '/v1/tasks', { ...body(), agent_id: offline.id }, { 'idempotency-key': 'k-409' });
    expect(retried.status).toBe(201);

    const low = { ...body(), budget: { amount: '1', currency: 'USDC', chain: 'base' } };
    expectError(await call(t, payer, 'POST', '/v1/tasks', low, { 'idempotency-key': 'k-422' }), 422, 'budget_too_low');
    const again = await call(t, payer, 'POST', '/v1/tasks', low, { 'idempotency-key': 'k-422' });
    expectError(again, 422, 'budget_too_low');
    expect(again.headers['idempotent-replayed']).toBe('true');
  });

  it('expires keys after the TTL', async () => {
    const a = await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-ttl' });
    t.clock.advance(3_601_000);
    const b = await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'k-ttl' });
    expect(b.status).toBe(201);
    expect(b.body.task_id).not.toBe(a.body.task_id);
  });

  it('refuses malformed keys', async () => {
    expectError(await call(t, payer, 'POST', '/v1/tasks', body(), { 'idempotency-key': 'x'.repeat(300) }), 400, 'validation_error');
  });
});
