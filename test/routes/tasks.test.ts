import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { taskEvents, tasks } from '../../src/db/schema.js';
import { resultHash } from '../../src/tasks/result-hash.js';
import { resolveWallets } from '../../src/chain/wallets.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, createTask, expectError, fundAndStart, registerAgent, rowCount, textResult, type AgentFixture } from '../helpers/fixtures.js';

let t: TestApp;
let agent: AgentFixture;
const owner = wallet(1);
const stranger = wallet(2);
const payer = wallet(3);

beforeAll(async () => {
  t = await buildTestApp({ TASK_FUNDING_WINDOW_SECONDS: '600', CANCELLATION_FEE_BPS: '1000' });
  agent = await registerAgent(t, owner, { pricing: { base_rate: '500000' } });
});
afterAll(() => t.close());

const budget = (amount: string) => ({ amount, currency: 'USDC', chain: 'base' });

const taskCount = () => rowCount(t, tasks);

describe('POST /v1/tasks', () => {
  it('creates a task per the contract', async () => {
    const res = await call(t, payer, 'POST', '/v1/tasks', {
      agent_id: agent.id,
      description: 'Write a 50-word blurb',
      requirements: { words: 50 },
      budget: budget('1000000'),
      callback_url: 'https://client.example/hook',
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      status: 'created',
      agent_id: agent.id,
      escrow_address: resolveWallets(t.config).escrowAddress,
      escrow_amount: '1000000',
      timeout_seconds: 3600,
      expires_at: new Date(t.clock.now().getTime() + 600_000).toISOString(),
    });
    expect(res.body.task_id).toMatch(/^task_[0-9a-z]{20}$/);
  });

  it('refuses a budget below the base rate (budget_too_low)', async () => {
    const res = await call(t, payer, 'POST', '/v1/tasks', { agent_id: agent.id, description: 'x', budget: budget('499999') });
    expectError(res, 422, 'budget_too_low');
    expect(res.body.error.param).toBe('budget.amount');
  });

  it('refuses unknown agents, other currencies and chains, bad timeouts and oversized text, writing nothing', async () => {
    const before = await taskCount();
    expectError(await call(t, payer, 'POST', '/v1/tasks', { agent_id: 'agent_00000000000000000000', description: 'x', budget: budget('1000000') }), 404, 'agent_not_found');
    const bad: [Record<string, unknown>, string][] = [
      [{ budget: { amount: '1000000', currency: 'ETH', chain: 'base' } }, 'budget.currency'],
      [{ budget: { amount: '1000000', currency: 'USDC', chain: 'ethereum' } }, 'budget.chain'],
      [{ budget: { amount: 1000000, currency: 'USDC', chain: 'base' } }, 'budget.amount'],
      [{ budget: { amount: '1e6', currency: 'USDC', chain: 'base' } }, 'budget.amount'],
      [{ budget: { amount: '0', currency: 'USDC', chain: 'base' } }, 'budget.amount'],
      [{ description: '' }, 'description'],
      [{ description: 'x'.repeat(20_001) }, 'description'],
      [{ requirements: { blob: 'y'.repeat(70_000) } }, 'requirements'],
      [{ callback_url: 'ftp://x.example/a' }, 'callback_url'],
      [{ callback_url: 'not a url' }, 'callback_url'],
      [{ timeout_seconds: -1 }, 'timeout_seconds'],
      [{ timeout_seconds: 1.5 }, 'timeout_seconds'],
    ];
    for (const [override, param] of bad) {
      const res = await call(t, payer, 'POST', '/v1/tasks', { agent_id: agent.id, description: 'x', budget: budget('1000000'), ...override });
      expectError(res, 400, 'validation_error');
      expect(res.body.error.param).toBe(param);
    }
    for (const timeout of [1, 8 * 86_400]) {
      const res = await call(t, payer, 'POST', '/v1/tasks', { agent_id: agent.id, description: 'x', budget: budget('1000000'), timeout_seconds: timeout });
      expectError(res, 400, 'validation_error');
      expect(res.body.error.param).toBe('timeout_seconds');
    }
    expect(await taskCount()).toBe(before);
  });

  it('needs a wallet', async () => {
    expectError(await call(t, null, 'POST', '/v1/tasks', { agent_id: agent.id, description: 'x', budget: budget('1000000') }), 401, 'authentication_required');
  });
});

describe('GET /v1/tasks/{id}/status and /result', () => {
  it('follows the task through its lifecycle, for the payer and the agent only', async () => {
    const id = await createTask(t, payer, agent.id);
    const s0 = await call(t, payer, 'GET', `/v1/tasks/${id}/status`);
    expect(s0.body).toMatchObject({ task_id: id, status: 'created', escrow_status: 'none', progress_percent: 0, intermediate_result: null, estimated_completion: null });
    expectError(await call(t, stranger, 'GET', `/v1/tasks/${id}/status`), 403, 'forbidden');
    expectError(await call(t, payer, 'GET', `/v1/tasks/${id}/result`), 409, 'not_ready');

    await t.app.services.taskLifecycle.markFunded(id, { amount: 1_000_000n, txHash: '0xabc', actor: 'test' });
    // funded, not started: reads in_progress so that clients keep polling
    expect((await call(t, payer, 'GET', `/v1/tasks/${id}/status`)).body).toMatchObject({ status: 'in_progress', stage: 'queued', escrow_status: 'held' });
    await t.app.services.taskLifecycle.markStarted(id);
    await t.app.services.taskLifecycle.reportProgress(id, { progress_percent: 40, intermediate_result: { draft: 'A bright…' }, estimated_completion: '2026-11-21T12:10:00.000Z' });
    const s1 = await call(t, owner, 'GET', `/v1/tasks/${id}/status`);
    expect(s1.body).toMatchObject({
      status: 'in_progress',
      progress_percent: 40,
      intermediate_result: { draft: 'A bright…' },
      estimated_completion: '2026-11-21T12:10:00.000Z',
    });
    expect(s1.body.deadline_at).toBe(new Date(t.clock.now().getTime() + 3600_000).toISOString());
    expectError(await call(t, owner, 'GET', `/v1/tasks/${id}/result`), 403, 'forbidden');

    t.clock.advance(5000);
    const result = textResult('Light up your nights.');
    await t.app.services.taskLifecycle.markCompleted(id, result);
    const r = await call(t, payer, 'GET', `/v1/tasks/${id}/result`);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ task_id: id, status: 'completed', result, result_hash: resultHash(result), completed_at: t.clock.now().toISOString() });
    const done = (await call(t, payer, 'GET', `/v1/tasks/${id}/status`)).body;
    expect(done).toMatchObject({ status: 'completed', stage: 'done', progress_percent: 100, escrow_status: 'released' });
    // the agent's payout (minus the 2.5 % platform fee) is queued for the chain
    expect(done.payouts).toEqual([{ kind: 'release', to: owner.address, amount: '975000', status: 'pending', tx_hash: null }]);

    const events = await t.db.database.db.select().from(taskEvents).where(eq(taskEvents.taskId, id)).orderBy(taskEvents.id);
    // every change has its event row, the escrow's release included
    expect(events.map((e) => `${e.fromStatus}→${e.toStatus} (escrow ${e.escrowStatus})`)).toEqual([
      'created→funded (escrow held)',
      'funded→in_progress (escrow held)',
      'in_progress→completed (escrow held)',
      'completed→completed (escrow released)',
    ]);
  });

  it('expires an unfunded task after its funding window', async () => {
    const id = await createTask(t, payer, agent.id);
    t.clock.advance(601_000);
    expect((await call(t, payer, 'GET', `/v1/tasks/${id}/status`)).body.status).toBe('expired');
    await expect(t.app.services.taskLifecycle.markFunded(id, { amount: 1_000_000n, txHash: null, actor: 'test' })).rejects.toMatchObject({ code: 'state_conflict' });
  });

  it('refuses funding after expires_at (task_expired) and below the budget (amount_mismatch)', async () => {
    const late = await createTask(t, payer, agent.id);
    const short = await createTask(t, payer, agent.id);
    await expect(t.app.services.taskLifecycle.markFunded(short, { amount: 999_999n, txHash: null, actor: 'test' })).rejects.toMatchObject({ code: 'amount_mismatch' });
    t.clock.advance(601_000);
    await expect(t.app.services.taskLifecycle.markFunded(late, { amount: 1_000_000n, txHash: null, actor: 'test' })).rejects.toMatchObject({ code: 'task_expired' });
  });

  it('answers 404 for unknown tasks and 400 for malformed ids', async () => {
    expectError(await call(t, payer, 'GET', '/v1/tasks/task_00000000000000000000/status'), 404, 'task_not_found');
    expectError(await call(t, payer, 'GET', '/v1/tasks/..%2F..%2Fetc/status'), 400, 'validation_error');
  });
});

describe('POST /v1/tasks/{id}/cancel', () => {
  it('cancels an unfunded task with nothing to refund', async () => {
    const id = await createTask(t, payer, agent.id);
    expectError(await call(t, stranger, 'POST', `/v1/tasks/${id}/cancel`, {}), 403, 'forbidden');
    const res = await call(t, payer, 'POST', `/v1/tasks/${id}/cancel`, { reason: 'changed my mind' });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ task_id: id, status: 'cancelled', refund: { amount: '0', tx_hash: null, status: 'not_required' }, cancellation_fee: '0' });
    expectError(await call(t, payer, 'POST', `/v1/tasks/${id}/cancel`, {}), 409, 'invalid_state');
  });

  it('refunds a funded task in full before work starts', async () => {
    const id = await createTask(t, payer, agent.id);
    await t.app.services.taskLifecycle.markFunded(id, { amount: 1_200_000n, txHash: null, actor: 'test' });
    const res = await call(t, payer, 'POST', `/v1/tasks/${id}/cancel`, {});
    expect(res.body).toMatchObject({ status: 'cancelled', refund: { amount: '1200000', status: 'pending' }, cancellation_fee: '0' });
    expect((await call(t, payer, 'GET', `/v1/tasks/${id}/status`)).body.escrow_status).toBe('refunded');
  });

  it('asks before cancelling work in progress, then refunds minus the fee', async () => {
    const id = await createTask(t, payer, agent.id);
    await fundAndStart(t, id);
    await t.app.services.taskLifecycle.reportProgress(id, { progress_percent: 30 });
    const refused = await call(t, payer, 'POST', `/v1/tasks/${id}/cancel`, {});
    expectError(refused, 409, 'work_in_progress');
    expect(refused.body.error.details).toEqual({ refund_amount: '700000', cancellation_fee: '300000' });
    expect((await call(t, payer, 'GET', `/v1/tasks/${id}/status`)).body.status).toBe('in_progress');
    const res = await call(t, payer, 'POST', `/v1/tasks/${id}/cancel`, { accept_partial_refund: true });
    expect(res.body).toMatchObject({ status: 'cancelled', refund: { amount: '700000', status: 'pending' }, cancellation_fee: '300000' });
    expect((await call(t, payer, 'GET', `/v1/tasks/${id}/status`)).body.escrow_status).toBe('partially_refunded');
  });

  it('refuses to cancel a completed task (task_completed)', async () => {
    const id = await createTask(t, payer, agent.id);
    await fundAndStart(t, id);
    await t.app.services.taskLifecycle.markCompleted(id, textResult());
    expectError(await call(t, payer, 'POST', `/v1/tasks/${id}/cancel`, { accept_partial_refund: true }), 409, 'task_completed');
  });
});

describe('POST /v1/tasks/{id}/dispute', () => {
  it('freezes the escrow of a task in progress, once', async () => {
    const id = await createTask(t, payer, agent.id);
    await fundAndStart(t, id);
    expectError(await call(t, stranger, 'POST', `/v1/tasks/${id}/dispute`, { reason: 'x' }), 403, 'forbidden');
    expectError(await call(t, payer, 'POST', `/v1/tasks/${id}/dispute`, { reason: '' }), 400, 'validation_error');
    const res = await call(t, payer, 'POST', `/v1/tasks/${id}/dispute`, { reason: 'Off brief', evidence: ['too long'] });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ task_id: id, status: 'under_review', submitted_at: t.clock.now().toISOString() });
    expect(res.body.dispute_id).toMatch(/^dispute_/);
    expect(Date.parse(res.body.expected_resolution)).toBe(t.clock.now().getTime() + t.config.DISPUTE_REVIEW_SECONDS * 1000);
    expect((await call(t, payer, 'GET', `/v1/tasks/${id}/status`)).body).toMatchObject({ status: 'disputed', escrow_status: 'frozen' });
    expectError(await call(t, payer, 'POST', `/v1/tasks/${id}/dispute`, { reason: 'again' }), 409, 'already_disputed');
    // frozen escrow: the agent can no longer complete and be paid
    await expect(t.app.services.taskLifecycle.markCompleted(id, textResult())).rejects.toMatchObject({ code: 'state_conflict' });
  });

  it('refuses to dispute a completed task whose escrow was released', async () => {
    const id = await createTask(t, payer, agent.id);
    await fundAndStart(t, id);
    await t.app.services.taskLifecycle.markCompleted(id, textResult());
    const res = await call(t, payer, 'POST', `/v1/tasks/${id}/dispute`, { reason: 'late' });
    expectError(res, 409, 'invalid_state');
    expect(res.body.error.details).toMatchObject({ escrow_status: 'released' });
  });

  it('refuses to dispute a task with nothing held', async () => {
    const id = await createTask(t, payer, agent.id);
    expectError(await call(t, payer, 'POST', `/v1/tasks/${id}/dispute`, { reason: 'x' }), 409, 'invalid_state');
  });
});

describe('state machine through the services', () => {
  it('refuses forbidden transitions with 409 and changes nothing', async () => {
    const id = await createTask(t, payer, agent.id);
    await expect(t.app.services.taskLifecycle.markCompleted(id, textResult())).rejects.toMatchObject({ code: 'state_conflict', status: 409 });
    await expect(t.app.services.taskLifecycle.markStarted(id)).rejects.toMatchObject({ code: 'state_conflict' });
    await expect(t.app.services.taskLifecycle.reportProgress(id, { progress_percent: 10 })).rejects.toMatchObject({ code: 'invalid_state' });
    await fundAndStart(t, id);
    await t.app.services.taskLifecycle.markFailed(id, 'agent crashed');
    const failed = await call(t, payer, 'GET', `/v1/tasks/${id}/status`);
    expect(failed.body).toMatchObject({ status: 'failed', escrow_status: 'refunded' });
    // a terminal task never restarts
    await expect(t.app.services.taskLifecycle.markStarted(id)).rejects.toMatchObject({ code: 'state_conflict' });
    await expect(t.app.services.taskLifecycle.markCompleted(id, textResult())).rejects.toMatchObject({ code: 'state_conflict' });
    await expect(t.app.services.taskLifecycle.markFunded(id, { amount: 1_000_000n, txHash: null, actor: 'test' })).rejects.toMatchObject({ code: 'state_conflict' });
    const after = await call(t, payer, 'GET', `/v1/tasks/${id}/status`);
    expect(after.body).toEqual(failed.body);
  });
});
