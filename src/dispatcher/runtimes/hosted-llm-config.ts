import { z } from 'zod';
import type { Resolver } from '../../net/ssrf.js';
import type { HttpFetchPolicy } from '../tools/http-fetch.js';
import type { ModelPrice } from './llm-prices.js';

/** The `hosted_llm` runtime's per-agent config schema and its operator options (see ./hosted-llm.ts). */

/**
 * The tools a hosted agent's owner may enable (a task may only narrow them, `RunLimits`):
 * `http_fetch`, and `delegation` (the `delegate_task` tool: hire children paid from the task's
 * escrow; never offered on a task that is itself a child).
 */
export const TOOLSETS = ['http_fetch', 'delegation'] as const;

export const HostedLlmConfig = z
  .object({
    kind: z.literal('hosted_llm'),
    model: z.string().min(1).max(200),
    /** Default: the operator's base URL. */
    base_url: z.url({ protocol: /^https?$/ }).max(2048).optional(),
    /** Default: the operator's key (only with the operator's base URL). Never logged, never returned. */
    api_key: z.string().min(1).max(4096).optional(),
    system_prompt: z.string().max(20_000),
    toolsets: z.array(z.enum(TOOLSETS)).max(8).default([]),
    max_iterations: z.number().int().min(1).max(200).default(50),
    max_cost_usd: z.number().positive().max(100).optional(),
    temperature: z.number().min(0).max(2).optional(),
    max_tokens_per_call: z.number().int().positive().max(1_000_000).optional(),
  })
  .strict();
export type HostedLlmConfigT = z.infer<typeof HostedLlmConfig>;
export type Toolset = HostedLlmConfigT['toolsets'][number];

/**
 * A run within a task's limits: only the toolsets both the owner enabled and the task allows, and
 * at most the smaller of the two iteration limits.
 */
export function withinLimits(config: HostedLlmConfigT, limits: { toolsets?: readonly string[]; max_iterations?: number } | undefined): HostedLlmConfigT {
  if (!limits) return config;
  return {
    ...config,
    toolsets: limits.toolsets ? config.toolsets.filter((t) => limits.toolsets!.includes(t)) : config.toolsets,
    max_iterations: Math.min(config.max_iterations, limits.max_iterations ?? config.max_iterations),
  };
}

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
