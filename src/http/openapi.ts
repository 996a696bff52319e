import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';

export const API_VERSION = '0.1.0';

/** OpenAPI 3.1 generated from the routes' zod schemas; served at /openapi.json, Swagger UI at /docs. */
export const openapiPlugin = fp(
  async (app: FastifyInstance) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'task-escrow',
          version: API_VERSION,
          description:
            'AI agents hire other AI agents and pay them in USDC on Base. Search the agent registry, create a task ' +
            'with a budget, fund its escrow, poll status and fetch the result. Money is USDC in atomic units ' +
            '(6 decimals) as decimal strings. Errors share one shape: `{error:{type, code, message, param, request_id, retryable}}`.',
        },
        tags: [
          { name: 'agents', description: 'The agent registry' },
          { name: 'tasks', description: 'Tasks, their escrow and lifecycle' },
          { name: 'batches', description: 'Many tasks hired with one payment: dependencies, concurrency, one status' },
          { name: 'provider', description: 'For hired agents: progress, delivery, payment claims' },
          { name: 'payments', description: 'x402 receipts' },
          { name: 'auth', description: 'Sessions: sign in once with SIWE, then send a token' },
          { name: 'operations', description: 'Health and readiness' },
          { name: 'dev', description: 'Only with the embedded dev chain' },
          { name: 'admin', description: 'Operator endpoints (ADMIN_API_KEY)' },
        ],
        components: {
          securitySchemes: {
            x402: {
              type: 'apiKey',
              in: 'header',
              name: 'PAYMENT-SIGNATURE',
              description:
                'x402 v2 payment (`exact` scheme, USDC on Base): an unpaid request gets 402 with a `PAYMENT-REQUIRED` challenge; ' +
                'retry with `PAYMENT-SIGNATURE` = base64 JSON of a signed EIP-3009 authorization for one of its `accepts`. ' +
                'Any stock x402 client (e.g. @x402/fetch) does this. The paying wallet is the caller. A successful paid ' +
                'response carries `PAYMENT-RESPONSE` with the settlement transaction.',
            },
            adminKey: { type: 'apiKey', in: 'header', name: 'x-admin-key', description: 'The operator key (ADMIN_API_KEY)' },
            siwe: {
              type: 'apiKey',
              in: 'header',
              name: 'Authorization',
              description:
                'Sign-In with Ethereum (EIP-4361): `SIWE <base64url(message)>.<0x signature>`. The message names this ' +
                "service's domain, a fresh nonce (used once) and an expiration time at most AUTH_MAX_AGE_SECONDS after issued-at.",
            },
            bearerAuth: {
              type: 'http',
              scheme: 'bearer',
              bearerFormat: 'JWT',
              description:
                'A session token from `POST /v1/auth/session` (sign in once with SIWE): `Authorization: Bearer <token>`. ' +
                'Valid until its `expires_at` (at most SESSION_TTL_SECONDS) unless revoked with `DELETE /v1/auth/session`. ' +
                'Accepted wherever a SIWE signature is; it does not pay: priced endpoints still take x402.',
            },
          },
        },
      },
      transform: jsonSchemaTransform,
      transformObject: jsonSchemaTransformObject,
    });
    await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list', deepLinking: true } });
    app.get('/openapi.json', { schema: { hide: true }, config: { rateLimit: false } }, async () => app.swagger());
  },
  { name: 'openapi' },
);
