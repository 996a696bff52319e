import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { AppError } from '../../errors.js';
import { callerOf } from '../../http/caller.js';
import { errorResponses } from '../../http/schemas.js';
import { LimitsView, PutLimitsBody } from '../../limits/schemas.js';
import { signedIn, walletSignature } from '../common.js';

/** Spending limits: caps a wallet sets on its own spending, enforced before any payment settles. */
export async function limitRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { limits } = app.services;

  app.get('/v1/limits', {
    config: { auth: 'required' },
    schema: {
      operationId: 'getLimits',
      tags: ['limits'],
      summary: 'Your spending limits',
      description:
        'The caps the signing wallet set on itself (null = no cap), the escrow it funded since 00:00 UTC and what the ' +
        'daily cap still allows. A wallet sees only its own. Not priced.',
      security: signedIn,
      response: { 200: LimitsView, ...errorResponses(401) },
    },
    handler: async (req) => limits.view(callerOf(req).address),
  });

  app.put('/v1/limits', {
    config: { auth: 'required' },
    schema: {
      operationId: 'putLimits',
      tags: ['limits'],
      summary: 'Set your spending limits',
      description:
        'Replaces the signing wallet’s caps: `max_per_task` (a task’s budget, a funding’s amount, each batch item’s ' +
        'budget), `max_per_batch` (a batch’s escrows + fee) and `max_per_day` (escrow funded per UTC day; fees are not ' +
        'counted, refunds do not give the allowance back). Each is atomic USDC or null for no cap. A paid request over a ' +
        'cap is refused with `422 spending_limit_exceeded` (`details.cap` names it) before its payment is settled. ' +
        'Since it changes what the wallet may spend, it takes a fresh SIWE signature only: a session token is refused ' +
        'with `401 authentication_required`. Not priced.',
      security: walletSignature,
      body: PutLimitsBody,
      response: { 200: LimitsView, ...errorResponses(401) },
    },
    handler: async (req) => {
      const caller = callerOf(req);
      if (caller.via !== 'siwe') {
        throw new AppError('authentication_required', 'Setting spending limits needs a fresh wallet signature: send "Authorization: SIWE <base64url(message)>.<signature>" (a session token is not enough)', {
          param: 'Authorization',
        });
      }
      return limits.set(caller.address, req.body);
    },
  });
}
