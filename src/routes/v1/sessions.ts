import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { SessionCreated, SessionRevoked } from '../../auth/schemas.js';
import { bearerToken } from '../../auth/session.js';
import { AppError } from '../../errors.js';
import { errorResponses } from '../../http/schemas.js';
import { sessionHolder, walletSignature } from '../common.js';

/** Sessions: sign in once with SIWE, then call unpaid endpoints with the token (auth/session.ts). */
export async function sessionRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { sessions } = app.services;

  app.post('/v1/auth/session', {
    // The route proves the wallet itself (a SIWE header only: a token cannot extend itself), and a
    // fresh token must never be replayed to whoever repeats an Idempotency-Key.
    config: { idempotency: false },
    schema: {
      operationId: 'startSession',
      tags: ['auth'],
      summary: 'Sign in once: a session token for unpaid endpoints',
      description:
        'Send a SIWE `Authorization` header, as for any signed request: its nonce is spent, so one signed message starts one ' +
        'session. The answer is a JWT for `Authorization: Bearer <token>` on the unpaid endpoints that need a wallet, valid ' +
        'until `expires_at` (SESSION_TTL_SECONDS, or the message’s expiration time if sooner; a message that starts a session ' +
        'may be valid for up to SESSION_TTL_SECONDS). Priced endpoints still take x402 payment. Not priced.',
      security: walletSignature,
      response: { 201: SessionCreated, ...errorResponses(401) },
    },
    handler: async (req, reply) => {
      const session = await sessions.start(req.headers.authorization);
      req.caller = { address: session.address, via: 'siwe' };
      return reply
        .code(201)
        .header('cache-control', 'no-store')
        .send({ token: session.token, token_type: 'Bearer' as const, address: session.address, expires_at: session.expiresAt.toISOString() });
    },
  });

  app.delete('/v1/auth/session', {
    schema: {
      operationId: 'endSession',
      tags: ['auth'],
      summary: 'Sign out: revoke the session token',
      description:
        'Revokes the token sent as `Authorization: Bearer <token>`, in every process of the service. Revoking a token that ' +
        'has expired or was revoked already succeeds too. A token that is not this service’s is refused (401). Not priced.',
      security: sessionHolder,
      response: { 200: SessionRevoked, ...errorResponses(401) },
    },
    handler: async (req) => {
      const token = bearerToken(req.headers.authorization);
      if (token === null) {
        throw new AppError('authentication_required', 'Send the session token to revoke as "Authorization: Bearer <token>"', { param: 'Authorization' });
      }
      const session = await sessions.revoke(token);
      req.caller = { address: session.address, via: 'session' };
      return { revoked: true as const, address: session.address, expires_at: session.expiresAt.toISOString() };
    },
  });
}
