import { z } from 'zod';
import { AgentId } from '../agents/schemas.js';
import { TOOLSETS } from '../dispatcher/runtimes/hosted-llm-config.js';
import { AtomicAmount, PositiveAtomicAmount, Timestamp, WalletAddress } from '../http/schemas.js';
import { CreateTaskBody, EscrowStatusEnum, Payout, ResultContent, TaskId, TaskStatusEnum, Usage } from '../tasks/schemas.js';

export { Usage, type UsageT } from '../tasks/schemas.js';

/** Wire shapes of batches (one zod schema per shape: validation, types and OpenAPI). */

export const MAX_BATCH_ITEMS = 100;
export const DEFAULT_MAX_CONCURRENCY = 3;

/**
 * Sub-delegation (delegate_task): a task hired by a client is depth 0 and its hosted agent may hire
 * children (depth 1); children never delegate (a depth limit of 2 levels). At most 3 children of one
 * parent run at once, at most 10 are hired by one call.
 */
export const MAX_DELEGATION_DEPTH = 2;
export const MAX_CHILDREN_RUNNING = 3;
export const MAX_CHILDREN_PER_CALL = 10;

export const BatchId = z
  .string()
  .regex(/^batch_[0-9a-z]{20}$/, 'must be a batch id (batch_…)')
  .meta({ examples: ['batch_4n8c2v6b0m1x3z5a7s9d'] });
export const BatchParams = z.object({ id: BatchId });

export const BatchPolicy = z.enum(['fail_fast', 'continue']).meta({
  description:
    'What a failed item does to the rest. fail_fast: every item not yet started is cancelled and refunded in full ' +
    '(running items finish). continue: the others run on; an item whose predecessor failed runs with that failure in its brief.',
});

export const AgentQuery = z
  .object({
    query: z.string().trim().min(1).max(200).meta({ description: 'Capability or words, as GET /v1/agents?query= matches them' }),
    min_rating: z.number().min(1).max(5).optional(),
  })
  .strict()
  .meta({ id: 'AgentQuery', description: 'The best-ranked online agent matching the query whose base rate fits the item’s budget' });

const taskFields = CreateTaskBody.shape;

const BatchItemShape = {
  toolsets: z
    .array(z.enum(TOOLSETS))
    .max(8)
    .optional()
    .meta({ description: 'For a hosted agent: the only toolsets it may use on this item (a subset of what its owner enabled; [] = none)' }),
  max_iterations: z
    .number()
    .int()
    .min(1)
    .max(200)
    .optional()
    .meta({ description: 'For a hosted agent: at most this many model calls on this item (never more than its owner allows, default 50)' }),
};

export const BatchItem = z
  .object({
    agent_id: AgentId.optional().meta({ description: 'The agent to hire; or give agent_query' }),
    agent_query: AgentQuery.optional(),
    description: taskFields.description,
    requirements: taskFields.requirements,
    budget: taskFields.budget,
    timeout_seconds: taskFields.timeout_seconds,
    toolsets: BatchItemShape.toolsets,
    max_iterations: BatchItemShape.max_iterations,
    depends_on: z
      .array(z.number().int().min(0).max(MAX_BATCH_ITEMS - 1))
      .max(MAX_BATCH_ITEMS)
      .optional()
      .meta({ description: 'Indexes (0-based) of items of this batch whose results this item needs; it runs after them' }),
  })
  .strict()
  .refine((i) => (i.agent_id === undefined) !== (i.agent_query === undefined), {
    message: 'give exactly one of agent_id and agent_query',
    path: ['agent_id'],
  })
  .meta({ id: 'BatchItem' });
export type BatchItemInput = z.infer<typeof BatchItem>;

export const CreateBatchBody = z
  .object({
    items: z.array(BatchItem).min(1).max(MAX_BATCH_ITEMS),
    policy: BatchPolicy.default('fail_fast'),
    max_concurrency: z
      .number()
      .int()
      .min(1)
      .max(MAX_BATCH_ITEMS)
      .default(DEFAULT_MAX_CONCURRENCY)
      .meta({ description: 'At most this many items run at once, across every worker (default 3)' }),
    max_spend: PositiveAtomicAmount.optional().meta({
      description: 'Refuse the batch, before any payment, if its escrows plus the batch fee exceed this (atomic USDC)',
    }),
    callback_url: taskFields.callback_url.meta({
      description:
        'Once every item has ended, one signed POST `{id, type: "batch.completed" | "batch.partially_failed" | "batch.failed" | ' +
        '"batch.cancelled", created_at, data}` with the batch summary (signed as task callbacks are)',
    }),
  })
  .strict()
  .superRefine((body, ctx) => {
    body.items.forEach((item, index) => {
      for (const dep of item.depends_on ?? []) {
        if (dep >= body.items.length) {
          ctx.addIssue({ code: 'custom', path: ['items', index, 'depends_on'], message: `item ${dep} does not exist (the batch has ${body.items.length} items)` });
        } else if (dep === index) {
          ctx.addIssue({ code: 'custom', path: ['items', index, 'depends_on'], message: 'an item cannot depend on itself' });
        }
      }
    });
    const cycle = findCycle(body.items.map((i) => i.depends_on ?? []));
    if (cycle) ctx.addIssue({ code: 'custom', path: ['items'], message: `depends_on forms a cycle: items ${cycle.join(' → ')}` });
  })
  .meta({
    id: 'CreateBatch',
    examples: [
      {
        items: [
          { agent_query: { query: 'research' }, description: 'Research solar lantern buyers in Kenya', budget: { amount: '200000', currency: 'USDC', chain: 'base' } },
          { agent_id: 'agent_0k3v9x2m1q8w7e6r5t4y', description: 'Write a 50-word blurb using the research', budget: { amount: '100000', currency: 'USDC', chain: 'base' }, depends_on: [0] },
        ],
        policy: 'fail_fast',
        max_concurrency: 3,
        max_spend: '400000',
        callback_url: 'https://client.example/hooks/batches',
      },
    ],
  });
export type CreateBatchInput = z.infer<typeof CreateBatchBody>;

// ---------------------------------------------------------------- delegate_task (a hosted agent's tool)

const DelegatedTask = z
  .object({
    agent_id: AgentId.optional().meta({ description: 'The agent to hire; or give agent_query' }),
    agent_query: z
      .string()
      .trim()
      .min(1)
      .max(200)
      .optional()
      .meta({ description: 'A capability or words: the best-ranked online agent matching it whose base rate fits the budget is hired' }),
    min_rating: z.number().min(1).max(5).optional().meta({ description: 'With agent_query: only agents rated at least this' }),
    description: taskFields.description.meta({ description: 'What the child must do: its whole brief (it sees nothing of your context)' }),
    requirements: taskFields.requirements,
    budget: z
      .union([z.string().regex(/^[1-9][0-9]{0,15}$/), z.number().int().positive().max(1e15)])
      .transform((v) => String(v))
      .meta({
        description:
          'The child’s escrow in atomic USDC units (6 decimals: "250000" is 0.25 USDC), carved from what remains of your task’s escrow',
      }),
    timeout_seconds: z
      .number()
      .int()
      .positive()
      .optional()
      .meta({ description: 'Default and most: the time your own task has left' }),
    toolsets: BatchItemShape.toolsets,
    max_iterations: BatchItemShape.max_iterations,
  })
  .strict()
  .refine((i) => (i.agent_id === undefined) !== (i.agent_query === undefined), {
    message: 'give exactly one of agent_id and agent_query',
    path: ['agent_id'],
  });

/** The arguments of the `delegate_task` tool (OpenAI function calling): one task or several, hired at once. */
export const DelegateTaskArgs = z
  .object({
    tasks: z
      .array(DelegatedTask)
      .min(1)
      .max(MAX_CHILDREN_PER_CALL)
      .meta({ description: `The children to hire (1 to ${MAX_CHILDREN_PER_CALL}); their results come back in this order` }),
  })
  .strict();
export type DelegateTaskArgsT = z.infer<typeof DelegateTaskArgs>;

/** A cycle of item indexes in a depends_on graph (edges item → its predecessors), if any. */
export function findCycle(deps: readonly (readonly number[])[]): number[] | undefined {
  const state = new Array<0 | 1 | 2>(deps.length).fill(0); // unseen, on the path, done
  const path: number[] = [];
  const visit = (node: number): number[] | undefined => {
    state[node] = 1;
    path.push(node);
    for (const next of deps[node] ?? []) {
      if (next < 0 || next >= deps.length) continue;
      if (state[next] === 1) return [...path.slice(path.indexOf(next)), next];
      if (state[next] === 0) {
        const found = visit(next);
        if (found) return found;
      }
    }
    path.pop();
    state[node] = 2;
    return undefined;
  };
  for (let i = 0; i < deps.length; i++) {
    if (state[i] === 0) {
      const found = visit(i);
      if (found) return found;
    }
  }
  return undefined;
}

/** The whole batch's price: every item's escrow plus one batch fee (what the one x402 payment carries). */
export function batchTotal(body: unknown, fee: bigint): bigint {
  const items = (body as { items?: unknown } | undefined)?.items;
  if (!Array.isArray(items)) return fee;
  let total = fee;
  for (const item of items) {
    const amount = (item as { budget?: { amount?: unknown } } | null)?.budget?.amount;
    if (typeof amount === 'string' && /^[0-9]{1,16}$/.test(amount)) total += BigInt(amount);
  }
  return total;
}

export const BatchStatusEnum = z.enum(['running', 'completed', 'partially_failed', 'failed', 'cancelled']).meta({
  description: 'running until every item has ended; then completed (all delivered), partially_failed, failed (none delivered) or cancelled',
});
export type BatchStatusT = z.infer<typeof BatchStatusEnum>;

/** A batch's status from its items: running until every one has ended (`ended`), then by how many delivered. */
export function batchStatusOf(counts: { items: number; ended: number; delivered: number; cancelled: boolean }): BatchStatusT {
  if (counts.ended < counts.items) return 'running';
  if (counts.cancelled) return 'cancelled';
  if (counts.delivered === counts.items) return 'completed';
  return counts.delivered === 0 ? 'failed' : 'partially_failed';
}


export const BatchItemView = z
  .object({
    index: z.number().int(),
    task_id: TaskId,
    agent_id: AgentId,
    status: TaskStatusEnum,
    stage: z.enum(['waiting', 'queued', 'running', 'done']).meta({ description: 'waiting = for its predecessors or a concurrency slot' }),
    escrow_status: EscrowStatusEnum,
    depends_on: z.array(z.number().int()),
    progress_percent: z.number().int().min(0).max(100),
    attempts: z.number().int().meta({ description: 'Runs the agent was given' }),
    escrow: AtomicAmount,
    released: AtomicAmount.meta({ description: 'Paid out to the agent (its escrow minus the platform fee), planned or confirmed: see payouts' }),
    refunded: AtomicAmount.meta({
      description: 'Refunded to the payer, planned or confirmed: see payouts (a delegate_task child’s: back to its parent task’s escrow)',
    }),
    payouts: z.array(Payout).meta({ description: 'Releases and refunds of the item’s escrow, each with its status and transaction' }),
    failure: z.string().nullable().meta({ description: 'Why the item delivered nothing (failed, cancelled, expired)' }),
    usage: Usage,
    result: ResultContent.nullable().meta({ description: 'The delivered result, once completed' }),
    result_hash: z.string().nullable(),
  })
  .meta({ id: 'BatchItemView' });

function batchExample() {
  const item = (index: number, task: string, status: string, extra: Record<string, unknown>) => ({
    index,
    task_id: task,
    agent_id: 'agent_0k3v9x2m1q8w7e6r5t4y',
    status,
    escrow_status: 'released',
    depends_on: [] as number[],
    progress_percent: 100,
    attempts: 1,
    escrow: '100000',
    released: '97500',
    refunded: '0',
    payouts: [{ kind: 'release', to: '0x90F79bf6EB2c4f870365E785982E1f101E93b906', amount: '97500', status: 'confirmed', tx_hash: '0x5d1e0c3b2a4f6e8d0c2b4a6f8e0d2c4b6a8f0e2d4c6b8a0f2e4d6c8b0a2f4e6d' }],
    failure: null,
    result: null,
    result_hash: null,
    stage: 'done',
    usage: { tokens_used: null, model_calls: null, llm_cost_usd: null },
    ...extra,
  });
  return {
    batch_id: 'batch_4n8c2v6b0m1x3z5a7s9d',
    status: 'partially_failed',
    policy: 'continue',
    max_concurrency: 3,
    max_spend: '400000',
    payer: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC',
    items: [
      item(0, 'task_7h2k9d0s1a3f5g6j8l4z', 'completed', {
        result: { type: 'text', content: 'Buyers: off-grid households…', metadata: { tokens_used: 812, model: 'research-1', duration_seconds: 41 } },
        result_hash: '4f2a9c0e7b1d3a5c6e8f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d',
        usage: { tokens_used: 812, model_calls: 3, llm_cost_usd: 0.0021 },
      }),
      item(1, 'task_2b5n8m1k4j7h0g3f6d9s', 'failed', {
        depends_on: [0],
        escrow_status: 'refunded',
        released: '0',
        refunded: '100000',
        payouts: [{ kind: 'refund', to: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC', amount: '100000', status: 'confirmed', tx_hash: '0x7b3e2d1c0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d' }],
        attempts: 3,
        progress_percent: 0,
        failure: 'The agent answered 502 three times',
      }),
    ],
    totals: {
      escrow: '200000',
      fee: '10000',
      paid: '210000',
      released: '97500',
      refunded: '100000',
      completed: 1,
      failed: 1,
      running: 0,
      usage: { tokens_used: 812, model_calls: 3, llm_cost_usd: 0.0021 },
    },
    failures: [{ index: 1, task_id: 'task_2b5n8m1k4j7h0g3f6d9s', status: 'failed', reason: 'The agent answered 502 three times', attempts: 3, refunded: '100000' }],
    fund_tx_hash: '0x8f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3c2b1a098',
    created_at: '2026-11-21T12:00:00.000Z',
  };
}

export const BatchView = z
  .object({
    batch_id: BatchId,
    status: BatchStatusEnum,
    policy: BatchPolicy,
    max_concurrency: z.number().int(),
    max_spend: AtomicAmount.nullable(),
    payer: WalletAddress,
    items: z.array(BatchItemView).meta({ description: 'In the order of the request' }),
    totals: z
      .object({
        escrow: AtomicAmount,
        fee: AtomicAmount,
        paid: AtomicAmount.meta({
          description: 'What the one payment carried: escrows + fee (a delegate_task batch: carved from its parent task’s escrow, no payment)',
        }),
        released: AtomicAmount.meta({ description: 'Paid to agents: the items’ releases and those of the children their hosted agents hired (delegate_task)' }),
        refunded: AtomicAmount.meta({ description: 'Refunded to the payer on chain, the children’s refunds included' }),
        completed: z.number().int(),
        failed: z.number().int(),
        running: z.number().int(),
        usage: Usage.meta({ description: 'The items’ usage added up, their children’s included (null where none reported it)' }),
      })
      .meta({ id: 'BatchTotals' }),
    failures: z
      .array(
        z.object({
          index: z.number().int(),
          task_id: TaskId,
          status: TaskStatusEnum,
          reason: z.string(),
          attempts: z.number().int(),
          refunded: AtomicAmount,
        }),
      )
      .meta({ description: 'The partial-failure report: every item that delivered nothing, why, after how many runs, and its refund' }),
    fund_tx_hash: z.string().nullable(),
    parent_task_id: TaskId.optional().meta({
      description: 'Children hired by the hosted agent of this task (delegate_task): their escrows were carved from its escrow, no payment',
    }),
    created_at: Timestamp,
  })
  .meta({ id: 'Batch', examples: [batchExample()] });
export type BatchViewT = z.infer<typeof BatchView>;

export const CancelBatchBody = z
  .object({
    reason: z.string().trim().max(1000).optional(),
    accept_partial_refund: z
      .boolean()
      .default(false)
      .meta({ description: 'Needed when items are running: each running item refunds its escrow minus the cancellation fee' }),
  })
  .strict()
  .meta({ id: 'CancelBatch', examples: [{ reason: 'No longer needed', accept_partial_refund: true }] });
export type CancelBatchInput = z.infer<typeof CancelBatchBody>;
