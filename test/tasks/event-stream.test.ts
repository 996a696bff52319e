/**
 * GET /v1/tasks/{id}/events: one x402 payment (the stock client) streams the task's status,
 * progress and intermediate result as server-sent events until it completes; heartbeats keep the
 * stream open; Last-Event-ID resumes it without paying again; a forged or foreign id pays.
 * Runs on the test database (PGlite, or Postgres when the suite is given one).
 */
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPaidApp, type PaidApp } from '../helpers/paid.js';
import { textResult } from '../helpers/fixtures.js';
import { readEvents, type SseEvent } from '../helpers/sse.js';

let p: PaidApp;
let agentId: string;
const client = () => p.demo(0);
const STREAM_PRICE = 5000n;

beforeAll(async () => {
  p = await startPaidApp({ EVENT_STREAM_HEARTBEAT_MS: '100', PRICE_TASK_EVENTS: STREAM_PRICE.toString() });
  const owner = p.demo(5);
  const res = await fetch(`${p.baseUrl}/v1/agents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
    body: JSON.stringify({ name: 'Streamer', capabilities: ['copywriting'], pricing: { base_rate: '1000' }, payout_address: privateKeyToAccount(generatePrivateKey()).address }),
  });
  agentId = ((await res.json()) as { id: string }).id;
});
afterAll(() => p.close());

async function fundedTask(): Promise<string> {
  const pay = p.payFetch(client());
  const post = (path: string, body: unknown) =>
    pay(`${p.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const created = await post('/v1/tasks', { agent_id: agentId, description: 'Stream me', budget: { amount: '10000', currency: 'USDC', chain: 'base' } });
  const taskId = ((await created.json()) as { task_id: string }).task_id;
  expect((await post(`/v1/tasks/${taskId}/fund`, { amount: '10000' })).status).toBe(200);
  return taskId;
}

const statuses = (events: SseEvent[]) => events.filter((e) => e.event === 'status').map((e) => JSON.parse(e.data) as Record<string, unknown>);

describe('a task’s event stream', () => {
  it('is paid once and streams status, progress and the intermediate result until the task completes', { timeout: 60_000 }, async () => {
    const taskId = await fundedTask();
    const before = await p.balance(client().address);
    const res = await p.payFetch(client())(`${p.baseUrl}/v1/tasks/${taskId}/events`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('payment-response')).toBeTruthy();
    const reading = readEvents(res);

    const { taskLifecycle } = p.app.services;
    await reading.until((events) => statuses(events).length === 1);
    await taskLifecycle.markStarted(taskId);
    await reading.until((events) => statuses(events).some((s) => s.stage === 'running'));
    await taskLifecycle.reportProgress(taskId, { progress_percent: 40, intermediate_result: { draft: 'Light…' } });
    await reading.until((events) => statuses(events).some((s) => s.progress_percent === 40));
    await reading.until((events) => events.some((e) => e.comment === 'heartbeat'));
    await taskLifecycle.markCompleted(taskId, textResult('Light up your nights.'));
    const events = await reading.done;

    const seen = statuses(events);
    expect(seen[0]).toMatchObject({ task_id: taskId, status: 'in_progress', stage: 'queued' });
    expect(seen).toContainEqual(expect.objectContaining({ status: 'in_progress', progress_percent: 40, intermediate_result: { draft: 'Light…' } }));
    expect(seen.at(-1)).toMatchObject({ status: 'completed', progress_percent: 100 });
    // ids count up and name the stream to resume
    const ids = events.filter((e) => e.event === 'status').map((e) => e.id!);
    expect(ids.map((id) => Number(id.split(':')[1]))).toEqual(ids.map((_, i) => i));
    // one payment for the whole stream
    expect(before - (await p.balance(client().address))).toBe(STREAM_PRICE);
  });

  it('resumes with Last-Event-ID without paying again, only for its task; a forged id pays', { timeout: 60_000 }, async () => {
    const taskId = await fundedTask();
    const res = await p.payFetch(client())(`${p.baseUrl}/v1/tasks/${taskId}/events`);
    const reading = readEvents(res);
    const [first] = await reading.until((events) => statuses(events).length === 1);
    await reading.cancel(); // the connection drops

    await p.app.services.taskLifecycle.markStarted(taskId);
    const before = await p.balance(client().address);
    // a plain fetch: no payment, no signature, only the id of the last event received
    const resumed = await fetch(`${p.baseUrl}/v1/tasks/${taskId}/events`, { headers: { 'last-event-id': first!.id! } });
    expect(resumed.status).toBe(200);
    const again = readEvents(resumed);
    const [next] = await again.until((events) => statuses(events).length === 1);
    expect(JSON.parse(next!.data)).toMatchObject({ task_id: taskId, stage: 'running' });
    expect(Number(next!.id!.split(':')[1])).toBe(Number(first!.id!.split(':')[1]) + 1);
    await p.app.services.taskLifecycle.markFailed(taskId, 'gave up');
    expect(statuses(await again.done).at(-1)).toMatchObject({ status: 'failed' });
    expect(await p.balance(client().address)).toBe(before);

    // another task, or a tampered id: pay as usual
    const other = await fundedTask();
    expect((await fetch(`${p.baseUrl}/v1/tasks/${other}/events`, { headers: { 'last-event-id': first!.id! } })).status).toBe(402);
    const [body, mac, n] = [first!.id!.split('.')[0]!, first!.id!.split('.')[1]!.split(':')[0]!, '0'];
    const forged = `${body}.${mac.slice(0, -2)}${mac.endsWith('AA') ? 'AB' : 'AA'}:${n}`;
    expect((await fetch(`${p.baseUrl}/v1/tasks/${taskId}/events`, { headers: { 'last-event-id': forged } })).status).toBe(402);
  });

  it('refuses a stranger before any payment, and answers 404 for an unknown task', async () => {
    const taskId = await fundedTask();
    const stranger = p.demo(1);
    const before = await p.balance(stranger.address);
    const res = await p.payFetch(stranger)(`${p.baseUrl}/v1/tasks/${taskId}/events`);
    expect(res.status).toBe(403);
    expect(await p.balance(stranger.address)).toBe(before);
    expect((await p.payFetch(client())(`${p.baseUrl}/v1/tasks/task_00000000000000000000/events`)).status).toBe(404);
  });
});
