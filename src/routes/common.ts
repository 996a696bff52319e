import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { formatUsdc, type PriceName } from '../payments/prices.js';

/** Request headers documented on every POST. */
export const IdempotencyHeaders = z.object({
  'idempotency-key': z
    .string()
    .max(255)
    .optional()
    .meta({ description: 'Retry-safe key: the first response is replayed to retries with the same key and body' }),
});

/** OpenAPI security requirement of wallet-signed routes: a SIWE signature per request, or a session token. */
export const signedIn: { [scheme: string]: string[] }[] = [{ siwe: [] }, { bearerAuth: [] }];

/** A SIWE signature only (starting a session). */
export const walletSignature: { [scheme: string]: string[] }[] = [{ siwe: [] }];

/** A session token only (ending it). */
export const sessionHolder: { [scheme: string]: string[] }[] = [{ bearerAuth: [] }];

/** OpenAPI security requirement of x402-paid routes (or a wallet signature when x402 is off). */
export const paid: { [scheme: string]: string[] }[] = [{ x402: [] }, { siwe: [] }];

/** A route description with its price, as configured. */
export function priced(app: FastifyInstance, name: PriceName, text: string): string {
  return `${text}\n\n**Price:** ${formatUsdc(app.prices[name])}, paid with x402 (a failed request is not charged).`;
}
