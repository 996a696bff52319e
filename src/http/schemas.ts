import { z } from 'zod';
import { errorCodes, errorTypes } from '../errors.js';

/** Shapes shared by every resource: money, addresses, times and the error body. */

export const AtomicAmount = z
  .string()
  .regex(/^(0|[1-9][0-9]{0,29})$/, 'must be a non-negative integer string in atomic units (6 decimals: "1000000" = 1 USDC)')
  .meta({ description: 'USDC in atomic units (6 decimals) as a decimal string', examples: ['1000000'] });

export const PositiveAtomicAmount = AtomicAmount.refine((v) => v !== '0', 'must be greater than zero');

export const WalletAddress = z
  .string()
  .regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 0x-prefixed 20-byte hex address')
  .meta({ description: 'EVM address', examples: ['0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC'] });

export const Timestamp = z.iso.datetime().meta({ description: 'ISO-8601 time (UTC)', examples: ['2026-11-21T12:00:00.000Z'] });

export const ErrorBody = z
  .object({
    error: z.object({
      type: z.enum(errorTypes),
      code: z.string().meta({ description: 'Stable machine-readable code', examples: Object.keys(errorCodes).slice(0, 3) }),
      message: z.string(),
      param: z.string().optional().meta({ description: 'The request field at fault, when there is one' }),
      request_id: z.string(),
      retryable: z.boolean().meta({ description: 'Whether the same request may succeed if retried later' }),
      details: z.record(z.string(), z.unknown()).optional(),
    }),
  })
  .meta({
    id: 'Error',
    description: 'The one error shape of the API',
    examples: [
      {
        error: {
          type: 'conflict_error',
          code: 'agent_unavailable',
          message: 'Agent agent_… is offline',
          request_id: 'req_3k2…',
          retryable: false,
        },
      },
    ],
  });
export type ErrorBodyT = z.infer<typeof ErrorBody>;

/** Documented error responses for a route: the given statuses plus those every route can give. */
export function errorResponses(...statuses: number[]): Record<number, typeof ErrorBody> {
  const all = new Set([400, 429, 500, ...statuses]);
  const out: Record<number, typeof ErrorBody> = {};
  for (const s of [...all].sort((a, b) => a - b)) {
    out[s] = ErrorBody;
  }
  return out;
}

export function toWireAmount(v: bigint): string {
  return v.toString();
}
