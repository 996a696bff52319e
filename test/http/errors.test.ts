import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agents, tasks } from '../../src/db/schema.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, expectError, registerAgent, rowCount } from '../helpers/fixtures.js';

let t: TestApp;
beforeAll(async () => {
  t = await buildTestApp({ BODY_LIMIT_BYTES: '4096' });
});
afterAll(() => t.close());

const payer = wallet(3);

describe('the error shape everywhere', () => {
  it('answers unknown routes with 404 and a request id', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/nothing' });
    expect(res.statusCode).toBe(404);
    expect(res.json().error).toMatchObject({ type: 'not_found_error', code: 'not_found' });
    expect(res.headers['x-request-id']).toBe(res.json().error.request_id);
  });

  it('refuses malformed JSON, wrong media types and oversized bodies with 4xx', async () => {
    const headers = { ...(await t.auth(payer)), 'content-type': 'application/json' };
    const bad = await t.app.inject({ method: 'POST', url: '/v1/tasks', headers, payload: '{"agent_id":' });
    expectError({ status: bad.statusCode, body: bad.json() }, 400, 'validation_error');
    const xml = await t.app.inject({ method: 'POST', url: '/v1/tasks', headers: { ...headers, 'content-type': 'application/xml' }, payload: '<a/>' });
    expectError({ status: xml.statusCode, body: xml.json() }, 415, 'unsupported_media_type');
    const big = await t.app.inject({ method: 'POST', url: '/v1/tasks', headers, payload: JSON.stringify({ description: 'x'.repeat(5000) }) });
    expectError({ status: big.statusCode, body: big.json() }, 413, 'payload_too_large');
    const empty = await t.app.inject({ method: 'POST', url: '/v1/tasks', headers, payload: '' });
    expect(empty.statusCode).toBe(400);
  });

  it('survives hostile payloads without a 500 or a partial row', async () => {
    const agent = await registerAgent(t, wallet(1));
    const tasksBefore = await rowCount(t, tasks);
    const agentsBefore = await rowCount(t, agents);
    const hostile: unknown[] = [
      null,
      [],
      'string',
      42,
      { __proto__: { admin: true }, agent_id: agent.id },
      JSON.parse('{"constructor":{"prototype":{"polluted":true}},"agent_id":"x"}'),
      { agent_id: agent.id, description: { $ne: null }, budget: { amount: '1000000', currency: 'USDC', chain: 'base' } },
      { agent_id: agent.id, description: 'x', budget: { amount: '9'.repeat(40), currency: 'USDC', chain: 'base' } },
      { agent_id: agent.id, description: 'x', budget: { amount: '99999999999999999999', currency: 'USDC', chain: 'base' } },
      { agent_id: agent.id, description: '\u0000nul', budget: { amount: '1000000', currency: 'USDC', chain: 'base' } },
      { agent_id: `${agent.id}' or '1'='1`, description: 'x', budget: { amount: '1000000', currency: 'USDC', chain: 'base' } },
    ];
    for (const payload of hostile) {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/tasks',
        headers: { ...(await t.auth(payer)), 'content-type': 'application/json' },
        payload: JSON.stringify(payload),
      });
      expect(res.statusCode, `${JSON.stringify(payload)} → ${res.body}`).toBeGreaterThanOrEqual(400);
      expect(res.statusCode, `${JSON.stringify(payload)} → ${res.body}`).toBeLessThan(500);
      expect(res.json().error.code).toBeTypeOf('string');
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const tasksAfter = await rowCount(t, tasks);
    const agentsAfter = await rowCount(t, agents);
    expect(tasksAfter).toBe(tasksBefore);
    expect(agentsAfter).toBe(agentsBefore);
  });

  it('sets security headers and exposes the request id to browsers', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/healthz', headers: { origin: 'https://ui.example' } });
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['access-control-allow-origin']).toBe('https://ui.example');
    expect(String(res.headers['access-control-expose-headers'])).toContain('x-request-id');
  });

  it('reports liveness and readiness', async () => {
    expect((await call(t, null, 'GET', '/healthz')).body).toEqual({ status: 'ok' });
    expect((await call(t, null, 'GET', '/readyz')).body).toEqual({ status: 'ready', database: t.db.database.kind });
  });
});

describe('rate limits', () => {
  it('answers rate_limited with 429, Retry-After and the error shape', async () => {
    const limited = await buildTestApp({ RATE_LIMIT_MAX: '3' });
    try {
      const statuses: number[] = [];
      let last: { statusCode: number; headers: Record<string, unknown>; json(): any } | undefined;
      for (let i = 0; i < 5; i++) {
        last = await limited.app.inject({ method: 'GET', url: '/v1/agents' });
        statuses.push(last.statusCode);
      }
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
      expectError({ status: last!.statusCode, body: last!.json() }, 429, 'rate_limited');
      expect(last!.json().error.retryable).toBe(true);
      expect(last!.headers['retry-after']).toBeDefined();
      // health checks are not limited
      expect((await limited.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    } finally {
      await limited.close();
    }
  });
});
