import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, createTask, expectError, fundAndStart, registerAgent } from '../helpers/fixtures.js';

/**
 * The result hash rule as README and OpenAPI state it, checked from the agent's side with its
 * own code (not the service's canonicalJson): `result_hash` = SHA-256 (hex) of the result's
 * canonical JSON, keys sorted at every level; the result reads back in that order.
 */
function sortKeysDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeysDeep);
  if (value === null || typeof value !== 'object') return value;
  const obj = value as Record<string, unknown>;
  return Object.fromEntries(Object.keys(obj).sort().map((k) => [k, sortKeysDeep(obj[k])]));
}
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

let t: TestApp;
beforeAll(async () => {
  t = await buildTestApp();
});
afterAll(() => t.close());

describe('result_hash', () => {
  const owner = wallet(1);
  const payer = wallet(0);
  // Keys deliberately out of order, at every level, with an array of objects and non-ASCII text.
  const result = {
    type: 'structured',
    metadata: { tokens_used: 42, model: 'test-model', duration_seconds: 1.5, zeta: { b: 1, a: [{ y: 2, x: 1 }] } },
    content: { title: 'Lantern – night édition', bullets: ['b', 'a'], score: 0.5, nested: { z: true, m: null, a: 'first' } },
  };
  const sent = JSON.stringify({ result });
  const canonical = JSON.stringify(sortKeysDeep(result));
  let taskId = '';

  it('is the SHA-256 of the canonical JSON an agent computes itself, not of the bytes it sent', async () => {
    const agent = await registerAgent(t, owner);
    taskId = await createTask(t, payer, agent.id);
    await fundAndStart(t, taskId);
    const res = await t.app.inject({
      method: 'POST',
      url: `/v1/tasks/${taskId}/deliver`,
      headers: { ...(await t.auth(owner)), 'content-type': 'application/json' },
      payload: sent,
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().result_hash).toBe(sha256(canonical));
    expect(res.json().result_hash).not.toBe(sha256(JSON.stringify(result)));
  });

  it('is accepted by the claim when the agent hashes its canonical JSON, refused when it hashes its own bytes', async () => {
    const own = await call(t, owner, 'POST', `/v1/tasks/${taskId}/claim`, { result_hash: sha256(canonical) });
    expect(own.body?.error?.code, JSON.stringify(own.body)).not.toBe('result_hash_mismatch');
    const bytes = await call(t, owner, 'POST', `/v1/tasks/${taskId}/claim`, { result_hash: sha256(JSON.stringify(result)) });
    expectError(bytes, 409, 'result_hash_mismatch');
  });

  it('comes back with its keys in canonical order, so the answer’s result hashes to result_hash', async () => {
    const res = await t.app.inject({ method: 'GET', url: `/v1/tasks/${taskId}/result`, headers: await t.auth(payer) });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json();
    expect(JSON.stringify(body.result)).toBe(canonical);
    expect(sha256(JSON.stringify(body.result))).toBe(body.result_hash);
    expect(res.body).toContain(`"result":${canonical}`);
  });
});
