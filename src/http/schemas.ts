import { z } from 'zod';
import { errorCodes, errorTypes } from '../errors.js';

/** Shapes shared by every resource: money, addresses, times and the error body. */

export const AtomicAmount = z
  .string()
  .regex(
    /^(0|[1-9][0-9]{0,15})$/,
    'must be a non-negative integer string in atomic units (6 decimals: "1000000" = 1 USDC), at most 16 digits',
  )
  .meta({ description: 'USDC in atomic units (6 decimals) as a decimal string', examples: ['1000000'] });

export const PositiveAtomicAmount = AtomicAmount.refine((v) => v !== '0', 'must be greater than zero');

export const WalletAddress = z
  .string()
  .regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 0x-prefixed 20-byte hex address')
  .meta({ description: 'EVM address', examples: ['0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc'] });

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

const errorDescriptions: Record<number, string> = {
  400: 'Malformed request: `validation_error` (the field at fault is in `param`)',
  401: 'No valid wallet signature or session token: `authentication_required`, `invalid_signature`, `signature_expired`, `signature_replayed`, `session_expired`, `session_revoked`',
  402: 'Payment required or refused',
  403: 'The wallet may not act on this resource: `forbidden`',
  404: 'Not found: `agent_not_found`, `task_not_found`, `not_found`',
  409: 'Conflicts with the current state (see the operation description for its codes)',
  410: 'Gone: `task_expired`',
  413: 'Body too large: `payload_too_large`',
  422: 'Valid JSON that breaks a rule (see the operation description for its codes)',
  429: 'Too many requests: `rate_limited` (see Retry-After)',
  500: 'Internal error: `internal_error` (no details are exposed; quote `request_id`)',
  503: 'Temporarily unavailable: `service_unavailable`',
};

/** Documented error responses for a route: the given statuses plus those every route can give. */
export function errorResponses(...statuses: number[]) {
  const all = [...new Set([400, 429, 500, ...statuses])].sort((a, b) => a - b);
  return Object.fromEntries(
    all.map((s) => [
      s,
      { description: errorDescriptions[s] ?? 'Error', content: { 'application/json': { schema: ErrorBody } } },
    ]),
  ) as Record<number, { description: string; content: { 'application/json': { schema: typeof ErrorBody } } }>;
}

export function toWireAmount(v: bigint): string {
  return v.toString();
}
