import { z } from 'zod';
import { AtomicAmount, Timestamp, WalletAddress } from '../http/schemas.js';

/** Wire shapes of the agent registry (one zod schema per shape: validation, types and OpenAPI). */

export const AgentId = z
  .string()
  .regex(/^agent_[0-9a-z]{20}$/, 'must be an agent id (agent_…)')
  .meta({ examples: ['agent_0k3v9x2m1q8w7e6r5t4y'] });

export const Capability = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'capabilities are 1-64 of a-z 0-9 . _ - (lower case)');

export const Pricing = z
  .object({
    base_rate: AtomicAmount.meta({ description: 'Lowest budget the agent accepts per task (atomic USDC)' }),
    unit: z.literal('per-task').default('per-task'),
    currency: z.literal('USDC').default('USDC'),
  })
  .meta({ id: 'Pricing' });

export const Availability = z.enum(['online', 'offline']);

/** Opaque to the registry; the dispatcher defines its kinds. Never shown to other wallets. */
export const Runtime = z
  .record(z.string(), z.unknown())
  .refine((r) => JSON.stringify(r).length <= 16_384, 'runtime must serialise to at most 16 KiB')
  .meta({ description: 'How the service reaches the agent (defined by the dispatcher); visible to the owner only' });

const agentExample = {
  id: 'agent_0k3v9x2m1q8w7e6r5t4y',
  name: 'Pixel Forge',
  description: 'Generates marketing images from a brief',
  capabilities: ['image-generation', 'design'],
  pricing: { base_rate: '500000', unit: 'per-task', currency: 'USDC' },
  rating: 4.6,
  ratings_count: 12,
  tasks_completed: 31,
  availability: 'online',
  response_time_avg_seconds: 84.5,
};

export const AgentSummary = z
  .object({
    id: AgentId,
    name: z.string(),
    description: z.string(),
    capabilities: z.array(z.string()),
    pricing: Pricing,
    rating: z.number().nullable().meta({ description: 'Mean of ratings 1-5; null until rated' }),
    ratings_count: z.number().int(),
    tasks_completed: z.number().int(),
    availability: Availability,
    response_time_avg_seconds: z.number().nullable().meta({ description: 'Mean duration of completed tasks; null until one completes' }),
  })
  .meta({
    id: 'Agent',
    examples: [agentExample],
  });

export type AgentSummaryT = z.infer<typeof AgentSummary>;

export const Review = z
  .object({
    rating_id: z.string(),
    task_id: z.string(),
    rating: z.number().int().min(1).max(5),
    comment: z.string().nullable(),
    submitted_at: Timestamp,
  })
  .meta({ id: 'Review' });

export const AgentProfile = AgentSummary.extend({
  recent_reviews: z.array(Review),
  created_at: Timestamp,
}).meta({
  id: 'AgentProfile',
  examples: [
    {
      ...agentExample,
      recent_reviews: [
        { rating_id: 'rating_4f8s2k1m9d0a7q3w6e5r', task_id: 'task_7h2k9d0s1a3f5g6j8l4z', rating: 5, comment: 'Fast and accurate', submitted_at: '2026-11-20T09:30:00.000Z' },
      ],
      created_at: '2026-10-01T08:00:00.000Z',
    },
  ],
});
export type AgentProfileT = z.infer<typeof AgentProfile>;

/** What the owner sees of its own agent. */
export const OwnedAgent = AgentSummary.extend({
  owner_address: WalletAddress,
  payout_address: WalletAddress,
  runtime: z.record(z.string(), z.unknown()),
  created_at: Timestamp,
  updated_at: Timestamp,
}).meta({
  id: 'OwnedAgent',
  examples: [
    {
      ...agentExample,
      owner_address: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65',
      payout_address: '0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc',
      runtime: { kind: 'webhook', url: 'https://agent.example.com/tasks', secret: '[redacted]', timeout_ms: 30000 },
      created_at: '2026-10-01T08:00:00.000Z',
      updated_at: '2026-11-20T09:30:00.000Z',
    },
  ],
});
export type OwnedAgentT = z.infer<typeof OwnedAgent>;

const payoutIsContract = z.boolean().optional().meta({
  description:
    'Set true when payout_address is a contract that can receive and move USDC (a smart wallet, a multisig). ' +
    'On a real chain a payout address with contract code is refused without it. Not stored: it only opts in to this request.',
});

const name = z.string().trim().min(1).max(100);
const description = z.string().trim().max(4000);
const capabilities = z.array(Capability).min(1).max(32);

export const RegisterAgentBody = z
  .object({
    name,
    description: description.default(''),
    capabilities,
    pricing: Pricing,
    payout_address: WalletAddress.meta({
      description: "Where released escrow is paid. Not the zero address, this service's own wallets or the USDC contract",
    }),
    payout_is_contract: payoutIsContract,
    availability: Availability.default('online'),
    runtime: Runtime.default({}),
  })
  .strict()
  .meta({
    id: 'RegisterAgent',
    examples: [
      {
        name: 'Pixel Forge',
        description: 'Generates marketing images from a brief',
        capabilities: ['image-generation', 'design'],
        pricing: { base_rate: '500000', unit: 'per-task', currency: 'USDC' },
        payout_address: '0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc',
        runtime: { kind: 'webhook', url: 'https://agent.example.com/tasks', secret: 'whsec_3f9a1c7e5b2d8046a1e9c3b7d5f20864' },
      },
    ],
  });
export type RegisterAgentInput = z.infer<typeof RegisterAgentBody>;

export const UpdateAgentBody = z
  .object({
    name: name.optional(),
    description: description.optional(),
    capabilities: capabilities.optional(),
    pricing: Pricing.optional(),
    payout_address: WalletAddress.optional(),
    payout_is_contract: payoutIsContract,
    availability: Availability.optional(),
    runtime: Runtime.optional(),
  })
  .strict()
  .refine((b) => Object.keys(b).some((k) => k !== 'payout_is_contract'), 'send at least one field to change')
  .meta({ id: 'UpdateAgent', examples: [{ availability: 'offline' }] });
export type UpdateAgentInput = z.infer<typeof UpdateAgentBody>;

export const SearchAgentsQuery = z
  .object({
    query: z.string().trim().max(200).optional().meta({ description: 'Capability or free text (full-text ranked)' }),
    min_rating: z.coerce.number().min(0).max(5).optional(),
    max_price: AtomicAmount.optional().meta({ description: 'Highest base rate, atomic USDC' }),
    availability: z.enum(['online', 'offline', 'any']).default('online'),
    limit: z.coerce.number().int().min(1).max(100).default(20),
    page: z.coerce.number().int().min(1).max(10_000).default(1),
  })
  .strict();
export type SearchAgentsInput = z.infer<typeof SearchAgentsQuery>;

export const SearchAgentsResult = z
  .object({
    agents: z.array(AgentSummary),
    total: z.number().int(),
    page: z.number().int(),
    limit: z.number().int(),
    has_more: z.boolean(),
  })
  .meta({ id: 'AgentSearchResult', examples: [{ agents: [agentExample], total: 1, page: 1, limit: 20, has_more: false }] });

export const RateAgentBody = z
  .object({
    task_id: z.string().regex(/^task_[0-9a-z]{20}$/, 'must be a task id (task_…)'),
    rating: z.number().int().min(1).max(5),
    comment: z.string().trim().max(2000).optional(),
  })
  .strict()
  .meta({ id: 'RateAgent', examples: [{ task_id: 'task_7h2k9d0s1a3f5g6j8l4z', rating: 5, comment: 'Fast and accurate' }] });
export type RateAgentInput = z.infer<typeof RateAgentBody>;

export const RatingCreated = z
  .object({
    rating_id: z.string(),
    agent_id: AgentId,
    task_id: z.string(),
    rating: z.number().int(),
    submitted_at: Timestamp,
  })
  .meta({
    id: 'Rating',
    examples: [
      { rating_id: 'rating_4f8s2k1m9d0a7q3w6e5r', agent_id: 'agent_0k3v9x2m1q8w7e6r5t4y', task_id: 'task_7h2k9d0s1a3f5g6j8l4z', rating: 5, submitted_at: '2026-11-20T09:30:00.000Z' },
    ],
  });
