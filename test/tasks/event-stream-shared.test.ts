/**
 * The event streams of a task share its reads: one status read per change, whoever follows it
 * (the payer's streams and the agent's alike), each stream still checking its own caller's access
 * in that read. Runs on the test database (PGlite, or Postgres when the suite is given one).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { createTask, fundAndStart, registerAgent, textResult } from '../helpers/fixtures.js';
import { readEvents, type SseEvent, type SseReader } from '../helpers/sse.js';

let t: TestApp;
let baseUrl: string;
const payer = wallet(0);
const owner = wallet(1);
const payout = wallet(2);

beforeAll(async () => {
  t = await buildTestApp({ EVENT_STREAM_HEARTBEAT_MS: '20000' });
  baseUrl = await t.app.listen({ host: '127.0.0.1', port: 0 });
});
const opened: SseReader[] = [];
afterEach(() => vi.restoreAllMocks());
afterAll(async () => {
  await Promise.all(opened.map((s) => s.cancel())); // a failed test leaves streams open
  await t?.close();
});

async function openStream(taskId: string, account: typeof payer): Promise<SseReader> {
  const res = await fetch(`${baseUrl}/v1/tasks/${taskId}/events`, { headers: await t.auth(account) });
  expect(res.status).toBe(200);
  const reader = readEvents(res);
  opened.push(reader);
  return reader;
}

const statuses = (events: SseEvent[]) => events.filter((e) => e.event === 'status');
const progressOf = (e: SseEvent) => (JSON.parse(e.data) as { progress_percent: number | null }).progress_percent;

describe('the event streams of a task', () => {
  it('share one status read per change across streams and callers, each checking its own access', { timeout: 30_000 }, async () => {
    const agent = await registerAgent(t, owner, { payout_address: payout.address });
    const taskId = await createTask(t, payer, agent.id);
    await fundAndStart(t, taskId);

    const { tasks, taskLifecycle } = t.app.services;
    const sharedReads = vi.spyOn(tasks, 'sharedStatus');
    // Four streams of the payer, two of the agent's owner, one of its payout wallet.
    const callers = [payer, payer, payer, payer, owner, owner, payout];
    const streams = await Promise.all(callers.map((account) => openStream(taskId, account)));
    await Promise.all(streams.map((s) => s.until((events) => statuses(events).length === 1)));
    expect(sharedReads).not.toHaveBeenCalled(); // each first event is its caller's own read

    await taskLifecycle.reportProgress(taskId, { progress_percent: 30 });
    const seen = await Promise.all(streams.map((s) => s.until((events) => statuses(events).some((e) => progressOf(e) === 30))));
    expect(sharedReads).toHaveBeenCalledTimes(1);
    // the same snapshot, to the byte, for every caller
    const sent = seen.map((events) => events.find((e) => progressOf(e) === 30)!.data);
    expect(new Set(sent).size).toBe(1);

    // The payout wallet is no longer the agent's: its stream ends at the next change, unshown.
    const patched = await t.app.inject({
      method: 'PATCH',
      url: `/v1/agents/${agent.id}`,
      headers: await t.auth(owner),
      payload: { payout_address: wallet(3).address },
    });
    expect(patched.statusCode, patched.body).toBe(200);
    await taskLifecycle.reportProgress(taskId, { progress_percent: 60 });
    const ended = await streams[6]!.done;
    expect(statuses(ended).map(progressOf)).not.toContain(60);
    await Promise.all(streams.slice(0, 6).map((s) => s.until((events) => statuses(events).some((e) => progressOf(e) === 60))));
    expect(sharedReads).toHaveBeenCalledTimes(2);

    await taskLifecycle.markCompleted(taskId, textResult());
    for (const stream of streams.slice(0, 6)) expect(statuses(await stream.done).at(-1)!.data).toMatch(/"status":"completed"/);
    expect(sharedReads).toHaveBeenCalledTimes(3);
  });

  it('coalesces changes made during a read into one more read, whose view every stream ends with', { timeout: 30_000 }, async () => {
    const agent = await registerAgent(t, owner);
    const taskId = await createTask(t, payer, agent.id);
    await fundAndStart(t, taskId);
    const { tasks, taskLifecycle } = t.app.services;
    const streams = await Promise.all([0, 1, 2].map(() => openStream(taskId, payer)));
    await Promise.all(streams.map((s) => s.until((events) => statuses(events).length === 1)));

    // Hold the first shared read until five more changes have committed.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const read = tasks.sharedStatus.bind(tasks);
    const sharedReads = vi.spyOn(tasks, 'sharedStatus').mockImplementationOnce(async (id) => {
      await held;
      return read(id);
    });
    for (const percent of [10, 20, 30, 40, 50, 60]) await taskLifecycle.reportProgress(taskId, { progress_percent: percent });
    await new Promise((resolve) => setTimeout(resolve, 200)); // on Postgres, the LISTEN connection has them all
    release();
    await Promise.all(streams.map((s) => s.until((events) => statuses(events).some((e) => progressOf(e) === 60))));
    expect(sharedReads).toHaveBeenCalledTimes(2); // the held read, then one for the five changes during it
    await taskLifecycle.markFailed(taskId, 'done testing');
    await Promise.all(streams.map((s) => s.done));
  });
});
