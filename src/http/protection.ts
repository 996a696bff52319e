import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import cors from '@fastify/cors';
import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet, { type HelmetOptions } from 'helmet';
import rateLimit from '@fastify/rate-limit';
import underPressure from '@fastify/under-pressure';
import { AppError } from '../errors.js';

export interface ProtectionOptions {
  corsOrigin: string;
  rateLimitMax: number;
  rateLimitWindowMs: number;
  maxEventLoopDelayMs: number;
}

const HELMET_OPTIONS: HelmetOptions = {
  // Swagger UI at /docs needs inline styles and scripts from its own origin.
  contentSecurityPolicy: {
    directives: {
      defaultSrc: ["'self'"],
      styleSrc: ["'self'", "'unsafe-inline'"],
      scriptSrc: ["'self'", "'unsafe-inline'"],
      imgSrc: ["'self'", 'data:', 'validator.swagger.io'],
    },
  },
};

/**
 * The headers helmet sets for these options, computed once. They depend on the options only (no
 * nonces, no directive computed per request), so every response gets the same set; building
 * helmet's middleware per request, as @fastify/helmet does, cost ~4 % of an unpaid read.
 */
export function securityHeaders(options: HelmetOptions): Record<string, string> {
  const headers: Record<string, string> = {};
  const res = {
    setHeader: (name: string, value: unknown) => void (headers[name.toLowerCase()] = String(value)),
    removeHeader: (name: string) => void delete headers[name.toLowerCase()],
  };
  let done = false;
  helmet(options)({} as IncomingMessage, res as unknown as ServerResponse, (err?: unknown) => {
    if (err) throw err;
    done = true;
  });
  if (!done) throw new Error('helmet did not set its headers synchronously');
  return headers;
}

/** Security headers, CORS, per-IP rate limits and load shedding, all answering in the error shape. */
export const protectionPlugin = fp(
  async (app: FastifyInstance, opts: ProtectionOptions) => {
    const headers = securityHeaders(HELMET_OPTIONS);
    app.addHook('onRequest', (_req, reply, done) => {
      reply.headers(headers);
      done();
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
