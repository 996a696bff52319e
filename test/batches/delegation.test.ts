import { and, eq, inArray } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chainTransfers, ledgerEntries, tasks } from '../../src/db/schema.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import { escrowAccount } from '../../src/ledger/accounts.js';
import { resolveDispute } from '../../src/escrow/disputes.js';
import { accountBalance, checkLedger } from '../../src/ledger/ledger.js';
import { AgentServer, type AgentReply, type Received } from '../helpers/agent-server.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, createTask, fundAndStart, registerAgent } from '../helpers/fixtures.js';
import { LlmServer, type ChatAnswer, type ChatRequest } from '../helpers/llm-server.js';

/**
 * Sub-delegation: a hosted agent whose owner enabled the `delegation` toolset hires children with
 * delegate_task, paid from its task's escrow. A real dispatcher runs the parent against a loopback
 * chat-completions server and the children as webhook agents (or hosted ones) on loopback; the
 * money is read from the real ledger.
 */

const SECRET = 'delegation-test-webhook-secret-0123456789';
const owner = wallet(1);
const childOwner = wallet(2);
const payer = wallet(3);
const BUDGET = 1_000_000n;
let t: TestApp;
let llm: LlmServer;
const servers: AgentServer[] = [];
const dispatchers: Dispatcher[] = [];

/** The model's answers, per scenario: the brief of a run names its scenario as `[s-…]`. */
const scripts = new Map<string, (req: ChatRequest) => ChatAnswer>();

beforeAll(async () => {
  llm = await new LlmServer((req) => {
    const brief = String(req.messages[1]?.content ?? '');
    const script = scripts.get(/\[(s-[a-z0-9-]+)\]/.exec(brief)?.[1] ?? '');
    return script ? script(req) : 'no script for this brief';
  }).start();
  t = await buildTestApp(
    {
      LLM_BASE_URL: llm.baseUrl,
      LLM_API_KEY: 'sk-delegation-test',
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const reply = (content: string): AgentReply => ({
  status: 200,
  body: { result: { type: 'text', content, metadata: { tokens_used: 1, model: 'm', duration_seconds: 0 } } },
});
const describeOf = (r: Received) => String((r.body.task as { description: string }).description);

async function webhookAgent(handler: (r: Received) => AgentReply | Promise<AgentReply>, capabilities = ['research']) {
  const server = await new AgentServer(SECRET, handler).start();
  servers.push(server);
  const agent = await registerAgent(t, childOwner, {
    name: 'Child',
    capabilities,
    pricing: { base_rate: '1000' },
    runtime: { kind: 'webhook', url: server.url, secret: SECRET, timeout_ms: 20_000 },
  });
  return { server, agent };
}

async function hostedAgent(name: string, toolsets: string[], who = owner) {
  return registerAgent(t, who, {
    name,
    capabilities: [name.toLowerCase().replace(/\W+/g, '-')],
    pricing: { base_rate: '1000' },
    runtime: { kind: 'hosted_llm', model: 'test-model', system_prompt: `You are ${name}.`, toolsets },
  });
}

/** A parent task for `agentId`, created by the payer and funded (the dispatcher runs it). */
async function fundedParent(agentId: string, scenario: string, extra: Record<string, unknown> = {}): Promise<string> {
  const id = await createTask(t, payer, agentId, { description: `[${scenario}] Coordinate the launch`, budget: { amount: BUDGET.toString(), currency: 'USDC', chain: 'base' }, ...extra });
  await t.app.services.taskLifecycle.markFunded(id, { amount: BUDGET, txHash: null, actor: 'test' });
  return id;
}

function dispatcher(): Dispatcher {
  const d = createDispatcher(t.app, {});
  dispatchers.push(d);
  return d;
}

async function taskRow(id: string) {
  const [row] = await t.app.db.select().from(tasks).where(eq(tasks.id, id));
  return row!;
}

async function childrenOf(parentId: string) {
  return t.app.db.select().from(tasks).where(eq(tasks.parentTaskId, parentId)).orderBy(tasks.createdAt, tasks.batchIndex);
}

/** Runs the dispatcher until `done` holds. */
async function runUntil(d: Dispatcher, done: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    await d.runOnce();
    if (await done()) return;
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(20);
  }
}

const ended = (id: string) => async () => !['created', 'funded', 'in_progress'].includes((await taskRow(id)).status);

/** The last tool message the model was sent in `req`, parsed. */
function lastTool(req: ChatRequest): any {
  const tool = [...req.messages].reverse().find((m) => m.role === 'tool');
  return tool ? JSON.parse(String(tool.content)) : undefined;
}

const delegate = (id: string, tasks: unknown[]): ChatAnswer => ({ tool_calls: [{ id, name: 'delegate_task', arguments: { tasks } }] });

/** Ledger balance of each task's escrow account. */
async function escrowBalances(ids: string[]): Promise<bigint[]> {
  return Promise.all(ids.map((id) => accountBalance(t.app.db, escrowAccount(id))));
}

async function movementsOf(kind: string, taskIds: string[]) {
  return t.app.db
    .select()
    .from(ledgerEntries)
    .where(and(eq(ledgerEntries.kind, kind), inArray(ledgerEntries.taskId, taskIds)));
}

describe('delegate_task: a hosted agent hires children paid from its escrow', () => {
  it('hires 4 children (never more than 3 at once), gets their results in input order, and the books balance', async () => {
    const delays = [250, 120, 60, 40];
    const log: { n: number; start: number; end: number }[] = [];
    let live = 0;
    let peak = 0;
    // The first three wait for one another (at most 3 s), so all of them are in flight together however slow the machine.
    const gate: (() => void)[] = [];
    const { server, agent: child } = await webhookAgent(async (r) => {
      const n = Number(/part (\d)/.exec(describeOf(r))?.[1]);
      const start = Date.now();
      live++;
      peak = Math.max(peak, live);
      if (gate.length < 3) {
        await new Promise<void>((resolve) => {
          gate.push(resolve);
          if (gate.length === 3) for (const go of gate) go();
          setTimeout(resolve, 3000);
        });
      }
      await sleep(delays[n]!);
      live--;
      log.push({ n, start, end: Date.now() });
      if (n === 2) return { status: 422, body: { error: 'cannot research part 2' } };
      return reply(`findings of part ${n}`);
    });
    const parentAgent = await hostedAgent('Coordinator', ['delegation']);
    const parts = [0, 1, 2, 3].map((n) => ({ agent_id: child.id, description: `Research part ${n}`, budget: '100000' }));
    scripts.set('s-four', (req) => (lastTool(req) ? 'Launch plan from four findings.' : delegate('call_1', parts)));
    const parentId = await fundedParent(parentAgent.id, 's-four');

    const d = dispatcher();
    await runUntil(d, ended(parentId));
    await d.drain();

    // ≤ 3 at once, and the 4th started only once one of the first three had ended.
    expect(peak).toBe(3);
    const fourth = log.find((l) => l.n === 3)!;
    expect(fourth.start).toBeGreaterThanOrEqual(Math.min(...log.filter((l) => l.n !== 3).map((l) => l.end)) - 5);
    // They did not end in input order, but come back in it.
    expect(log.map((l) => l.n)).not.toEqual([0, 1, 2, 3]);
    const parentCalls = llm.requests.filter((r) => String(r.messages[1]?.content).includes('[s-four]'));
    expect(parentCalls).toHaveLength(2);
    expect(parentCalls[0]!.tools?.map((x) => x.function.name)).toEqual(['delegate_task']);
    const answer = lastTool(parentCalls[1]!);
    expect(answer.children.map((c: any) => [c.index, c.status, c.result?.content ?? null])).toEqual([
      [0, 'completed', 'findings of part 0'],
      [1, 'completed', 'findings of part 1'],
      [2, 'failed', null],
      [3, 'completed', 'findings of part 3'],
    ]);
    expect(answer.children[2].failure).toMatch(/422/);
    expect(answer.escrow).toEqual({ carved: '400000', returned: '100000', remaining: '700000' });

    const parent = await taskRow(parentId);
    expect(parent).toMatchObject({ status: 'completed', escrowStatus: 'released' });
    const kids = await childrenOf(parentId);
    const kidIds = kids.map((k) => k.id);
    expect(kids.map((k) => [k.status, k.payerAddress, k.parentTaskId, k.delegationDepth])).toEqual([
      ['completed', payer.address.toLowerCase(), parentId, 1],
      ['completed', payer.address.toLowerCase(), parentId, 1],
      ['failed', payer.address.toLowerCase(), parentId, 1],
      ['completed', payer.address.toLowerCase(), parentId, 1],
    ]);
    expect(server.requestsFor(kidIds[0]!)).toHaveLength(1);

    // Money: 4 carves of 100 000 from the parent, the failed child's escrow came back (no chain refund),
    // the children's agents are paid from their own escrows, the parent's agent gets what remained.
    const carves = await movementsOf('carve', kidIds);
    expect(carves.filter((e) => e.account === escrowAccount(parentId)).reduce((s, e) => s + e.amount, 0n)).toBe(-400_000n);
    const returns = await movementsOf('carve_return', kidIds);
    expect(returns.filter((e) => e.account === escrowAccount(parentId)).map((e) => e.amount)).toEqual([100_000n]);
    expect(kids[2]).toMatchObject({ refundAmount: 100_000n, refundStatus: 'returned', escrowStatus: 'refunded' });
    const transfers = await t.app.db.select().from(chainTransfers).where(inArray(chainTransfers.taskId, [parentId, ...kidIds]));
    expect(transfers.filter((x) => x.kind === 'refund')).toEqual([]);
    expect(transfers.filter((x) => x.taskId !== parentId).map((x) => [x.kind, x.amount])).toEqual([
      ['release', 97_500n],
      ['release', 97_500n],
      ['release', 97_500n],
    ]);
    const release = transfers.find((x) => x.taskId === parentId)!;
    expect(release).toMatchObject({ kind: 'release', amount: 682_500n, toAddress: owner.address.toLowerCase() }); // 700 000 − 2.5 %
    expect(await escrowBalances([parentId, ...kidIds])).toEqual([0n, 0n, 0n, 0n, 0n]);
    expect(await checkLedger(t.app.db)).toMatchObject({ ok: true });

    // The parent's status shows its children and what they cost; a child names its parent.
    const status = (await call(t, payer, 'GET', `/v1/tasks/${parentId}/status`)).body;
    expect(status.delegation.children.map((c: any) => [c.index, c.status, c.escrow, c.released, c.refunded])).toEqual([
      [0, 'completed', '100000', '97500', '0'],
      [1, 'completed', '100000', '97500', '0'],
      [2, 'failed', '100000', '0', '100000'],
      [3, 'completed', '100000', '97500', '0'],
    ]);
    expect(status.delegation.totals).toMatchObject({ children: 4, running: 0, escrow: '400000', refunded: '100000', spent: '300000' });
    // Usage rolls up: the parent's 2 model calls (150 tokens each) and the 3 answers' 1 token each.
    expect(status.delegation.totals.usage).toMatchObject({ tokens_used: 303, model_calls: 2 });
    const childStatus = (await call(t, payer, 'GET', `/v1/tasks/${kidIds[0]}/status`)).body;
    expect(childStatus.parent_task_id).toBe(parentId);
    expect(childStatus.delegation).toBeUndefined();
    // The children are a batch of the payer: max_concurrency 3, paid from the parent (no payment, no fee).
    const batch = (await call(t, payer, 'GET', `/v1/batches/${kids[0]!.batchId}`)).body;
    expect(batch).toMatchObject({ parent_task_id: parentId, max_concurrency: 3, policy: 'continue', status: 'partially_failed' });
    expect(batch.totals).toMatchObject({ escrow: '400000', fee: '0', refunded: '100000' });
  });

  it('a batch item that delegates: the batch totals include its children’s releases, refunds and usage, to the unit', async () => {
    const { agent: child } = await webhookAgent(async (r) => (/part 1/.test(describeOf(r)) ? { status: 422, body: { error: 'no' } } : reply(`done ${describeOf(r)}`)));
    const parentAgent = await hostedAgent('Batch coordinator', ['delegation']);
    const parts = [0, 1].map((n) => ({ agent_id: child.id, description: `Batch part ${n}`, budget: '100000' }));
    scripts.set('s-batch-item', (req) => (lastTool(req) ? 'Merged.' : delegate('call_b', parts)));
    const res = await call(t, payer, 'POST', '/v1/batches', {
      items: [{ agent_id: parentAgent.id, description: '[s-batch-item] Coordinate', budget: { amount: '500000', currency: 'USDC', chain: 'base' } }],
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const itemId = res.body.items[0].task_id as string;
    const d = dispatcher();
    await runUntil(d, ended(itemId));
    await d.drain();

    const kids = await childrenOf(itemId);
    expect(kids.map((k) => k.status)).toEqual(['completed', 'failed']);
    const transfers = await t.app.db.select().from(chainTransfers).where(inArray(chainTransfers.taskId, [itemId, ...kids.map((k) => k.id)]));
    const paid = (kind: string) => transfers.filter((x) => x.kind === kind).reduce((s, x) => s + x.amount, 0n);
    // The item's agent got what remained (500 000 − 100 000 carved and kept by the finished child) less 2.5 %, the child's agent 97 500.
    expect(paid('release')).toBe(97_500n + 390_000n);
    const batch = (await call(t, payer, 'GET', `/v1/batches/${res.body.batch_id}`)).body;
    expect(batch.items[0].released).toBe('390000'); // the item alone
    expect(batch.totals).toMatchObject({ escrow: '500000', released: paid('release').toString(), refunded: paid('refund').toString() });
    // Usage: the item's own (2 model calls) plus its completed child's answer (1 token).
    const status = (await call(t, payer, 'GET', `/v1/tasks/${itemId}/status`)).body;
    expect(batch.totals.usage).toEqual(status.delegation.totals.usage);
    expect(batch.totals.usage.model_calls).toBe(2);
    expect(batch.totals.usage.tokens_used).toBe(batch.items[0].usage.tokens_used + 1);
  });

  it('refuses children asking more than what remains, with a clear tool error; the run goes on', async () => {
    const { agent: child } = await webhookAgent(() => reply('done'));
    const parentAgent = await hostedAgent('Spender', ['delegation']);
    scripts.set('s-over', (req) => {
      const tool = lastTool(req);
      if (!tool) return delegate('call_a', [{ agent_id: child.id, description: 'Big part', budget: '600000' }]);
      if (tool.children) return delegate('call_b', [{ agent_id: child.id, description: 'Too big', budget: '500000' }]);
      return `Stopped: ${tool.error}`;
    });
    const parentId = await fundedParent(parentAgent.id, 's-over');
    const d = dispatcher();
    await runUntil(d, ended(parentId));
    await d.drain();

    const calls = llm.requests.filter((r) => String(r.messages[1]?.content).includes('[s-over]'));
    expect(calls).toHaveLength(3);
    const refusal = lastTool(calls[2]!);
    expect(refusal.error).toMatch(/exceed what remains of the escrow of task .*\(400000 atomic USDC\)/);
    expect(refusal.error).toMatch(/500000/);
    expect(await childrenOf(parentId)).toHaveLength(1);
    const parent = await taskRow(parentId);
    expect(parent.status).toBe('completed');
    expect(String((parent.result as any).content)).toMatch(/^Stopped: /);
    // The parent's agent is paid what its children did not take: 400 000 − 2.5 %.
    const [release] = await t.app.db.select().from(chainTransfers).where(eq(chainTransfers.taskId, parentId));
    expect(release).toMatchObject({ kind: 'release', amount: 390_000n });
    expect(await escrowBalances([parentId])).toEqual([0n]);
  });

  it('children cannot delegate (depth 2): no tool is offered, a call is refused, and so is the service', async () => {
    const child = await hostedAgent('Helper', ['delegation', 'http_fetch'], childOwner);
    const parentAgent = await hostedAgent('Lead', ['delegation']);
    scripts.set('s-depth', (req) => (lastTool(req) ? 'Lead done.' : delegate('call_1', [{ agent_query: 'helper', description: '[s-depth-child] Help', budget: '200000' }])));
    scripts.set('s-depth-child', (req) => {
      const tool = lastTool(req);
      if (!tool) return delegate('call_x', [{ agent_id: child.id, description: 'Grandchild', budget: '1000' }]);
      return `Helper done (${tool.error})`;
    });
    const parentId = await fundedParent(parentAgent.id, 's-depth');
    const d = dispatcher();
    await runUntil(d, ended(parentId));
    await d.drain();

    const [kid] = await childrenOf(parentId);
    expect(kid).toMatchObject({ agentId: child.id, status: 'completed', delegationDepth: 1 });
    const childCalls = llm.requests.filter((r) => String(r.messages[1]?.content).includes('[s-depth-child]'));
    expect(childCalls).toHaveLength(2);
    // Its owner enabled delegation, but a child is never offered delegate_task.
    expect(childCalls[0]!.tools?.map((x) => x.function.name)).toEqual(['http_fetch']);
    expect(lastTool(childCalls[1]!).error).toMatch(/unknown tool: delegate_task/);
    expect(await childrenOf(kid!.id)).toEqual([]);
    await expect(
      t.app.services.batches.createChildren(kid!.id, [{ agent_id: child.id, description: 'x', budget: { amount: '1000', currency: 'USDC', chain: 'base' } }], 'k', new Date()),
    ).rejects.toMatchObject({ code: 'invalid_state', message: expect.stringMatching(/children cannot delegate/) });
  });

  it('a task may narrow the toolsets away: a batch item with toolsets [] gets no delegate_task', async () => {
    const parentAgent = await hostedAgent('Narrowed', ['delegation']);
    scripts.set('s-narrow', () => 'Done alone.');
    const res = await call(t, payer, 'POST', '/v1/batches', {
      items: [{ agent_id: parentAgent.id, description: '[s-narrow] Alone', budget: { amount: '100000', currency: 'USDC', chain: 'base' }, toolsets: [] }],
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const d = dispatcher();
    await runUntil(d, ended(res.body.items[0].task_id));
    const calls = llm.requests.filter((r) => String(r.messages[1]?.content).includes('[s-narrow]'));
    expect(calls).toHaveLength(1);
    expect(calls[0]!.tools).toBeUndefined();
  });

  it('cancelling the parent cancels its running children: agents told, their refunds back in the parent’s escrow', async () => {
    const { server, agent: child } = await webhookAgent(() => 'hang');
    const parentAgent = await hostedAgent('Canceller', ['delegation']);
    scripts.set('s-cancel', (req) =>
      lastTool(req)
        ? 'never'
        : delegate('call_1', [
            { agent_id: child.id, description: 'Slow part 0', budget: '100000' },
            { agent_id: child.id, description: 'Slow part 1', budget: '100000' },
          ]),
    );
    const parentId = await fundedParent(parentAgent.id, 's-cancel');
    const d = dispatcher();
    await runUntil(d, async () => {
      const kids = await childrenOf(parentId);
      return kids.length === 2 && kids.every((k) => k.status === 'in_progress');
    });
    const cancelled = await call(t, payer, 'POST', `/v1/tasks/${parentId}/cancel`, { reason: 'changed plans', accept_partial_refund: true });
    expect(cancelled.status, JSON.stringify(cancelled.body)).toBe(200);
    // The children were cancelled first (each agent keeps 10 %, 90 000 each back), then the parent on
    // what it held: 1 000 000 − 200 000 + 180 000 = 980 000, of which its agent keeps 10 %.
    expect(cancelled.body).toMatchObject({ status: 'cancelled', cancellation_fee: '98000', refund: { amount: '882000', status: 'pending' } });
    const kids = await childrenOf(parentId);
    expect(kids.map((k) => [k.status, k.cancellationFee, k.refundAmount, k.refundStatus])).toEqual([
      ['cancelled', 10_000n, 90_000n, 'returned'],
      ['cancelled', 10_000n, 90_000n, 'returned'],
    ]);
    // The running children hear of it (the heartbeat sees their lease gone), and so does no one else.
    const heard = Date.now() + 5_000;
    while (kids.some((k) => server.requestsFor(k.id, 'task.cancelled').length === 0)) {
      if (Date.now() > heard) throw new Error('a child agent was never told');
      await sleep(25);
    }
    await d.drain();
    expect(llm.requests.filter((r) => String(r.messages[1]?.content).includes('[s-cancel]'))).toHaveLength(1);
    expect(await escrowBalances([parentId, ...kids.map((k) => k.id)])).toEqual([0n, 0n, 0n]);
    const transfers = await t.app.db.select().from(chainTransfers).where(inArray(chainTransfers.taskId, [parentId, ...kids.map((k) => k.id)]));
    // Paid out: the parent's refund to the payer, its agent's fee, each child agent's fee; nothing else.
    expect(transfers.reduce((s, x) => s + x.amount, 0n)).toBe(BUDGET);
    expect(transfers.filter((x) => x.kind === 'refund').map((x) => [x.taskId, x.toAddress, x.amount])).toEqual([[parentId, payer.address.toLowerCase(), 882_000n]]);
    expect(await checkLedger(t.app.db)).toMatchObject({ ok: true });
  });

  it('a parent that times out ends its children too; every unit of its escrow is accounted for', async () => {
    const { server, agent: child } = await webhookAgent(() => 'hang');
    const parentAgent = await hostedAgent('Slowpoke', ['delegation']);
    // 4 children that never answer: 3 run (each times out with at most what its parent had left), the 4th
    // starts after them and is still running when the parent's own deadline comes.
    const parts = [0, 1, 2, 3].map((n) => ({ agent_id: child.id, description: `Endless part ${n}`, budget: '100000', timeout_seconds: 3600 }));
    scripts.set('s-timeout', (req) => (lastTool(req) ? 'never' : delegate('call_1', parts)));
    const parentId = await fundedParent(parentAgent.id, 's-timeout', { timeout_seconds: 3 });
    const d = dispatcher();
    await runUntil(d, ended(parentId));
    await d.drain();
    const parent = await taskRow(parentId);
    expect(parent.status).toBe('failed');
    expect(parent.failureReason).toMatch(/Timed out/);
    const kids = await childrenOf(parentId);
    // A child never outlives its parent's deadline (its timeout is what the parent had left).
    for (const k of kids) expect(k.timeoutSeconds).toBeLessThanOrEqual(3);
    expect(kids.map((k) => k.status)).toEqual(['failed', 'failed', 'failed', 'cancelled']);
    expect(kids[3]!.cancelReason).toMatch(/Its parent task .* failed: Timed out/);
    expect(kids.map((k) => k.refundStatus)).toEqual(['returned', 'returned', 'returned', 'returned']);
    const heard = Date.now() + 5_000;
    while (server.requestsFor(kids[3]!.id, 'task.cancelled').length === 0) {
      if (Date.now() > heard) throw new Error('the running child was never told');
      await sleep(25);
    }
    expect(await escrowBalances([parentId, ...kids.map((k) => k.id)])).toEqual([0n, 0n, 0n, 0n, 0n]);
    const transfers = await t.app.db.select().from(chainTransfers).where(inArray(chainTransfers.taskId, [parentId, ...kids.map((k) => k.id)]));
    expect(transfers.reduce((s, x) => s + x.amount, 0n)).toBe(BUDGET);
    // The parent's refund is what its escrow held once every child came back: all of it but the 4th child's cancellation fee.
    const refund = transfers.find((x) => x.taskId === parentId && x.kind === 'refund')!;
    expect(refund).toMatchObject({ toAddress: payer.address.toLowerCase(), amount: BUDGET - kids[3]!.cancellationFee! });
    expect(await checkLedger(t.app.db)).toMatchObject({ ok: true });
  });

  it('a dispute of the running parent stops its children; their refunds come back to its frozen escrow, which the operator splits', async () => {
    const { agent: child } = await webhookAgent(() => 'hang');
    const parentAgent = await hostedAgent('Disputed', ['delegation']);
    scripts.set('s-dispute', (req) => (lastTool(req) ? 'never' : delegate('call_1', [{ agent_id: child.id, description: 'Slow part', budget: '300000' }])));
    const parentId = await fundedParent(parentAgent.id, 's-dispute');
    const d = dispatcher();
    await runUntil(d, async () => (await childrenOf(parentId)).some((k) => k.status === 'in_progress'));
    const opened = await call(t, payer, 'POST', `/v1/tasks/${parentId}/dispute`, { reason: 'It hired the wrong agent' });
    expect(opened.status, JSON.stringify(opened.body)).toBe(201);
    const [kid] = await childrenOf(parentId);
    expect(kid).toMatchObject({ status: 'cancelled', cancellationFee: 30_000n, refundAmount: 270_000n, refundStatus: 'returned' });
    expect(await taskRow(parentId)).toMatchObject({ status: 'disputed', escrowStatus: 'frozen' });
    // 1 000 000 − 300 000 carved + 270 000 back: what the operator splits.
    expect(await accountBalance(t.app.db, escrowAccount(parentId))).toBe(970_000n);
    await expect(
      resolveDispute(t.app.db, t.app.clock, { disputeId: opened.body.dispute_id, payerAmount: 500_000n, agentAmount: 480_000n, platformFeeBps: 250 }),
    ).rejects.toMatchObject({ code: 'amount_mismatch' });
    await resolveDispute(t.app.db, t.app.clock, { disputeId: opened.body.dispute_id, payerAmount: 500_000n, agentAmount: 470_000n, platformFeeBps: 250 });
    await d.drain();
    expect(await escrowBalances([parentId, kid!.id])).toEqual([0n, 0n]);
    expect(await checkLedger(t.app.db)).toMatchObject({ ok: true });
  });

  it('concurrent carves from one parent never overdraw it; the same call again gets the same children', async () => {
    const { agent: child } = await webhookAgent(() => reply('x'));
    const parentAgent = await hostedAgent('Racer', ['delegation']);
    const item = (n: number) => [{ agent_id: child.id, description: `Part ${n}`, budget: { amount: '400000', currency: 'USDC' as const, chain: 'base' as const } }];
    for (let round = 0; round < 3; round++) {
      const parentId = await createTask(t, payer, parentAgent.id, { budget: { amount: BUDGET.toString(), currency: 'USDC', chain: 'base' } });
      await fundAndStart(t, parentId, BUDGET);
      const since = new Date(Date.now() - 60_000);
      const outcomes = await Promise.allSettled([0, 1, 2, 3].map((n) => t.app.services.batches.createChildren(parentId, item(n), `1:${n}`, since)));
      const won = outcomes.filter((o) => o.status === 'fulfilled');
      const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
      expect(won).toHaveLength(2); // 2 × 400 000 fit in 1 000 000; a third does not
      for (const l of lost) expect(l.reason).toMatchObject({ code: 'spend_limit_exceeded', message: expect.stringMatching(/200000 atomic USDC/) });
      const kids = await childrenOf(parentId);
      expect(kids.reduce((s, k) => s + k.fundedAmount!, 0n)).toBe(800_000n);
      expect(await accountBalance(t.app.db, escrowAccount(parentId))).toBe(200_000n);
      // A rerun of the parent making a call it made before gets that call's children back.
      const first = (won[0] as PromiseFulfilledResult<{ batchId: string }>).value.batchId;
      const key = outcomes.findIndex((o) => o.status === 'fulfilled' && o.value.batchId === first);
      await expect(t.app.services.batches.createChildren(parentId, item(key), `1:${key}`, since)).resolves.toEqual({ batchId: first, reused: true });
      expect(await childrenOf(parentId)).toHaveLength(2);
    }
    expect(await checkLedger(t.app.db)).toMatchObject({ ok: true });
  });
});
