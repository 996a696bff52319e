import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CallbackSender } from '../../src/callbacks/sender.js';
import { callbackDeliveries } from '../../src/db/schema.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import { SIGNATURE_HEADER, verifyWebhookSignature } from '../../src/net/signing.js';
import { AgentServer, type Received } from '../helpers/agent-server.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, expectError, registerAgent } from '../helpers/fixtures.js';

/** A batch's `callback_url`: one signed POST with the batch summary once every item has ended. */

const SECRET = 'batch-callback-webhook-secret-0123456789';
const payer = wallet(3);
let t: TestApp;
let receiver: Server;
let hookUrl: string;
const received: { body: any; valid: boolean }[] = [];
const servers: AgentServer[] = [];
const dispatchers: Dispatcher[] = [];

beforeAll(async () => {
  t = await buildTestApp({ DISPATCH_HEARTBEAT_MS: '100', DISPATCH_LEASE_MS: '1500', DISPATCH_CONCURRENCY: '8', DISPATCH_PER_AGENT_CONCURRENCY: '50' }, { clock: 'real' });
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const valid = verifyWebhookSignature(t.config.CALLBACK_SIGNING_SECRET, req.headers[SIGNATURE_HEADER] as string, raw, Math.floor(Date.now() / 1000));
      received.push({ body: JSON.parse(raw), valid });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/batches`;
});
afterEach(async () => {
  await Promise.all(dispatchers.splice(0).map((d) => d.stop(0)));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});
afterAll(async () => {
  receiver.closeAllConnections();
  await new Promise((r) => receiver.close(r));
  await t.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function agentWith(handler: (r: Received) => ReturnType<ConstructorParameters<typeof AgentServer>[1]>) {
  const server = await new AgentServer(SECRET, handler).start();
  servers.push(server);
  return registerAgent(t, wallet(1), { runtime: { kind: 'webhook', url: server.url, secret: SECRET, timeout_ms: 5000 }, pricing: { base_rate: '1000' } });
}

const item = (agentId: string, description: string) => ({ agent_id: agentId, description, budget: { amount: '100000', currency: 'USDC', chain: 'base' } });

function sender(): CallbackSender {
  return new CallbackSender({ db: t.app.db, clock: t.clock, signingSecret: t.config.CALLBACK_SIGNING_SECRET, ssrf: { allowPrivate: true } });
}

async function runBatch(batchId: string) {
  const d = createDispatcher(t.app, {});
  dispatchers.push(d);
  const end = Date.now() + 15_000;
  for (;;) {
    await d.runOnce();
    const view = (await call(t, payer, 'GET', `/v1/batches/${batchId}`)).body;
    if (view.status !== 'running') {
      await d.drain();
      return view;
    }
    if (Date.now() > end) throw new Error('batch still running');
    await sleep(20);
  }
}

const deliveriesOf = (batchId: string) => t.app.db.select().from(callbackDeliveries).where(eq(callbackDeliveries.batchId, batchId));

describe('a batch’s callback_url', () => {
  it('gets one signed batch.<status> event with the summary when the last item ends, delivered once', async () => {
    const agent = await agentWith(async (r) => {
      const name = String((r.body.task as any).description);
      await sleep(name === 'slow' ? 120 : 10);
      if (name === 'breaks') return { status: 422, body: { error: 'no' } };
      return { status: 200, body: { result: { type: 'text', content: `${name} done`, metadata: { tokens_used: 1, model: 'm', duration_seconds: 0 } } } };
    });
    const res = await call(t, payer, 'POST', '/v1/batches', {
      items: [item(agent.id, 'slow'), item(agent.id, 'breaks'), item(agent.id, 'quick')],
      policy: 'continue',
      callback_url: hookUrl,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const batchId = res.body.batch_id;
    // Nothing is written while items run.
    expect(await deliveriesOf(batchId)).toEqual([]);
    const view = await runBatch(batchId);
    expect(view.status).toBe('partially_failed');

    const deliveries = await deliveriesOf(batchId);
    expect(deliveries).toHaveLength(1);
    expect(deliveries[0]).toMatchObject({ event: 'batch.partially_failed', taskId: null, url: hookUrl, status: 'pending' });
    const s = sender();
    await s.runOnce();
    await s.runOnce();
    const mine = received.filter((r) => r.body.data.batch_id === batchId);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.valid).toBe(true);
    expect(mine[0]!.body).toMatchObject({ id: deliveries[0]!.id, type: 'batch.partially_failed' });
    expect(mine[0]!.body.data).toMatchObject({
      batch_id: batchId,
      status: 'partially_failed',
      totals: { escrow: '300000', completed: 2, failed: 1 },
    });
    expect(mine[0]!.body.data.items.map((i: any) => [i.index, i.task_id, i.status])).toEqual(view.items.map((i: any) => [i.index, i.task_id, i.status]));
    expect(mine[0]!.body.data.items[1].failure).toMatch(/422/);
    expect(mine[0]!.body.data.items[0].result_hash).toBe(view.items[0].result_hash);
    // Each item's own task callback is not sent: items carry no callback_url of their own.
    expect(received.filter((r) => String(r.body.type).startsWith('task.'))).toEqual([]);
    expect(await deliveriesOf(batchId)).toMatchObject([{ status: 'delivered', attempts: 1 }]);
  });

  it('is written exactly once when the last items end at the same moment in two workers', async () => {
    const waiting: (() => void)[] = [];
    const agent = await agentWith(async () => {
      // A barrier: every item answers at once, when all six have arrived.
      await new Promise<void>((resolve) => {
        waiting.push(resolve);
        if (waiting.length === 6) for (const go of waiting.splice(0)) go();
      });
      return { status: 200, body: { result: { type: 'text', content: 'ok', metadata: { tokens_used: 1, model: 'm', duration_seconds: 0 } } } };
    });
    const res = await call(t, payer, 'POST', '/v1/batches', { items: Array.from({ length: 6 }, (_, n) => item(agent.id, `part ${n}`)), max_concurrency: 6, callback_url: hookUrl });
    expect(res.status).toBe(201);
    const ds = [createDispatcher(t.app, {}), createDispatcher(t.app, {})];
    dispatchers.push(...ds);
    const end = Date.now() + 15_000;
    while ((await call(t, payer, 'GET', `/v1/batches/${res.body.batch_id}`)).body.status === 'running') {
      await Promise.all(ds.map((d) => d.runOnce()));
      if (Date.now() > end) throw new Error('batch still running');
      await sleep(10);
    }
    await Promise.all(ds.map((d) => d.drain()));
    expect((await deliveriesOf(res.body.batch_id)).map((d) => d.event)).toEqual(['batch.completed']);
  });

  it('says batch.cancelled for a cancelled batch, once; a batch without callback_url writes nothing', async () => {
    const agent = await agentWith(() => 'hang');
    const res = await call(t, payer, 'POST', '/v1/batches', { items: [item(agent.id, 'a'), item(agent.id, 'b')], callback_url: hookUrl, max_concurrency: 1 });
    expect(res.status).toBe(201);
    const cancelled = await call(t, payer, 'POST', `/v1/batches/${res.body.batch_id}/cancel`, { reason: 'no longer needed' });
    expect(cancelled.status, JSON.stringify(cancelled.body)).toBe(200);
    const deliveries = await deliveriesOf(res.body.batch_id);
    expect(deliveries.map((d) => [d.event, (d.payload as any).status, (d.payload as any).items.map((i: any) => i.status)])).toEqual([
      ['batch.cancelled', 'cancelled', ['cancelled', 'cancelled']],
    ]);

    const quiet = await call(t, payer, 'POST', '/v1/batches', { items: [item(agent.id, 'c')] });
    expect(quiet.status).toBe(201);
    await call(t, payer, 'POST', `/v1/batches/${quiet.body.batch_id}/cancel`, {});
    expect(await deliveriesOf(quiet.body.batch_id)).toEqual([]);
  });

  it('refuses a callback_url that is not http(s), before anything is created', async () => {
    const agent = await agentWith(() => 'hang');
    expectError(await call(t, payer, 'POST', '/v1/batches', { items: [item(agent.id, 'a')], callback_url: 'ftp://client.example/hook' }), 400, 'validation_error');
  });
});
