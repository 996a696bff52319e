import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { callerOf } from '../../http/caller.js';
import { errorResponses } from '../../http/schemas.js';
import { SharedTaskReads, TaskChangeFeed } from '../../tasks/change-feed.js';
import { openTaskEventStream } from '../../tasks/event-stream.js';
import { TaskParams } from '../../tasks/schemas.js';
import { EventStreamHeaders, paid, priced, sendEventStream, streamResumption } from '../common.js';

const EventStream = z.string().meta({
  id: 'TaskEventStream',
  description:
    'Server-sent events (`text/event-stream`). Each `event: status` carries the task status view as JSON in `data:` ' +
    '(the same object as GET /v1/tasks/{id}/status) and an `id:` to resume from. Comment lines (`: heartbeat`) keep the connection open. ' +
    'The stream ends after the event whose status is no longer `created` or `in_progress`.',
  examples: ['retry: 3000\n\nid: eyJ0Ijoi….Xk3…:0\nevent: status\ndata: {"task_id":"task_…","status":"in_progress","stage":"running","progress_percent":40}\n\n: heartbeat\n\n'],
});

/** A task's events as a stream: paid once, followed until the task is done, resumable for free. */
export async function taskEventRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { tasks } = app.services;
  const feed = new TaskChangeFeed(app.database);
  const reads = new SharedTaskReads(feed, (id) => tasks.sharedStatus(id)); // one read per task per change, for all its streams
  app.addHook('onClose', async () => feed.close());
  const { resume, resumed } = streamResumption(app);

  app.get('/v1/tasks/:id/events', {
    config: { auth: 'required', price: 'task_events', resume: (req) => resumed(req)?.payer ?? null },
    schema: {
      operationId: 'streamTaskEvents',
      tags: ['tasks'],
      summary: 'Follow a task as a stream of events',
      description: priced(
        app,
        'task_events',
        'Instead of polling: one payment streams the task’s status, progress and intermediate results (server-sent events) from any ' +
          'process of the service until the task is done. A dropped connection reconnects with `Last-Event-ID` and is not charged again ' +
          `within ${app.config.EVENT_STREAM_RESUME_SECONDS} s of its last event. For the payer and the assigned agent.`,
      ),
      security: paid,
      params: TaskParams,
      headers: EventStreamHeaders,
      response: {
        200: { description: 'The event stream', content: { 'text/event-stream': { schema: EventStream } } },
        ...errorResponses(402, 401, 403, 404),
      },
    },
    handler: async (req, reply) => {
      const caller = callerOf(req).address;
      const taskId = req.params.id;
      const from = resumed(req);
      const stream = await openTaskEventStream({
        taskId,
        read: () => tasks.status(caller, taskId),
        reads,
        viewOf: (shared) => shared.viewFor(caller),
        heartbeatMs: app.config.EVENT_STREAM_HEARTBEAT_MS,
        eventId: (n) => resume.eventId(taskId, caller, n),
        firstEvent: from && from.payer === caller ? from.next : 0,
        onError: (err) => req.log.warn({ err, task: taskId }, 'event stream: the task could not be read; stream ended'),
      });
      return sendEventStream(reply, stream);
    },
  });
}
