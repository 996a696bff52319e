import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { ledgerEntries, tasks } from '../../src/db/schema.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import { escrowAccount } from '../../src/ledger/accounts.js';
import { AgentServer, type AgentReply, type Received } from '../helpers/agent-server.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, expectError, registerAgent } from '../helpers/fixtures.js';
import { LlmServer } from '../helpers/llm-server.js';

const SECRET = 'batch-test-webhook-secret-0123456789abcd';
const owner = wallet(1);
const payer = wallet(3);
const stranger = wallet(4);
let t: TestApp;
let llm: LlmServer;
const servers: AgentServer[] = [];
const dispatchers: Dispatcher[] = [];

beforeAll(async () => {
  // A loopback chat-completions server: every call reports 150 tokens; the answer echoes the prompt's last section.
  llm = await new LlmServer((req) => `Wrote it from: ${String(req.messages.at(-1)?.content ?? '').split('\n\n').at(-1)}`).start();
  t = await buildTestApp(
    {
      LLM_BASE_URL: llm.baseUrl,
      LLM_API_KEY: 'sk-batch-test',
      TASK_TIMEOUT_MIN_SECONDS: '1',
      DISPATCH_LEASE_MS: '1500',
      DISPATCH_HEARTBEAT_MS: '100',
      DISPATCH_BACKOFF_MS: '20',
      DISPATCH_MAX_ATTEMPTS: '2',
      DISPATCH_CONCURRENCY: '16',
      DISPATCH_PER_AGENT_CONCURRENCY: '200',
    },
    { clock: 'real' },
  );
});
afterEach(async () => {
  await Promise.all(dispatchers.splice(0).map((d) => d.stop(0)));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});
afterAll(async () => {
  await t.close();
  await llm.stop();
});

const reply = (content: string): AgentReply => ({
  status: 200,
  body: { result: { type: 'text', content, metadata: { tokens_used: 1, model: 'm', duration_seconds: 0 } } },
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function agentWith(handler: (r: Received) => AgentReply | Promise<AgentReply>, body: Record<string, unknown> = {}) {
  const server = await new AgentServer(SECRET, handler).start();
  servers.push(server);
  const agent = await registerAgent(t, owner, { runtime: { kind: 'webhook', url: server.url, secret: SECRET, timeout_ms: 5000 }, pricing: { base_rate: '1000' }, ...body });
  return { server, agent };
}

function dispatcher(): Dispatcher {
  const d = createDispatcher(t.app, {});
  dispatchers.push(d);
  return d;
}

const item = (agentId: string, description: string, extra: Record<string, unknown> = {}) => ({
  agent_id: agentId,
  description,
  budget: { amount: '100000', currency: 'USDC', chain: 'base' },
  ...extra,
});

async function createBatch(body: Record<string, unknown>) {
  const res = await call(t, payer, 'POST', '/v1/batches', body);
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { batch_id: string; items: { task_id: string }[] };
}

/** Runs dispatchers until the batch has ended; returns its last view. */
async function runBatch(batchId: string, ds: Dispatcher[], timeoutMs = 20_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    await Promise.all(ds.map((d) => d.runOnce()));
    const view = (await call(t, payer, 'GET', `/v1/batches/${batchId}`)).body;
    if (view.status !== 'running') {
      await Promise.all(ds.map((d) => d.drain()));
      return view;
    }
    if (Date.now() > end) throw new Error(`batch still running: ${JSON.stringify(view.items.map((i: any) => i.status))}`);
    await sleep(20);
  }
}

describe('batches: one request hires many agents', () => {
  it('keeps input order under shuffled completion, with the results and the costs in the view', async () => {
    const delays = [120, 10, 60, 0, 90];
    let itemIds: string[] | undefined;
    const { agent } = await agentWith(async (r) => {
      const n = Number(/item (\d)/.exec(String((r.body.task as any).description))?.[1]);
      await sleep(delays[n]!);
      // Item 0 answers only once item 3 is recorded completed: a shuffled completion whatever the machine's load.
      for (let waited = 0; n === 0 && waited < 10_000; waited += 20) {
        const [three] = itemIds ? await t.app.db.select({ status: tasks.status }).from(tasks).where(eq(tasks.id, itemIds[3]!)) : [];
        if (three?.status === 'completed') break;
        await sleep(20);
      }
      return reply(`answer ${n}`);
    });
    const batch = await createBatch({ items: delays.map((_, n) => item(agent.id, `item ${n}`)), max_concurrency: 5 });
    itemIds = batch.items.map((i: { task_id: string }) => i.task_id);
    expect(batch.items).toHaveLength(5);
    const view = await runBatch(batch.batch_id, [dispatcher()]);
    expect(view.status).toBe('completed');
    expect(view.items.map((i: any) => i.index)).toEqual([0, 1, 2, 3, 4]);
    expect(view.items.map((i: any) => i.result.content)).toEqual(['answer 0', 'answer 1', 'answer 2', 'answer 3', 'answer 4']);
    // They did not finish in input order.
    const finished = await t.app.db.select({ id: tasks.id, at: tasks.finishedAt }).from(tasks).where(eq(tasks.batchId, batch.batch_id));
    const order = finished.sort((a, b) => a.at!.getTime() - b.at!.getTime()).map((f) => batch.items.findIndex((i) => i.task_id === f.id));
    expect(order).not.toEqual([0, 1, 2, 3, 4]);
    expect(view.totals).toMatchObject({ escrow: '500000', completed: 5, failed: 0, running: 0 });
    // Usage rolls up: each webhook answer reported 1 token and no model calls.
    expect(view.totals.usage).toEqual({ tokens_used: 5, model_calls: null, llm_cost_usd: null });
    expect(view.failures).toEqual([]);
  });

  it('runs a diamond in dependency order, each item briefed with its predecessors’ results', async () => {
    const started: Record<string, number> = {};
    const { server, agent } = await agentWith(async (r) => {
      const name = String((r.body.task as any).description);
      started[name] = Date.now();
      await sleep(30);
      return reply(`${name} done`);
    });
    // 0 → (1, 2) → 3
    const batch = await createBatch({
      items: [item(agent.id, 'top'), item(agent.id, 'left', { depends_on: [0] }), item(agent.id, 'right', { depends_on: [0] }), item(agent.id, 'bottom', { depends_on: [1, 2] })],
      max_concurrency: 4,
    });
    const view = await runBatch(batch.batch_id, [dispatcher()]);
    expect(view.status).toBe('completed');
    expect(started.left!).toBeGreaterThan(started.top!);
    expect(started.right!).toBeGreaterThan(started.top!);
    expect(started.bottom!).toBeGreaterThan(Math.max(started.left!, started.right!));
    const bottom = server.requestsFor(batch.items[3]!.task_id)[0]!;
    const predecessors = (bottom.body.task as any).predecessors;
    expect(predecessors.map((p: any) => [p.index, p.status, p.result.content])).toEqual([
      [1, 'completed', 'left done'],
      [2, 'completed', 'right done'],
    ]);
    // An item's limits for a hosted agent ride in the brief (a webhook agent just sees them).
    expect((bottom.body.task as any).limits).toBeUndefined();
    // The top item got no context from the rest of the batch.
    expect((server.requestsFor(batch.items[0]!.task_id)[0]!.body.task as any).predecessors).toBeUndefined();
    expect(view.items[3].depends_on).toEqual([1, 2]);
  });

  it('fail_fast: a failed item cancels every item not started and refunds each in full', async () => {
    const { agent } = await agentWith(async (r) => {
      const name = String((r.body.task as any).description);
      if (name === 'breaks') return { status: 422, body: { error: 'cannot do this' } };
      return reply(`${name} done`);
    });
    const batch = await createBatch({
      items: [item(agent.id, 'breaks'), item(agent.id, 'after', { depends_on: [0] }), item(agent.id, 'after that', { depends_on: [1] })],
      policy: 'fail_fast',
    });
    const view = await runBatch(batch.batch_id, [dispatcher()]);
    expect(view.status).toBe('failed');
    expect(view.items.map((i: any) => i.status)).toEqual(['failed', 'cancelled', 'cancelled']);
    expect(view.failures.map((f: any) => f.index)).toEqual([0, 1, 2]);
    expect(view.failures[1].reason).toMatch(/policy fail_fast/);
    // Every escrow went back whole: each task's escrow account is empty and a refund of its full budget is planned.
    for (const it of view.items) {
      const entries = await t.app.db.select().from(ledgerEntries).where(eq(ledgerEntries.account, escrowAccount(it.task_id)));
      expect(entries.reduce((s, e) => s + e.amount, 0n)).toBe(0n);
      expect(it.refunded).toBe('100000');
    }
    expect(view.totals.refunded).toBe('300000');
  });

  it('fail_fast: an item whose predecessor was cancelled on its own is not left waiting: it is cancelled and refunded', async () => {
    const { agent } = await agentWith(async () => {
      await sleep(50);
      return reply('done');
    });
    const batch = await createBatch({ items: [item(agent.id, 'first'), item(agent.id, 'second', { depends_on: [0] }), item(agent.id, 'other')], policy: 'fail_fast', max_concurrency: 1 });
    // The client cancels item 0 alone before it runs (a single task's cancel, full refund).
    const cancelled = await call(t, payer, 'POST', `/v1/tasks/${batch.items[0]!.task_id}/cancel`, { reason: 'not needed' });
    expect(cancelled.status, JSON.stringify(cancelled.body)).toBe(200);
    const view = await runBatch(batch.batch_id, [dispatcher()]);
    expect(view.items.map((i: any) => i.status)).toEqual(['cancelled', 'cancelled', 'completed']);
    expect(view.items[1].failure).toMatch(/predecessor 0 .* ended cancelled without a result/);
    expect(view.items[1].refunded).toBe('100000');
    expect(view.status).toBe('partially_failed');
  });

  it('a hosted agent gets its predecessor’s result in its prompt, and its tokens, model calls and cost roll up', async () => {
    const { agent: researcher } = await agentWith(() => reply('Solar lanterns sell best in Kisumu'));
    const hosted = await registerAgent(t, owner, {
      name: 'Hosted Writer',
      capabilities: ['hostedwriter'],
      pricing: { base_rate: '1000' },
      runtime: { kind: 'hosted_llm', model: 'test-model', system_prompt: 'Write.' },
    });
    const batch = await createBatch({ items: [item(researcher.id, 'research'), item(hosted.id, 'write it up', { depends_on: [0], toolsets: [], max_iterations: 5 })] });
    const view = await runBatch(batch.batch_id, [dispatcher()]);
    expect(view.status).toBe('completed');
    const prompt = String(llm.requests.at(-1)!.messages.at(-1)!.content);
    expect(prompt).toContain('Results of the tasks this one depends on');
    expect(prompt).toContain('Solar lanterns sell best in Kisumu');
    expect(view.items[1].result.content).toContain('Solar lanterns sell best in Kisumu');
    expect(view.items[1].usage).toMatchObject({ tokens_used: 150, model_calls: 1 });
    const [row] = await t.app.db.select().from(tasks).where(eq(tasks.id, batch.items[1]!.task_id));
    expect(row!.runLimits).toEqual({ toolsets: [], max_iterations: 5 });
    expect(view.items[1].usage.llm_cost_usd).toBeGreaterThan(0);
    expect(view.totals.usage).toEqual({ tokens_used: 151, model_calls: 1, llm_cost_usd: view.items[1].usage.llm_cost_usd });
  });

  it('continue: the dependent still runs, told that its predecessor failed', async () => {
    const { server, agent } = await agentWith(async (r) => {
      const name = String((r.body.task as any).description);
      if (name === 'breaks') return { status: 422, body: { error: 'cannot do this' } };
      return reply(`${name} done`);
    });
    const batch = await createBatch({ items: [item(agent.id, 'breaks'), item(agent.id, 'after', { depends_on: [0] }), item(agent.id, 'alone')], policy: 'continue' });
    const view = await runBatch(batch.batch_id, [dispatcher()]);
    expect(view.status).toBe('partially_failed');
    expect(view.items.map((i: any) => i.status)).toEqual(['failed', 'completed', 'completed']);
    const brief = server.requestsFor(batch.items[1]!.task_id)[0]!.body.task as any;
    expect(brief.predecessors[0]).toMatchObject({ index: 0, status: 'failed', result: null });
    expect(brief.predecessors[0].failure).toBeTruthy();
    expect(view.failures).toHaveLength(1);
    expect(view.failures[0]).toMatchObject({ index: 0, refunded: '100000' });
    expect(view.failures[0].attempts).toBeGreaterThanOrEqual(1);
  });

  it('never runs more than max_concurrency items at once, across two dispatchers', async () => {
    let live = 0;
    let peak = 0;
    const { agent } = await agentWith(async () => {
      live++;
      peak = Math.max(peak, live);
      await sleep(80);
      live--;
      return reply('ok');
    });
    const batch = await createBatch({ items: Array.from({ length: 8 }, (_, n) => item(agent.id, `job ${n}`)), max_concurrency: 2 });
    const view = await runBatch(batch.batch_id, [dispatcher(), dispatcher()]);
    expect(view.status).toBe('completed');
    expect(peak).toBe(2);
  });

  it('refuses before anything is created: unknown items, cycles, max_spend, no matching agent, an offline agent', async () => {
    const { agent } = await agentWith(() => reply('x'));
    const before = (await t.app.db.select({ id: tasks.id }).from(tasks)).length;
    expectError(await call(t, payer, 'POST', '/v1/batches', { items: [item(agent.id, 'a', { depends_on: [3] })] }), 400, 'validation_error');
    expectError(
      await call(t, payer, 'POST', '/v1/batches', { items: [item(agent.id, 'a', { depends_on: [1] }), item(agent.id, 'b', { depends_on: [0] })] }),
      400,
      'validation_error',
    );
    const over = await call(t, payer, 'POST', '/v1/batches', { items: [item(agent.id, 'a'), item(agent.id, 'b')], max_spend: '200000' });
    expectError(over, 422, 'spend_limit_exceeded');
    expect(over.body.error.message).toMatch(/210000/); // 2 × 100 000 + the 10 000 batch fee
    const noMatch = await call(t, payer, 'POST', '/v1/batches', {
      items: [item(agent.id, 'a'), { agent_query: { query: 'no-such-capability-zz' }, description: 'b', budget: { amount: '100000', currency: 'USDC', chain: 'base' } }],
    });
    expectError(noMatch, 409, 'no_matching_agent');
    expect(noMatch.body.error.param).toBe('items.1.agent_query');
    expectError(await call(t, payer, 'POST', '/v1/batches', { items: [{ ...item(agent.id, 'a'), agent_query: { query: 'x' } }] }), 400, 'validation_error');
    expect((await t.app.db.select({ id: tasks.id }).from(tasks)).length).toBe(before);
  });

  it('resolves agent_query to an online agent whose base rate fits the budget', async () => {
    await agentWith(() => reply('pricey'), { capabilities: ['batchquery'], pricing: { base_rate: '900000' } });
    const { agent: cheap } = await agentWith(() => reply('cheap'), { capabilities: ['batchquery'], pricing: { base_rate: '1000' } });
    const batch = await createBatch({ items: [{ agent_query: { query: 'batchquery' }, description: 'q', budget: { amount: '100000', currency: 'USDC', chain: 'base' } }] });
    const view = (await call(t, payer, 'GET', `/v1/batches/${batch.batch_id}`)).body;
    expect(view.items[0].agent_id).toBe(cheap.id);
  });

  it('cancel cascades: items not started refunded in full, running ones interrupted; only the payer sees the batch', async () => {
    const { server, agent } = await agentWith(() => 'hang');
    const batch = await createBatch({ items: [item(agent.id, 'runs'), item(agent.id, 'waits', { depends_on: [0] })], max_concurrency: 1 });
    const d = dispatcher();
    const end = Date.now() + 10_000;
    while ((await call(t, payer, 'GET', `/v1/batches/${batch.batch_id}`)).body.items[0].stage !== 'running') {
      await d.runOnce();
      if (Date.now() > end) throw new Error('never started');
      await sleep(20);
    }
    expectError(await call(t, stranger, 'GET', `/v1/batches/${batch.batch_id}`), 404, 'batch_not_found');
    expectError(await call(t, payer, 'POST', `/v1/batches/${batch.batch_id}/cancel`, {}), 409, 'work_in_progress');
    const cancelled = await call(t, payer, 'POST', `/v1/batches/${batch.batch_id}/cancel`, { accept_partial_refund: true });
    expect(cancelled.status, JSON.stringify(cancelled.body)).toBe(200);
    expect(cancelled.body.status).toBe('cancelled');
    expect(cancelled.body.items.map((i: any) => i.status)).toEqual(['cancelled', 'cancelled']);
    const [running, waiting] = await Promise.all(batch.items.map((i) => t.app.db.select().from(tasks).where(eq(tasks.id, i.task_id))));
    expect(waiting![0]!.refundAmount).toBe(100_000n);
    expect(running![0]!.refundAmount! + running![0]!.cancellationFee!).toBe(100_000n);
    // The running agent hears of it (the heartbeat sees its lease gone).
    const heard = Date.now() + 5_000;
    while (server.requestsFor(batch.items[0]!.task_id, 'task.cancelled').length === 0) {
      if (Date.now() > heard) throw new Error('the agent was never told');
      await sleep(25);
    }
  });
});
