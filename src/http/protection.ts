import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import cors from '@fastify/cors';
import helmet from '@fastify/helmet';
import rateLimit from '@fastify/rate-limit';
import underPressure from '@fastify/under-pressure';
import { AppError } from '../errors.js';

export interface ProtectionOptions {
  corsOrigin: string;
  rateLimitMax: number;
  rateLimitWindowMs: number;
  maxEventLoopDelayMs: number;
}

/** Security headers, CORS, per-IP rate limits and load shedding, all answering in the error shape. */
export const protectionPlugin = fp(
  async (app: FastifyInstance, opts: ProtectionOptions) => {
    await app.register(helmet, {
      // Swagger UI at /docs needs inline styles and scripts from its own origin.
      contentSecurityPolicy: {
        directives: {
          defaultSrc: ["'self'"],
          styleSrc: ["'self'", "'unsafe-inline'"],
          scriptSrc: ["'self'", "'unsafe-inline'"],
          imgSrc: ["'self'", 'data:', 'validator.swagger.io'],
        },
      },
    });
    await app.register(cors, {
      origin: opts.corsOrigin === '*' ? true : opts.corsOrigin.split(',').map((o) => o.trim()),
      exposedHeaders: ['x-request-id', 'idempotent-replayed', 'retry-after', 'payment-required', 'payment-response'],
    });
    await app.register(rateLimit, {
      global: true,
      max: opts.rateLimitMax,
      timeWindow: opts.rateLimitWindowMs,
      errorResponseBuilder: (_req, ctx) =>
        new AppError('rate_limited', `Too many requests: at most ${ctx.max} per ${ctx.after}; retry later`),
    });
    if (opts.maxEventLoopDelayMs > 0) {
      await app.register(underPressure, {
        maxEventLoopDelay: opts.maxEventLoopDelayMs,
        customError: class extends AppError {
          constructor() {
            super('service_unavailable', 'The service is under pressure; retry shortly');
          }
        },
      });
    }
  },
  { name: 'protection' },
);
