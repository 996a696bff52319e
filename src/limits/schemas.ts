import { z } from 'zod';
import { AtomicAmount, Timestamp, WalletAddress } from '../http/schemas.js';

/** Wire shapes of spending limits (one zod schema per shape: validation, types and OpenAPI). */

const Cap = AtomicAmount.nullable();

export const PutLimitsBody = z
  .object({
    max_per_task: Cap.meta({
      description: 'Most escrow one task may hold: a task’s budget, one funding’s amount, each batch item’s budget. null = no cap',
    }),
    max_per_batch: Cap.meta({ description: 'Most one batch may cost: its escrows plus the batch fee. null = no cap' }),
    max_per_day: Cap.meta({
      description: 'Most escrow funded per UTC day (single fundings and batch items; fees are not counted). null = no cap',
    }),
  })
  .strict()
  .meta({
    id: 'PutLimits',
    description: 'The wallet’s caps, all three stated (PUT replaces them). "0" forbids any spend of that kind; null removes the cap.',
    examples: [{ max_per_task: '2000000', max_per_batch: '10000000', max_per_day: null }],
  });
export type PutLimitsInput = z.infer<typeof PutLimitsBody>;

export const LimitsView = z
  .object({
    payer: WalletAddress,
    max_per_task: Cap,
    max_per_batch: Cap,
    max_per_day: Cap,
    spent_today: AtomicAmount.meta({ description: 'Escrow funded by this wallet since 00:00 UTC' }),
    remaining_today: Cap.meta({ description: 'What max_per_day still allows today; null without a daily cap' }),
    resets_at: Timestamp.meta({ description: 'The next 00:00 UTC, when the daily count starts again' }),
    updated_at: Timestamp.nullable().meta({ description: 'When the caps were last set; null if never' }),
  })
  .meta({
    id: 'SpendingLimits',
    description: 'The caps a wallet set on its own spending, enforced before any payment is settled',
    examples: [
      {
        payer: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65',
        max_per_task: '2000000',
        max_per_batch: '10000000',
        max_per_day: '25000000',
        spent_today: '3500000',
        remaining_today: '21500000',
        resets_at: '2026-11-22T00:00:00.000Z',
        updated_at: '2026-11-21T09:30:00.000Z',
      },
    ],
  });
export type LimitsViewT = z.infer<typeof LimitsView>;
