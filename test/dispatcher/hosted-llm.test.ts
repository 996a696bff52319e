import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ProgressUpdate, RunContext, RunOutcome, TaskBrief } from '../../src/dispatcher/runtime.js';
import { createHostedLlmRuntime, HostedLlmConfig, type HostedLlmConfigT, type HostedLlmOptions } from '../../src/dispatcher/runtimes/hosted-llm.js';

/**
 * A real OpenAI-compatible chat-completions server on 127.0.0.1, scripted per test: each request
 * takes the next scripted answer and is recorded (headers and body) for the assertions.
 */

interface Recorded {
  headers: http.IncomingHttpHeaders;
  body: {
    model: string;
    messages: Array<{ role: string; content: string | null; tool_call_id?: string; tool_calls?: unknown[] }>;
    tools?: Array<{ type: string; function: { name: string } }>;
    temperature?: number;
    max_tokens?: number;
  };
}
type Scripted = { status?: number; json: unknown } | ((req: http.IncomingMessage, res: http.ServerResponse) => void);

const API_KEY = 'sk-test-0123456789-very-secret';
const MODEL = 'test-model-1';

let provider: http.Server;
let providerUrl: string;
let pages: http.Server;
let pagesUrl: string;
const queue: Scripted[] = [];
const recorded: Recorded[] = [];
/** Resolves when the next request reaches the provider. */
let onRequest: (() => void) | undefined;

function listen(server: http.Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

function close(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

beforeAll(async () => {
  provider = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      recorded.push({ headers: req.headers, body: JSON.parse(raw) as Recorded['body'] });
      onRequest?.();
      const next = queue.shift();
      if (next === undefined) return void res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":{"message":"script exhausted"}}');
      if (typeof next === 'function') return next(req, res);
      res.writeHead(next.status ?? 200, { 'content-type': 'application/json' }).end(JSON.stringify(next.json));
    });
  });
  pages = http.createServer((req, res) => {
    if (req.url === '/facts') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('Solar lanterns charge in 6 hours of sun.');
    res.writeHead(404).end();
  });
  [providerUrl, pagesUrl] = await Promise.all([listen(provider), listen(pages)]);
});
afterAll(async () => {
  await Promise.all([close(provider), close(pages)]);
});
afterEach(() => {
  queue.length = 0;
  recorded.length = 0;
  onRequest = undefined;
});

// ---------------------------------------------------------------- scripting helpers

function answer(content: string, usage = { prompt_tokens: 100, completion_tokens: 20, total_tokens: 120 }): Scripted {
  return { json: { id: 'chatcmpl-1', object: 'chat.completion', model: MODEL, choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }], usage } };
}

function toolCall(calls: Array<{ id: string; name: string; args: unknown }>, usage = { prompt_tokens: 50, completion_tokens: 10, total_tokens: 60 }): Scripted {
  const tool_calls = calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: JSON.stringify(c.args) } }));
  return { json: { id: 'chatcmpl-2', object: 'chat.completion', model: MODEL, choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls }, finish_reason: 'tool_calls' }], usage } };
}

function config(overrides: Partial<HostedLlmConfigT> = {}): HostedLlmConfigT {
  return HostedLlmConfig.parse({ kind: 'hosted_llm', model: MODEL, system_prompt: 'You are LanternBot, a copywriter.', ...overrides });
}

function runtime(overrides: Partial<HostedLlmOptions> = {}) {
  return createHostedLlmRuntime({
    defaultBaseUrl: `${providerUrl}/v1`,
    defaultApiKey: API_KEY,
    defaultMaxCostUsd: 5,
    httpFetchPolicy: { allowPrivate: true },
    ...overrides,
  });
}

const brief: TaskBrief = {
  taskId: 'task_7h2k9d0s1a3f5g6j8l4z',
  agentId: 'agent_0k3v9x2m1q8w7e6r5t4y',
  description: 'Write a 50-word product blurb for a solar lantern',
  requirements: { tone: 'warm', words: 50 },
  budget: { amount: '1500000', currency: 'USDC' },
  deadline: new Date('2026-11-21T13:00:00.000Z'),
  attempt: 1,
  callbacks: { progress: 'http://unused.invalid/progress', deliver: 'http://unused.invalid/deliver' },
};

function context(signal: AbortSignal = new AbortController().signal): RunContext & { updates: ProgressUpdate[] } {
  const updates: ProgressUpdate[] = [];
  return {
    signal,
    updates,
    async report(update) {
      updates.push(update);
    },
  };
}

function failed(outcome: RunOutcome): { reason: string; retryable: boolean } {
  if (outcome.kind !== 'failed') throw new Error(`expected a failure, got ${JSON.stringify(outcome)}`);
  return outcome;
}

// ---------------------------------------------------------------- tests

describe('HostedLlmConfig', () => {
  it('fills the defaults and refuses unknown toolsets, fields and out-of-range limits', () => {
    expect(config()).toMatchObject({ toolsets: [], max_iterations: 50 });
    const base = { kind: 'hosted_llm', model: MODEL, system_prompt: 'x' };
    expect(HostedLlmConfig.safeParse({ ...base, toolsets: ['shell'] }).success).toBe(false);
    expect(HostedLlmConfig.safeParse({ ...base, max_iterations: 201 }).success).toBe(false);
    expect(HostedLlmConfig.safeParse({ ...base, max_cost_usd: 0 }).success).toBe(false);
    expect(HostedLlmConfig.safeParse({ ...base, max_cost_usd: 101 }).success).toBe(false);
    expect(HostedLlmConfig.safeParse({ ...base, base_url: 'ftp://x.example' }).success).toBe(false);
    expect(HostedLlmConfig.safeParse({ ...base, system_prompt: 'x'.repeat(20_001) }).success).toBe(false);
    expect(HostedLlmConfig.safeParse({ ...base, extra: true }).success).toBe(false);
  });
});

describe('the hosted_llm runtime', () => {
  it('delivers a final answer given at once, from a fresh context of system prompt and brief', async () => {
    queue.push(answer('Light up your nights with a lantern that drinks the sun.'));
    const ctx = context();
    const outcome = await runtime().run(brief, config({ temperature: 0.2, max_tokens_per_call: 500 }), ctx);

    expect(outcome).toMatchObject({
      kind: 'completed',
      result: { type: 'text', content: 'Light up your nights with a lantern that drinks the sun.', metadata: { tokens_used: 120, model: MODEL, iterations: 1 } },
    });
    if (outcome.kind !== 'completed') throw new Error('unreachable');
    expect(outcome.result.metadata.duration_seconds).toBeGreaterThanOrEqual(0);
    expect(outcome.result.metadata.duration_seconds).toBeLessThan(10);
    expect(recorded).toHaveLength(1);
    const [first] = recorded;
    expect(first?.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect(first?.body).toMatchObject({ model: MODEL, temperature: 0.2, max_tokens: 500 });
    expect(first?.body.tools).toBeUndefined();
    const messages = first?.body.messages ?? [];
    expect(messages.map((m) => m.role)).toEqual(['system', 'user']);
    expect(messages[0]?.content?.startsWith('You are LanternBot, a copywriter.')).toBe(true);
    expect(messages[0]?.content).toMatch(/final answer/);
    expect(messages[1]?.content).toContain(brief.description);
    expect(messages[1]?.content).toContain('"tone": "warm"');
    expect(messages[1]?.content).toContain('Budget: 1.5 USDC');
    expect(messages[1]?.content).toContain('2026-11-21T13:00:00.000Z');
    expect(ctx.updates).toEqual([]);
  });

  it('runs an http_fetch tool call, feeds the page back under its tool_call_id, then finishes', async () => {
    queue.push(toolCall([{ id: 'call_fetch_1', name: 'http_fetch', args: { url: `${pagesUrl}/facts` } }]), answer('Charges in 6 hours.'));
    const ctx = context();
    const outcome = await runtime().run(brief, config({ toolsets: ['http_fetch'], max_iterations: 10 }), ctx);

    expect(outcome).toMatchObject({ kind: 'completed', result: { content: 'Charges in 6 hours.', metadata: { tokens_used: 180, iterations: 2 } } });
    expect(recorded).toHaveLength(2);
    expect(recorded[0]?.body.tools?.map((t) => [t.type, t.function.name])).toEqual([['function', 'http_fetch']]);
    const second = recorded[1]?.body.messages ?? [];
    expect(second.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'tool']);
    expect(second[2]?.tool_calls).toHaveLength(1);
    expect(second[3]?.tool_call_id).toBe('call_fetch_1');
    const toolResult = JSON.parse(second[3]?.content ?? '{}') as { status: number; body: string };
    expect(toolResult).toMatchObject({ status: 200, body: 'Solar lanterns charge in 6 hours of sun.' });
    expect(ctx.updates).toEqual([{ progress_percent: 10, intermediate_result: { iteration: 1, tokens_used: 60 } }]);
  });

  it('answers an unknown or disabled tool with an error message instead of crashing', async () => {
    queue.push(
      toolCall([
        { id: 'call_a', name: 'shell', args: { cmd: 'rm -rf /' } },
        { id: 'call_b', name: 'http_fetch', args: { url: `${pagesUrl}/facts` } },
      ]),
      answer('Done without tools.'),
    );
    const outcome = await runtime().run(brief, config(), context());

    expect(outcome).toMatchObject({ kind: 'completed', result: { content: 'Done without tools.' } });
    const tools = (recorded[1]?.body.messages ?? []).filter((m) => m.role === 'tool');
    expect(tools.map((m) => m.tool_call_id)).toEqual(['call_a', 'call_b']);
    expect(tools[0]?.content).toContain('unknown tool: shell');
    // http_fetch is not in this agent's toolsets: it is unknown to it
    expect(tools[1]?.content).toContain('unknown tool: http_fetch');
    expect(tools[1]?.content).not.toContain('Solar lanterns');
  });

  it('feeds a refused fetch back as a tool error (SSRF guard on in production policy)', async () => {
    queue.push(toolCall([{ id: 'call_ssrf', name: 'http_fetch', args: { url: 'http://169.254.169.254/latest/meta-data/' } }]), answer('ok'));
    const outcome = await runtime({ httpFetchPolicy: { allowPrivate: false } }).run(brief, config({ toolsets: ['http_fetch'] }), context());
    expect(outcome.kind).toBe('completed');
    const tool = recorded[1]?.body.messages.find((m) => m.role === 'tool');
    expect(tool?.content).toMatch(/"error":".*not a public internet address/);
  });

  it('fails, not retryable, after max_iterations model calls without a final answer', async () => {
    for (let i = 0; i < 10; i++) queue.push(toolCall([{ id: `call_${i}`, name: 'nothing', args: {} }]));
    const ctx = context();
    const outcome = await runtime().run(brief, config({ max_iterations: 3 }), ctx);

    expect(failed(outcome)).toMatchObject({ retryable: false });
    expect(failed(outcome).reason).toMatch(/max_iterations \(3\)/);
    expect(recorded).toHaveLength(3);
    expect(ctx.updates.map((u) => u.progress_percent)).toEqual([33, 67, 95]);
  });

  it('keeps within the task’s limits: only the toolsets the task allows, at most its max_iterations', async () => {
    // The owner enabled http_fetch and 10 iterations; the task (a batch item) allows no tools and 2 iterations.
    for (let i = 0; i < 5; i++) queue.push(toolCall([{ id: `call_${i}`, name: 'http_fetch', args: { url: `${pagesUrl}/facts` } }]));
    const limited = { ...brief, limits: { toolsets: [], max_iterations: 2 } };
    const outcome = await runtime().run(limited, config({ toolsets: ['http_fetch'], max_iterations: 10 }), context());
    expect(failed(outcome).reason).toMatch(/max_iterations \(2\)/);
    expect(recorded).toHaveLength(2);
    expect(recorded[0]?.body.tools ?? []).toEqual([]);
    const tool = recorded[1]?.body.messages.find((m) => m.role === 'tool');
    expect(tool?.content).toContain('unknown tool: http_fetch'); // the page was never fetched
    // A task cannot widen what the owner allows: a larger limit keeps the owner's.
    queue.length = 0;
    recorded.length = 0;
    for (let i = 0; i < 5; i++) queue.push(toolCall([{ id: `c_${i}`, name: 'nothing', args: {} }]));
    const wider = await runtime().run({ ...brief, limits: { toolsets: ['http_fetch'], max_iterations: 200 } }, config({ max_iterations: 3 }), context());
    expect(failed(wider).reason).toMatch(/max_iterations \(3\)/);
    expect(recorded[0]?.body.tools ?? []).toEqual([]);
  });

  it('stops at the cost cap before a call: the third call is never made', async () => {
    // each call: 1000 prompt tokens × 600 USD per million = 0.60 USD, more than half of the 1 USD cap
    const usage = { prompt_tokens: 1000, completion_tokens: 0, total_tokens: 1000 };
    for (let i = 0; i < 5; i++) queue.push(toolCall([{ id: `call_${i}`, name: 'nothing', args: {} }], usage));
    const priceTable = { [MODEL]: { input_per_million_usd: 600, output_per_million_usd: 600 } };
    const outcome = await runtime({ priceTable }).run(brief, config({ max_cost_usd: 1 }), context());

    expect(failed(outcome)).toMatchObject({ retryable: false });
    expect(failed(outcome).reason).toMatch(/^cost cap reached/);
    expect(recorded).toHaveLength(2);
  });

  it('uses the operator’s default cap when the agent sets none, and counts an unpriced model as free', async () => {
    const usage = { prompt_tokens: 1000, completion_tokens: 1000, total_tokens: 2000 };
    queue.push(toolCall([{ id: 'c1', name: 'nothing', args: {} }], usage), toolCall([{ id: 'c2', name: 'nothing', args: {} }], usage));
    const priceTable = { [MODEL]: { input_per_million_usd: 100, output_per_million_usd: 100 } }; // 0.20 USD a call
    const capped = await runtime({ priceTable, defaultMaxCostUsd: 0.1 }).run(brief, config(), context());
    expect(failed(capped).reason).toMatch(/^cost cap reached/);
    expect(recorded).toHaveLength(1);

    recorded.length = 0;
    queue.length = 0;
    queue.push(toolCall([{ id: 'c1', name: 'nothing', args: {} }], usage), answer('free', usage));
    const unpriced = await runtime({ priceTable: { 'another-model': { input_per_million_usd: 1e6, output_per_million_usd: 1e6 } }, defaultMaxCostUsd: 0.1 }).run(brief, config(), context());
    expect(unpriced).toMatchObject({ kind: 'completed', result: { metadata: { tokens_used: 4000, cost_usd: 0 } } });
  });

  it('reports a provider 500 or 429 as retryable, a 401 as not, and never shows the key', async () => {
    queue.push({ status: 500, json: { error: { message: 'upstream overloaded' } } });
    const server = failed(await runtime().run(brief, config(), context()));
    expect(server).toMatchObject({ retryable: true });
    expect(server.reason).toContain('HTTP 500');

    queue.push({ status: 429, json: { error: { message: 'slow down' } } });
    expect(failed(await runtime().run(brief, config(), context()))).toMatchObject({ retryable: true });

    queue.push({ status: 401, json: { error: { message: `Incorrect API key provided: ${API_KEY}` } } });
    const auth = failed(await runtime().run(brief, config(), context()));
    expect(auth).toMatchObject({ retryable: false });
    expect(auth.reason).toContain('HTTP 401');
    expect(auth.reason).toContain('[redacted]');
    expect(auth.reason).not.toContain(API_KEY);

    const ownKey = 'sk-agent-own-key-42';
    queue.push({ status: 403, json: { error: `bad key ${ownKey}` } });
    const own = failed(await runtime().run(brief, config({ api_key: ownKey }), context()));
    expect(own.reason).not.toContain(ownKey);
    expect(recorded.at(-1)?.headers.authorization).toBe(`Bearer ${ownKey}`);
  });

  it('reports an unreachable provider and a provider timeout as retryable', async () => {
    const closed = http.createServer();
    const deadUrl = await listen(closed);
    await close(closed);
    const unreachable = failed(await runtime({ defaultBaseUrl: deadUrl }).run(brief, config(), context()));
    expect(unreachable).toMatchObject({ retryable: true });
    expect(unreachable.reason).toMatch(/^provider unreachable/);
    expect(unreachable.reason).not.toContain(API_KEY);

    queue.push(() => undefined); // never answers
    const slow = failed(await runtime({ requestTimeoutMs: 200 }).run(brief, config(), context()));
    expect(slow).toMatchObject({ reason: 'the provider did not answer in time', retryable: true });
  });

  it('stops with "aborted" when ctx.signal is aborted mid-call', async () => {
    queue.push(() => undefined); // hangs until aborted
    const controller = new AbortController();
    onRequest = () => controller.abort(new Error('task timed out'));
    const outcome = await runtime().run(brief, config(), context(controller.signal));
    expect(outcome).toEqual({ kind: 'failed', reason: 'aborted', retryable: false });
    expect(recorded).toHaveLength(1);
  });

  it('never sends the operator’s key to an agent’s own base_url, and refuses a private one', async () => {
    queue.push(answer('own endpoint'));
    const own = await runtime({ allowPrivateBaseUrl: true }).run(brief, config({ base_url: `${providerUrl}/v1` }), context());
    expect(own.kind).toBe('completed');
    expect(recorded[0]?.headers.authorization).toBeUndefined();

    const refused = failed(await runtime().run(brief, config({ base_url: `${providerUrl}/v1`, api_key: 'sk-x' }), context()));
    expect(refused).toMatchObject({ retryable: false });
    expect(refused.reason).toMatch(/^base_url refused/);
    expect(recorded).toHaveLength(1);
  });

  it('fails, not retryable, on an answer that is not a chat completion or is empty', async () => {
    queue.push({ json: { hello: 'world' } });
    expect(failed(await runtime().run(brief, config(), context()))).toMatchObject({ retryable: false, reason: 'the provider answer is not a chat completion' });
    queue.push(answer('   '));
    expect(failed(await runtime().run(brief, config(), context()))).toMatchObject({ retryable: false, reason: 'the model returned an empty answer' });
  });
});
