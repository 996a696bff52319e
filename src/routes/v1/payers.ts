import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { isAddress, type Address } from 'viem';
import { errorResponses } from '../../http/schemas.js';
import { paidCall } from '../../http/x402.js';
import { arrearsWrite, nothingOwed } from '../../payments/micro-fees.js';
import { payThen } from '../../payments/paid-write.js';
import { ArrearsPaid, ArrearsParams } from '../../payments/schemas.js';
import { paid } from '../common.js';

/** Paying a wallet's arrears: micro-fees it was served on credit whose authorizations failed at settlement. */
export async function payerRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { paymentLifecycle } = app.services;
  app.post('/v1/payers/:address/arrears', {
    config: { price: 'pay_arrears' },
    // Before the x402 challenge: a wallet that owes nothing has nothing to be priced.
    preValidation: async (req) => {
      const { address } = req.params as { address?: string };
      if (address && isAddress(address, { strict: false }) && (await paymentLifecycle.owed(address)).arrears === 0n) throw nothingOwed(address);
    },
    schema: {
      operationId: 'payArrears',
      tags: ['payments'],
      summary: 'Pay a wallet’s arrears',
      description:
        'Micro-fees (at most MICRO_FEE_CEILING each) are served at once and settled later in batches. A wallet one of whose ' +
        'authorizations then failed (its balance, its nonce spent elsewhere) is refused on every priced route with 402 ' +
        '`payment_in_arrears` until what it owes is paid here. The 402 challenge states the exact amount owed; the payment ' +
        'settles first and clears the arrears in the same transaction. Anyone may pay them. 409 `invalid_state` when the ' +
        'wallet owes nothing.\n\n**Price:** what the wallet owes (x402; a failed request is not charged).',
      security: paid,
      params: ArrearsParams,
      response: { 200: ArrearsPaid, ...errorResponses(402, 409, 422) },
    },
    handler: async (req, reply) => {
      const debtor = req.params.address as Address;
      const owed = req.payment?.row.amount;
      if (owed === undefined) throw nothingOwed(debtor);
      return payThen(app.paidWrites, paidCall(req, reply), arrearsWrite(paymentLifecycle, debtor, owed));
    },
  });
}
