import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { and, eq, lt } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { describeDatabaseError, type Db } from '../db/client.js';
import { idempotencyKeys } from '../db/schema.js';
import { AppError } from '../errors.js';

/**
 * Idempotency-Key on POSTs, the Stripe way: the first response is stored and replayed to
 * retries with the same key; the same key with another request is refused
 * (idempotency_key_reused); a retry while the first is still running gets 409
 * (idempotency_in_progress). Keys are scoped to the caller's wallet. Server errors and
 * refusals that a retry may cure (402, 409, 429, 5xx) are not stored, so the retry runs.
 */
export interface IdempotencyOptions {
  db: Db;
  clock: Clock;
  ttlSeconds: number;
  /** How long a started request holds its key before another may take it over (crash). */
  lockSeconds?: number;
}

const HEADER = 'idempotency-key';
const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;
const NOT_STORED = new Set([402, 409, 429]);

interface Held {
  scope: string;
  key: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    idempotency: Held | null;
  }
  interface FastifyContextConfig {
    /** false: the route ignores Idempotency-Key (its answer must never be replayed, e.g. a fresh session token). */
    idempotency?: false;
  }
}

export function requestHash(request: FastifyRequest): string {
  return createHash('sha256')
    .update(request.method)
    .update('\n')
    .update(request.url.split('?')[0] ?? '')
    .update('\n')
    .update(JSON.stringify(request.body ?? null))
    .digest('hex');
}

type StoredResponse = typeof idempotencyKeys.$inferSelect;

/** The stored first answer for (scope, key), if any. */
export async function storedResponse(db: Db, scope: string, key: string): Promise<StoredResponse | undefined> {
  const [row] = await db
    .select()
    .from(idempotencyKeys)
    .where(and(eq(idempotencyKeys.scope, scope.toLowerCase()), eq(idempotencyKeys.key, key)));
  return row;
}

/** Sends a stored first answer again, marked `idempotent-replayed: true`. */
export function replayStored(reply: FastifyReply, row: StoredResponse): FastifyReply {
  reply.header('idempotent-replayed', 'true');
  reply.code(row.responseStatus ?? 200);
  if (row.responseContentType) reply.type(row.responseContentType);
  return reply.send(row.responseBody ?? '');
}

export const idempotencyPlugin = fp(
  async (app: FastifyInstance, opts: IdempotencyOptions) => {
    const { db, clock, ttlSeconds } = opts;
    const lockMs = (opts.lockSeconds ?? 60) * 1000;
    app.decorateRequest('idempotency', null);

    async function claim(request: FastifyRequest, reply: FastifyReply, key: string): Promise<FastifyReply | void> {
      const scope = request.caller?.address.toLowerCase() ?? `anon`;
      const hash = requestHash(request);
      const path = request.url.split('?')[0] ?? '';
      const now = clock.now();
      await db.delete(idempotencyKeys).where(and(eq(idempotencyKeys.scope, scope), eq(idempotencyKeys.key, key), lt(idempotencyKeys.expiresAt, now)));
      const inserted = await db
        .insert(idempotencyKeys)
        .values({
          scope,
          key,
          method: request.method,
          path,
          requestHash: hash,
          state: 'in_flight',
          lockedUntil: new Date(now.getTime() + lockMs),
          createdAt: now,
          expiresAt: new Date(now.getTime() + ttlSeconds * 1000),
        })
        .onConflictDoNothing()
        .returning({ key: idempotencyKeys.key });
      if (inserted.length === 1) {
        request.idempotency = { scope, key };
        return;
      }
      const [row] = await db
        .select()
        .from(idempotencyKeys)
        .where(and(eq(idempotencyKeys.scope, scope), eq(idempotencyKeys.key, key)));
      if (!row) throw new AppError('idempotency_in_progress', 'The request with this Idempotency-Key is being processed');
      if (row.requestHash !== hash) {
        throw new AppError(
          'idempotency_key_reused',
          'This Idempotency-Key was used with a different request; use a new key for a new request',
          { param: 'Idempotency-Key' },
        );
      }
      if (row.state === 'completed' && row.responseStatus !== null) {
        request.idempotency = null;
        return replayStored(reply, row);
      }
      if (row.lockedUntil > now) {
        throw new AppError('idempotency_in_progress', 'The first request with this Idempotency-Key is still running; retry shortly');
      }
      // The first attempt died without answering: take the key over (only one retry wins).
      const taken = await db
        .update(idempotencyKeys)
        .set({ lockedUntil: new Date(now.getTime() + lockMs) })
        .where(and(eq(idempotencyKeys.scope, scope), eq(idempotencyKeys.key, key), eq(idempotencyKeys.state, 'in_flight'), lt(idempotencyKeys.lockedUntil, now)))
        .returning({ key: idempotencyKeys.key });
      if (taken.length === 0) throw new AppError('idempotency_in_progress', 'Another retry with this Idempotency-Key is running');
      request.idempotency = { scope, key };
    }

    app.addHook('preHandler', async (request, reply) => {
      if (request.method !== 'POST' || request.routeOptions.config.idempotency === false) return;
      const raw = request.headers[HEADER];
      if (raw === undefined) return;
      const key = Array.isArray(raw) ? raw[0] : raw;
      if (!key || !KEY_PATTERN.test(key)) {
        throw new AppError('validation_error', 'Idempotency-Key must be 1-255 printable ASCII characters', { param: 'Idempotency-Key' });
      }
      return claim(request, reply, key);
    });

    app.addHook('onSend', async (request, reply, payload) => {
      const held = request.idempotency;
      if (!held) return payload;
      request.idempotency = null;
      const where = and(eq(idempotencyKeys.scope, held.scope), eq(idempotencyKeys.key, held.key));
      const status = reply.statusCode;
      try {
        if (status >= 500 || NOT_STORED.has(status) || (typeof payload !== 'string' && payload !== null && payload !== undefined)) {
          await db.delete(idempotencyKeys).where(where);
          return payload;
        }
        const contentType = reply.getHeader('content-type');
        await db
          .update(idempotencyKeys)
          .set({
            state: 'completed',
            responseStatus: status,
            responseBody: (payload as string | null) ?? '',
            responseContentType: typeof contentType === 'string' ? contentType : null,
          })
          .where(where);
      } catch (err) {
        // The answer stands; the key stays in flight until its lock expires, then a retry takes it over.
        request.log.warn({ err: describeDatabaseError(err) }, 'idempotency key not recorded');
      }
      return payload;
    });
  },
  { name: 'idempotency', dependencies: ['wallet-caller'] },
);
