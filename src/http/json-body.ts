import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { AppError } from '../errors.js';

/**
 * JSON bodies through Fastify's own parser (which refuses __proto__ and constructor.prototype),
 * plus one rule of Postgres: text and jsonb cannot hold NUL, so a body carrying `\u0000` is
 * refused up front instead of failing half-way through a write.
 */
const NUL_ESCAPE = /\\u0000/i;

export const jsonBodyPlugin = fp(
  async (app: FastifyInstance) => {
    const parse = app.getDefaultJsonParser('error', 'error');
    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
      const text = typeof body === 'string' ? body : body.toString('utf8');
      if (NUL_ESCAPE.test(text)) {
        done(new AppError('validation_error', 'Strings may not contain NUL (\\u0000) characters'), undefined);
        return;
      }
      parse(request, text, done);
    });
  },
  { name: 'json-body' },
);
