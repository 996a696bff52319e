import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { callerOf } from '../../http/caller.js';
import { errorResponses } from '../../http/schemas.js';
import { ReceiptList, ReceiptsQuery } from '../../payments/schemas.js';
import { signedIn } from '../common.js';

/** Receipts: every settled x402 payment, listed to the wallet that paid it. */
export async function receiptRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  app.get('/v1/receipts', {
    config: { auth: 'required' },
    schema: {
      operationId: 'listReceipts',
      tags: ['payments'],
      summary: 'Your payment receipts',
      description: 'Settled payments of the signing wallet, newest first, with the settlement transaction. Not priced.',
      security: signedIn,
      querystring: ReceiptsQuery,
      response: { 200: ReceiptList, ...errorResponses(401) },
    },
    handler: async (req) => app.services.payments.receipts(callerOf(req).address, req.query.limit, req.query.cursor),
  });
}
