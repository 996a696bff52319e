import { z } from 'zod';
import { bodyText, isRetryableStatus, OutboundError, outboundRequest } from '../../net/outbound.js';
import { UnsafeUrlError } from '../../net/ssrf.js';
import type { RunContext } from '../runtime.js';
import type { HostedLlmConfigT, HostedLlmOptions } from './hosted-llm-config.js';
import type { ModelPrice } from './llm-prices.js';

/**
 * The hosted_llm runtime's provider client: the OpenAI-compatible chat-completions wire format,
 * one provider call (through src/net/outbound.ts), its failures, and usage and cost.
 */

const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;
const MAX_PROVIDER_RESPONSE_BYTES = 8 * 1024 * 1024;
const REASON_SNIPPET_CHARS = 300;

// ---------------------------------------------------------------- wire format

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export type ChatMessage =
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
export type ChatResponseT = z.infer<typeof ChatResponse>;
export type AssistantMessage = ChatResponseT['choices'][number]['message'];

export interface Usage {
  prompt: number;
  completion: number;
  total: number;
}

/** A run that cannot go on: becomes a failed outcome. */
export class RunFailure extends Error {
  readonly retryable: boolean;

  constructor(reason: string, retryable: boolean) {
    super(reason);
    this.name = 'RunFailure';
    this.retryable = retryable;
  }
}

// ---------------------------------------------------------------- cost

function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

export function usageOf(response: ChatResponseT, messages: ChatMessage[]): Usage {
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

export interface Provider {
  url: string;
  apiKey: string | undefined;
  /** The operator's endpoint may be private (configuration); an agent's own only in dev mode. */
  allowPrivate: boolean;
  /** An agent's own base_url: a refusal says so. */
  own: boolean;
}

export function resolveProvider(config: HostedLlmConfigT, opts: HostedLlmOptions): Provider {
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

export async function callProvider(input: CallInput, ctx: RunContext, opts: HostedLlmOptions): Promise<ChatResponseT> {
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
