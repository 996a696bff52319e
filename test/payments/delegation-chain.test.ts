import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Address } from 'viem';
import { eq } from 'drizzle-orm';
import { tasks } from '../../src/db/schema.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import { checkLedger } from '../../src/ledger/ledger.js';
import { AgentServer } from '../helpers/agent-server.js';
import { LlmServer, type ChatRequest } from '../helpers/llm-server.js';
import { startPaidApp, type PaidApp } from '../helpers/paid.js';

/**
 * Sub-delegation with real money: the payer hires and funds a hosted agent with the stock x402
 * client on anvil; the agent hires two children with delegate_task (one delivers, one fails); the
 * settlement worker pays on chain. The child's agent is paid from the carved escrow, the failed
 * child's escrow goes back to the parent's (no refund transfer to the payer), the parent's agent is
 * paid what remained, and the books reconcile with the chain.
 */

const SECRET = 'delegation-chain-webhook-secret-0123456789';
const ADMIN_KEY = 'admin-key-for-tests-0123456789';
let p: PaidApp;
let llm: LlmServer;
let good: AgentServer;
let bad: AgentServer;
let dispatcher: Dispatcher;
const payout: Record<'parent' | 'good' | 'bad', Address> = {
  parent: privateKeyToAccount(generatePrivateKey()).address,
  good: privateKeyToAccount(generatePrivateKey()).address,
  bad: privateKeyToAccount(generatePrivateKey()).address,
};
const ids: Record<string, string> = {};
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (res: Response): Promise<any> => res.json();

function lastTool(req: ChatRequest): any {
  const tool = [...req.messages].reverse().find((m) => m.role === 'tool');
  return tool ? JSON.parse(String(tool.content)) : undefined;
}

beforeAll(async () => {
  llm = await new LlmServer((req) => {
    const tool = lastTool(req);
    if (tool) return `Plan: ${tool.children.map((c: any) => `${c.index}=${c.status}`).join(', ')}`;
    return {
      tool_calls: [
        {
          id: 'call_1',
          name: 'delegate_task',
          arguments: {
            tasks: [
              { agent_id: ids.good, description: 'Find three buyers', budget: '200000' },
              { agent_id: ids.bad, description: 'Find three sellers', budget: '100000' },
            ],
          },
        },
      ],
    };
  }).start();
  good = await new AgentServer(SECRET, () => ({
    status: 200,
    body: { result: { type: 'text', content: 'Kisumu, Nakuru, Eldoret', metadata: { tokens_used: 5, model: 'scout', duration_seconds: 1 } } },
  })).start();
  bad = await new AgentServer(SECRET, () => ({ status: 400, body: { error: 'cannot do that' } })).start();
  p = await startPaidApp({ LLM_BASE_URL: llm.baseUrl, LLM_API_KEY: 'sk-chain-test', ADMIN_API_KEY: ADMIN_KEY, DISPATCH_BACKOFF_MS: '20', DISPATCH_HEARTBEAT_MS: '200' });
  const owner = p.demo(5);
  const runtimes = {
    parent: { kind: 'hosted_llm', model: 'test-model', system_prompt: 'You plan launches.', toolsets: ['delegation'] },
    good: { kind: 'webhook', url: good.url, secret: SECRET },
    bad: { kind: 'webhook', url: bad.url, secret: SECRET },
  };
  for (const [name, runtime] of Object.entries(runtimes)) {
    const res = await fetch(`${p.baseUrl}/v1/agents`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
      body: JSON.stringify({ name, capabilities: [name], pricing: { base_rate: '100000' }, payout_address: payout[name as keyof typeof payout], runtime }),
    });
    expect(res.status).toBe(201);
    ids[name] = (await json(res)).id;
  }
  dispatcher = createDispatcher(p.app);
});
afterAll(async () => {
  await dispatcher.stop(0);
  await p.close();
  await Promise.all([llm.stop(), good.stop(), bad.stop()]);
});

describe('sub-delegation on chain', () => {
  it('pays the child’s agent on chain from the carved escrow, returns the failed child’s, pays the parent what remained, and reconciles', async () => {
    const client = p.demo(0);
    const pay = p.payFetch(client);
    const post = (path: string, body: unknown) => pay(`${p.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const created = await json(await post('/v1/tasks', { agent_id: ids.parent, description: 'Plan the lantern launch', budget: { amount: '1000000', currency: 'USDC', chain: 'base' } }));
    expect((await post(`/v1/tasks/${created.task_id}/fund`, { amount: '1000000' })).status).toBe(200);
    const parentId: string = created.task_id;
    const afterFunding = await p.balance(client.address);

    for (let i = 0; i < 200; i++) {
      await dispatcher.runOnce();
      const [row] = await p.app.db.select().from(tasks).where(eq(tasks.id, parentId));
      if (row!.status === 'completed') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await dispatcher.drain();
    await p.settleAll();

    const kids = await p.app.db.select().from(tasks).where(eq(tasks.parentTaskId, parentId)).orderBy(tasks.batchIndex);
    expect(kids.map((k) => [k.status, k.escrowStatus, k.refundStatus])).toEqual([
      ['completed', 'released', null],
      ['failed', 'refunded', 'returned'],
    ]);
    // On chain: the good child's agent got 200 000 − 2.5 %, the failing one nothing, the parent's agent
    // 1 000 000 − 200 000 spent = 800 000, less 2.5 %; the payer got nothing back (the failed child's
    // escrow went back to the parent, whose agent was paid).
    expect(await p.balance(payout.good)).toBe(195_000n);
    expect(await p.balance(payout.bad)).toBe(0n);
    expect(await p.balance(payout.parent)).toBe(780_000n);
    expect(await p.balance(client.address)).toBe(afterFunding);
    const [parent] = await p.app.db.select().from(tasks).where(eq(tasks.id, parentId));
    expect((parent!.result as any).content).toBe('Plan: 0=completed, 1=failed');

    const status = await json(await pay(`${p.baseUrl}/v1/tasks/${parentId}/status`));
    expect(status.payouts).toMatchObject([{ kind: 'release', to: payout.parent, amount: '780000', status: 'confirmed' }]);
    expect(status.delegation.totals).toMatchObject({ children: 2, escrow: '300000', released: '195000', refunded: '100000', spent: '200000' });
    const books = await json(await fetch(`${p.baseUrl}/v1/admin/reconciliation`, { headers: { 'x-admin-key': ADMIN_KEY } }));
    expect(books.ok, JSON.stringify(books)).toBe(true);
    expect(await checkLedger(p.app.db)).toMatchObject({ ok: true, total: 0n });
  }, 60_000);
});
