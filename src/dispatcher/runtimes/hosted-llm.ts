import { z } from 'zod';
import { bodyText, isRetryableStatus, OutboundError, outboundRequest } from '../../net/outbound.js';
import { redactText } from '../../net/redact.js';
import { UnsafeUrlError, type Resolver } from '../../net/ssrf.js';
import { formatUsdc } from '../../payments/prices.js';
import type { AgentRuntime, RunContext, RunOutcome, TaskBrief } from '../runtime.js';
import type { ModelPrice } from './llm-prices.js';
import {
  defaultHttpFetchPolicy,
  executeHttpFetch,
  httpFetchTool,
  type HttpFetchPolicy,
} from '../tools/http-fetch.js';

/**
 * The `hosted_llm` runtime: a subagent the service runs itself against an OpenAI-compatible
 * chat-completions endpoint, in the manner of a delegated task — a fresh context made only of
 * the agent's system prompt and the task's brief, the tools of its allow-listed toolsets, an
 * iteration limit and a cost cap; only the final answer comes back as the result.
 *
 * Keys: the operator's default API key is only ever sent to the operator's default base URL.
 * An agent that brings its own `base_url` must bring its own `api_key` (else no Authorization
 * header is sent), and that URL must lead to the public internet (`allowPrivateBaseUrl` aside):
 * every provider call goes through src/net/outbound.ts, which checks the address and pins it for
 * the connection (no DNS rebinding) and never follows a redirect. The operator's own base URL is
 * configuration, trusted to be private (a local model server). No key is logged or put in an
 * outcome (provider messages are redacted).
 *
 * Cost: tokens × the model's price in `priceTable`, or its "*" entry for a model not listed;
 * with neither the call costs 0 (its tokens are still counted and reported, but the cost cap
 * then never stops it: only `max_iterations` does). A provider answer without `usage` is counted with an estimate
 * (about 4 characters a token) so that it cannot dodge the cap.
 */

export const HostedLlmConfig = z
  .object({
    kind: z.literal('hosted_llm'),
    model: z.string().min(1).max(200),
    /** Default: the operator's base URL. */
    base_url: z.url({ protocol: /^https?$/ }).max(2048).optional(),
    /** Default: the operator's key (only with the operator's base URL). Never logged, never returned. */
    api_key: z.string().min(1).max(4096).optional(),
    system_prompt: z.string().max(20_000),
    toolsets: z.array(z.enum(['http_fetch'])).max(8).default([]),
    max_iterations: z.number().int().min(1).max(200).default(50),
    max_cost_usd: z.number().positive().max(100).optional(),
    temperature: z.number().min(0).max(2).optional(),
    max_tokens_per_call: z.number().int().positive().max(1_000_000).optional(),
  })
  .strict();
export type HostedLlmConfigT = z.infer<typeof HostedLlmConfig>;
export type Toolset = HostedLlmConfigT['toolsets'][number];

export type { ModelPrice };

export interface HostedLlmOptions {
  /** The operator's OpenAI-compatible endpoint (…/v1), used when an agent names none. */
  defaultBaseUrl?: string;
  /** The operator's key for `defaultBaseUrl`. */
  defaultApiKey?: string;
  priceTable?: Record<string, ModelPrice>;
  /** The cost cap of agents that set no `max_cost_usd`. */
  defaultMaxCostUsd: number;
  /** Name resolution for provider calls and http_fetch (unless its policy names one); default the system resolver. */
  resolver?: Resolver;
  httpFetchPolicy?: Partial<HttpFetchPolicy>;
  /** Per provider call; default 120 s. */
  requestTimeoutMs?: number;
  /** Lets an agent's own `base_url` point at loopback/private hosts: development and tests only. */
  allowPrivateBaseUrl?: boolean;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;
const MAX_PROVIDER_RESPONSE_BYTES = 8 * 1024 * 1024;
const MAX_TOOL_CALLS_PER_TURN = 8;
const REASON_SNIPPET_CHARS = 300;

const FINISH_INSTRUCTION =
  'You are working on one task for a client; the task follows as the user message. ' +
  'Use the tools only when they help. When you are done, reply with your final answer as plain ' +
  'text and call no tool: that reply is delivered to the client as the result.';

// ---------------------------------------------------------------- wire format

interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

type ChatMessage =
  | { role: 'system' | 'user'; content: string }
  | { role: 'assistant'; content: string | null; tool_calls?: ToolCall[] }
  | { role: 'tool'; tool_call_id: string; content: string };

const ChatResponse = z.object({
  choices: z
    .array(
      z.object({
        message: z.object({
          content: z.string().nullish(),
          tool_calls: z
            .array(
              z.object({
                id: z.string(),
                type: z.literal('function').optional(),
                function: z.object({ name: z.string(), arguments: z.string().nullish() }),
              }),
            )
            .nullish(),
        }),
      }),
    )
    .min(1),
  usage: z
    .object({
      prompt_tokens: z.number().nonnegative().optional(),
      completion_tokens: z.number().nonnegative().optional(),
      total_tokens: z.number().nonnegative().optional(),
    })
    .nullish(),
});
type ChatResponseT = z.infer<typeof ChatResponse>;
type AssistantMessage = ChatResponseT['choices'][number]['message'];

interface Usage {
  prompt: number;
  completion: number;
  total: number;
}

/** A run that cannot go on: becomes a failed outcome. */
class RunFailure extends Error {
  readonly retryable: boolean;

  constructor(reason: string, retryable: boolean) {
    super(reason);
    this.name = 'RunFailure';
    this.retryable = retryable;
  }
}

// ---------------------------------------------------------------- the brief

function briefMessage(brief: TaskBrief): string {
  return [
    `Task:\n${brief.description}`,
    `Requirements (JSON):\n${JSON.stringify(brief.requirements ?? null, null, 2)}`,
    // the budget is always USDC (TaskBrief.budget.currency), which formatUsdc names
    `Budget: ${formatUsdc(BigInt(brief.budget.amount))}`,
    `Deadline: ${brief.deadline.toISOString()}`,
  ].join('\n\n');
}

/** The fresh context of a run: the agent's system prompt and the brief, nothing else. */
export function initialMessages(brief: TaskBrief, config: HostedLlmConfigT): ChatMessage[] {
  const system = config.system_prompt.trim() === '' ? FINISH_INSTRUCTION : `${config.system_prompt}\n\n${FINISH_INSTRUCTION}`;
  return [
    { role: 'system', content: system },
    { role: 'user', content: briefMessage(brief) },
  ];
}

// ---------------------------------------------------------------- tools

interface ToolImpl {
  definition: { name: string; description: string; parameters: unknown };
  execute(args: unknown, signal: AbortSignal): Promise<unknown>;
}

function toolsFor(toolsets: readonly Toolset[], policy: HttpFetchPolicy): Map<string, ToolImpl> {
  const tools = new Map<string, ToolImpl>();
  if (toolsets.includes('http_fetch')) {
    tools.set(httpFetchTool.name, {
      definition: httpFetchTool,
      execute: (args, signal) => executeHttpFetch(args, policy, signal),
    });
  }
  return tools;
}

function toolDefinitions(tools: Map<string, ToolImpl>): unknown[] {
  return [...tools.values()].map((t) => ({ type: 'function', function: t.definition }));
}

function parseToolArguments(raw: string | null | undefined): unknown {
  if (raw === null || raw === undefined || raw.trim() === '') return {};
  try {
    return JSON.parse(raw);
  } catch {
    throw new Error('the arguments are not valid JSON');
  }
}

async function runToolCall(call: ToolCall, tools: Map<string, ToolImpl>, signal: AbortSignal): Promise<string> {
  const tool = tools.get(call.function.name);
  if (!tool) return JSON.stringify({ error: `unknown tool: ${call.function.name}; available: ${[...tools.keys()].join(', ') || 'none'}` });
  try {
    const result = await tool.execute(parseToolArguments(call.function.arguments), signal);
    return JSON.stringify(result);
  } catch (err) {
    return JSON.stringify({ error: err instanceof Error ? err.message : String(err) });
  }
}

function normalizeToolCalls(message: AssistantMessage): ToolCall[] {
  return (message.tool_calls ?? []).map((c) => ({
    id: c.id,
    type: 'function',
    function: { name: c.function.name, arguments: c.function.arguments ?? '' },
  }));
}

async function runToolCalls(calls: ToolCall[], tools: Map<string, ToolImpl>, signal: AbortSignal): Promise<ChatMessage[]> {
  const results: ChatMessage[] = [];
  for (const [index, call] of calls.entries()) {
    const content =
      index < MAX_TOOL_CALLS_PER_TURN
        ? await runToolCall(call, tools, signal)
        : JSON.stringify({ error: `at most ${MAX_TOOL_CALLS_PER_TURN} tool calls are run per turn` });
    results.push({ role: 'tool', tool_call_id: call.id, content });
    if (signal.aborted) break;
  }
  return results;
}

// ---------------------------------------------------------------- cost

function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

function usageOf(response: ChatResponseT, messages: ChatMessage[]): Usage {
  const u = response.usage;
  if (u && (u.total_tokens !== undefined || u.prompt_tokens !== undefined || u.completion_tokens !== undefined)) {
    const prompt = u.prompt_tokens ?? 0;
    const completion = u.completion_tokens ?? 0;
    return { prompt, completion, total: u.total_tokens ?? prompt + completion };
  }
  const message = response.choices[0]?.message;
  const prompt = estimateTokens(JSON.stringify(messages));
  const completion = estimateTokens(JSON.stringify(message ?? ''));
  return { prompt, completion, total: prompt + completion };
}

/** USD cost of a call; 0 for a model missing from the price table. */
export function costOf(usage: { prompt: number; completion: number }, price: ModelPrice | undefined): number {
  if (!price) return 0;
  return (usage.prompt * price.input_per_million_usd + usage.completion * price.output_per_million_usd) / 1_000_000;
}

// ---------------------------------------------------------------- the provider

interface Provider {
  url: string;
  apiKey: string | undefined;
  /** The operator's endpoint may be private (configuration); an agent's own only in dev mode. */
  allowPrivate: boolean;
  /** An agent's own base_url: a refusal says so. */
  own: boolean;
}

function resolveProvider(config: HostedLlmConfigT, opts: HostedLlmOptions): Provider {
  if (config.base_url !== undefined) {
    // the operator's key never goes to an agent's own endpoint
    return { url: chatCompletionsUrl(config.base_url), apiKey: config.api_key, allowPrivate: opts.allowPrivateBaseUrl ?? false, own: true };
  }
  if (opts.defaultBaseUrl === undefined) throw new RunFailure('no provider base URL is configured', false);
  return { url: chatCompletionsUrl(opts.defaultBaseUrl), apiKey: config.api_key ?? opts.defaultApiKey, allowPrivate: true, own: false };
}

function chatCompletionsUrl(baseUrl: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/chat/completions`;
}

function providerErrorDetail(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } | string };
    const message = typeof parsed.error === 'string' ? parsed.error : parsed.error?.message;
    if (typeof message === 'string') return message.slice(0, REASON_SNIPPET_CHARS);
  } catch {
    // not JSON: the raw text below
  }
  return body.slice(0, REASON_SNIPPET_CHARS);
}

function statusFailure(status: number, body: string): RunFailure {
  const detail = providerErrorDetail(body).trim();
  const reason = `provider answered HTTP ${status}${detail ? `: ${detail}` : ''}`;
  return new RunFailure(reason, isRetryableStatus(status));
}

function parseChatResponse(body: string): ChatResponseT {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new RunFailure('the provider answered with invalid JSON', false);
  }
  const parsed = ChatResponse.safeParse(json);
  if (!parsed.success) throw new RunFailure('the provider answer is not a chat completion', false);
  return parsed.data;
}

interface CallInput {
  provider: Provider;
  config: HostedLlmConfigT;
  messages: ChatMessage[];
  tools: unknown[];
}

function requestBody({ config, messages, tools }: CallInput): string {
  return JSON.stringify({
    model: config.model,
    messages,
    ...(tools.length > 0 ? { tools } : {}),
    ...(config.temperature !== undefined ? { temperature: config.temperature } : {}),
    ...(config.max_tokens_per_call !== undefined ? { max_tokens: config.max_tokens_per_call } : {}),
  });
}

function transportFailure(err: unknown, provider: Provider, ctxSignal: AbortSignal): RunFailure {
  if (err instanceof RunFailure) return err;
  if (ctxSignal.aborted) return new RunFailure('aborted', false);
  if (err instanceof UnsafeUrlError) {
    return new RunFailure(`${provider.own ? 'base_url' : 'provider URL'} refused: ${err.message}`, false);
  }
  if (err instanceof OutboundError) {
    if (err.kind === 'timeout') return new RunFailure('the provider did not answer in time', true);
    if (err.kind === 'too_large') return new RunFailure(`the provider response is larger than ${MAX_PROVIDER_RESPONSE_BYTES} bytes`, false);
    if (err.kind === 'invalid_request') return new RunFailure(`could not send to the provider: ${err.message}`, false);
  }
  return new RunFailure(`provider unreachable: ${err instanceof Error ? err.message : String(err)}`, true);
}

async function callProvider(input: CallInput, ctx: RunContext, opts: HostedLlmOptions): Promise<ChatResponseT> {
  const { provider } = input;
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
  if (provider.apiKey) headers.authorization = `Bearer ${provider.apiKey}`;
  let res;
  try {
    res = await outboundRequest(provider.url, {
      method: 'POST',
      headers,
      body: requestBody(input),
      redirect: 'manual',
      allowPrivate: provider.allowPrivate,
      timeoutMs: opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      maxBytes: MAX_PROVIDER_RESPONSE_BYTES,
      signal: ctx.signal,
      secrets: [provider.apiKey],
      ...(opts.resolver ? { resolver: opts.resolver } : {}),
    });
  } catch (err) {
    throw transportFailure(err, provider, ctx.signal);
  }
  const body = bodyText(res);
  if (res.status >= 300 && res.status < 400) throw new RunFailure(`provider answered with a redirect (HTTP ${res.status})`, false);
  if (res.status < 200 || res.status >= 300) throw statusFailure(res.status, body);
  return parseChatResponse(body);
}

// ---------------------------------------------------------------- the loop

interface RunState {
  iterations: number;
  usage: Usage;
  costUsd: number;
}

function progressPercent(iteration: number, maxIterations: number): number {
  return Math.min(95, Math.round((100 * iteration) / maxIterations));
}

async function reportProgress(ctx: RunContext, state: RunState, maxIterations: number): Promise<void> {
  try {
    await ctx.report({
      progress_percent: progressPercent(state.iterations, maxIterations),
      intermediate_result: { iteration: state.iterations, tokens_used: state.usage.total },
    });
  } catch {
    // progress is best effort: a failed report does not stop the work
  }
}

function completed(content: string, config: HostedLlmConfigT, state: RunState, startedAt: number): RunOutcome {
  return {
    kind: 'completed',
    result: {
      type: 'text',
      content,
      metadata: {
        tokens_used: state.usage.total,
        model: config.model,
        duration_seconds: Math.round(performance.now() - startedAt) / 1000,
        iterations: state.iterations,
        cost_usd: Math.round(state.costUsd * 1e6) / 1e6,
      },
    },
  };
}

function addUsage(state: RunState, usage: Usage, price: ModelPrice | undefined): void {
  state.iterations += 1;
  state.usage = {
    prompt: state.usage.prompt + usage.prompt,
    completion: state.usage.completion + usage.completion,
    total: state.usage.total + usage.total,
  };
  state.costUsd += costOf(usage, price);
}

async function runLoop(brief: TaskBrief, config: HostedLlmConfigT, ctx: RunContext, opts: HostedLlmOptions): Promise<RunOutcome> {
  const startedAt = performance.now();
  const provider = resolveProvider(config, opts);
  const tools = toolsFor(config.toolsets, { ...defaultHttpFetchPolicy, ...(opts.resolver ? { resolver: opts.resolver } : {}), ...opts.httpFetchPolicy });
  const definitions = toolDefinitions(tools);
  const price = opts.priceTable?.[config.model] ?? opts.priceTable?.['*'];
  const costCap = config.max_cost_usd ?? opts.defaultMaxCostUsd;
  const messages = initialMessages(brief, config);
  const state: RunState = { iterations: 0, usage: { prompt: 0, completion: 0, total: 0 }, costUsd: 0 };

  while (state.iterations < config.max_iterations) {
    if (ctx.signal.aborted) throw new RunFailure('aborted', false);
    if (state.costUsd >= costCap) throw new RunFailure(`cost cap reached (${state.costUsd.toFixed(4)} of ${costCap} USD)`, false);
    const response = await callProvider({ provider, config, messages, tools: definitions }, ctx, opts);
    addUsage(state, usageOf(response, messages), price);
    const message = response.choices[0]?.message ?? { content: null };
    const calls = normalizeToolCalls(message);
    if (calls.length === 0) {
      const content = message.content?.trim() ?? '';
      if (content === '') throw new RunFailure('the model returned an empty answer', false);
      return completed(message.content ?? '', config, state, startedAt);
    }
    messages.push({ role: 'assistant', content: message.content ?? null, tool_calls: calls });
    messages.push(...(await runToolCalls(calls, tools, ctx.signal)));
    if (ctx.signal.aborted) throw new RunFailure('aborted', false);
    await reportProgress(ctx, state, config.max_iterations);
  }
  throw new RunFailure(`no final answer after max_iterations (${config.max_iterations}) model calls`, false);
}

export function createHostedLlmRuntime(opts: HostedLlmOptions): AgentRuntime<HostedLlmConfigT> {
  return {
    kind: 'hosted_llm',
    configSchema: HostedLlmConfig,
    async run(brief, config, ctx) {
      try {
        return await runLoop(brief, config, ctx, opts);
      } catch (err) {
        const failure = err instanceof RunFailure ? err : new RunFailure(`hosted agent crashed: ${err instanceof Error ? err.message : String(err)}`, false);
        return { kind: 'failed', reason: redactText(failure.message, [config.api_key, opts.defaultApiKey]), retryable: failure.retryable };
      }
    },
  };
}
