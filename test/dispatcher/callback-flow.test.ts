import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { callbackAttempts, callbackDeliveries } from '../../src/db/schema.js';
import { CallbackSender } from '../../src/callbacks/sender.js';
import { SIGNATURE_HEADER, verifyWebhookSignature } from '../../src/net/signing.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, createTask, expectError, fundAndStart, registerAgent, textResult } from '../helpers/fixtures.js';

let t: TestApp;
let receiver: Server;
let url: string;
const received: { body: { id: string; type: string; data: { task_id: string; status: string } }; valid: boolean }[] = [];

beforeAll(async () => {
  t = await buildTestApp({}, { clock: 'real' });
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
  url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
});
afterAll(async () => {
  receiver.closeAllConnections();
  await new Promise((r) => receiver.close(r));
  await t.close();
});

describe('callback_url', () => {
  it('a terminal transition writes a signed event that the sender delivers once', async () => {
    const payer = wallet(3);
    const agent = await registerAgent(t, wallet(1));
    const id = await createTask(t, payer, agent.id, { callback_url: url });
    await fundAndStart(t, id);
    await t.app.services.taskLifecycle.markCompleted(id, textResult());
    const [delivery] = await t.app.db.select().from(callbackDeliveries).where(eq(callbackDeliveries.taskId, id));
    expect(delivery).toMatchObject({ event: 'task.completed', status: 'pending', url });

    const sender = new CallbackSender({ db: t.app.db, clock: t.clock, signingSecret: t.config.CALLBACK_SIGNING_SECRET, ssrf: { allowPrivate: true } });
    await sender.runOnce();
    await sender.runOnce();
    const mine = received.filter((r) => r.body.data.task_id === id);
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ valid: true, body: { id: delivery!.id, type: 'task.completed', data: { task_id: id, status: 'completed' } } });
    const attempts = await t.app.db.select().from(callbackAttempts).where(eq(callbackAttempts.deliveryId, delivery!.id));
    expect(attempts).toHaveLength(1);
    expect(attempts[0]!.statusCode).toBe(200);
  });

  it('refuses private callback URLs outside dev mode', async () => {
    const strict = await buildTestApp({ ALLOW_PRIVATE_URLS: 'false' });
    try {
      const agent = await registerAgent(strict, wallet(1));
      for (const bad of ['http://127.0.0.1:9/hook', 'http://169.254.169.254/latest', 'http://10.0.0.8/hook']) {
        const res = await call(strict, wallet(3), 'POST', '/v1/tasks', {
          agent_id: agent.id,
          description: 'x',
          budget: { amount: '1000000', currency: 'USDC', chain: 'base' },
          callback_url: bad,
        });
        expectError(res, 400, 'validation_error');
        expect(res.body.error.param).toBe('callback_url');
      }
    } finally {
      await strict.close();
    }
  });
});
