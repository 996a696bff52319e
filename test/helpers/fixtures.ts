import type { PrivateKeyAccount } from 'viem/accounts';
import { count } from 'drizzle-orm';
import type { PgTable } from 'drizzle-orm/pg-core';
import { expect } from 'vitest';
import type { TestApp } from './app.js';

export interface AgentFixture {
  id: string;
  owner: PrivateKeyAccount;
}

export async function registerAgent(
  t: TestApp,
  owner: PrivateKeyAccount,
  body: Record<string, unknown> = {},
): Promise<AgentFixture> {
  const res = await t.app.inject({
    method: 'POST',
    url: '/v1/agents',
    headers: await t.auth(owner),
    payload: {
      name: 'Copy Writer',
      description: 'Writes product copy and blurbs',
      capabilities: ['copywriting'],
      pricing: { base_rate: '500000' },
      payout_address: owner.address,
      ...body,
    },
  });
  expect(res.statusCode, res.body).toBe(201);
  return { id: res.json().id, owner };
}

export async function createTask(
  t: TestApp,
  payer: PrivateKeyAccount,
  agentId: string,
  body: Record<string, unknown> = {},
): Promise<string> {
  const res = await t.app.inject({
    method: 'POST',
    url: '/v1/tasks',
    headers: await t.auth(payer),
    payload: {
      agent_id: agentId,
      description: 'Write a blurb',
      budget: { amount: '1000000', currency: 'USDC', chain: 'base' },
      ...body,
    },
  });
  expect(res.statusCode, res.body).toBe(201);
  return res.json().task_id;
}

/** Moves a created task to in_progress through the services (what payments + dispatcher will do). */
export async function fundAndStart(t: TestApp, taskId: string, amount = 1_000_000n): Promise<void> {
  await t.app.services.taskLifecycle.markFunded(taskId, { amount, txHash: null, actor: 'test' });
  await t.app.services.taskLifecycle.markStarted(taskId);
}

export const textResult = (content = 'A bright, light solar lantern.') => ({
  type: 'text' as const,
  content,
  metadata: { tokens_used: 120, model: 'test-model', duration_seconds: 3 },
});

/** Sends a request signed by `who` and returns status + parsed body. */
export async function call(
  t: TestApp,
  who: PrivateKeyAccount | null,
  method: 'GET' | 'POST' | 'PATCH',
  url: string,
  payload?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; headers: Record<string, unknown> }> {
  const res = await t.app.inject({
    method,
    url,
    headers: { ...(who ? await t.auth(who) : {}), ...headers },
    ...(payload !== undefined ? { payload: payload as object } : {}),
  });
  return { status: res.statusCode, body: res.body ? res.json() : null, headers: res.headers };
}

export function expectError(res: { status: number; body: any }, status: number, code: string): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body.error.code).toBe(code);
  expect(typeof res.body.error.message).toBe('string');
  expect(res.body.error.request_id).toMatch(/^req_/);
  expect(typeof res.body.error.retryable).toBe('boolean');
}

/** Number of rows in a table of the test app's database. */
export async function rowCount(t: TestApp, table: PgTable): Promise<number> {
  const [row] = await t.db.database.db.select({ n: count() }).from(table);
  return row?.n ?? 0;
}
