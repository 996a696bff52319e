import { z } from 'zod';

/** Request headers documented on every POST. */
export const IdempotencyHeaders = z.object({
  'idempotency-key': z
    .string()
    .max(255)
    .optional()
    .meta({ description: 'Retry-safe key: the first response is replayed to retries with the same key and body' }),
});

/** OpenAPI security requirement of wallet-signed routes. */
export const signedIn = [{ siwe: [] }];
