import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySerializerCompiler } from 'fastify';
import type { Address } from 'viem';
import { z } from 'zod';
import { StreamResume } from '../tasks/stream-resume.js';
import { createSerializerCompiler, serializerCompiler } from 'fastify-type-provider-zod';
import { formatUsdc, type FixedPriceName } from '../payments/prices.js';

/** Request headers documented on every POST. */
export const IdempotencyHeaders = z.object({
  'idempotency-key': z
    .string()
    .max(255)
    .optional()
    .meta({ description: 'Retry-safe key: the first response is replayed to retries with the same key and body' }),
});

/** OpenAPI security requirement of wallet-signed routes: a SIWE signature per request, or a session token. */
export const signedIn: { [scheme: string]: string[] }[] = [{ siwe: [] }, { bearerAuth: [] }];

/** A SIWE signature only (starting a session). */
export const walletSignature: { [scheme: string]: string[] }[] = [{ siwe: [] }];

/** A session token only (ending it). */
export const sessionHolder: { [scheme: string]: string[] }[] = [{ bearerAuth: [] }];

/**
 * OpenAPI security requirement of x402-paid routes: x402 only. With x402 on, the caller plugin
 * does not read `Authorization` on a priced route (`deferTo`): the payer is the caller, and a
 * SIWE signature or session token alone gets 402. (A paid event stream also resumes with its
 * `Last-Event-ID`, documented as that route's header.) With X402_ENABLED=false the document
 * lists the wallet signature and the session token instead (http/openapi-tidy.ts).
 */
export const paid: { [scheme: string]: string[] }[] = [{ x402: [] }];

/** A route description with its price, as configured. */
export function priced(app: FastifyInstance, name: FixedPriceName, text: string): string {
  return `${text}\n\n**Price:** ${formatUsdc(app.prices[name])}, paid with x402 (a failed request is not charged).`;
}

/** The request header of an event stream that reconnects (`Last-Event-ID`). */
export const EventStreamHeaders = z.object({
  'last-event-id': z
    .string()
    .max(1024)
    .optional()
    .meta({ description: 'The id of the last event received: reconnecting with it within the resume window is not charged again' }),
});

/**
 * Resumable event streams of one route (`/…/:id/events`): the resume tokens riding in event ids,
 * and the stream a request's `Last-Event-ID` resumes (its payer and next event), if any.
 */
export function streamResumption(app: FastifyInstance): { resume: StreamResume; resumed(req: FastifyRequest): { payer: Address; next: number } | null } {
  const resume = new StreamResume(app.config.CALLBACK_SIGNING_SECRET, app.config.EVENT_STREAM_RESUME_SECONDS, app.clock);
  return {
    resume,
    resumed: (req) => {
      const header = req.headers['last-event-id'];
      return resume.resume(typeof header === 'string' ? header : undefined, (req.params as { id?: string }).id ?? '');
    },
  };
}

/** Sends a server-sent event stream as it is written (never serialized, never buffered by a proxy). */
export function sendEventStream(reply: FastifyReply, stream: Readable): FastifyReply {
  return reply
    .header('content-type', 'text/event-stream; charset=utf-8')
    .header('cache-control', 'no-cache, no-transform')
    .header('x-accel-buffering', 'no')
    .send(stream as unknown as string);
}

/** Object keys sorted at every level, as in tasks/result-hash.ts `canonicalJson` (arrays keep their order). */
function sortedKeys(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const source = value as Record<string, unknown>;
  return Object.fromEntries(Object.keys(source).sort().map((k) => [k, source[k]]));
}

/**
 * A route's response serializer writing canonical JSON (keys sorted at every level): a task's
 * result comes back exactly as its `result_hash` was computed, so `sha256(canonicalJson(result))`
 * of the parsed answer, or of the `result` value's text, equals `result_hash`.
 */
const canonical = createSerializerCompiler({ replacer: sortedKeys }) as FastifySerializerCompiler<unknown>;
const plain = serializerCompiler as FastifySerializerCompiler<unknown>;
/** Success bodies only: errors keep the one error shape's order. */
export const canonicalJsonSerializer: FastifySerializerCompiler<unknown> = (route) =>
  String(route.httpStatus ?? '200').startsWith('2') ? canonical(route) : plain(route);
