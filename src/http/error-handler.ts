import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { describeDatabaseError, isDatabaseUnavailable } from '../db/client.js';
import { AppError, isAppError, type ErrorCode } from '../errors.js';
import type { ErrorBodyT } from './schemas.js';

/** Fastify's own client errors, mapped onto the service's codes. */
const fastifyCodes: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'validation_error',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'validation_error',
  FST_ERR_CTP_INVALID_JSON_BODY: 'validation_error',
  FST_ERR_VALIDATION: 'validation_error',
};

export function toAppError(err: unknown): AppError {
  if (isAppError(err)) return err;
  // The database cannot be reached (refused, dropped, terminated, PGlite closed): not a bug of
  // this request, a retry in a few seconds may work. The classifier looks through drizzle's
  // DrizzleQueryError and every `cause` (src/db/client.ts).
  if (isDatabaseUnavailable(err)) {
    return new AppError('service_unavailable', 'The database is unavailable; retry shortly', { cause: err });
  }
  if (hasZodFastifySchemaValidationErrors(err)) {
    const first = err.validation[0];
    const where = err.validationContext ?? 'body';
    const path = first?.instancePath?.replace(/^\//, '').replace(/\//g, '.') ?? '';
    const param = path || (first?.params as { missingProperty?: string } | undefined)?.missingProperty;
    const message = err.validation
      .slice(0, 5)
      .map((v) => {
        const p = v.instancePath.replace(/^\//, '').replace(/\//g, '.');
        return `${where}${p ? '.' + p : ''}: ${v.message ?? 'invalid'}`;
      })
      .join('; ');
    return new AppError('validation_error', message, param ? { param } : {});
  }
  const fe = err as Partial<FastifyError> & { statusCode?: number };
  if (fe.code && fastifyCodes[fe.code]) {
    return new AppError(fastifyCodes[fe.code]!, fe.message ?? 'Invalid request');
  }
  if (err instanceof SyntaxError && fe.statusCode === 400) {
    return new AppError('validation_error', 'Body is not valid JSON');
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const code: ErrorCode = fe.statusCode === 404 ? 'not_found' : fe.statusCode === 429 ? 'rate_limited' : 'validation_error';
    return new AppError(code, fe.message ?? 'Invalid request');
  }
  if (fe.statusCode === 503) return new AppError('service_unavailable', 'The service is under pressure; retry shortly');
  return new AppError('internal_error', 'Internal error', { cause: err });
}

export function errorBody(err: AppError, requestId: string): ErrorBodyT {
  return {
    error: {
      type: err.type,
      code: err.code,
      message: err.message,
      ...(err.param ? { param: err.param } : {}),
      request_id: requestId,
      retryable: err.retryable,
      ...(err.details ? { details: err.details } : {}),
    },
  };
}

export function sendError(request: FastifyRequest, reply: FastifyReply, err: AppError): FastifyReply {
  // under-pressure sets its own Retry-After before handing its error over; keep it.
  if (err.retryAfterSeconds !== undefined && !reply.hasHeader('retry-after')) {
    reply.header('retry-after', String(err.retryAfterSeconds));
  }
  return reply.code(err.status).type('application/json; charset=utf-8').send(errorBody(err, request.id));
}

/** One error shape for every failure; 5xx never leak internals (they are logged instead). */
export const errorHandlerPlugin = fp(
  async (app: FastifyInstance) => {
    app.setErrorHandler((err, request, reply) => {
      const appErr = toAppError(err);
      if (appErr.code === 'service_unavailable') {
        // An outage, not a bug: a warning with a log-safe summary of the driver's error (never
        // drizzle's wrapper, which carries the query's parameters, nor a connection string).
        const cause = appErr.cause ?? (appErr === err ? undefined : err);
        request.log.warn(
          cause === undefined ? {} : { cause: describeDatabaseError(cause), database_unreachable: isDatabaseUnavailable(cause) },
          appErr.message,
        );
      } else if (appErr.status >= 500) {
        const cause = isResponseSerializationError(err) ? err.cause : err;
        request.log.error({ err: cause }, 'request failed');
      }
      return sendError(request, reply, appErr);
    });
    app.setNotFoundHandler(
      { preHandler: app.rateLimit ? app.rateLimit() : undefined },
      (request, reply) => sendError(request, reply, new AppError('not_found', `No route ${request.method} ${request.url.split('?')[0]}`)),
    );
  },
  { name: 'error-handler', dependencies: ['@fastify/rate-limit'] },
);
