import { executeHttpFetch, httpFetchTool, type HttpFetchPolicy } from '../tools/http-fetch.js';
import type { ServiceTool } from '../runtime.js';
import type { Toolset } from './hosted-llm-config.js';
import type { AssistantMessage, ChatMessage, ToolCall } from './llm-provider.js';

/** The hosted_llm runtime's tools: the allow-listed toolsets' definitions and running the model's tool calls. */

const MAX_TOOL_CALLS_PER_TURN = 8;

export interface ToolImpl {
  definition: { name: string; description: string; parameters: unknown };
  execute(args: unknown, signal: AbortSignal): Promise<unknown>;
}

/** The run's tools: those of the enabled toolsets, the service's own (delegate_task) included when offered. */
export function toolsFor(toolsets: readonly Toolset[], policy: HttpFetchPolicy, service: readonly ServiceTool[] = []): Map<string, ToolImpl> {
  const tools = new Map<string, ToolImpl>();
  if (toolsets.includes('http_fetch')) {
    tools.set(httpFetchTool.name, {
      definition: httpFetchTool,
      execute: (args, signal) => executeHttpFetch(args, policy, signal),
    });
  }
  for (const tool of service) {
    if ((toolsets as readonly string[]).includes(tool.toolset)) tools.set(tool.definition.name, tool);
  }
  return tools;
}

export function toolDefinitions(tools: Map<string, ToolImpl>): unknown[] {
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

export function normalizeToolCalls(message: AssistantMessage): ToolCall[] {
  return (message.tool_calls ?? []).map((c) => ({
    id: c.id,
    type: 'function',
    function: { name: c.function.name, arguments: c.function.arguments ?? '' },
  }));
}

export async function runToolCalls(calls: ToolCall[], tools: Map<string, ToolImpl>, signal: AbortSignal): Promise<ChatMessage[]> {
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
