import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { tidyDocument } from './openapi-tidy.js';
import { swaggerPayTheme } from './swagger-pay.js';

export const API_VERSION = '0.1.0';

/** A documented route as declared: its zod schemas (what requests are validated and answers serialized with). */
export interface DocumentedRoute {
  method: string;
  url: string;
  config: Record<string, unknown>;
  schema: Record<string, unknown>;
}

const routesByApp = new WeakMap<FastifyInstance, DocumentedRoute[]>();

/** The routes of an app built with openapiPlugin, with their schemas (test/openapi.test.ts checks every example against them). */
export function documentedRoutes(app: FastifyInstance): DocumentedRoute[] {
  return routesByApp.get(app) ?? [];
}

export interface OpenapiOptions {
  /** x402 on (the default): priced routes are documented as paid with x402 only. */
  x402Enabled?: boolean;
}

/** OpenAPI 3.1 generated from the routes' zod schemas; served at /openapi.json, Swagger UI at /docs. */
export const openapiPlugin = fp(
  async (app: FastifyInstance, opts: OpenapiOptions) => {
    const x402Enabled = opts.x402Enabled ?? true;
    const routes: DocumentedRoute[] = [];
    routesByApp.set(app, routes);
    app.addHook('onRoute', (route) => {
      if (!route.schema || (route.schema as { hide?: boolean }).hide) return;
      for (const method of Array.isArray(route.method) ? route.method : [route.method]) {
        if (method === 'HEAD') continue;
        routes.push({ method, url: route.url, config: (route.config ?? {}) as Record<string, unknown>, schema: route.schema as Record<string, unknown> });
      }
    });
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
          { name: 'limits', description: 'Spending limits a wallet sets on itself' },
          { name: 'auth', description: 'Sessions: sign in once with SIWE, then send a token' },
          { name: 'operations', description: 'Health, readiness and the chain and prices this service uses' },
          { name: 'dev', description: 'Only with the embedded dev chain' },
          { name: 'admin', description: 'Operator only: present when the operator sets ADMIN_API_KEY, called with its `x-admin-key`' },
        ],
        components: {
          securitySchemes: {
            x402: {
              type: 'apiKey',
              in: 'header',
              name: 'PAYMENT-SIGNATURE',
              description:
                'x402 v2 payment (USDC on Base): an unpaid request gets 402 with a `PAYMENT-REQUIRED` challenge; ' +
                'retry with `PAYMENT-SIGNATURE` = base64 JSON of a payment for one of its `accepts`: `exact` (a signed EIP-3009 ' +
                'authorization) or, on fixed-price routes, `batch-settlement` (a deposit into a payment channel once, then a ' +
                'signed voucher per call, no transaction; a call on a channel whose earlier call has not completed gets 409 ' +
                'until it is resolved). Any stock x402 client (e.g. @x402/fetch with @x402/evm) does this. The paying wallet is the caller: on a priced route ' +
                'the service reads no other identity (a SIWE signature or a session token there still gets 402). ' +
                'A successful paid response carries `x-payment-id` and `PAYMENT-RESPONSE` with the settlement (its transaction, or a ' +
                'voucher\'s channel state), except a micro-fee served before its settlement (`x-payment-settlement: deferred`). An event stream ' +
                '(`/events`) already paid for resumes without a payment when it sends its `Last-Event-ID`. ' +
                'GET /v1/network names the chain, the USDC contract, the schemes and the prices. ' +
                'In Swagger UI (/docs) try-it-out pays for you: a 402 opens a payment panel showing the amount and the wallet it ' +
                'goes to; pay from a browser wallet (EIP-1193), or on the embedded dev chain from a demo wallet, and the request ' +
                'is sent again with the signed PAYMENT-SIGNATURE.',
            },
            adminKey: {
              type: 'apiKey',
              in: 'header',
              name: 'x-admin-key',
              description: 'Operator only: the key the operator configured (ADMIN_API_KEY). Without it the admin routes do not exist (404).',
            },
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
                'Accepted wherever a SIWE signature is, except PUT /v1/limits; it does not pay: priced endpoints still take x402.',
            },
          },
        },
      },
      transform: jsonSchemaTransform,
      transformObject: (document) => tidyDocument(jsonSchemaTransformObject(document) as Record<string, unknown>, { x402Enabled }) as ReturnType<typeof jsonSchemaTransformObject>,
    });
    // The theme adds the x402 payment panel to try-it-out (http/swagger-pay.ts).
    await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list', deepLinking: true }, theme: swaggerPayTheme });
    app.get('/openapi.json', { schema: { hide: true }, config: { rateLimit: false } }, async () => app.swagger());
  },
  { name: 'openapi' },
);
