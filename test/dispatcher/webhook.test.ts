import { randomBytes } from 'node:crypto';
import { closeServer, readBody } from '../helpers/http.js';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import type { RunContext, TaskBrief } from '../../src/dispatcher/runtime.js';
import {
  MAX_RESPONSE_BYTES,
  WebhookConfig,
  createWebhookRuntime,
  redactWebhookConfig,
  signWebhook,
  verifyWebhookSignature,
  type WebhookConfigT,
} from '../../src/dispatcher/runtimes/webhook.js';

// ------------------------------------------------------------------ real agents on loopback

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

type Handler = (req: Received, res: ServerResponse) => void;

interface Agent {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

const agents: Agent[] = [];

async function startAgent(handler: Handler): Promise<Agent> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    void readBody(req).then((body) => {
      const r = { headers: req.headers, body };
      received.push(r);
      handler(r, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const agent = { url: `http://127.0.0.1:${port}/tasks`, received, close: () => closeServer(server) };
  agents.push(agent);
  return agent;
}

function reply(res: ServerResponse, status: number, body?: unknown): void {
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json' }).end(text);
}

afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.close()));
});

// ------------------------------------------------------------------ fixtures

const secret = randomBytes(32).toString('hex');
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

const brief: TaskBrief = {
  taskId: 'task_7h2k9d0s1a3f5g6j8l4z',
  agentId: 'agent_0k3v9x2m1q8w7e6r5t4y',
  description: 'Write a 50-word product blurb for a solar lantern',
  requirements: { words: 50 },
  budget: { amount: '1000000', currency: 'USDC' },
  deadline: new Date('2030-01-01T00:00:00.000Z'),
  attempt: 2,
  callbacks: {
    progress: 'https://escrow.example/v1/tasks/task_7h2k9d0s1a3f5g6j8l4z/progress',
    deliver: 'https://escrow.example/v1/tasks/task_7h2k9d0s1a3f5g6j8l4z/deliver',
  },
};

function config(url: string, timeout_ms = 30_000): WebhookConfigT {
  return { kind: 'webhook', url, secret, timeout_ms };
}

function ctx(signal: AbortSignal = new AbortController().signal): RunContext {
  return { signal, report: async () => {} };
}

const runtime = createWebhookRuntime({ clock: systemClock, ssrf: { allowPrivate: true } });

/** What a well-behaved agent checks before doing any work. */
function checkAssigned(req: Received): string | null {
  if (!verifyWebhookSignature(secret, req.headers['x-task-escrow-signature'] as string | undefined, req.body, nowSeconds())) {
    return 'bad signature';
  }
  if (req.headers['x-task-escrow-event'] !== 'task.assigned') return 'bad event header';
  if (!String(req.headers['content-type']).startsWith('application/json')) return 'bad content type';
  const body = JSON.parse(req.body) as Record<string, unknown>;
  const expected = {
    type: 'task.assigned',
    task: {
      id: brief.taskId,
      description: brief.description,
      requirements: { words: 50 },
      budget: { amount: '1000000', currency: 'USDC' },
      deadline: '2030-01-01T00:00:00.000Z',
      attempt: 2,
    },
    callbacks: brief.callbacks,
  };
  return JSON.stringify(body) === JSON.stringify(expected) ? null : 'bad body';
}

// ------------------------------------------------------------------ tests

describe('webhook signatures', () => {
  const body = JSON.stringify({ hello: 'world' });

  it('signs Stripe-style and verifies its own signature', () => {
    const header = signWebhook(secret, 1_800_000_000, body);
    expect(header).toMatch(/^t=1800000000,v1=[0-9a-f]{64}$/);
    expect(verifyWebhookSignature(secret, header, body, 1_800_000_000)).toBe(true);
  });

  it('rejects a tampered signature, body or secret', () => {
    const t = nowSeconds();
    const header = signWebhook(secret, t, body);
    const hex = header.split('v1=')[1] ?? '';
    const flipped = `${hex[0] === 'a' ? 'b' : 'a'}${hex.slice(1)}`;
    expect(verifyWebhookSignature(secret, `t=${t},v1=${flipped}`, body, t)).toBe(false);
    expect(verifyWebhookSignature(secret, header, body.replace('world', 'World'), t)).toBe(false);
    expect(verifyWebhookSignature(randomBytes(32).toString('hex'), header, body, t)).toBe(false);
    expect(verifyWebhookSignature(secret, `t=${t + 1},v1=${hex}`, body, t)).toBe(false);
    expect(verifyWebhookSignature(secret, `t=${t}`, body, t)).toBe(false);
    expect(verifyWebhookSignature(secret, 'garbage', body, t)).toBe(false);
    expect(verifyWebhookSignature(secret, undefined, body, t)).toBe(false);
  });

  it('rejects a timestamp beyond the tolerance (replay), either way', () => {
    const t = 1_800_000_000;
    const header = signWebhook(secret, t, body);
    expect(verifyWebhookSignature(secret, header, body, t + 300)).toBe(true);
    expect(verifyWebhookSignature(secret, header, body, t + 301)).toBe(false);
    expect(verifyWebhookSignature(secret, header, body, t - 301)).toBe(false);
    expect(verifyWebhookSignature(secret, header, body, t + 50, 30)).toBe(false);
  });
});

describe('WebhookConfig', () => {
  it('defaults timeout_ms and refuses short secrets and non-http URLs', () => {
    expect(WebhookConfig.parse({ kind: 'webhook', url: 'https://agent.example/tasks', secret }).timeout_ms).toBe(30_000);
    expect(WebhookConfig.safeParse({ kind: 'webhook', url: 'https://agent.example/tasks', secret: 'short' }).success).toBe(false);
    expect(WebhookConfig.safeParse({ kind: 'webhook', url: 'ftp://agent.example/tasks', secret }).success).toBe(false);
    expect(WebhookConfig.safeParse({ kind: 'webhook', url: 'https://agent.example', secret, timeout_ms: 10 }).success).toBe(false);
  });

  it('redacts the secret for display', () => {
    const shown = redactWebhookConfig(config('https://agent.example/tasks'));
    expect(JSON.stringify(shown)).not.toContain(secret);
  });
});

describe('webhook runtime', () => {
  it('a sync agent that verifies the signature answers 200 with the result: completed', async () => {
    const verdicts: Array<string | null> = [];
    const agent = await startAgent((req, res) => {
      const problem = checkAssigned(req);
      verdicts.push(problem);
      if (problem) return reply(res, 401, { error: problem });
      reply(res, 200, { result: { type: 'text', content: 'Light up your nights…', metadata: { model: 'm-1', extra: 1 } } });
    });
    const outcome = await runtime.run(brief, config(agent.url), ctx());
    expect(verdicts).toEqual([null]);
    expect(outcome).toEqual({
      kind: 'completed',
      result: {
        type: 'text',
        content: 'Light up your nights…',
        metadata: { tokens_used: null, model: 'm-1', duration_seconds: null, extra: 1 },
      },
    });
  });

  it('an async agent answers 202: accepted', async () => {
    const agent = await startAgent((req, res) => reply(res, checkAssigned(req) ? 401 : 202));
    expect(await runtime.run(brief, config(agent.url), ctx())).toEqual({ kind: 'accepted' });
    expect(agent.received).toHaveLength(1);
  });

  it('an agent slower than timeout_ms: failed, retryable', async () => {
    const agent = await startAgent(() => {
      /* never answers */
    });
    const started = Date.now();
    const outcome = await runtime.run(brief, config(agent.url, 1000), ctx());
    expect(Date.now() - started).toBeLessThan(5000);
    expect(outcome).toEqual({ kind: 'failed', reason: 'agent did not answer within 1000 ms', retryable: true });
  });

  it('ctx.signal aborted while the agent works: failed `aborted`, not retryable', async () => {
    const agent = await startAgent(() => {});
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('cancelled')), 100);
    const outcome = await runtime.run(brief, config(agent.url), ctx(controller.signal));
    expect(outcome).toEqual({ kind: 'failed', reason: 'aborted', retryable: false });
  });

  it('an already aborted signal: no request', async () => {
    const agent = await startAgent((_req, res) => reply(res, 202));
    const controller = new AbortController();
    controller.abort();
    expect(await runtime.run(brief, config(agent.url), ctx(controller.signal))).toEqual({ kind: 'failed', reason: 'aborted', retryable: false });
    expect(agent.received).toHaveLength(0);
  });

  it.each([500, 503, 429, 408])('HTTP %i: failed, retryable', async (status) => {
    const agent = await startAgent((_req, res) => reply(res, status, { error: secret }));
    const outcome = await runtime.run(brief, config(agent.url), ctx());
    expect(outcome).toEqual({ kind: 'failed', reason: `agent answered HTTP ${status}`, retryable: true });
  });

  it.each([400, 401, 404, 422, 204])('HTTP %i: failed, not retryable', async (status) => {
    const agent = await startAgent((_req, res) => reply(res, status));
    const outcome = await runtime.run(brief, config(agent.url), ctx());
    expect(outcome).toEqual({ kind: 'failed', reason: `agent answered HTTP ${status}`, retryable: false });
  });

  it('a redirect is not followed: failed, not retryable', async () => {
    const elsewhere = await startAgent((_req, res) => reply(res, 202));
    const agent = await startAgent((_req, res) => res.writeHead(307, { location: elsewhere.url }).end());
    const outcome = await runtime.run(brief, config(agent.url), ctx());
    expect(outcome).toMatchObject({ kind: 'failed', retryable: false, reason: expect.stringContaining('redirect') });
    expect(elsewhere.received).toHaveLength(0);
  });

  it('an agent that cannot be reached: failed, retryable', async () => {
    const agent = await startAgent(() => {});
    await agent.close();
    const outcome = await runtime.run(brief, config(agent.url), ctx());
    expect(outcome).toMatchObject({ kind: 'failed', retryable: true, reason: expect.stringContaining('could not reach the agent') });
  });

  it.each([
    ['not JSON', 'this is not json', /not JSON/],
    ['no result', { done: true }, /result/],
    ['an unknown result type', { result: { type: 'video', content: 'x' } }, /result\.type/],
    ['no content', { result: { type: 'text' } }, /result\.content/],
    ['bad metadata', { result: { type: 'text', content: 'x', metadata: { tokens_used: -3 } } }, /result\.metadata\.tokens_used/],
    ['a secret echoed back', { result: { type: secret, content: secret } }, /result\.type/],
  ])('a 200 with %s: failed, not retryable, says why, never shows the secret', async (_name, body, why) => {
    const agent = await startAgent((_req, res) => reply(res, 200, body));
    const outcome = await runtime.run(brief, config(agent.url), ctx());
    expect(outcome).toMatchObject({ kind: 'failed', retryable: false });
    const reason = outcome.kind === 'failed' ? outcome.reason : '';
    expect(reason).toMatch(/invalid 200 response|not JSON/);
    expect(reason).toMatch(why);
    expect(reason).not.toContain(secret);
  });

  it('a 200 body larger than the limit: failed, not retryable', async () => {
    const agent = await startAgent((_req, res) => reply(res, 200, 'x'.repeat(MAX_RESPONSE_BYTES + 1)));
    const outcome = await runtime.run(brief, config(agent.url), ctx());
    expect(outcome).toEqual({ kind: 'failed', reason: `invalid 200 response: response body exceeds ${MAX_RESPONSE_BYTES} bytes`, retryable: false });
  });

  it('notifyCancelled reaches the agent, signed', async () => {
    const agent = await startAgent((_req, res) => reply(res, 200, {}));
    await runtime.notifyCancelled?.(brief, config(agent.url), 'client cancelled');
    expect(agent.received).toHaveLength(1);
    const [req] = agent.received;
    expect(verifyWebhookSignature(secret, req?.headers['x-task-escrow-signature'] as string, req?.body ?? '', nowSeconds())).toBe(true);
    expect(req?.headers['x-task-escrow-event']).toBe('task.cancelled');
    expect(JSON.parse(req?.body ?? '')).toEqual({ type: 'task.cancelled', task: { id: brief.taskId }, reason: 'client cancelled' });
  });

  it('notifyCancelled swallows errors', async () => {
    const agent = await startAgent(() => {});
    await agent.close();
    await expect(runtime.notifyCancelled?.(brief, config(agent.url), 'timeout')).resolves.toBeUndefined();
  });

  it('with allowPrivate false a loopback URL is refused and no request reaches the agent', async () => {
    const agent = await startAgent((_req, res) => reply(res, 202));
    const strict = createWebhookRuntime({ clock: systemClock, ssrf: { allowPrivate: false } });
    const outcome = await strict.run(brief, config(agent.url), ctx());
    expect(outcome).toMatchObject({ kind: 'failed', retryable: false, reason: expect.stringContaining('webhook URL refused') });
    await strict.notifyCancelled?.(brief, config(agent.url), 'cancelled');
    expect(agent.received).toHaveLength(0);
  });

  it('resolves the agent’s host with the injected resolver and connects to the address it answered', async () => {
    const agent = await startAgent((_req, res) => reply(res, 202));
    const asked: string[] = [];
    const resolver = async (host: string) => {
      asked.push(host);
      return [{ address: '127.0.0.1', family: 4 }];
    };
    const withResolver = createWebhookRuntime({ clock: systemClock, resolver, ssrf: { allowPrivate: true } });
    const url = agent.url.replace('127.0.0.1', 'agent.example');
    expect(await withResolver.run(brief, config(url), ctx())).toEqual({ kind: 'accepted' });
    expect(asked).toEqual(['agent.example']);
    expect(agent.received).toHaveLength(1);
    expect(agent.received[0]?.headers.host).toBe(new URL(url).host);
  });
});
