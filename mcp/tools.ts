/**
 * The MCP tools, each a thin call into the SDK (sdk/src/index.ts): every HTTP request and x402
 * payment is the SDK's. One McpServer per MCP session, with its own TaskEscrowClient, so the
 * spend caps (maxPerCall, maxPerSession) hold per session.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import {
  SpendLimitError,
  TaskEscrowApiError,
  usdc,
  type Batch,
  type BatchInputItem,
  type TaskEscrowClient,
  type TaskStatus,
} from '../sdk/src/index.js';

export const SERVER_NAME = 'task-escrow';
export const SERVER_VERSION = '0.1.0';

const usdcAmount = z
  .string()
  .regex(/^\d+(\.\d{1,6})?$/, 'decimal USDC with at most 6 decimals, e.g. "0.2"')
  .describe('Decimal USDC, e.g. "0.2" (not atomic units)');
const taskId = z.string().min(1).describe('The task id, "task_…", as hire_agent or delegate_batch returned it');

const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x), 2);

/** "1500000" → "1.5" */
function formatUsdc(atomic: string | bigint): string {
  const a = BigInt(atomic);
  const frac = (a % 1_000_000n).toString().padStart(6, '0').replace(/0+$/, '');
  return `${a / 1_000_000n}${frac ? `.${frac}` : ''}`;
}

interface ToolContext {
  sdk: TaskEscrowClient;
  redact: (text: string) => string;
}

type Extra = {
  _meta?: { progressToken?: string | number };
  sendNotification: (n: { method: 'notifications/progress'; params: { progressToken: string | number; progress: number; total?: number; message?: string } }) => Promise<void>;
  signal: AbortSignal;
};

/** Sends MCP progress notifications when the caller gave a progressToken; progress only ever increases. */
function progressReporter(extra: Extra) {
  const token = extra._meta?.progressToken;
  let last = -1;
  return (progress: number, total: number, message: string) => {
    if (token === undefined || progress <= last) return;
    last = progress;
    void extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress, total, message } }).catch(() => undefined);
  };
}

function spending(sdk: TaskEscrowClient) {
  const s = sdk.spending();
  return { spent_usdc: formatUsdc(s.spent), remaining_usdc: formatUsdc(s.remaining < 0n ? 0n : s.remaining), max_per_call_usdc: formatUsdc(s.maxPerCall), max_per_session_usdc: formatUsdc(s.maxPerSession) };
}

/** Any failure as an MCP tool error: `{error:{name, code, message, …}}`, never with the key. */
function toolError(err: unknown, redact: (t: string) => string): CallToolResult {
  const details =
    err instanceof SpendLimitError
      ? { code: 'spend_limit', cap: err.cap, requested: err.requested.toString(), limit: err.limit.toString(), spent: err.spent.toString(), nothing_paid: true }
      : err instanceof TaskEscrowApiError
        ? { code: err.code, status: err.status }
        : { code: 'error' };
  const name = err instanceof Error ? err.name : 'Error';
  const message = err instanceof Error ? err.message : String(err);
  const text = redact(json({ error: { name, ...details, message } }));
  return { isError: true, content: [{ type: 'text', text }] };
}

function run(ctx: ToolContext, fn: () => Promise<unknown>): Promise<CallToolResult> {
  return fn().then(
    (value) => ({ content: [{ type: 'text' as const, text: ctx.redact(json(value)) }] }),
    (err: unknown) => toolError(err, ctx.redact),
  );
}

const TERMINAL = (s: TaskStatus) => s.status !== 'created' && s.status !== 'in_progress';

export function createMcpServer(sdk: TaskEscrowClient, redact: (text: string) => string): McpServer {
  const server = new McpServer(
    { name: SERVER_NAME, version: SERVER_VERSION },
    {
      instructions:
        'task-escrow: hire other AI agents and pay them in USDC (x402, escrowed until delivery). Find an agent with search_agents, ' +
        'hire one with hire_agent (wait: true for the result in the same call), or several at once with delegate_batch. ' +
        'Follow a task with task_status / task_result; cancel_task refunds. Every call except receipts is paid from the configured wallet, ' +
        'within a per-call and per-session spend cap; a refusal by the cap means nothing was paid.',
    },
  );
  const ctx: ToolContext = { sdk, redact };

  server.registerTool(
    'search_agents',
    {
      title: 'Search agents for hire',
      description:
        'Find agents that can do a job: by capability (e.g. "copywriting", "image-generation") or free text, ranked. Returns each agent\'s id, ' +
        'name, capabilities, base rate (atomic USDC) and rating. Use this first when you do not know which agent_id to hire. Costs 0.001 USDC.',
      inputSchema: {
        query: z.string().min(1).describe('Capability or words describing the work'),
        max_price: usdcAmount.optional().describe('Only agents whose base rate is at most this, decimal USDC'),
        min_rating: z.number().min(1).max(5).optional().describe('Only agents rated at least this (1-5)'),
        availability: z.enum(['online', 'offline', 'any']).optional().describe('Default: online agents only'),
        limit: z.number().int().min(1).max(100).optional().describe('How many agents (default 10)'),
      },
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    (a) =>
      run(ctx, () =>
        sdk.searchAgents({
          query: a.query,
          ...(a.max_price !== undefined && { max_price: usdc(a.max_price) }),
          ...(a.min_rating !== undefined && { min_rating: a.min_rating }),
          availability: a.availability ?? 'online',
          limit: a.limit ?? 10,
        }),
      ),
  );

  server.registerTool(
    'hire_agent',
    {
      title: 'Hire one agent',
      description:
        'Hire ONE agent for ONE task: creates the task and funds its escrow with the budget (paid now, released to the agent on delivery, ' +
        'refunded if it fails). Give agent_id (from search_agents) or query (the best-ranked online agent matching it whose rate fits the budget). ' +
        'With wait: true, waits for the end and returns the result (progress notifications if you sent a progressToken); otherwise returns the task_id ' +
        'at once, to follow with task_status / task_result. For several tasks at once use delegate_batch instead.',
      inputSchema: {
        agent_id: z.string().optional().describe('The agent to hire, "agent_…" (or give query)'),
        query: z.string().optional().describe('Or: hire the best-ranked online agent matching this capability/text within the budget'),
        description: z.string().min(1).describe('What the agent must do'),
        budget: usdcAmount.describe('The escrow, decimal USDC, e.g. "0.2"; the service adds small fees'),
        timeout_seconds: z.number().int().positive().optional().describe('How long the agent may work (default 3600)'),
        wait: z.boolean().optional().describe('Wait for the task to end and return its result (default false)'),
      },
      annotations: { readOnlyHint: false, destructiveHint: false, openWorldHint: true },
    },
    (a, extra) =>
      run(ctx, async () => {
        if (!a.agent_id === !a.query) throw new Error('give exactly one of agent_id or query');
        const budget = usdc(a.budget);
        let agentId = a.agent_id;
        if (!agentId) {
          const found = await sdk.searchAgents({ query: a.query!, max_price: budget, availability: 'online', limit: 1 });
          const agent = found.agents[0];
          if (!agent)
            throw new TaskEscrowApiError(404, { error: { code: 'no_agent_found', message: `no online agent matches ${JSON.stringify(a.query)} within ${a.budget} USDC` } }, 'hire_agent');
          agentId = agent.id;
        }
        const hired = await sdk.hire({ agent_id: agentId, description: a.description, budget, ...(a.timeout_seconds !== undefined && { timeout_seconds: a.timeout_seconds }) });
        const base = { task_id: hired.task_id, agent_id: agentId, funded: hired.funded };
        if (!a.wait) return { ...base, spending: spending(sdk) };
        const report = progressReporter(extra as unknown as Extra);
        const status = await sdk.wait(hired.task_id, {
          signal: (extra as unknown as Extra).signal,
          onProgress: (s) => report(TERMINAL(s) ? 100 : s.progress_percent, 100, `${s.status} (${s.stage})`),
        });
        const result = status.status === 'completed' ? await sdk.result(hired.task_id) : null;
        return { ...base, status: status.status, escrow_status: status.escrow_status, result: result?.result ?? null, result_hash: result?.result_hash ?? null, final_status: status, spending: spending(sdk) };
      }),
  );

  server.registerTool(
    'task_status',
    {
      title: 'Task status',
      description:
        'One look at a task you hired: status (created, in_progress, completed, failed, cancelled, disputed, expired), stage, progress percent, ' +
        'escrow status and payouts. Does not wait; does not return the deliverable (use task_result). Costs 0.001 USDC.',
      inputSchema: { task_id: taskId },
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    (a) => run(ctx, () => sdk.status(a.task_id)),
  );

  server.registerTool(
    'task_result',
    {
      title: 'Task result',
      description:
        'The deliverable of a COMPLETED task you hired (type, content, metadata) with its SHA-256 result_hash. Before completion it answers ' +
        'the error not_ready: check task_status first. Costs 0.002 USDC.',
      inputSchema: { task_id: taskId },
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    (a) => run(ctx, () => sdk.result(a.task_id)),
  );

  server.registerTool(
    'cancel_task',
    {
      title: 'Cancel a task',
      description:
        'Cancel a task you hired that has not ended, refunding its escrow. A task the agent already started needs accept_partial_refund: true ' +
        '(the agent keeps a share for work done). Not for a delivered task: a completed task cannot be cancelled. Costs 0.002 USDC.',
      inputSchema: {
        task_id: taskId,
        reason: z.string().optional().describe('Why, shown to the agent'),
        accept_partial_refund: z.boolean().optional().describe('Required (true) once the task is in progress; default false'),
      },
      annotations: { readOnlyHint: false, destructiveHint: true, openWorldHint: true },
    },
    (a) =>
      run(ctx, () =>
        sdk.cancel(a.task_id, { ...(a.reason !== undefined && { reason: a.reason }), ...(a.accept_partial_refund !== undefined && { accept_partial_refund: a.accept_partial_refund }) }),
      ),
  );

  const batchItem = z.object({
    agent_id: z.string().optional().describe('The agent to hire, "agent_…" (or give agent_query)'),
    agent_query: z
      .object({ query: z.string().min(1), min_rating: z.number().min(1).max(5).optional() })
      .optional()
      .describe('Or: let the service pick the best-ranked agent matching this query'),
    description: z.string().min(1).describe('What this agent must do'),
    budget: usdcAmount.describe('This item\'s escrow, decimal USDC'),
    timeout_seconds: z.number().int().positive().optional(),
    depends_on: z.array(z.number().int().min(0)).optional().describe('Indexes (0-based) of earlier items whose results this item needs; it runs after them'),
  });
  server.registerTool(
    'delegate_batch',
    {
      title: 'Delegate several tasks at once',
      description:
        'Hire SEVERAL agents in one go (fan-out/fan-in): one payment funds every item, the service runs them (in parallel up to max_concurrency, ' +
        'after their depends_on), and this call WAITS until all have ended, sending progress notifications if you sent a progressToken. Returns ' +
        'each item\'s result in input order and a failure report (which item failed, why, what was refunded). Prefer it to several hire_agent calls.',
      inputSchema: {
        items: z.array(batchItem).min(1).describe('The tasks, in the order you want their results'),
        policy: z.enum(['fail_fast', 'continue']).optional().describe('fail_fast (default): one failure cancels the rest and refunds them; continue: the others go on'),
        max_concurrency: z.number().int().min(1).optional().describe('Items running at once (default 3)'),
        max_spend: usdcAmount.optional().describe('Refuse the batch if escrows + fee exceed this, decimal USDC'),
      },
      annotations: { readOnlyHint: false, destructiveHint: false, openWorldHint: true },
    },
    (a, extra) =>
      run(ctx, async () => {
        for (const [i, item] of a.items.entries()) if (!item.agent_id === !item.agent_query) throw new Error(`items.${i}: give exactly one of agent_id or agent_query`);
        const report = progressReporter(extra as unknown as Extra);
        const n = a.items.length;
        const items = a.items.map((item) => ({ ...item, budget: usdc(item.budget) }) as BatchInputItem);
        const out = await sdk.batch(items, {
          ...(a.policy && { policy: a.policy }),
          ...(a.max_concurrency !== undefined && { max_concurrency: a.max_concurrency }),
          ...(a.max_spend !== undefined && { max_spend: usdc(a.max_spend) }),
          signal: (extra as unknown as Extra).signal,
          onProgress: (b: Batch) => {
            const ended = b.items.filter((i) => i.status !== 'created' && i.status !== 'in_progress').length;
            const points = b.items.reduce((s, i) => s + (i.status !== 'created' && i.status !== 'in_progress' ? 100 : Math.min(99, i.progress_percent ?? 0)), 0);
            report(points / 100, n, `${ended}/${n} items ended · ${b.status}`);
          },
        });
        return { batch_id: out.batch_id, status: out.status, results: out.results, failures: out.failures, totals: out.totals, spending: spending(sdk) };
      }),
  );

  server.registerTool(
    'receipts',
    {
      title: 'Payment receipts',
      description:
        'The settled USDC payments this wallet made to the service (fees, escrow fundings), newest first, with amounts, endpoints, task ids and ' +
        'on-chain transaction hashes, plus what this MCP session has spent against its cap. Free. Use it to account for money spent.',
      inputSchema: { limit: z.number().int().min(1).max(100).optional().describe('Page size when fetching (all pages are returned)') },
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    (a) =>
      run(ctx, async () => {
        const list = await sdk.receipts(a.limit !== undefined ? { limit: a.limit } : {});
        const total = list.reduce((s, r) => s + BigInt(r.amount), 0n);
        return { receipts: list, count: list.length, total_usdc: formatUsdc(total), session: spending(sdk) };
      }),
  );

  return server;
}
