import { redactText } from '../../net/redact.js';
import { formatUsdc } from '../../payments/prices.js';
import type { AgentRuntime, RunContext, RunOutcome, TaskBrief } from '../runtime.js';
import { defaultHttpFetchPolicy } from '../tools/http-fetch.js';
import { HostedLlmConfig, withinLimits, type HostedLlmConfigT, type HostedLlmOptions } from './hosted-llm-config.js';
import { callProvider, costOf, resolveProvider, RunFailure, usageOf, type ChatMessage, type Usage } from './llm-provider.js';
import type { ModelPrice } from './llm-prices.js';
import { normalizeToolCalls, runToolCalls, toolDefinitions, toolsFor } from './llm-tools.js';

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

export { HostedLlmConfig, type HostedLlmConfigT, type HostedLlmOptions, type Toolset } from './hosted-llm-config.js';
export { costOf } from './llm-provider.js';
export type { ModelPrice };

const FINISH_INSTRUCTION =
  'You are working on one task for a client; the task follows as the user message. ' +
  'Use the tools only when they help. When you are done, reply with your final answer as plain ' +
  'text and call no tool: that reply is delivered to the client as the result.';

// ---------------------------------------------------------------- the brief

function briefMessage(brief: TaskBrief): string {
  return [
    `Task:\n${brief.description}`,
    `Requirements (JSON):\n${JSON.stringify(brief.requirements ?? null, null, 2)}`,
    // the budget is always USDC (TaskBrief.budget.currency), which formatUsdc names
    `Budget: ${formatUsdc(BigInt(brief.budget.amount))}`,
    `Deadline: ${brief.deadline.toISOString()}`,
    ...(brief.predecessors?.length
      ? [`Results of the tasks this one depends on (JSON, in order):\n${JSON.stringify(brief.predecessors, null, 2)}`]
      : []),
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
  const tools = toolsFor(
    config.toolsets,
    { ...defaultHttpFetchPolicy, ...(opts.resolver ? { resolver: opts.resolver } : {}), ...opts.httpFetchPolicy },
    ctx.tools,
  );
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
        return await runLoop(brief, withinLimits(config, brief.limits), ctx, opts);
      } catch (err) {
        const failure = err instanceof RunFailure ? err : new RunFailure(`hosted agent crashed: ${err instanceof Error ? err.message : String(err)}`, false);
        return { kind: 'failed', reason: redactText(failure.message, [config.api_key, opts.defaultApiKey]), retryable: failure.retryable };
      }
    },
  };
}
