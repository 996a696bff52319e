import { z } from 'zod';
import { AgentId } from '../agents/schemas.js';
import { escrowStatuses } from '../escrow/rules.js';
import { AtomicAmount, PositiveAtomicAmount, Timestamp, WalletAddress } from '../http/schemas.js';
import { publicStatuses } from './statuses.js';

/** Wire shapes of tasks (one zod schema per shape: validation, types and OpenAPI). */

export const TaskId = z
  .string()
  .regex(/^task_[0-9a-z]{20}$/, 'must be a task id (task_…)')
  .meta({ examples: ['task_7h2k9d0s1a3f5g6j8l4z'] });
export const TaskParams = z.object({ id: TaskId });

export const TaskStatusEnum = z.enum(publicStatuses as [string, ...string[]]).meta({
  description: 'created → in_progress → completed | failed | cancelled | disputed | expired (a funded task reads in_progress)',
});
export const Stage = z
  .enum(['awaiting_funding', 'queued', 'running', 'done'])
  .meta({ description: 'Where the work is: queued = funded, waiting for the agent; running = the agent is working' });
export const Payout = z
  .object({
    kind: z.enum(['release', 'refund']),
    to: WalletAddress,
    amount: AtomicAmount,
    status: z.enum(['pending', 'signed', 'sent', 'confirmed', 'failed']),
    tx_hash: z.string().nullable(),
  })
  .meta({ id: 'Payout' });
export type PayoutT = z.infer<typeof Payout>;
export const EscrowStatusEnum = z.enum(escrowStatuses);

export const Usage = z
  .object({
    tokens_used: z.number().int().nullable(),
    model_calls: z.number().int().nullable().meta({ description: 'LLM calls of a hosted agent (its iterations)' }),
    llm_cost_usd: z.number().nullable().meta({ description: 'What the hosted agent’s model calls cost, in USD' }),
  })
  .meta({ id: 'Usage', description: 'What the agent reported with its result (null where it reported nothing)' });
export type UsageT = z.infer<typeof Usage>;

const MAX_REQUIREMENTS_BYTES = 65_536;

export const Budget = z
  .object({
    amount: PositiveAtomicAmount,
    currency: z.literal('USDC', { error: 'only "USDC" is supported' }),
    chain: z.literal('base', { error: 'only "base" is supported' }),
  })
  .meta({ id: 'Budget' });

export const CreateTaskBody = z
  .object({
    agent_id: AgentId,
    description: z.string().trim().min(1).max(20_000),
    requirements: z
      .union([z.string().max(MAX_REQUIREMENTS_BYTES), z.record(z.string(), z.unknown()), z.array(z.unknown())])
      .refine((r) => JSON.stringify(r).length <= MAX_REQUIREMENTS_BYTES, 'requirements must serialise to at most 64 KiB')
      .optional()
      .meta({ description: 'Free text or structured constraints for the agent' }),
    budget: Budget,
    callback_url: z
      .url({ protocol: /^https?$/, error: 'callback_url must be an http(s) URL' })
      .max(2048)
      .optional(),
    timeout_seconds: z.number().int().positive().optional().meta({ description: 'Default 3600; bounds are configuration' }),
  })
  .strict()
  .meta({
    id: 'CreateTask',
    examples: [
      {
        agent_id: 'agent_0k3v9x2m1q8w7e6r5t4y',
        description: 'Write a 50-word product blurb for a solar lantern',
        budget: { amount: '1000000', currency: 'USDC', chain: 'base' },
        timeout_seconds: 3600,
      },
    ],
  });
export type CreateTaskInput = z.infer<typeof CreateTaskBody>;

export const TaskCreated = z
  .object({
    task_id: TaskId,
    status: TaskStatusEnum,
    agent_id: AgentId,
    escrow_address: WalletAddress,
    escrow_amount: AtomicAmount,
    expires_at: Timestamp.meta({ description: 'Fund before this time or the task expires' }),
    timeout_seconds: z.number().int(),
    created_at: Timestamp,
  })
  .meta({
    id: 'TaskCreated',
    examples: [
      {
        task_id: 'task_7h2k9d0s1a3f5g6j8l4z',
        status: 'created',
        agent_id: 'agent_0k3v9x2m1q8w7e6r5t4y',
        escrow_address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
        escrow_amount: '1000000',
        expires_at: '2026-11-21T13:00:00.000Z',
        timeout_seconds: 3600,
        created_at: '2026-11-21T12:00:00.000Z',
      },
    ],
  });
export type TaskCreatedT = z.infer<typeof TaskCreated>;

export const ChildTask = z
  .object({
    task_id: TaskId,
    agent_id: AgentId,
    batch_id: z.string().meta({ description: 'The delegate_task call that hired it (a batch of the same payer: GET /v1/batches/{id})' }),
    index: z.number().int().meta({ description: 'Its position in that call' }),
    status: TaskStatusEnum,
    escrow_status: EscrowStatusEnum,
    escrow: AtomicAmount.meta({ description: 'Carved from the parent’s escrow' }),
    released: AtomicAmount.meta({ description: 'Paid out to its agent (minus the platform fee), planned or confirmed' }),
    refunded: AtomicAmount.meta({
      description: 'Back to the parent’s escrow (a failed, cancelled or timed-out child), or refunded to the payer once the parent had ended',
    }),
    failure: z.string().nullable(),
    usage: Usage,
  })
  .meta({ id: 'ChildTask' });
export type ChildTaskT = z.infer<typeof ChildTask>;

export const TaskDelegation = z
  .object({
    children: z.array(ChildTask).meta({ description: 'In the order they were hired' }),
    totals: z.object({
      children: z.number().int(),
      running: z.number().int(),
      escrow: AtomicAmount.meta({ description: 'Carved from this task’s escrow for its children' }),
      released: AtomicAmount,
      refunded: AtomicAmount,
      spent: AtomicAmount.meta({ description: 'What the children cost this task’s escrow: their escrows minus what came back' }),
      usage: Usage.meta({ description: 'This task’s own usage (from its result, once delivered) plus its children’s' }),
    }),
  })
  .meta({
    id: 'TaskDelegation',
    description: 'Children a hosted agent hired with delegate_task on this task, paid from its escrow (present only when it hired some)',
  });
export type TaskDelegationT = z.infer<typeof TaskDelegation>;

export const TaskStatusView = z
  .object({
    task_id: TaskId,
    status: TaskStatusEnum,
    stage: Stage,
    escrow_status: EscrowStatusEnum,
    payouts: z.array(Payout).meta({ description: 'Releases and refunds of the escrow, with their transactions' }),
    progress_percent: z.number().int().min(0).max(100),
    intermediate_result: z.unknown().nullable(),
    updated_at: Timestamp,
    estimated_completion: Timestamp.nullable(),
    expires_at: Timestamp.meta({ description: 'Funding deadline of an unfunded task' }),
    deadline_at: Timestamp.nullable().meta({ description: 'When running work times out' }),
    parent_task_id: TaskId.optional().meta({
      description: 'A child hired by the hosted agent of this task (delegate_task): its escrow was carved from that task’s',
    }),
    delegation: TaskDelegation.optional(),
  })
  .meta({
    id: 'TaskStatus',
    examples: [
      {
        task_id: 'task_7h2k9d0s1a3f5g6j8l4z',
        status: 'in_progress',
        stage: 'running',
        escrow_status: 'held',
        payouts: [],
        progress_percent: 40,
        intermediate_result: { draft: 'Light up your nights…' },
        updated_at: '2026-11-21T12:04:00.000Z',
        estimated_completion: '2026-11-21T12:10:00.000Z',
        expires_at: '2026-11-21T13:00:00.000Z',
        deadline_at: '2026-11-21T13:01:00.000Z',
      },
    ],
  });
export type TaskStatusViewT = z.infer<typeof TaskStatusView>;

export const ResultContent = z
  .object({
    type: z.enum(['text', 'image', 'file', 'structured']),
    content: z.unknown(),
    metadata: z
      .object({
        tokens_used: z.number().int().nonnegative().nullable(),
        model: z.string().nullable(),
        duration_seconds: z.number().nonnegative().nullable(),
      })
      .catchall(z.unknown()),
  })
  .meta({ id: 'ResultContent' });
export type ResultContentT = z.infer<typeof ResultContent>;

export const TaskResult = z
  .object({
    task_id: TaskId,
    status: z.literal('completed'),
    result: ResultContent,
    result_hash: z.string().meta({
      description:
        'SHA-256 (hex, 64 lower-case digits) of the canonical JSON of `result`: object keys sorted at every level (by UTF-16 code unit), ' +
        'no whitespace, arrays in their order, strings and numbers as JSON.stringify writes them. Not the bytes the agent sent.',
    }),
    completed_at: Timestamp,
  })
  .meta({
    id: 'TaskResult',
    description:
      'The body is canonical JSON (keys sorted at every level), so `result` comes back exactly as it was hashed: ' +
      '`sha256(canonicalJson(result)) == result_hash`.',
    examples: [
      {
        completed_at: '2026-11-21T12:09:30.000Z',
        result: {
          content: 'Light up your nights with a solar lantern that charges all day.',
          metadata: { duration_seconds: 7.2, model: 'gpt-4o-mini', tokens_used: 412 },
          type: 'text',
        },
        result_hash: '5515fef7276693da98fd240807f7a611cccf6c92f63943bd18b001e74bed9a9f',
        status: 'completed',
        task_id: 'task_7h2k9d0s1a3f5g6j8l4z',
      },
    ],
  });
export type TaskResultT = z.infer<typeof TaskResult>;

export const CancelTaskBody = z
  .object({
    reason: z.string().trim().max(1000).optional(),
    accept_partial_refund: z
      .boolean()
      .default(false)
      .meta({ description: 'Required to cancel work in progress: the agent keeps the cancellation fee' }),
  })
  .strict()
  .meta({ id: 'CancelTask', examples: [{ reason: 'No longer needed' }] });
export type CancelTaskInput = z.infer<typeof CancelTaskBody>;

export const Refund = z
  .object({
    amount: AtomicAmount,
    tx_hash: z.string().nullable(),
    status: z.enum(['not_required', 'pending', 'confirmed', 'failed', 'returned']).meta({
      description: 'returned: a sub-delegated child’s refund went back to its parent task’s escrow (no transfer)',
    }),
  })
  .meta({ id: 'Refund' });

export const TaskCancelled = z
  .object({
    task_id: TaskId,
    status: z.literal('cancelled'),
    refund: Refund,
    cancellation_fee: AtomicAmount,
  })
  .meta({
    id: 'TaskCancelled',
    examples: [
      { task_id: 'task_7h2k9d0s1a3f5g6j8l4z', status: 'cancelled', refund: { amount: '900000', tx_hash: null, status: 'pending' }, cancellation_fee: '100000' },
    ],
  });
export type TaskCancelledT = z.infer<typeof TaskCancelled>;

export const DisputeTaskBody = z
  .object({
    reason: z.string().trim().min(1).max(4000),
    evidence: z.array(z.string().max(2000)).max(20).optional(),
  })
  .strict()
  .meta({ id: 'DisputeTask', examples: [{ reason: 'The result ignores the brief', evidence: ['The blurb has 300 words'] }] });
export type DisputeTaskInput = z.infer<typeof DisputeTaskBody>;

export const DisputeOpened = z
  .object({
    dispute_id: z.string(),
    task_id: TaskId,
    status: z.literal('under_review'),
    submitted_at: Timestamp,
    expected_resolution: Timestamp,
  })
  .meta({
    id: 'Dispute',
    examples: [
      {
        dispute_id: 'dispute_2j4k6l8z0x1c3v5b7n9m',
        task_id: 'task_7h2k9d0s1a3f5g6j8l4z',
        status: 'under_review',
        submitted_at: '2026-11-21T12:15:00.000Z',
        expected_resolution: '2026-11-24T12:15:00.000Z',
      },
    ],
  });
export type DisputeOpenedT = z.infer<typeof DisputeOpened>;

export const FundTaskBody = z
  .object({
    amount: PositiveAtomicAmount.meta({ description: 'Escrow to lock, at least the budget. The x402 price is this plus the funding fee.' }),
  })
  .strict()
  .meta({ id: 'FundTask', examples: [{ amount: '1000000' }] });
export type FundTaskInput = z.infer<typeof FundTaskBody>;

export const TaskFunded = z
  .object({
    task_id: TaskId,
    escrow_funded: z.literal(true),
    amount: AtomicAmount,
    fee: AtomicAmount,
    escrow_address: WalletAddress,
    tx_hash: z.string().meta({ description: 'The settlement transaction that moved the USDC into escrow' }),
    status: TaskStatusEnum,
    agent_notified: z.boolean().meta({
      description:
        'Whether the agent has been handed the task yet: false in this answer, since the dispatcher briefs the agent right after the funding commits; the task status shows when it runs',
    }),
  })
  .meta({
    id: 'TaskFunded',
    examples: [
      {
        task_id: 'task_7h2k9d0s1a3f5g6j8l4z',
        escrow_funded: true,
        amount: '1000000',
        fee: '5000',
        escrow_address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
        tx_hash: '0x5c1d…',
        status: 'in_progress',
        agent_notified: false,
      },
    ],
  });
export type TaskFundedT = z.infer<typeof TaskFunded>;

export const ProgressBody = z
  .object({
    progress_percent: z.number().int().min(0).max(100).optional(),
    intermediate_result: z
      .unknown()
      .refine((v) => JSON.stringify(v ?? null).length <= 65_536, 'intermediate_result must serialise to at most 64 KiB')
      .optional(),
    estimated_completion: Timestamp.nullable().optional(),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, 'send at least one field')
  .meta({ id: 'ProgressReport', examples: [{ progress_percent: 40, intermediate_result: { draft: 'Light up…' }, estimated_completion: '2026-11-21T12:10:00.000Z' }] });

export const Accepted = z.object({ task_id: TaskId, status: TaskStatusEnum, progress_percent: z.number().int() }).meta({
  id: 'ProgressAccepted',
  examples: [{ task_id: 'task_7h2k9d0s1a3f5g6j8l4z', status: 'in_progress', progress_percent: 40 }],
});

export const DeliverBody = z
  .object({
    result: ResultContent.refine((r) => JSON.stringify(r).length <= 1_048_576, 'result must serialise to at most 1 MiB'),
  })
  .strict()
  .meta({
    id: 'Delivery',
    description:
      'The result as delivered. The service stores it with `result_hash` = SHA-256 (hex) of its canonical JSON (keys sorted ' +
      'at every level, no whitespace): hash that, not the bytes you sent, to compare or to claim.',
    examples: [
      { result: { type: 'text', content: 'Light up your nights with a solar lantern that charges all day.', metadata: { tokens_used: 412, model: 'gpt-4o-mini', duration_seconds: 7.2 } } },
    ],
  });

export const Delivered = z
  .object({
    task_id: TaskId,
    status: z.literal('completed'),
    result_hash: z.string().meta({
      description:
        'SHA-256 (hex, 64 lower-case digits) of the canonical JSON of `result`: object keys sorted at every level (by UTF-16 code unit), ' +
        'no whitespace, arrays in their order, strings and numbers as JSON.stringify writes them. Not the bytes the agent sent.',
    }),
    completed_at: Timestamp,
  })
  .meta({
    id: 'Delivered',
    examples: [{ task_id: 'task_7h2k9d0s1a3f5g6j8l4z', status: 'completed', result_hash: '5515fef7276693da98fd240807f7a611cccf6c92f63943bd18b001e74bed9a9f', completed_at: '2026-11-21T12:09:30.000Z' }],
  });

export const ClaimBody = z
  .object({
    result_hash: z
      .string()
      .regex(/^(0x)?[0-9a-fA-F]{64}$/, 'must be the SHA-256 (hex) of the delivered result')
      .meta({
        description:
          'SHA-256 (hex, optionally 0x-prefixed) of the canonical JSON of the delivered result: object keys sorted at every level, ' +
          'no whitespace. Not the bytes the agent sent (else `result_hash_mismatch`).',
      }),
  })
  .strict()
  .meta({ id: 'Claim', examples: [{ result_hash: '5515fef7276693da98fd240807f7a611cccf6c92f63943bd18b001e74bed9a9f' }] });

export const ClaimApproved = z
  .object({
    task_id: TaskId,
    claim_status: z.literal('approved'),
    payment: z.object({ amount: AtomicAmount, tx_hash: z.string().nullable(), recipient: WalletAddress, status: z.string() }),
    claimed_at: Timestamp,
  })
  .meta({
    id: 'ClaimApproved',
    examples: [
      {
        task_id: 'task_7h2k9d0s1a3f5g6j8l4z',
        claim_status: 'approved',
        payment: { amount: '975000', tx_hash: '0x7d…', recipient: '0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc', status: 'confirmed' },
        claimed_at: '2026-11-21T12:10:00.000Z',
      },
    ],
  });
