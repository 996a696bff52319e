import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { callerOf } from '../../http/caller.js';
import { errorResponses } from '../../http/schemas.js';
import {
  CancelTaskBody,
  CreateTaskBody,
  DisputeOpened,
  DisputeTaskBody,
  TaskCancelled,
  TaskCreated,
  TaskParams,
  TaskResult,
  TaskStatusView,
} from '../../tasks/schemas.js';
import { IdempotencyHeaders, paid, priced } from '../common.js';

/** Tasks: create, poll, fetch the result, cancel, dispute. The caller's wallet owns what it creates. */
export async function taskRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { tasks } = app.services;

  app.post('/v1/tasks', {
    config: { auth: 'required', price: 'create_task' },
    schema: {
      operationId: 'createTask',
      tags: ['tasks'],
      summary: 'Create a task for an agent',
      description: priced(
        app,
        'create_task',
       
        'Creates a task with a budget for one online agent. The task waits for funding until `expires_at`. ' +
        'Errors: `agent_unavailable`, `budget_too_low` (below the agent’s base rate), `rate_limited`.',
      ),
      security: paid,
      headers: IdempotencyHeaders,
      body: CreateTaskBody,
      response: { 201: TaskCreated, ...errorResponses(402, 401, 404, 409, 422) },
    },
    handler: async (req, reply) => reply.code(201).send(await tasks.create(callerOf(req).address, req.body)),
  });

  app.get('/v1/tasks/:id/status', {
    config: { auth: 'required', price: 'task_status' },
    schema: {
      operationId: 'getTaskStatus',
      tags: ['tasks'],
      summary: 'Poll a task',
      description: priced(
        app,
        'task_status',
        'Status, progress and escrow state. For the payer and the assigned agent. Poll while `in_progress`.',
      ),
      security: paid,
      params: TaskParams,
      response: { 200: TaskStatusView, ...errorResponses(402, 401, 403, 404) },
    },
    handler: async (req) => tasks.status(callerOf(req).address, req.params.id),
  });

  app.get('/v1/tasks/:id/result', {
    config: { auth: 'required', price: 'task_result' },
    schema: {
      operationId: 'getTaskResult',
      tags: ['tasks'],
      summary: 'The deliverable of a completed task',
      description: priced(
        app,
        'task_result',
        'For the payer. Before completion answers 409 `not_ready` with the current status.',
      ),
      security: paid,
      params: TaskParams,
      response: { 200: TaskResult, ...errorResponses(402, 401, 403, 404, 409) },
    },
    handler: async (req) => tasks.result(callerOf(req).address, req.params.id),
  });

  app.post('/v1/tasks/:id/cancel', {
    config: { auth: 'required', price: 'cancel_task' },
    schema: {
      operationId: 'cancelTask',
      tags: ['tasks'],
      summary: 'Cancel a task and refund what is due',
      description: priced(
        app,
        'cancel_task',
       
        'Unfunded: cancelled, nothing to refund. Funded, not started: full refund. In progress: answers 409 ' +
        '`work_in_progress` with the terms unless `accept_partial_refund` is true; then the agent keeps the ' +
        'cancellation fee (max of CANCELLATION_FEE_BPS and reported progress) and the rest is refunded. ' +
        'Completed: 409 `task_completed`.',
      ),
      security: paid,
      headers: IdempotencyHeaders,
      params: TaskParams,
      body: CancelTaskBody,
      response: { 200: TaskCancelled, ...errorResponses(402, 401, 403, 404, 409) },
    },
    handler: async (req) => tasks.cancel(callerOf(req).address, req.params.id, req.body),
  });

  app.post('/v1/tasks/:id/dispute', {
    config: { auth: 'required', price: 'dispute_task' },
    schema: {
      operationId: 'disputeTask',
      tags: ['tasks'],
      summary: 'Dispute the outcome and freeze the escrow',
      description: priced(
        app,
        'dispute_task',
        'For the payer, while the escrow is still held (in progress, or completed before release).',
      ),
      security: paid,
      headers: IdempotencyHeaders,
      params: TaskParams,
      body: DisputeTaskBody,
      response: { 201: DisputeOpened, ...errorResponses(402, 401, 403, 404, 409) },
    },
    handler: async (req, reply) => reply.code(201).send(await tasks.dispute(callerOf(req).address, req.params.id, req.body)),
  });
}
