/**
 * GET /v1/batches/{id}/events: one x402 payment (the stock client) streams the batch view after
 * every change of any of its items until every item has ended; Last-Event-ID resumes it without
 * paying again; only the payer may follow it. Runs on the test database (PGlite, or Postgres).
 */
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { textResult } from '../helpers/fixtures.js';
import { startPaidApp, type PaidApp } from '../helpers/paid.js';
import { readEvents, type SseEvent } from '../helpers/sse.js';

let p: PaidApp;
let agentId: string;
const client = () => p.demo(0);
const STREAM_PRICE = 5000n;

beforeAll(async () => {
  p = await startPaidApp({ EVENT_STREAM_HEARTBEAT_MS: '100', PRICE_TASK_EVENTS: STREAM_PRICE.toString() });
  const res = await fetch(`${p.baseUrl}/v1/agents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(p.demo(5)) },
    body: JSON.stringify({ name: 'Batch streamer', capabilities: ['streaming'], pricing: { base_rate: '1000' }, payout_address: privateKeyToAccount(generatePrivateKey()).address }),
  });
  agentId = ((await res.json()) as { id: string }).id;
}, 60_000);
afterAll(() => p?.close());

async function createBatch(): Promise<{ batch_id: string; items: { task_id: string }[] }> {
  const item = (description: string, extra: Record<string, unknown> = {}) => ({ agent_id: agentId, description, budget: { amount: '10000', currency: 'USDC', chain: 'base' }, ...extra });
  const res = await p.payFetch(client())(`${p.baseUrl}/v1/batches`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ items: [item('first'), item('second', { depends_on: [0] })] }),
  });
  expect(res.status).toBe(201);
  return res.json() as Promise<{ batch_id: string; items: { task_id: string }[] }>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const views = (events: SseEvent[]) => events.filter((e) => e.event === 'batch').map((e) => JSON.parse(e.data) as any);

describe('a batch’s event stream', () => {
  it('is paid once and streams every item’s changes until the batch has ended', { timeout: 60_000 }, async () => {
    const batch = await createBatch();
    const [first, second] = batch.items.map((i) => i.task_id) as [string, string];
    const before = await p.balance(client().address);
    const res = await p.payFetch(client())(`${p.baseUrl}/v1/batches/${batch.batch_id}/events`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reading = readEvents(res);
    await reading.until((events) => views(events).length === 1);

    const { taskLifecycle } = p.app.services;
    await taskLifecycle.markStarted(first);
    await reading.until((events) => views(events).some((v) => v.items[0].stage === 'running'));
    await taskLifecycle.reportProgress(first, { progress_percent: 60 });
    await reading.until((events) => views(events).some((v) => v.items[0].progress_percent === 60));
    await taskLifecycle.markCompleted(first, textResult('first done'));
    await reading.until((events) => views(events).some((v) => v.items[0].status === 'completed'));
    await taskLifecycle.markStarted(second);
    await reading.until((events) => events.some((e) => e.comment === 'heartbeat')); // a quiet stream is kept open
    await taskLifecycle.markCompleted(second, textResult('second done'));
    const events = await reading.done;

    const seen = views(events);
    expect(seen[0]).toMatchObject({ batch_id: batch.batch_id, status: 'running' });
    expect(seen.at(-1)).toMatchObject({ status: 'completed', totals: { completed: 2 } });
    expect(seen.at(-1).items.map((i: { result: { content: string } }) => i.result.content)).toEqual(['first done', 'second done']);
    expect(events.some((e) => e.comment === 'heartbeat')).toBe(true);
    // One payment for the whole stream.
    expect(await p.balance(client().address)).toBe(before - STREAM_PRICE);

    // Reconnecting with the last event id within the window is not charged again, and the stream
    // (of an ended batch) answers its final view and ends.
    const lastId = events.filter((e) => e.event === 'batch').at(-1)!.id!;
    const again = await fetch(`${p.baseUrl}/v1/batches/${batch.batch_id}/events`, { headers: { 'last-event-id': lastId } });
    expect(again.status).toBe(200);
    const resumed = await readEvents(again).done;
    expect(views(resumed).at(-1)).toMatchObject({ status: 'completed' });
    expect(await p.balance(client().address)).toBe(before - STREAM_PRICE);
  });

  it('is the payer’s only: another wallet gets 404 and is not charged', { timeout: 60_000 }, async () => {
    const batch = await createBatch();
    const stranger = p.demo(2);
    const before = await p.balance(stranger.address);
    const res = await p.payFetch(stranger)(`${p.baseUrl}/v1/batches/${batch.batch_id}/events`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('batch_not_found');
    expect(await p.balance(stranger.address)).toBe(before);
  });
});
