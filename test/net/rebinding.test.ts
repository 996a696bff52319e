import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eq, sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { enqueueCallback } from '../../src/callbacks/enqueue.js';
import { CallbackSender } from '../../src/callbacks/sender.js';
import { systemClock } from '../../src/clock.js';
import { withTransaction } from '../../src/db/client.js';
import { callbackDeliveries } from '../../src/db/callback-schema.js';
import type { RunContext, TaskBrief } from '../../src/dispatcher/runtime.js';
import { createHostedLlmRuntime, HostedLlmConfig } from '../../src/dispatcher/runtimes/hosted-llm.js';
import { createWebhookRuntime, type WebhookConfigT } from '../../src/dispatcher/runtimes/webhook.js';
import { executeHttpFetch } from '../../src/dispatcher/tools/http-fetch.js';
import type { ResolvedAddress, Resolver } from '../../src/net/ssrf.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { closeServer, readBody } from '../helpers/http.js';

/**
 * DNS rebinding on every outbound path. The attacker's name answers a public address when the
 * service checks it, then loopback when the service connects. Here the name is `localhost`:
 * the scripted resolver answers a public address the first time and 127.0.0.1 after that, and
 * the system resolver (which an unpinned connection would ask) answers 127.0.0.1 too. A real
 * server listens on loopback, ready to answer; it must receive nothing, because the connection
 * goes to the address that passed the check (the public one, which cannot be reached here, or
 * answers nothing within the short time caps below).
 *
 * Each "refused" case has a control: the same name and server with private addresses allowed
 * (dev mode) is reached, so the setup itself can deliver a request.
 */

/** Public by the SSRF rules; in this suite a connection to it is refused or times out. */
const PUBLIC_ADDRESS = '93.184.216.34';
const TIME_CAP_MS = 1_000;

interface Rebinder {
  resolver: Resolver;
  asked: string[];
}

/** Answers a public address on the first lookup, loopback on every later one. */
function rebinding(): Rebinder {
  const asked: string[] = [];
  const resolver = async (host: string): Promise<ResolvedAddress[]> => {
    asked.push(host);
    return [{ address: asked.length === 1 ? PUBLIC_ADDRESS : '127.0.0.1', family: 4 }];
  };
  return { resolver, asked };
}

/** Answers loopback every time (the control: dev mode reaches the server). */
function loopbackOnly(): Rebinder {
  const asked: string[] = [];
  return { resolver: async (host) => (asked.push(host), [{ address: '127.0.0.1', family: 4 }]), asked };
}

// ---------------------------------------------------------------- the loopback target

interface Received {
  method: string | undefined;
  url: string | undefined;
  headers: IncomingHttpHeaders;
  body: string;
}

let server: Server;
let port: number;
const received: Received[] = [];

/** What the target answers: an async agent's 202, a callback receiver's 200, a chat completion. */
function answer(req: Received): { status: number; body: string } {
  if (req.url?.endsWith('/chat/completions')) {
    const completion = { id: 'c1', object: 'chat.completion', model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'internal secret' } }] };
    return { status: 200, body: JSON.stringify(completion) };
  }
  if (req.url === '/tasks') return { status: 202, body: '' };
  return { status: 200, body: 'internal page' };
}

beforeAll(async () => {
  server = createServer((req, res) => {
    void readBody(req).then((body) => {
      const r = { method: req.method, url: req.url, headers: req.headers, body };
      received.push(r);
      const { status, body: text } = answer(r);
      res.writeHead(status, { 'content-type': 'application/json' }).end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => closeServer(server));
afterEach(() => {
  received.length = 0;
});

const target = (path: string): string => `http://localhost:${port}${path}`;

// ---------------------------------------------------------------- fixtures

const brief: TaskBrief = {
  taskId: 'task_7h2k9d0s1a3f5g6j8l4z',
  agentId: 'agent_0k3v9x2m1q8w7e6r5t4y',
  description: 'Summarise the page',
  requirements: null,
  budget: { amount: '1000000', currency: 'USDC' },
  deadline: new Date('2030-01-01T00:00:00.000Z'),
  attempt: 1,
  callbacks: { progress: 'https://escrow.example/p', deliver: 'https://escrow.example/d' },
};

function ctx(): RunContext {
  return { signal: new AbortController().signal, report: async () => {} };
}

function webhookConfig(): WebhookConfigT {
  // timeout_ms below the schema's minimum: the runtime takes it as given, and the test stays short
  return { kind: 'webhook', url: target('/tasks'), secret: randomBytes(32).toString('hex'), timeout_ms: TIME_CAP_MS };
}

// ---------------------------------------------------------------- the four paths

describe('DNS rebinding: a name that answers public, then loopback, is never connected to loopback', () => {
  it('webhook runtime: the brief and the cancellation notice never reach the loopback server', async () => {
    const dns = rebinding();
    const runtime = createWebhookRuntime({ clock: systemClock, resolver: dns.resolver, ssrf: { allowPrivate: false } });

    const outcome = await runtime.run(brief, webhookConfig(), ctx());
    expect(received).toHaveLength(0);
    expect(outcome.kind).toBe('failed');
    expect(dns.asked).toEqual(['localhost']); // resolved once: the checked answer is the one used

    // a second call resolves afresh: now loopback, refused before any connection
    await runtime.notifyCancelled?.(brief, webhookConfig(), 'cancelled');
    expect(received).toHaveLength(0);
    expect(dns.asked).toHaveLength(2);
  });

  it('webhook runtime control: in dev mode the same name reaches the server', async () => {
    const dns = loopbackOnly();
    const runtime = createWebhookRuntime({ clock: systemClock, resolver: dns.resolver, ssrf: { allowPrivate: true } });
    expect(await runtime.run(brief, webhookConfig(), ctx())).toEqual({ kind: 'accepted' });
    expect(received.map((r) => r.url)).toEqual(['/tasks']);
  });

  describe('callback sender', () => {
    let testDb: TestDatabase;

    beforeAll(async () => {
      testDb = await createTestDatabase();
    });
    afterAll(() => testDb.destroy());
    afterEach(async () => {
      await testDb.database.db.execute(sql`delete from callback_deliveries`);
    });

    async function deliverOnce(dns: Rebinder, allowPrivate: boolean) {
      const { db } = testDb.database;
      const taskId = `task_${randomBytes(10).toString('hex')}`;
      const id = await withTransaction(db, (tx) => enqueueCallback(tx, systemClock, { taskId, url: target('/hook'), event: 'task.completed', data: { task_id: taskId } }));
      const sender = new CallbackSender({
        db,
        clock: systemClock,
        signingSecret: randomBytes(32).toString('hex'),
        ssrf: { allowPrivate },
        resolver: dns.resolver,
        timeoutMs: TIME_CAP_MS,
      });
      expect(await sender.runOnce()).toBe(1);
      const [row] = await db.select().from(callbackDeliveries).where(eq(callbackDeliveries.id, id));
      return row;
    }

    it('the signed event never reaches the loopback server', async () => {
      const dns = rebinding();
      const row = await deliverOnce(dns, false);
      expect(received).toHaveLength(0);
      expect(row).toMatchObject({ status: 'pending', attempts: 1, lastStatusCode: null, deliveredAt: null });
      expect(dns.asked).toEqual(['localhost']);
    });

    it('control: in dev mode the same name reaches the server', async () => {
      const row = await deliverOnce(loopbackOnly(), true);
      expect(row).toMatchObject({ status: 'delivered', lastStatusCode: 200 });
      expect(received.map((r) => r.url)).toEqual(['/hook']);
    });
  });

  it('hosted-LLM provider client: an agent’s own base_url never reaches the loopback server', async () => {
    const dns = rebinding();
    const runtime = createHostedLlmRuntime({ defaultMaxCostUsd: 1, resolver: dns.resolver, requestTimeoutMs: TIME_CAP_MS, allowPrivateBaseUrl: false });
    const config = HostedLlmConfig.parse({ kind: 'hosted_llm', model: 'm', system_prompt: 'x', base_url: target('/v1'), api_key: 'sk-agent-key' });

    const outcome = await runtime.run(brief, config, ctx());
    expect(received).toHaveLength(0);
    expect(outcome.kind).toBe('failed');
    expect(dns.asked).toEqual(['localhost']);
  });

  it('hosted-LLM control: in dev mode the same base_url reaches the server', async () => {
    const runtime = createHostedLlmRuntime({ defaultMaxCostUsd: 1, resolver: loopbackOnly().resolver, requestTimeoutMs: TIME_CAP_MS, allowPrivateBaseUrl: true });
    const config = HostedLlmConfig.parse({ kind: 'hosted_llm', model: 'm', system_prompt: 'x', base_url: target('/v1') });
    expect(await runtime.run(brief, config, ctx())).toMatchObject({ kind: 'completed', result: { content: 'internal secret' } });
    expect(received.map((r) => r.url)).toEqual(['/v1/chat/completions']);
  });

  it('http_fetch tool: the page is never fetched from the loopback server', async () => {
    const dns = rebinding();
    const policy = { allowPrivate: false, timeoutMs: TIME_CAP_MS, maxBytes: 4096, resolver: dns.resolver };
    const fetched = await executeHttpFetch({ url: target('/admin') }, policy, new AbortController().signal).then(
      (result) => result,
      (err: unknown) => err,
    );
    expect(received).toHaveLength(0);
    expect(fetched).toBeInstanceOf(Error);
    expect(dns.asked).toEqual(['localhost']);
  });

  it('http_fetch control: in dev mode the same URL is fetched', async () => {
    const policy = { allowPrivate: true, timeoutMs: TIME_CAP_MS, maxBytes: 4096, resolver: loopbackOnly().resolver };
    const result = await executeHttpFetch({ url: target('/admin') }, policy, new AbortController().signal);
    expect(result).toMatchObject({ status: 200, body: 'internal page' });
    expect(received.map((r) => r.url)).toEqual(['/admin']);
  });
});
