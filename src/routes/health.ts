import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponses } from '../http/schemas.js';
import { AppError } from '../errors.js';
import { pingWithin } from '../db/client.js';

/** A readiness probe answers within this, even when the database hangs rather than refuses. */
const READY_TIMEOUT_MS = 3_000;

const Health = z.object({ status: z.literal('ok') }).meta({ id: 'Health', examples: [{ status: 'ok' }] });
const Ready = z
  .object({ status: z.literal('ready'), database: z.enum(['pglite', 'postgres']) })
  .meta({ id: 'Ready', examples: [{ status: 'ready', database: 'postgres' }] });

/**
 * Liveness (the process answers) and readiness (the database answers). Not rate limited.
 * Not ready = 503 `service_unavailable` in the error shape, retryable, with `Retry-After`.
 */
export async function healthRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  app.get('/healthz', {
    config: { rateLimit: false },
    schema: { operationId: 'health', tags: ['operations'], summary: 'Liveness', response: { 200: Health } },
    handler: async () => ({ status: 'ok' as const }),
  });
  app.get('/readyz', {
    config: { rateLimit: false },
    schema: {
      operationId: 'ready',
      tags: ['operations'],
      summary: 'Readiness: the database answers',
      response: { 200: Ready, ...errorResponses(503) },
    },
    handler: async () => {
      try {
        await pingWithin(app.database, READY_TIMEOUT_MS);
      } catch (err) {
        throw new AppError('service_unavailable', 'The database does not answer', { cause: err });
      }
      return { status: 'ready' as const, database: app.database.kind };
    },
  });
}
