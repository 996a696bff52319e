import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { expect } from 'vitest';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import { AgentServer } from './agent-server.js';
import { startPaidApp, type PaidApp } from './paid.js';

/**
 * What the client-side tests (SDK, CLI, MCP server) run against: the real service with x402 on
 * and anvil, its dispatcher running, and one webhook agent that answers `<description> done`
 * after 150 ms, or fails (400) on the description `breaks`.
 */
export interface ClientHarness {
  p: PaidApp;
  agentId: string;
  stop(): Promise<void>;
}

export async function startClientHarness(name: string): Promise<ClientHarness> {
  const secret = `${name}-webhook-secret-0123456789abcdef`.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  const agentServer = await new AgentServer(secret, async (r) => {
    const description = String((r.body.task as { description?: string }).description);
    if (description === 'breaks') return { status: 400, body: { error: 'cannot do that' } };
    await new Promise((resolve) => setTimeout(resolve, 150));
    return { status: 200, body: { result: { type: 'text', content: `${description} done`, metadata: { tokens_used: 3, model: 'm', duration_seconds: 0 } } } };
  }).start();
  const p = await startPaidApp({ DISPATCH_BACKOFF_MS: '20', DISPATCH_HEARTBEAT_MS: '200' });
  const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  const res = await fetch(`${p.baseUrl}/v1/agents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(p.demo(5)) },
    body: JSON.stringify({
      name: `${name} Writer`,
      capabilities: [`${slug}-writing`],
      pricing: { base_rate: '100000' },
      payout_address: privateKeyToAccount(generatePrivateKey()).address,
      runtime: { kind: 'webhook', url: agentServer.url, secret },
    }),
  });
  expect(res.status).toBe(201);
  const agentId = ((await res.json()) as { id: string }).id;
  const dispatcher: Dispatcher = createDispatcher(p.app);
  dispatcher.start(20);
  return {
    p,
    agentId,
    stop: async () => {
      await dispatcher.stop(0);
      await p.close();
      await agentServer.stop();
    },
  };
}
