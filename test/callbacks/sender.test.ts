import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { asc, eq, sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { withTransaction, type Db } from '../../src/db/client.js';
import { callbackAttempts, callbackDeliveries } from '../../src/db/callback-schema.js';
import { enqueueCallback } from '../../src/callbacks/enqueue.js';
import { CallbackSender, callbackBackoffMs, type CallbackSenderOptions } from '../../src/callbacks/sender.js';
import { verifyWebhookSignature } from '../../src/net/signing.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { closeServer, readBody } from '../helpers/http.js';

// ------------------------------------------------------------------ receivers on loopback

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

interface Receiver {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

const receivers: Receiver[] = [];

/** A receiver answering the n-th request (0-based) with `statusFor(n)`. */
async function startReceiver(statusFor: (n: number, req: Received) => number): Promise<Receiver> {
  const received: Received[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void readBody(req).then((body) => {
      const r = { headers: req.headers, body };
      received.push(r);
      res.writeHead(statusFor(received.length - 1, r)).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const receiver = { url: `http://127.0.0.1:${port}/hooks/escrow`, received, close: () => closeServer(server) };
  receivers.push(receiver);
  return receiver;
}

// ------------------------------------------------------------------ fixtures

let testDb: TestDatabase;
let db: Db;
const clock = new ManualClock(new Date());
const signingSecret = randomBytes(32).toString('hex');
const BASE_MS = 1000;

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = testDb.database.db;
});
afterAll(() => testDb.destroy());
afterEach(async () => {
  await Promise.all(receivers.splice(0).map((r) => r.close()));
  // each test starts with an empty outbox, so runOnce counts only its own deliveries
  await db.execute(sql`delete from callback_deliveries`);
});

function sender(overrides: Partial<CallbackSenderOptions> = {}): CallbackSender {
  return new CallbackSender({ db, clock, signingSecret, ssrf: { allowPrivate: true }, backoffBaseMs: BASE_MS, maxAttempts: 8, ...overrides });
}

function taskId(): string {
  return `task_${randomBytes(10).toString('hex')}`;
}

async function enqueue(url: string, event: Parameters<typeof enqueueCallback>[2]['event'] = 'task.completed', data: unknown = { status: 'completed' }) {
  const id = taskId();
  const deliveryId = await withTransaction(db, (tx) => enqueueCallback(tx, clock, { taskId: id, url, event, data: { task_id: id, ...(data as object) } }));
  return { taskId: id, deliveryId };
}

async function delivery(id: string) {
  const [row] = await db.select().from(callbackDeliveries).where(eq(callbackDeliveries.id, id));
  if (!row) throw new Error(`no delivery ${id}`);
  return row;
}

async function attemptsOf(id: string) {
  return db.select().from(callbackAttempts).where(eq(callbackAttempts.deliveryId, id)).orderBy(asc(callbackAttempts.attempt));
}

function signatureValid(req: Received): boolean {
  const header = req.headers['x-task-escrow-signature'];
  return typeof header === 'string' && verifyWebhookSignature(signingSecret, header, req.body, Math.floor(clock.now().getTime() / 1000));
}

// ------------------------------------------------------------------ tests

describe('enqueueCallback', () => {
  it('writes a pending delivery in the transaction, and nothing when it rolls back', async () => {
    const { deliveryId } = await enqueue('https://client.example/hook', 'task.failed');
    expect(await delivery(deliveryId)).toMatchObject({
      status: 'pending',
      event: 'task.failed',
      attempts: 0,
      lastStatusCode: null,
      lastError: null,
      deliveredAt: null,
      nextAttemptAt: clock.now(),
    });
    expect(deliveryId).toMatch(/^cb_[0-9a-f]{32}$/);

    let rolledBack: string | null = null;
    await expect(
      withTransaction(db, async (tx) => {
        rolledBack = await enqueueCallback(tx, clock, { taskId: taskId(), url: 'https://client.example/hook', event: 'task.expired', data: {} });
        throw new Error('transition failed');
      }),
    ).rejects.toThrow('transition failed');
    expect(rolledBack).not.toBeNull();
    expect(await db.select().from(callbackDeliveries).where(eq(callbackDeliveries.id, rolledBack ?? ''))).toEqual([]);
  });
});

describe('CallbackSender', () => {
  it('delivers a signed event once to a receiver that verifies it', async () => {
    const receiver = await startReceiver((_n, req) => (signatureValid(req) ? 200 : 401));
    const { taskId: task, deliveryId } = await enqueue(receiver.url, 'task.completed', { result_hash: 'abc' });
    const s = sender();

    expect(await s.runOnce()).toBe(1);
    expect(await s.runOnce()).toBe(0);
    clock.advance(60_000);
    expect(await s.runOnce()).toBe(0);

    expect(receiver.received).toHaveLength(1);
    const [req] = receiver.received;
    expect(req && signatureValid(req)).toBe(true);
    expect(req?.headers['x-task-escrow-event']).toBe('task.completed');
    expect(req?.headers['x-task-escrow-delivery']).toBe(deliveryId);
    const row = await delivery(deliveryId);
    expect(JSON.parse(req?.body ?? '')).toEqual({
      id: deliveryId,
      type: 'task.completed',
      created_at: row.createdAt.toISOString(),
      data: { task_id: task, result_hash: 'abc' },
    });
    expect(row).toMatchObject({ status: 'delivered', attempts: 1, lastStatusCode: 200, lastError: null });
    expect(row.deliveredAt).toBeInstanceOf(Date);
    expect((await attemptsOf(deliveryId)).map((a) => [a.attempt, a.statusCode, a.error])).toEqual([[1, 200, null]]);
  });

  it('500, 500, then 200: three attempts recorded with backoff, delivered, the same event each time', async () => {
    const receiver = await startReceiver((n) => (n < 2 ? 500 : 200));
    const { deliveryId } = await enqueue(receiver.url);
    const s = sender();

    expect(await s.runOnce()).toBe(1);
    expect(await delivery(deliveryId)).toMatchObject({ status: 'pending', attempts: 1, lastStatusCode: 500, lastError: 'HTTP 500' });
    clock.advance(callbackBackoffMs(BASE_MS, 1) - 1);
    expect(await s.runOnce()).toBe(0); // not due yet
    clock.advance(1);
    expect(await s.runOnce()).toBe(1);
    clock.advance(callbackBackoffMs(BASE_MS, 2));
    expect(await s.runOnce()).toBe(1);

    expect(await delivery(deliveryId)).toMatchObject({ status: 'delivered', attempts: 3, lastStatusCode: 200, lastError: null });
    expect((await attemptsOf(deliveryId)).map((a) => [a.attempt, a.statusCode, a.error])).toEqual([
      [1, 500, 'HTTP 500'],
      [2, 500, 'HTTP 500'],
      [3, 200, null],
    ]);
    expect(receiver.received).toHaveLength(3);
    expect(receiver.received.every((r) => signatureValid(r))).toBe(true);
    expect(new Set(receiver.received.map((r) => r.body)).size).toBe(1);
  });

  it('a receiver that always fails: failed after maxAttempts, each attempt recorded', async () => {
    const receiver = await startReceiver(() => 503);
    const { deliveryId } = await enqueue(receiver.url, 'task.cancelled');
    const s = sender({ maxAttempts: 4 });

    for (let i = 1; i <= 4; i++) {
      expect(await s.runOnce()).toBe(1);
      clock.advance(callbackBackoffMs(BASE_MS, i));
    }
    expect(await s.runOnce()).toBe(0);
    clock.advance(24 * 3600_000);
    expect(await s.runOnce()).toBe(0);

    expect(await delivery(deliveryId)).toMatchObject({ status: 'failed', attempts: 4, lastStatusCode: 503, deliveredAt: null });
    expect((await attemptsOf(deliveryId)).map((a) => a.statusCode)).toEqual([503, 503, 503, 503]);
    expect(receiver.received).toHaveLength(4);
  });

  it('a receiver that cannot be reached: the attempt is recorded with the error and retried', async () => {
    const receiver = await startReceiver(() => 200);
    await receiver.close();
    const { deliveryId } = await enqueue(receiver.url);
    expect(await sender().runOnce()).toBe(1);
    const row = await delivery(deliveryId);
    expect(row).toMatchObject({ status: 'pending', attempts: 1, lastStatusCode: null });
    expect(row.lastError).toMatch(/ECONNREFUSED|fetch failed/);
    expect(row.nextAttemptAt.getTime()).toBe(clock.now().getTime() + callbackBackoffMs(BASE_MS, 1));
  });

  it('a private URL with allowPrivate false: failed with an SSRF reason, no request made', async () => {
    const receiver = await startReceiver(() => 200);
    const { deliveryId } = await enqueue(receiver.url, 'task.expired');
    expect(await sender({ ssrf: { allowPrivate: false } }).runOnce()).toBe(1);

    const row = await delivery(deliveryId);
    expect(row).toMatchObject({ status: 'failed', attempts: 1, lastStatusCode: null });
    expect(row.lastError).toMatch(/^ssrf: /);
    expect(row.lastError).toContain('127.0.0.1');
    expect((await attemptsOf(deliveryId)).map((a) => a.error)).toEqual([row.lastError]);
    expect(receiver.received).toHaveLength(0);
  });

  it('two senders at once deliver every event exactly once (FOR UPDATE SKIP LOCKED)', async () => {
    const receiver = await startReceiver(() => 200);
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push((await enqueue(receiver.url)).deliveryId);
    const [a, b] = await Promise.all([sender({ batchSize: 2 }).runOnce(), sender({ batchSize: 2 }).runOnce()]);
    expect(a + b).toBe(6);
    const seen = receiver.received.map((r) => (JSON.parse(r.body) as { id: string }).id).sort();
    expect(seen).toEqual([...ids].sort());
    for (const id of ids) expect(await delivery(id)).toMatchObject({ status: 'delivered', attempts: 1 });
  });

  it('start/stop runs in the background', async () => {
    const receiver = await startReceiver(() => 204);
    const { deliveryId } = await enqueue(receiver.url);
    const s = sender();
    s.start(20);
    await expect.poll(async () => (await delivery(deliveryId)).status, { timeout: 5000 }).toBe('delivered');
    await s.stop();
    expect(receiver.received).toHaveLength(1);
  });

  it('refuses a short signing secret', () => {
    expect(() => sender({ signingSecret: 'short' })).toThrow(/signingSecret/);
  });
});
