/**
 * The SDK (sdk/src) against the real service: x402 on, anvil, a webhook agent run by the dispatcher.
 * Every payment is made by the SDK through the stock @x402/fetch client, under its own caps.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startClientHarness, type ClientHarness } from '../helpers/client-harness.js';
import type { PaidApp } from '../helpers/paid.js';
import { SpendLimitError, TaskEscrowClient, usdc, type Transport, type TaskStatus } from '../../sdk/src/index.js';

let p: PaidApp;
let harness: ClientHarness;
let agentId: string;

beforeAll(async () => {
  harness = await startClientHarness('SDK');
  ({ p, agentId } = harness);
}, 60_000);
afterAll(async () => {
  await harness?.stop();
});

const client = (n: number, spend = { maxPerCall: usdc('2'), maxPerSession: usdc('10') }, extra: Partial<ConstructorParameters<typeof TaskEscrowClient>[0]> = {}) =>
  new TaskEscrowClient({ baseUrl: p.baseUrl, account: p.demo(n), spend, pollIntervalMs: 50, ...extra });

describe('the SDK against the service', () => {
  it('searches, then hireAndWait funds above $1 under the caller’s per-call cap and returns the result over the stream', async () => {
    const sdk = client(0);
    const before = await p.balance(sdk.account.address);
    const found = await sdk.searchAgents('sdk-writing');
    expect(found.agents.map((a) => a.id)).toContain(agentId);

    const seen: TaskStatus[] = [];
    const transports: Transport[] = [];
    const done = await sdk.hireAndWait(
      { agent_id: agentId, description: 'a tagline', budget: usdc('1.5') },
      { onProgress: (s) => seen.push(s), onTransport: (t) => transports.push(t) },
    );
    expect(done.funded.amount).toBe('1500000');
    expect(done.status.status).toBe('completed');
    expect(done.result?.result.content).toBe('a tagline done');
    expect(done.result?.result_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(transports).toEqual(['sse']);
    expect(seen.at(-1)?.status).toBe('completed');

    // The session meter and the chain agree: search + create + (escrow + fund fee) + stream + result.
    const net = await sdk.network();
    const expected =
      BigInt(net.prices.search_agents) + BigInt(net.prices.create_task) + 1_500_000n + BigInt(net.prices.fund_task) + BigInt(net.prices.task_events) + BigInt(net.prices.task_result);
    expect(sdk.spending().spent).toBe(expected);
    expect(await p.balance(sdk.account.address)).toBe(before - expected);

    // receipts() lists exactly those payments, with their transactions.
    const receipts = await sdk.receipts();
    expect(receipts.reduce((s, r) => s + BigInt(r.amount), 0n)).toBe(expected);
    expect(receipts).toHaveLength(5);
    expect(receipts.filter((r) => r.kind === 'escrow_funding').map((r) => [r.task_id, r.amount])).toEqual([[done.task_id, String(1_500_000n + BigInt(net.prices.fund_task))]]);
    for (const r of receipts) {
      expect(r.status).toBe('booked');
      expect(r.tx_hash).toMatch(/^0x[0-9a-f]{64}$/);
      expect(r.payer.toLowerCase()).toBe(sdk.account.address.toLowerCase());
    }
  });

  it('events() is an async iterator of status views ending with the terminal one', async () => {
    const sdk = client(0);
    const { task_id } = await sdk.hire({ agent_id: agentId, description: 'iterated', budget: '200000' });
    const views: string[] = [];
    for await (const view of sdk.events(task_id)) views.push(view.status);
    expect(views.at(-1)).toBe('completed');
    expect(views.slice(0, -1).every((s) => s === 'in_progress')).toBe(true);
  });

  it('batch: one payment, results in input order, and the partial-failure report', async () => {
    const sdk = client(1);
    const before = await p.balance(sdk.account.address);
    const progress: string[] = [];
    const out = await sdk.batch(
      [
        { agent_id: agentId, description: 'first', budget: '200000' },
        { agent_id: agentId, description: 'breaks', budget: '150000' },
        { agent_id: agentId, description: 'third', budget: '100000', depends_on: [0] },
      ],
      { policy: 'continue', onProgress: (b) => progress.push(b.status) },
    );
    expect(out.status).toBe('partially_failed');
    expect(out.results.map((r) => [r.index, r.status, r.result?.content ?? null])).toEqual([
      [0, 'completed', 'first done'],
      [1, 'failed', null],
      [2, 'completed', 'third done'],
    ]);
    expect(out.failures).toEqual([expect.objectContaining({ index: 1, task_id: out.results[1]!.task_id, refunded: '150000' })]);
    expect(out.results[1]!.failure).toBeTruthy();
    expect(progress.at(-1)).toBe('partially_failed');
    const net = await sdk.network();
    // One payment for the batch (escrows + fee) and one for its stream.
    const paid = 450_000n + BigInt(net.prices.create_batch) + BigInt(net.prices.batch_events);
    expect(sdk.spending().spent).toBe(paid);
    await p.settleAll();
    expect(await p.balance(sdk.account.address)).toBe(before - paid + 150_000n);
  });

  it('pays over a batch-settlement channel: one deposit, then vouchers; funding stays exact; refundChannel returns the rest', async () => {
    const sdk = client(5, { maxPerCall: usdc('2'), maxPerSession: usdc('10') }, { scheme: 'batch-settlement', rpcUrl: p.chain.rpcUrl });
    const before = await p.balance(sdk.account.address);
    const done = await sdk.hireAndWait({ agent_id: agentId, description: 'over a channel', budget: usdc('0.2') });
    expect(done.status.status).toBe('completed');
    const net = await sdk.network();
    const calls = BigInt(net.prices.create_task) + BigInt(net.prices.task_events) + BigInt(net.prices.task_result);
    const funding = 200_000n + BigInt(net.prices.fund_task);
    expect(sdk.spending().spent).toBe(calls + funding);

    // The calls were vouchers on one channel (the first one deposited), the funding an exact payment.
    const receipts = await sdk.receipts();
    expect(receipts.filter((r) => r.kind === 'escrow_funding').map((r) => r.amount)).toEqual([funding.toString()]);
    expect(receipts.filter((r) => r.kind === 'call_fee').reduce((s, r) => s + BigInt(r.amount), 0n)).toBe(calls);
    expect(receipts.filter((r) => r.kind === 'call_fee' && r.tx_hash === '')).toHaveLength(2); // vouchers: no transaction of their own
    // Until the refund, the deposit is held by the channel contract, not spent.
    const deposit = BigInt(net.channels.deposit_max);
    expect(await p.balance(sdk.account.address)).toBe(before - funding - deposit);
    expect(await sdk.refundChannel()).toBe(deposit - calls);
    expect(await p.balance(sdk.account.address)).toBe(before - funding - calls);
  });

  it('refuses over the per-call cap before any money moves', async () => {
    const sdk = client(2, { maxPerCall: usdc('1'), maxPerSession: usdc('10') });
    const before = await p.balance(sdk.account.address);
    const err = await sdk.hire({ agent_id: agentId, description: 'too dear', budget: usdc('1.5') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SpendLimitError);
    expect(err).toMatchObject({ cap: 'maxPerCall', requested: 1_505_000n, limit: 1_000_000n });
    expect(String((err as Error).message)).toMatch(/nothing was paid/);
    const batchErr = await sdk.batch([{ agent_id: agentId, description: 'x', budget: usdc('1') }]).catch((e: unknown) => e);
    expect(batchErr).toMatchObject({ name: 'SpendLimitError', cap: 'maxPerCall' });

    // The same cap is enforced inside the x402 client, on whatever the service asks for.
    const tiny = client(2, { maxPerCall: '500', maxPerSession: usdc('10') });
    const searchErr = await tiny.searchAgents('sdk-writing').catch((e: unknown) => e);
    expect(searchErr).toMatchObject({ name: 'SpendLimitError', cap: 'maxPerCall', requested: 1000n, limit: 500n });
    expect(await p.balance(sdk.account.address)).toBe(before);
    expect(sdk.spending().spent).toBe(0n);
    expect(await sdk.receipts()).toEqual([]);
  });

  it('refuses over the per-session cap before any money moves', async () => {
    const sdk = client(2, { maxPerCall: usdc('1'), maxPerSession: usdc('1') });
    const before = await p.balance(sdk.account.address);
    await sdk.hire({ agent_id: agentId, description: 'within', budget: '600000' });
    const spent = sdk.spending().spent;
    expect(spent).toBe(610_000n);
    expect(await p.balance(sdk.account.address)).toBe(before - spent);

    const err = await sdk.hire({ agent_id: agentId, description: 'over', budget: '600000' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'SpendLimitError', cap: 'maxPerSession', spent: 610_000n, limit: 1_000_000n });
    // Refused in the x402 hook too: a session with room for one search only.
    const oneSearch = client(2, { maxPerCall: usdc('1'), maxPerSession: '1000' });
    await oneSearch.searchAgents('sdk-writing');
    const afterOne = await p.balance(sdk.account.address);
    expect(await oneSearch.searchAgents('sdk-writing').catch((e: unknown) => e)).toMatchObject({ name: 'SpendLimitError', cap: 'maxPerSession' });
    expect(await p.balance(sdk.account.address)).toBe(afterOne);
    expect(afterOne).toBe(before - spent - 1000n);
  });

  it('wait falls back to polling the status when the event stream is unavailable', async () => {
    // A transport whose event streams answer 404 (as a proxy without SSE would); everything else is the real service.
    const noStreams: typeof fetch = async (input, init) => {
      const url = input instanceof Request ? input.url : String(input);
      if (url.includes('/events')) return new Response('{"error":"no streams here"}', { status: 404, headers: { 'content-type': 'application/json' } });
      return fetch(input, init);
    };
    const sdk = client(3, undefined, { fetch: noStreams });
    const transports: string[] = [];
    const done = await sdk.hireAndWait({ agent_id: agentId, description: 'polled', budget: '200000' }, { onTransport: (t, why) => transports.push(`${t}:${why ?? ''}`) });
    expect(done.status.status).toBe('completed');
    expect(done.result?.result.content).toBe('polled done');
    expect(transports).toEqual(['poll:stream answered 404']);
    const receipts = await sdk.receipts();
    expect(receipts.some((r) => r.endpoint.includes('events'))).toBe(false);
    expect(receipts.filter((r) => r.endpoint.includes('status')).length).toBeGreaterThanOrEqual(1);
    expect(receipts.reduce((s, r) => s + BigInt(r.amount), 0n)).toBe(sdk.spending().spent);
  });

  it('wait falls back to polling when the stream breaks mid-way (resume included)', async () => {
    // The real stream, cut after its first event, every time (the resume with Last-Event-ID too).
    let streams = 0;
    const cutStreams: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      const url = input instanceof Request ? input.url : String(input);
      if (!url.includes('/events') || res.status !== 200 || !res.body) return res;
      streams++;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let text = '';
      while (!text.includes('\n\n')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      await reader.cancel();
      const first = text.slice(0, text.indexOf('\n\n') + 2);
      return new Response(first, { status: 200, headers: res.headers });
    };
    const sdk = client(4, undefined, { fetch: cutStreams });
    const transports: string[] = [];
    const { task_id } = await sdk.hire({ agent_id: agentId, description: 'cut', budget: '200000' });
    const status = await sdk.wait(task_id, { onTransport: (t, why) => transports.push(`${t}:${why ?? ''}`) });
    expect(status.status).toBe('completed');
    expect(streams).toBeGreaterThanOrEqual(1);
    expect(transports[0]).toBe('sse:');
    expect(transports.at(-1)).toMatch(/^poll:/);
  });

  it('cancel: an unfunded task is cancelled (nothing to refund)', async () => {
    const sdk = client(4);
    const created = await sdk.api.POST('/v1/tasks', {
      body: { agent_id: agentId, description: 'never mind', budget: { amount: '200000', currency: 'USDC', chain: 'base' } },
    });
    expect(created.response.status).toBe(201);
    const cancelled = await sdk.cancel(created.data!.task_id, { reason: 'changed my mind' });
    expect(cancelled.status).toBe('cancelled');
    expect((await sdk.status(created.data!.task_id)).status).toBe('cancelled');
  });
});
