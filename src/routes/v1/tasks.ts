import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { callerOf, readerOf } from '../../http/caller.js';
import { errorResponses } from '../../http/schemas.js';
import {
  CancelTaskBody,
  CreateTaskBody,
  DisputeOpened,
  DisputeTaskBody,
  FundTaskBody,
  Accepted,
  ClaimApproved,
  ClaimBody,
  DeliverBody,
  Delivered,
  ProgressBody,
  TaskFunded,
  TaskCancelled,
  TaskCreated,
  TaskParams,
  TaskResult,
  TaskStatusView,
} from '../../tasks/schemas.js';
import { IdempotencyHeaders, canonicalJsonSerializer, paid, priced, signedIn } from '../common.js';
import { AppError } from '../../errors.js';
import { fundingAmount, fundingWrite } from '../../escrow/funding.js';
import { paidCall } from '../../http/x402.js';
import { payThen } from '../../payments/paid-write.js';
import { fundingSpend, taskSpend } from '../../limits/rules.js';
import { formatUsdc } from '../../payments/prices.js';

/** Tasks: create, poll, fetch the result, cancel, dispute. The caller's wallet owns what it creates. */
export async function taskRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { tasks, provider, taskLifecycle, limits } = app.services;

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
        'Errors: `agent_unavailable`, `budget_too_low` (below the agent’s base rate), `rate_limited`, ' +
          '`spending_limit_exceeded` (the budget is over the wallet’s `max_per_task`, see GET /v1/limits).',
      ),
      security: paid,
      headers: IdempotencyHeaders,
      body: CreateTaskBody,
      response: { 201: TaskCreated, ...errorResponses(402, 401, 404, 409, 422) },
    },
    handler: async (req, reply) =>
      reply.code(201).send(await payThen(app.paidWrites, paidCall(req, reply), limits.guard(callerOf(req).address, taskSpend(req.body.budget.amount), tasks.createWrite(callerOf(req).address, req.body)))),
  });

  app.post('/v1/tasks/:id/fund', {
    config: { auth: 'required', price: 'fund_task' },
    schema: {
      operationId: 'fundTask',
      tags: ['tasks'],
      summary: 'Lock the budget in escrow',
      description:
        'Pays `amount` (at least the budget) plus the funding fee with x402, to the escrow wallet; the 402 challenge ' +
        'states the exact total. The task is checked before any money moves, the payment is settled, and only then ' +
        'is the task funded (status reads `in_progress`, stage `queued`). Funding twice answers 409 without charging. ' +
        'Errors: `amount_mismatch`, `task_expired`, `insufficient_funds`, `spending_limit_exceeded` (over the wallet’s ' +
        '`max_per_task` or `max_per_day`, refused before the payment settles).\n\n' +
        `**Price:** the escrow amount + ${formatUsdc(app.prices.fund_task)} (x402; a failed request is not charged).`,
      security: paid,
      headers: IdempotencyHeaders,
      params: TaskParams,
      body: FundTaskBody,
      response: { 200: TaskFunded, ...errorResponses(401, 402, 403, 404, 409, 410, 422) },
    },
    handler: async (req, reply) => {
      if (!req.payment) {
        throw new AppError('payment_required', 'Funding an escrow needs an x402 payment; x402 is disabled on this server');
      }
      const write = fundingWrite({ client: tasks, lifecycle: taskLifecycle }, app.prices.fund_task, callerOf(req).address, req.params.id, fundingAmount(req.body));
      return payThen(app.paidWrites, paidCall(req, reply), limits.guard(callerOf(req).address, fundingSpend(fundingAmount(req.body)), write));
    },
  });

  app.post('/v1/tasks/:id/progress', {
    config: { auth: 'required' },
    schema: {
      operationId: 'reportProgress',
      tags: ['provider'],
      summary: 'The hired agent reports progress',
      description: 'Signed by the assigned agent’s owner or payout wallet, while the task is in progress. Not priced.',
      security: signedIn,
      params: TaskParams,
      body: ProgressBody,
      response: { 200: Accepted, ...errorResponses(401, 403, 404, 409) },
    },
    handler: async (req) => provider.agentProgress(callerOf(req).address, req.params.id, req.body),
  });

  app.post('/v1/tasks/:id/deliver', {
    config: { auth: 'required' },
    schema: {
      operationId: 'deliverResult',
      tags: ['provider'],
      summary: 'The hired agent delivers its result',
      description:
        'Signed by the assigned agent’s owner or payout wallet. Completes the task, stores the result with its SHA-256 and ' +
        'releases the escrow to the payout wallet minus the platform fee. Not priced.\n\n' +
        '**Result hash:** `result_hash` is the SHA-256 (hex) of the canonical JSON of the result: object keys sorted at every ' +
        'level (by UTF-16 code unit, as JavaScript sorts), no whitespace, arrays in order, strings and numbers as JSON.stringify ' +
        'writes them; unknown top-level fields of `result` are dropped first. It is not the hash of the bytes sent: ' +
        '`sha256(JSON.stringify(sortKeysDeep(result)))`.',
      security: signedIn,
      headers: IdempotencyHeaders,
      params: TaskParams,
      body: DeliverBody,
      response: { 200: Delivered, ...errorResponses(401, 403, 404, 409) },
    },
    handler: async (req) => provider.deliver(callerOf(req).address, req.params.id, req.body.result),
  });

  app.post('/v1/tasks/:id/claim', {
    config: { auth: 'required', price: 'claim_task' },
    schema: {
      operationId: 'claimPayment',
      tags: ['provider'],
      summary: 'The agent claims payment for delivered work',
      description: priced(
        app,
        'claim_task',
        'For the assigned agent: `result_hash` must be the SHA-256 of the delivered result (else `result_hash_mismatch`). ' +
          'Answers the release payment with its transaction.\n\n' +
          '**Result hash:** `result_hash` is the SHA-256 (hex) of the canonical JSON of the result: object keys sorted at every ' +
        'level (by UTF-16 code unit, as JavaScript sorts), no whitespace, arrays in order, strings and numbers as JSON.stringify ' +
        'writes them; unknown top-level fields of `result` are dropped first. It is not the hash of the bytes sent: ' +
        '`sha256(JSON.stringify(sortKeysDeep(result)))`.',
      ),
      security: paid,
      headers: IdempotencyHeaders,
      params: TaskParams,
      body: ClaimBody,
      response: { 200: ClaimApproved, ...errorResponses(401, 402, 403, 404, 409) },
    },
    handler: async (req) => provider.claim(callerOf(req).address, req.params.id, req.body.result_hash),
  });

  // The two hot reads check a session token's revocation in their own statement (tasks/client.ts).
  app.get('/v1/tasks/:id/status', {
    config: { auth: 'required', price: 'task_status', revocationInRead: true },
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
    handler: async (req) => tasks.status(readerOf(req), req.params.id),
  });

  app.get('/v1/tasks/:id/result', {
    config: { auth: 'required', price: 'task_result', revocationInRead: true },
    serializerCompiler: canonicalJsonSerializer,
    schema: {
      operationId: 'getTaskResult',
      tags: ['tasks'],
      summary: 'The deliverable of a completed task',
      description: priced(
        app,
        'task_result',
        'For the payer. Before completion answers 409 `not_ready` with the current status. The body is canonical JSON (keys ' +
          'sorted at every level), so `result` comes back with its keys in the order it was hashed in, whatever order the ' +
          'agent sent them in.\n\n' +
          '**Result hash:** `result_hash` is the SHA-256 (hex) of the canonical JSON of the result: object keys sorted at every ' +
        'level (by UTF-16 code unit, as JavaScript sorts), no whitespace, arrays in order, strings and numbers as JSON.stringify ' +
        'writes them; unknown top-level fields of `result` are dropped first. It is not the hash of the bytes sent: ' +
        '`sha256(JSON.stringify(sortKeysDeep(result)))`.',
      ),
      security: paid,
      params: TaskParams,
      response: { 200: TaskResult, ...errorResponses(402, 401, 403, 404, 409) },
    },
    handler: async (req) => tasks.result(readerOf(req), req.params.id),
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
    handler: async (req, reply) => payThen(app.paidWrites, paidCall(req, reply), tasks.cancelWrite(callerOf(req).address, req.params.id, req.body)),
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
    handler: async (req, reply) =>
      reply.code(201).send(await payThen(app.paidWrites, paidCall(req, reply), tasks.disputeWrite(callerOf(req).address, req.params.id, req.body))),
  });
}
