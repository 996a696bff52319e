import type { FastifyInstance } from 'fastify';
import { Delegations } from '../batches/delegation.js';
import { publicBaseUrl } from '../config.js';
import { Dispatcher } from './dispatcher.js';
import { createRuntimes } from './runtimes/index.js';

/** The dispatcher of this process, configured from the app's configuration and services. */
export function createDispatcher(app: FastifyInstance, overrides: { workerId?: string; publicBaseUrl?: string } = {}): Dispatcher {
  const { config } = app;
  return new Dispatcher({
    db: app.db,
    clock: app.clock,
    tasks: app.services.taskLifecycle,
    runtimes: createRuntimes(config, app.clock),
    // delegate_task for hosted agents whose owner enabled the `delegation` toolset (never on a child)
    serviceTools: new Delegations({ db: app.db, clock: app.clock, batches: app.services.batches }),
    publicBaseUrl: overrides.publicBaseUrl ?? publicBaseUrl(config),
    concurrency: config.DISPATCH_CONCURRENCY,
    perAgentConcurrency: config.DISPATCH_PER_AGENT_CONCURRENCY,
    leaseMs: config.DISPATCH_LEASE_MS,
    heartbeatMs: config.DISPATCH_HEARTBEAT_MS,
    maxAttempts: config.DISPATCH_MAX_ATTEMPTS,
    backoffBaseMs: config.DISPATCH_BACKOFF_MS,
    log: app.log,
    ...overrides,
  });
}
