import { z } from 'zod';
import type { Clock } from '../../clock.js';
import { allowPrivateUrls, type Config } from '../../config.js';
import { AppError } from '../../errors.js';
import type { AgentRuntime } from '../runtime.js';
import { llmPrices } from './llm-prices.js';
import { HostedLlmConfig, createHostedLlmRuntime } from './hosted-llm.js';
import { WebhookConfig, createWebhookRuntime, redactWebhookConfig } from './webhook.js';

/** Every kind of agent runtime the dispatcher can run. */
export function createRuntimes(config: Config, clock: Clock): AgentRuntime<unknown>[] {
  const allowPrivate = allowPrivateUrls(config);
  return [
    createWebhookRuntime({ clock, ssrf: { allowPrivate } }),
    createHostedLlmRuntime({
      ...(config.LLM_BASE_URL ? { defaultBaseUrl: config.LLM_BASE_URL } : {}),
      ...(config.LLM_API_KEY ? { defaultApiKey: config.LLM_API_KEY } : {}),
      defaultMaxCostUsd: config.LLM_MAX_COST_USD,
      priceTable: llmPrices(config.LLM_PRICES),
      httpFetchPolicy: { allowPrivate },
      allowPrivateBaseUrl: allowPrivate,
    }),
  ] as AgentRuntime<unknown>[];
}

const AnyRuntime = z.discriminatedUnion('kind', [WebhookConfig, HostedLlmConfig]);

/**
 * An agent's runtime object, validated per kind at registration ({} = none yet: the agent can
 * be listed, but its tasks fail until it has one).
 */
export function validateRuntime(runtime: Record<string, unknown>): Record<string, unknown> {
  if (Object.keys(runtime).length === 0) return runtime;
  const parsed = AnyRuntime.safeParse(runtime);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = ['runtime', ...(issue?.path ?? [])].join('.');
    throw new AppError('validation_error', `${where}: ${issue?.message ?? 'invalid runtime'} (kinds: webhook, hosted_llm)`, { param: where });
  }
  return parsed.data as Record<string, unknown>;
}

/** What the owner is shown of its runtime: secrets and keys redacted. */
export function redactRuntime(runtime: Record<string, unknown>): Record<string, unknown> {
  if (runtime.kind === 'webhook' && typeof runtime.secret === 'string') {
    return redactWebhookConfig(runtime as z.output<typeof WebhookConfig>);
  }
  if (runtime.kind === 'hosted_llm' && typeof runtime.api_key === 'string') return { ...runtime, api_key: '[redacted]' };
  return runtime;
}
