import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Address } from 'viem';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import type { SettlementWorker } from '../../src/escrow/settlement-worker.js';
import { checkLedger } from '../../src/ledger/ledger.js';
import { AgentServer } from '../helpers/agent-server.js';
import { LlmServer } from '../helpers/llm-server.js';
import { startPaidApp, type PaidApp } from '../helpers/paid.js';

const SECRET = 'dispatch-flow-webhook-secret-0123456789';
const LLM_KEY = 'sk-operator-test-key';
let p: PaidApp;
let llm: LlmServer;
let webhookAgent: AgentServer;
let failingAgent: AgentServer;
let dispatcher: Dispatcher;
let settlement: SettlementWorker;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (res: Response): Promise<any> => res.json();
const payoutOf: Record<string, Address> = {};
const agentIds: Record<string, string> = {};

beforeAll(async () => {
  llm = await new LlmServer((req) => `Blurb for: ${(req.messages[1]?.content ?? '').match(/Task for \w+/)?.[0] ?? 'nothing'}`).start();
  webhookAgent = await new AgentServer(SECRET, () => ({
    status: 200,
    body: { result: { type: 'image', content: 'https://img.example/a.png', metadata: { tokens_used: null, model: 'pixel-1', duration_seconds: 2 } } },
  })).start();
  failingAgent = await new AgentServer(SECRET, () => ({ status: 400, body: { error: 'cannot do that' } })).start();
  p = await startPaidApp({ LLM_BASE_URL: llm.baseUrl, LLM_API_KEY: LLM_KEY, DISPATCH_BACKOFF_MS: '20', DISPATCH_HEARTBEAT_MS: '200' });
  const owner = p.demo(5);
  const runtimes: Record<string, unknown> = {
    webhook: { kind: 'webhook', url: webhookAgent.url, secret: SECRET },
    hosted: { kind: 'hosted_llm', model: 'test-model', system_prompt: 'You are a copywriter. Answer with the blurb only.' },
    failing: { kind: 'webhook', url: failingAgent.url, secret: SECRET },
  };
  for (const [name, runtime] of Object.entries(runtimes)) {
    payoutOf[name] = privateKeyToAccount(generatePrivateKey()).address;
    const res = await fetch(`${p.baseUrl}/v1/agents`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
      body: JSON.stringify({ name, capabilities: [name], pricing: { base_rate: '100000' }, payout_address: payoutOf[name], runtime }),
    });
    expect(res.status).toBe(201);
    agentIds[name] = (await json(res)).id;
  }
  dispatcher = createDispatcher(p.app);
  settlement = p.app.escrow!.createWorker(p.app.db, p.app.clock);
});
afterAll(async () => {
  await dispatcher.stop(0);
  await p.close();
  await Promise.all([llm.stop(), webhookAgent.stop(), failingAgent.stop()]);
});

describe('funded tasks run by the dispatcher, paid and settled on chain', () => {
  it('a webhook agent and a hosted agent are paid, a failing one is refunded', async () => {
    const client = p.demo(0);
    const pay = p.payFetch(client);
    const post = (path: string, body: unknown) =>
      pay(`${p.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const taskOf: Record<string, string> = {};
    for (const name of Object.keys(agentIds)) {
      const created = await json(await post('/v1/tasks', { agent_id: agentIds[name], description: `Task for ${name}`, budget: { amount: '1000000', currency: 'USDC', chain: 'base' } }));
      taskOf[name] = created.task_id;
      expect((await post(`/v1/tasks/${created.task_id}/fund`, { amount: '1000000' })).status).toBe(200);
    }
    const balanceAfterFunding = await p.balance(client.address);

    // the worker role: dispatch, then settle the payouts
    const status = async (id: string) => json(await pay(`${p.baseUrl}/v1/tasks/${id}/status`));
    let polls = 0;
    for (let i = 0; i < 200; i++) {
      await dispatcher.runOnce();
      await dispatcher.drain();
      await settlement.runOnce();
      const states = await Promise.all(Object.values(taskOf).map(status));
      polls += states.length;
      const settled = states.every((s) => s.status !== 'in_progress' && s.payouts.length > 0 && s.payouts.every((x: { status: string }) => x.status === 'confirmed'));
      if (settled) break;
      await new Promise((r) => setTimeout(r, 50));
    }

    const webhook = await status(taskOf.webhook!);
    const hosted = await status(taskOf.hosted!);
    const failing = await status(taskOf.failing!);
    expect(webhook).toMatchObject({ status: 'completed', escrow_status: 'released' });
    expect(hosted).toMatchObject({ status: 'completed', escrow_status: 'released' });
    expect(failing).toMatchObject({ status: 'failed', escrow_status: 'refunded' });
    expect(await p.balance(payoutOf.webhook!)).toBe(975_000n);
    expect(await p.balance(payoutOf.hosted!)).toBe(975_000n);
    expect(await p.balance(payoutOf.failing!)).toBe(0n);
    // the client got the failed escrow back and paid only the polls since funding (0.001 each)
    expect(await p.balance(client.address)).toBe(balanceAfterFunding + 1_000_000n - BigInt(polls) * 1000n - 3n * 1000n);

    const hostedResult = await json(await pay(`${p.baseUrl}/v1/tasks/${taskOf.hosted}/result`));
    expect(hostedResult.result).toMatchObject({ type: 'text', metadata: { tokens_used: 150, model: 'test-model' } });
    expect(hostedResult.result.content).toBe('Blurb for: Task for hosted');
    // a fresh context: the provider saw exactly the agent's system prompt and the task's brief
    expect(llm.requests).toHaveLength(1);
    expect(llm.requests[0]!.messages.map((m) => m.role)).toEqual(['system', 'user']);
    expect(llm.requests[0]!.messages[0]!.content).toContain('You are a copywriter.');
    expect(llm.requests[0]!.authorization).toBe(`Bearer ${LLM_KEY}`);
    const webhookResult = await json(await pay(`${p.baseUrl}/v1/tasks/${taskOf.webhook}/result`));
    expect(webhookResult.result).toMatchObject({ type: 'image', content: 'https://img.example/a.png' });
    expect(failingAgent.requestsFor(taskOf.failing!)).toHaveLength(1);
    expect(await checkLedger(p.app.db)).toMatchObject({ ok: true, total: 0n });
  }, 60_000);
});
