import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { dispatchJobs, tasks } from '../../src/db/schema.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import { AgentServer, type AgentReply, type Received } from '../helpers/agent-server.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, createTask, expectError, registerAgent } from '../helpers/fixtures.js';

const SECRET = 'dispatcher-test-webhook-secret-0123456789';
const ADMIN_KEY = 'dispatcher-test-admin-key-0123456789';
const owner = wallet(1);
const payer = wallet(3);
let t: TestApp;
const servers: AgentServer[] = [];
const dispatchers: Dispatcher[] = [];

beforeAll(async () => {
  t = await buildTestApp(
    {
      TASK_TIMEOUT_MIN_SECONDS: '1',
      DISPATCH_LEASE_MS: '1500',
      DISPATCH_HEARTBEAT_MS: '100',
      DISPATCH_BACKOFF_MS: '20',
      DISPATCH_MAX_ATTEMPTS: '3',
      DISPATCH_CONCURRENCY: '16',
      DISPATCH_PER_AGENT_CONCURRENCY: '200',
      ADMIN_API_KEY: ADMIN_KEY,
    },
    { clock: 'real' },
  );
});
afterEach(async () => {
  await Promise.all(dispatchers.splice(0).map((d) => d.stop(0)));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});
afterAll(() => t.close());

const result = (content: string) => ({ result: { type: 'text', content, metadata: { tokens_used: 10, model: 'agent-x', duration_seconds: 1 } } });

async function agentWith(handler: (r: Received) => AgentReply | Promise<AgentReply>) {
  const server = await new AgentServer(SECRET, handler).start();
  servers.push(server);
  const agent = await registerAgent(t, owner, { runtime: { kind: 'webhook', url: server.url, secret: SECRET, timeout_ms: 5000 } });
  return { server, agent };
}

async function fundedTask(agentId: string, body: Record<string, unknown> = {}): Promise<string> {
  const id = await createTask(t, payer, agentId, body);
  await t.app.services.taskLifecycle.markFunded(id, { amount: 1_000_000n, txHash: null, actor: 'test' });
  return id;
}

function dispatcher(workerId?: string): Dispatcher {
  const d = createDispatcher(t.app, workerId ? { workerId } : {});
  dispatchers.push(d);
  return d;
}

async function until(what: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await what())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function jobOf(id: string) {
  const [job] = await t.app.db.select().from(dispatchJobs).where(eq(dispatchJobs.taskId, id));
  return job!;
}

async function statusOf(id: string) {
  return (await call(t, payer, 'GET', `/v1/tasks/${id}/status`)).body;
}

/** Runs the dispatcher until the task leaves in_progress. */
async function runUntilDone(d: Dispatcher, id: string, timeoutMs = 10_000) {
  await until(async () => {
    await d.runOnce();
    return (await statusOf(id)).status !== 'in_progress';
  }, timeoutMs);
  await d.drain();
  return statusOf(id);
}

describe('dispatcher with webhook agents', () => {
  it('a synchronous agent: signed brief, result stored with its hash, escrow released', async () => {
    const { server, agent } = await agentWith(() => ({ status: 200, body: result('Light up your nights.') }));
    const id = await fundedTask(agent.id, { requirements: { words: 5 } });
    const s = await runUntilDone(dispatcher(), id);
    expect(s).toMatchObject({ status: 'completed', escrow_status: 'released', progress_percent: 100 });
    const [req] = server.requestsFor(id);
    expect(req!.signatureValid).toBe(true);
    expect(req!.body).toMatchObject({
      type: 'task.assigned',
      task: { id, description: 'Write a blurb', requirements: { words: 5 }, budget: { amount: '1000000', currency: 'USDC' }, attempt: 1 },
      callbacks: { deliver: expect.stringContaining(`/v1/tasks/${id}/deliver`), progress: expect.stringContaining(`/v1/tasks/${id}/progress`) },
    });
    const r = await call(t, payer, 'GET', `/v1/tasks/${id}/result`);
    expect(r.body.result.content).toBe('Light up your nights.');
    expect(s.payouts).toEqual([expect.objectContaining({ kind: 'release', amount: '975000' })]);
  });

  it('an asynchronous agent: 202, then progress and delivery through the API as the agent’s wallet', async () => {
    const { server, agent } = await agentWith(() => ({ status: 202 }));
    const id = await fundedTask(agent.id);
    const d = dispatcher();
    await until(async () => (await d.runOnce()) > 0 || server.requestsFor(id).length > 0);
    await d.drain();
    await until(async () => (await jobOf(id)).state === 'awaiting_delivery');

    // a stranger or a garbage signature cannot report for the agent
    expectError(await call(t, payer, 'POST', `/v1/tasks/${id}/progress`, { progress_percent: 50 }), 403, 'forbidden');
    const garbage = await t.app.inject({ method: 'POST', url: `/v1/tasks/${id}/deliver`, headers: { authorization: 'SIWE bad.0x00' }, payload: result('x') });
    expect(garbage.statusCode).toBe(401);

    const progress = await call(t, owner, 'POST', `/v1/tasks/${id}/progress`, { progress_percent: 60, intermediate_result: { draft: 'Light…' } });
    expect(progress.status).toBe(200);
    expect(await statusOf(id)).toMatchObject({ status: 'in_progress', stage: 'running', progress_percent: 60, intermediate_result: { draft: 'Light…' } });
    const delivered = await call(t, owner, 'POST', `/v1/tasks/${id}/deliver`, result('Done async.'));
    expect(delivered.status).toBe(200);
    expect(delivered.body.result_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(await statusOf(id)).toMatchObject({ status: 'completed', escrow_status: 'released' });
    // the provider claims: the hash must match
    expectError(await call(t, owner, 'POST', `/v1/tasks/${id}/claim`, { result_hash: '0'.repeat(64) }), 409, 'result_hash_mismatch');
    const claim = await call(t, owner, 'POST', `/v1/tasks/${id}/claim`, { result_hash: delivered.body.result_hash });
    expect(claim.body).toMatchObject({ task_id: id, claim_status: 'approved', payment: { amount: '975000', recipient: owner.address } });
    expect(server.requestsFor(id)).toHaveLength(1);
  });

  it('500s then success: retried with backoff, completed on the third attempt', async () => {
    const { server, agent } = await agentWith((r) => (r.attempt < 3 ? { status: 500, body: { error: 'busy' } } : { status: 200, body: result('third time') }));
    const id = await fundedTask(agent.id);
    const s = await runUntilDone(dispatcher(), id);
    expect(s.status).toBe('completed');
    expect(server.requestsFor(id).map((r) => r.attempt)).toEqual([1, 2, 3]);
  });

  it('transient failures past the max attempts fail the task and refund the escrow', async () => {
    const { server, agent } = await agentWith(() => ({ status: 503 }));
    const id = await fundedTask(agent.id);
    const s = await runUntilDone(dispatcher(), id);
    expect(s).toMatchObject({ status: 'failed', escrow_status: 'refunded' });
    expect(s.payouts).toEqual([expect.objectContaining({ kind: 'refund', amount: '1000000' })]);
    expect(server.requestsFor(id)).toHaveLength(3);
  });

  it('an agent that refuses our signature (answers 401) fails at once, without retries', async () => {
    const { server, agent } = await agentWith(() => ({ status: 401, body: { error: 'signature' } }));
    const id = await fundedTask(agent.id);
    expect((await runUntilDone(dispatcher(), id)).status).toBe('failed');
    expect(server.requestsFor(id)).toHaveLength(1);
  });

  it('a slow agent past timeout_seconds: aborted, failed, refunded, and told', async () => {
    const { server, agent } = await agentWith((r) => (r.type === 'task.assigned' ? 'hang' : { status: 200 }));
    const id = await fundedTask(agent.id, { timeout_seconds: 1 });
    const started = Date.now();
    const s = await runUntilDone(dispatcher(), id);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(s).toMatchObject({ status: 'failed', escrow_status: 'refunded' });
    await until(async () => server.requestsFor(id, 'task.cancelled').length === 1);
  });

  it('cancellation reaches a running agent', async () => {
    const { server, agent } = await agentWith((r) => (r.type === 'task.assigned' ? 'hang' : { status: 200 }));
    const id = await fundedTask(agent.id);
    const d = dispatcher();
    await until(async () => {
      await d.runOnce();
      return server.requestsFor(id).length === 1;
    });
    const res = await call(t, payer, 'POST', `/v1/tasks/${id}/cancel`, { accept_partial_refund: true });
    expect(res.body.status).toBe('cancelled');
    await until(async () => server.requestsFor(id, 'task.cancelled').length === 1);
    await until(async () => d.active === 0);
    expect((await statusOf(id)).status).toBe('cancelled');
  });

  it('a dispatcher that dies mid-task: another reclaims the lease and finishes it exactly once', async () => {
    let briefs = 0;
    const { server, agent } = await agentWith(() => (++briefs === 1 ? 'hang' : { status: 200, body: result('finished by B') }));
    const id = await fundedTask(agent.id);
    // A claims, then goes silent: no heartbeat reaches the database any more.
    const a = dispatcher('worker-a');
    (a as unknown as { beat: () => Promise<void> }).beat = async () => {};
    await until(async () => {
      await a.runOnce();
      return server.requestsFor(id).length === 1;
    });
    expect(await jobOf(id)).toMatchObject({ leaseOwner: 'worker-a', state: 'running', attempts: 1 });
    // B cannot take it while the lease holds, then does once it expired.
    const b = dispatcher('worker-b');
    expect(await b.runOnce()).toBe(0);
    const s = await runUntilDone(b, id);
    expect(s.status).toBe('completed');
    expect((await call(t, payer, 'GET', `/v1/tasks/${id}/result`)).body.result.content).toBe('finished by B');
    // the lost run used no attempt: B's brief is attempt 1 again
    expect(server.requestsFor(id).map((r) => r.attempt)).toEqual([1, 1]);
    expect(await jobOf(id)).toMatchObject({ state: 'done', attempts: 1, lostRuns: 1 });
    const [agentRow] = await t.app.db.query.agents.findMany({ where: (x, { eq: e }) => e(x.id, agent.id) });
    expect(agentRow!.tasksCompleted).toBe(1);
  });
});

describe('two dispatchers racing', () => {
  // A production-like lease: the short lease above exists to test reclaiming; here no worker dies,
  // so a run must never be taken over (a stalled heartbeat under load would otherwise let it).
  let race: TestApp;
  beforeAll(async () => {
    race = await buildTestApp(
      { DISPATCH_LEASE_MS: '30000', DISPATCH_HEARTBEAT_MS: '1000', DISPATCH_CONCURRENCY: '16', DISPATCH_PER_AGENT_CONCURRENCY: '200' },
      { clock: 'real' },
    );
  });
  afterAll(() => race.close());

  it('run each of 200 tasks exactly once', async () => {
    const server = await new AgentServer(SECRET, () => ({ status: 200, body: result('ok') })).start();
    servers.push(server);
    const agent = await registerAgent(race, owner, { runtime: { kind: 'webhook', url: server.url, secret: SECRET } });
    const ids: string[] = [];
    for (let i = 0; i < 200; i++) {
      const id = await createTask(race, payer, agent.id);
      await race.app.services.taskLifecycle.markFunded(id, { amount: 1_000_000n, txHash: null, actor: 'test' });
      ids.push(id);
    }
    const a = createDispatcher(race.app, { workerId: 'race-a' });
    const b = createDispatcher(race.app, { workerId: 'race-b' });
    dispatchers.push(a, b);
    const pending = new Set(ids);
    await until(async () => {
      await Promise.all([a.runOnce(), b.runOnce()]);
      const rows = await race.app.db.select({ id: tasks.id, status: tasks.status }).from(tasks).where(eq(tasks.agentId, agent.id));
      for (const r of rows) if (r.status === 'completed') pending.delete(r.id);
      return pending.size === 0;
    }, 60_000);
    await Promise.all([a.drain(), b.drain()]);
    const perTask = new Map<string, number>();
    for (const r of server.received) perTask.set(r.taskId, (perTask.get(r.taskId) ?? 0) + 1);
    expect(perTask.size).toBe(200);
    expect([...perTask.entries()].filter(([, n]) => n !== 1)).toEqual([]);
  }, 90_000);
});

describe('no endless retries', () => {
  it('a task whose runs keep dying with their workers is failed and refunded after 3 lost runs, without another brief', async () => {
    const { server, agent } = await agentWith(() => ({ status: 200, body: result('never asked') }));
    const id = await fundedTask(agent.id);
    await t.app.services.taskLifecycle.markStarted(id);
    // three workers took it and died (their leases ran out)
    await t.app.db
      .update(dispatchJobs)
      .set({ state: 'running', leaseOwner: 'dead-worker', leaseExpiresAt: new Date(Date.now() - 60_000), attempts: 1, lostRuns: 3 })
      .where(eq(dispatchJobs.taskId, id));
    const d = dispatcher();
    await until(async () => {
      await d.runOnce();
      return (await statusOf(id)).status === 'failed';
    });
    const status = await statusOf(id);
    expect(status).toMatchObject({ status: 'failed', escrow_status: 'refunded' });
    expect(status.payouts).toEqual([expect.objectContaining({ kind: 'refund', amount: '1000000' })]);
    expect(server.requestsFor(id)).toHaveLength(0);
  });

  it('an outcome that cannot be recorded parks the task for an operator: never briefed again, listed by /v1/admin/attention', async () => {
    const { server, agent } = await agentWith(() => ({ status: 400, body: { error: 'cannot do that' } }));
    const id = await fundedTask(agent.id);
    // a row that disagrees with its ledger: the refund of the failure cannot be booked
    await t.app.db.update(tasks).set({ fundedAmount: 2_000_000n }).where(eq(tasks.id, id));
    const d = dispatcher();
    await until(async () => {
      await d.runOnce();
      await d.drain();
      return (await jobOf(id)).state === 'stuck';
    });
    for (let i = 0; i < 5; i++) {
      await d.runOnce();
      await d.drain();
    }
    expect(server.requestsFor(id)).toHaveLength(1);
    const [row] = await t.app.db.select().from(tasks).where(eq(tasks.id, id));
    expect(row).toMatchObject({ status: 'in_progress', escrowStatus: 'held' });
    expect(await jobOf(id)).toMatchObject({ state: 'stuck', leaseOwner: null });
    const attention = await t.app.inject({ method: 'GET', url: '/v1/admin/attention', headers: { 'x-admin-key': ADMIN_KEY } });
    expect(attention.statusCode).toBe(200);
    const stuck = attention.json().stuck_tasks.find((x: { task_id: string }) => x.task_id === id);
    expect(stuck.reason).toContain('cannot be paid out');
    expect((await t.app.inject({ method: 'GET', url: '/v1/admin/attention' })).statusCode).toBe(403);
  });
});
