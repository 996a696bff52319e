import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ratingWrite } from '../../agents/ratings.js';
import {
  AgentId,
  AgentProfile,
  OwnedAgent,
  RateAgentBody,
  RatingCreated,
  RegisterAgentBody,
  SearchAgentsQuery,
  SearchAgentsResult,
  UpdateAgentBody,
} from '../../agents/schemas.js';
import { callerOf } from '../../http/caller.js';
import { paidCall } from '../../http/x402.js';
import { payThen } from '../../payments/paid-write.js';
import { IdempotencyHeaders, paid, priced, signedIn } from '../common.js';
import { errorResponses } from '../../http/schemas.js';

const AgentParams = z.object({ id: AgentId });

/** The agent registry: search and profiles for clients, registration and updates for owners. */
export async function agentRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { agents } = app.services;

  app.get('/v1/agents', {
    config: { price: 'search_agents' },
    schema: {
      operationId: 'searchAgents',
      tags: ['agents'],
      summary: 'Search agents',
      description: priced(
        app,
        'search_agents',
        'Search the registry by capability or free text (full-text ranked), rating floor and price ceiling. Online agents only unless `availability` says otherwise.',
      ),
      security: paid,
      querystring: SearchAgentsQuery,
      response: { 200: SearchAgentsResult, ...errorResponses(402) },
    },
    handler: async (req) => agents.search(req.query),
  });

  app.get('/v1/agents/:id', {
    config: { price: 'get_agent' },
    schema: {
      operationId: 'getAgent',
      tags: ['agents'],
      summary: "An agent's profile",
      description: priced(app, 'get_agent', 'Profile with rating, completed tasks, mean response time and the most recent reviews.'),
      security: paid,
      params: AgentParams,
      response: { 200: AgentProfile, ...errorResponses(402, 404) },
    },
    handler: async (req) => agents.profile(req.params.id),
  });

  app.post('/v1/agents', {
    config: { auth: 'required' },
    schema: {
      operationId: 'registerAgent',
      tags: ['agents'],
      summary: 'Register an agent',
      description: 'The signing wallet becomes the owner. Payout wallet, capabilities, pricing and runtime are the owner’s to set.',
      security: signedIn,
      headers: IdempotencyHeaders,
      body: RegisterAgentBody,
      response: { 201: OwnedAgent, ...errorResponses(401, 409, 422) },
    },
    handler: async (req, reply) => reply.code(201).send(await agents.register(callerOf(req).address, req.body)),
  });

  app.get('/v1/agents/:id/settings', {
    config: { auth: 'required' },
    schema: {
      operationId: 'getOwnedAgent',
      tags: ['agents'],
      summary: 'Your agent, with its private settings',
      description: 'Owner only: payout wallet and runtime included.',
      security: signedIn,
      params: AgentParams,
      response: { 200: OwnedAgent, ...errorResponses(401, 403, 404) },
    },
    handler: async (req) => agents.getOwned(callerOf(req).address, req.params.id),
  });

  app.patch('/v1/agents/:id', {
    config: { auth: 'required' },
    schema: {
      operationId: 'updateAgent',
      tags: ['agents'],
      summary: 'Update an agent or take it offline',
      description: 'Owner only. `{"availability":"offline"}` removes the agent from search and refuses new tasks; running tasks go on.',
      security: signedIn,
      params: AgentParams,
      body: UpdateAgentBody,
      response: { 200: OwnedAgent, ...errorResponses(401, 403, 404) },
    },
    handler: async (req) => agents.update(callerOf(req).address, req.params.id, req.body),
  });

  app.post('/v1/agents/:id/rate', {
    config: { auth: 'required', price: 'rate_agent' },
    schema: {
      operationId: 'rateAgent',
      tags: ['agents'],
      summary: 'Rate an agent for a completed task',
      description: priced(app, 'rate_agent', 'By the payer of a completed task of this agent, once per task.'),
      security: paid,
      headers: IdempotencyHeaders,
      params: AgentParams,
      body: RateAgentBody,
      response: { 201: RatingCreated, ...errorResponses(401, 402, 403, 404, 409) },
    },
    handler: async (req, reply) =>
      reply
        .code(201)
        .send(await payThen(app.paidWrites, paidCall(req, reply), ratingWrite(app.db, app.clock, callerOf(req).address, req.params.id, req.body))),
  });
}
