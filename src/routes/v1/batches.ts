import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { openBatchEventStream } from '../../batches/event-stream.js';
import { batchTotal, BatchParams, BatchView, CancelBatchBody, CreateBatchBody } from '../../batches/schemas.js';
import { TaskChangeFeed } from '../../tasks/change-feed.js';
import { callerOf } from '../../http/caller.js';
import { errorResponses } from '../../http/schemas.js';
import { paidCall } from '../../http/x402.js';
import { payThen } from '../../payments/paid-write.js';
import { batchSpend } from '../../limits/rules.js';
import { formatUsdc } from '../../payments/prices.js';
import { canonicalJsonSerializer, EventStreamHeaders, IdempotencyHeaders, paid, priced, sendEventStream, streamResumption } from '../common.js';

const BatchEventStream = z.string().meta({
  id: 'BatchEventStream',
  description:
    'Server-sent events (`text/event-stream`). Each `event: batch` carries the batch view as JSON in `data:` (the same object as ' +
    'GET /v1/batches/{id}) and an `id:` to resume from. Comment lines (`: heartbeat`) keep the connection open. The stream ends ' +
    'after the event whose status is no longer `running`.',
  examples: ['retry: 3000\n\nid: eyJ0Ijoi….Xk3…:0\nevent: batch\ndata: {"batch_id":"batch_…","status":"running","items":[…]}\n\n: heartbeat\n\n'],
});

/** Batches: many tasks hired, funded and followed together with one payment. */
export async function batchRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { batches, tasks, limits } = app.services;
  const feed = new TaskChangeFeed(app.database);
  app.addHook('onClose', async () => feed.close());
  const { resume, resumed } = streamResumption(app);

  app.post('/v1/batches', {
    config: { auth: 'required', price: 'create_batch' },
    schema: {
      operationId: 'createBatch',
      tags: ['batches'],
      summary: 'Hire many agents with one payment',
      description:
        'Creates one task per item and funds every escrow with ONE x402 payment to the escrow wallet: the sum of the ' +
        'items’ budgets plus the batch fee (the 402 challenge states the exact total). Each item names an `agent_id`, ' +
        'or an `agent_query` resolved to the best-ranked online agent whose base rate fits its budget. Items may ' +
        '`depends_on` earlier or later items (no cycles): an item runs once its predecessors have ended, with their ' +
        'results in its brief. At most `max_concurrency` items run at once. Every item is checked before any money ' +
        'moves; an item that cannot be hired is named in the error (`param: items.<i>.…`). Each task then follows ' +
        'the release and refund rules of any task. Errors: `agent_unavailable`, `budget_too_low`, `no_matching_agent`, ' +
        '`spend_limit_exceeded` (over `max_spend`).\n\n' +
        `**Price:** the items’ escrows + ${formatUsdc(app.prices.create_batch)} (x402; a failed request is not charged).`,
      security: paid,
      headers: IdempotencyHeaders,
      body: CreateBatchBody,
      response: { 201: BatchView, ...errorResponses(401, 402, 404, 409, 422) },
    },
    handler: async (req, reply) =>
      reply.code(201).send(await payThen(app.paidWrites, paidCall(req, reply), limits.guard(callerOf(req).address, batchSpend(req.body.items, batchTotal(req.body, app.prices.create_batch)), batches.createWrite(callerOf(req).address, req.body)))),
  });

  app.get('/v1/batches/:id', {
    config: { auth: 'required', price: 'batch_status' },
    // Canonical JSON (keys sorted at every level): each item's result reads back as its result_hash was computed.
    serializerCompiler: canonicalJsonSerializer,
    schema: {
      operationId: 'getBatch',
      tags: ['batches'],
      summary: 'Status and results of a batch',
      description: priced(
        app,
        'batch_status',
        'For the payer. Every item in request order with its status, progress, attempts, escrow, release and refund, and ' +
          'its result once delivered; totals; and the partial-failure report (which item delivered nothing, why, after how ' +
          'many runs, what was refunded). One poll covers the whole batch.',
      ),
      security: paid,
      params: BatchParams,
      response: { 200: BatchView, ...errorResponses(402, 401, 404) },
    },
    handler: async (req) => batches.view(callerOf(req).address, req.params.id),
  });

  app.get('/v1/batches/:id/events', {
    config: { auth: 'required', price: 'batch_events', resume: (req) => resumed(req)?.payer ?? null },
    schema: {
      operationId: 'streamBatchEvents',
      tags: ['batches'],
      summary: 'Follow a batch as a stream of events',
      description: priced(
        app,
        'batch_events',
        'Instead of polling: one payment streams the batch view (server-sent events) after every change of any of its items, from ' +
          'any process of the service, until every item has ended. A dropped connection reconnects with `Last-Event-ID` and is not ' +
          `charged again within ${app.config.EVENT_STREAM_RESUME_SECONDS} s of its last event. For the payer.`,
      ),
      security: paid,
      params: BatchParams,
      headers: EventStreamHeaders,
      response: {
        200: { description: 'The event stream', content: { 'text/event-stream': { schema: BatchEventStream } } },
        ...errorResponses(402, 401, 404),
      },
    },
    handler: async (req, reply) => {
      const caller = callerOf(req).address;
      const batchId = req.params.id;
      const from = resumed(req);
      const first = await batches.view(caller, batchId); // 404 before any byte (and before following anything)
      const stream = await openBatchEventStream({
        taskIds: first.items.map((i) => i.task_id),
        read: () => batches.view(caller, batchId),
        feed,
        heartbeatMs: app.config.EVENT_STREAM_HEARTBEAT_MS,
        eventId: (n) => resume.eventId(batchId, caller, n),
        firstEvent: from && from.payer === caller ? from.next : 0,
        onError: (err) => req.log.warn({ err, batch: batchId }, 'event stream: the batch could not be read; stream ended'),
      });
      return sendEventStream(reply, stream);
    },
  });

  app.post('/v1/batches/:id/cancel', {
    config: { auth: 'required', price: 'cancel_batch' },
    schema: {
      operationId: 'cancelBatch',
      tags: ['batches'],
      summary: 'Cancel every item that has not ended',
      description: priced(
        app,
        'cancel_batch',
        'Items not yet started are refunded in full; running items (only with `accept_partial_refund: true`) are ' +
          'interrupted and refunded minus the cancellation fee, as a single task’s cancel. Ended items keep their outcome.',
      ),
      security: paid,
      headers: IdempotencyHeaders,
      params: BatchParams,
      body: CancelBatchBody,
      response: { 200: BatchView, ...errorResponses(401, 402, 404, 409) },
    },
    handler: async (req, reply) =>
      payThen(app.paidWrites, paidCall(req, reply), batches.cancelWrite(callerOf(req).address, req.params.id, req.body, (tx, caller, id, input) => tasks.cancelIn(tx, caller, id, input))),
  });
}
