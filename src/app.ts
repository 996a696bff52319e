import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { AgentsService } from './agents/service.js';
import { payoutRules } from './agents/payout.js';
import { SiweVerifier, siweDomain } from './auth/siwe.js';
import { bearerToken, SessionService, sessionKey } from './auth/session.js';
import { DEV_POLL_INTERVAL_MS } from './chain/constants.js';
import { chainTarget, resolveWallets } from './chain/wallets.js';
import { x402ResourceServer, type FacilitatorClient } from '@x402/core/server';
import { PaymentLifecycle } from './payments/lifecycle.js';
import type { PaidWriteDeps } from './payments/paid-write.js';
import { registerExactEvmScheme as registerExactEvmServerScheme } from '@x402/evm/exact/server';
import { x402Plugin, type X402Options } from './http/x402.js';
import { taskEventRoutes } from './routes/v1/task-events.js';
import { createFacilitatorClient } from './payments/facilitator.js';
import { createOperatorSender, type OperatorSender } from './chain/operator.js';
import type { UsdcReader } from './chain/usdc.js';
import { MicroFees } from './payments/micro-fees.js';
import { createChannels, type Channels } from './payments/channels/index.js';
import { ChannelContractReader } from './chain/channels.js';
import { PayerBalances } from './payments/payer-balances.js';
import { fundingPrice, priceBook, type PriceBook } from './payments/prices.js';
import { PaymentsService } from './payments/service.js';
import { fundingAmount } from './escrow/funding.js';
import { systemClock, type Clock } from './clock.js';
import { allowPrivateUrls, publicBaseUrl, type Config } from './config.js';
import type { Database, Db } from './db/client.js';
import { callerPlugin } from './http/caller.js';
import { errorHandlerPlugin } from './http/error-handler.js';
import { idempotencyPlugin } from './http/idempotency.js';
import { jsonBodyPlugin } from './http/json-body.js';
import { openapiPlugin } from './http/openapi.js';
import { protectionPlugin } from './http/protection.js';
import { newId } from './ids.js';
import { loggerOptions } from './logger.js';
import { healthRoutes } from './routes/health.js';
import { agentRoutes } from './routes/v1/agents.js';
import { taskRoutes } from './routes/v1/tasks.js';
import { batchRoutes } from './routes/v1/batches.js';
import { BatchService } from './batches/service.js';
import { batchTotal } from './batches/schemas.js';
import { BatchTasks } from './tasks/batch-items.js';
import { receiptRoutes } from './routes/v1/receipts.js';
import { payerRoutes } from './routes/v1/payers.js';
import { limitRoutes } from './routes/v1/limits.js';
import { LimitsService } from './limits/service.js';
import { sessionRoutes } from './routes/v1/sessions.js';
import { networkRoutes } from './routes/v1/network.js';
import { devRoutes, type DevFaucet } from './routes/dev.js';
import { devX402Routes } from './routes/dev-x402.js';
import { adminRoutes } from './routes/v1/admin.js';
import { createEscrowRuntime, type EscrowRuntime } from './escrow/runtime.js';
import type { TaskDeps } from './tasks/access.js';
import { TaskClient } from './tasks/client.js';
import { TaskLifecycle } from './tasks/lifecycle.js';
import { TaskProvider } from './tasks/provider.js';

export interface AppDeps {
  config: Config;
  database: Database;
  clock?: Clock;
  /** false = no logs (tests, benchmarks); default: pino per config. */
  logger?: boolean;
  /** The chain's JSON-RPC URL when it is not CHAIN_RPC_URL (the embedded dev chain). */
  chainRpcUrl?: string;
  /** The embedded dev chain's faucet: registers POST /dev/faucet (dev mode only). */
  devFaucet?: DevFaucet;
  /** Where logs go instead of stdout (tests read them). */
  logStream?: { write(line: string): void };
}

export interface Services {
  agents: AgentsService;
  /** The paying client's side of tasks. */
  tasks: TaskClient;
  /** The hired agent's side. */
  provider: TaskProvider;
  /** What the service itself does to tasks (funding effect, dispatcher, maintenance). */
  taskLifecycle: TaskLifecycle;
  siwe: SiweVerifier;
  /** Session tokens started from a SIWE sign-in (auth/session.ts). */
  sessions: SessionService;
  /** Receipts. */
  payments: PaymentsService;
  paymentLifecycle: PaymentLifecycle;
  /** Many tasks hired with one payment. */
  batches: BatchService;
  /** Spending limits a wallet sets on itself, enforced in paid writes before payment. */
  limits: LimitsService;
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    database: Database;
    db: Db;
    clock: Clock;
    services: Services;
    prices: PriceBook;
    /** What paid writes need (payments/paid-write.ts). */
    paidWrites: PaidWriteDeps;
    /** The x402 facilitator (absent with x402 off): the recovery sweep settles through it. */
    facilitator: FacilitatorClient | undefined;
    /** Micro-fees served before settlement, and the operator wallet their batch settler sends from (absent when off). */
    microFees: { fees: MicroFees; operator: OperatorSender; balances: PayerBalances } | undefined;
    /** Batch-settlement channels paying the fee wallet, and the operator wallet their settler sends from (absent when off). */
    channels: (Channels & { operator: OperatorSender; contract: ChannelContractReader }) | undefined;
    /** The chain side of the escrow (absent without a chain). */
    escrow: EscrowRuntime | undefined;
  }
}

export function createServices(config: Config, db: Db, clock: Clock): Services {
  const signIn = siweDomain(config);
  const agents = new AgentsService(db, clock, { payout: payoutRules(config), allowPrivateUrls: allowPrivateUrls(config) });
  const wallets = resolveWallets(config);
  const taskDeps: TaskDeps = {
    db,
    clock,
    agents,
    rules: {
      escrowAddress: wallets.escrowAddress,
      platformFeeBps: config.PLATFORM_FEE_BPS,
      disputeWindowSeconds: config.DISPUTE_WINDOW_SECONDS,
      allowPrivateUrls: allowPrivateUrls(config),
      fundingWindowSeconds: config.TASK_FUNDING_WINDOW_SECONDS,
      timeoutMinSeconds: config.TASK_TIMEOUT_MIN_SECONDS,
      timeoutMaxSeconds: config.TASK_TIMEOUT_MAX_SECONDS,
      defaultTimeoutSeconds: Math.min(Math.max(3600, config.TASK_TIMEOUT_MIN_SECONDS), config.TASK_TIMEOUT_MAX_SECONDS),
      cancellationFeeBps: config.CANCELLATION_FEE_BPS,
      disputeReviewSeconds: config.DISPUTE_REVIEW_SECONDS,
    },
  };
  const taskLifecycle = new TaskLifecycle(taskDeps);
  const signInVerifier = (maxAgeSeconds: number) =>
    new SiweVerifier({
      db,
      clock,
      // From configuration only (AUTH_DOMAIN, PUBLIC_BASE_URL, or the dev listening origin), never from a request.
      domain: signIn.domain,
      domainFromListener: signIn.source === 'listener',
      chainId: chainTarget(config).chainId,
      maxAgeSeconds,
    });
  const taskClient = new TaskClient(taskDeps, taskLifecycle);
  return {
    agents,
    tasks: taskClient,
    batches: new BatchService({
      db,
      clock,
      agents,
      tasks: taskClient,
      items: new BatchTasks(taskDeps, taskLifecycle),
      fee: config.PRICE_BATCH_FEE,
    }),
    provider: new TaskProvider(taskDeps, taskLifecycle),
    taskLifecycle,
    siwe: signInVerifier(config.AUTH_MAX_AGE_SECONDS),
    sessions: new SessionService({
      db,
      clock,
      key: sessionKey(config),
      ttlSeconds: config.SESSION_TTL_SECONDS,
      // A message that starts a session may be valid as long as the session it asks for (SESSION_TTL_SECONDS).
      signIn: signInVerifier(Math.max(config.AUTH_MAX_AGE_SECONDS, config.SESSION_TTL_SECONDS)),
    }),
    payments: new PaymentsService(db),
    paymentLifecycle: new PaymentLifecycle(db, clock, { escrow: wallets.escrowAddress, fee: wallets.feeAddress }, config.PAYMENT_LEASE_MS),
    limits: new LimitsService({ db, clock, fundingWindowSeconds: config.TASK_FUNDING_WINDOW_SECONDS }),
  };
}

/** x402 on the priced routes: in-process facilitator (or a hosted one), prices from configuration. */
function x402Options(
  config: Config,
  deps: AppDeps,
  services: Services,
  log: FastifyBaseLogger,
  usdc: UsdcReader | undefined,
): X402Options & { facilitator: FacilitatorClient; micro: FastifyInstance['microFees']; channelRuntime: FastifyInstance['channels'] } {
  const target = chainTarget(config);
  const wallets = resolveWallets(config);
  const rpcUrl = deps.chainRpcUrl ?? config.CHAIN_RPC_URL;
  const receiptPollMs = config.CHAIN_POLL_MS ?? (config.CHAIN_RPC_URL ? undefined : DEV_POLL_INTERVAL_MS);
  const operator =
    !config.FACILITATOR_URL && rpcUrl && wallets.operatorKey
      ? createOperatorSender({ target, rpcUrl, operatorKey: wallets.operatorKey, db: deps.database.db, receiptPollMs })
      : undefined;
  const prices = priceBook(config);
  // Micro-fees are served before settlement only where this service settles them itself (its operator wallet).
  const micro =
    config.MICRO_FEES_DEFERRED && operator && usdc
      ? (() => {
          const balances = new PayerBalances({ balanceOf: (_asset, payer) => usdc.balanceOf(payer) });
          const terms = {
            ceiling: config.MICRO_FEE_CEILING,
            payerCap: config.MICRO_FEE_PAYER_CAP,
            minValiditySeconds: config.MICRO_FEE_MIN_VALIDITY_SECONDS,
            feeAddress: wallets.feeAddress,
          };
          return { fees: new MicroFees(services.paymentLifecycle, deps.clock ?? systemClock, terms, balances), operator, balances };
        })()
      : undefined;
  const feeWallet = wallets.feeAddress.toLowerCase();
  // Channels, like deferred micro-fees, only where this service settles them itself.
  const channels =
    config.CHANNELS_ENABLED && operator
      ? createChannels({
          db: deps.database.db,
          receiver: wallets.feeAddress,
          withdrawDelaySeconds: config.CHANNEL_WITHDRAW_DELAY_SECONDS,
          depositCalls: config.CHANNEL_DEPOSIT_CALLS,
          depositMax: config.CHANNEL_DEPOSIT_MAX,
        })
      : undefined;
  services.paymentLifecycle.channels = channels?.charges;
  const facilitator = createFacilitatorClient({
    target,
    rpcUrl,
    operatorKey: wallets.operatorKey,
    operator,
    facilitatorUrl: config.FACILITATOR_URL,
    receiptPollMs,
    db: deps.database.db,
    log,
    local: micro
      ? { appliesTo: (r) => r.payTo.toLowerCase() === feeWallet && BigInt(r.amount) <= config.MICRO_FEE_CEILING, balances: micro.balances }
      : undefined,
    channels: channels !== undefined,
  });
  const resourceServer = new x402ResourceServer(facilitator);
  registerExactEvmServerScheme(resourceServer, { networks: [target.network] });
  if (channels) resourceServer.register(target.network, channels.scheme);
  return {
    facilitator,
    micro,
    channelRuntime: channels && operator && rpcUrl ? { ...channels, operator, contract: new ChannelContractReader(rpcUrl) } : undefined,
    channels,
    microFees: micro?.fees,
    resourceServer,
    target,
    feeAddress: wallets.feeAddress,
    prices,
    maxTimeoutSeconds: config.X402_MAX_TIMEOUT_SECONDS,
    lifecycle: services.paymentLifecycle,
    dynamic: {
      fund_task: (request) => ({ amount: fundingPrice(prices, fundingAmount(request.body)), payTo: wallets.escrowAddress }),
      create_batch: (request) => ({ amount: batchTotal(request.body, prices.create_batch), payTo: wallets.escrowAddress }),
      pay_arrears: async (request) => ({
        amount: (await services.paymentLifecycle.owed((request.params as { address: string }).address)).arrears,
        payTo: wallets.feeAddress,
      }),
    },
  };
}

/** Builds the whole HTTP application without listening (tests inject into it; server.ts listens). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, database } = deps;
  const clock = deps.clock ?? systemClock;
  const options: FastifyServerOptions = {
    logger: deps.logger === false ? false : { ...loggerOptions(config.LOG_LEVEL), ...(deps.logStream ? { stream: deps.logStream } : {}) },
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => newId('req'),
    bodyLimit: config.BODY_LIMIT_BYTES,
    connectionTimeout: config.REQUEST_TIMEOUT_MS,
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    keepAliveTimeout: 72_000,
    trustProxy: config.TRUST_PROXY,
    routerOptions: { maxParamLength: 200 },
  };
  const app = Fastify(options);
  const services = createServices(config, database.db, clock);
  const rpcUrl = deps.chainRpcUrl ?? config.CHAIN_RPC_URL;
  const escrow = rpcUrl ? createEscrowRuntime(config, rpcUrl) : undefined;
  const x402 = config.X402_ENABLED ? { ...x402Options(config, deps, services, app.log, escrow?.usdc), chain: escrow?.usdc } : null;
  app.decorate('escrow', escrow);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.decorate('config', config);
  app.decorate('database', database);
  app.decorate('db', database.db);
  app.decorate('clock', clock);
  app.decorate('services', services);
  app.decorate('prices', priceBook(config));
  app.decorate('paidWrites', { db: database.db, lifecycle: services.paymentLifecycle });
  app.decorate('facilitator', x402?.facilitator);
  app.decorate('microFees', x402?.micro);
  app.decorate('channels', x402?.channelRuntime);

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  // One log line per request; never headers or bodies (they may carry signatures and payments).
  app.addHook('onResponse', async (request, reply) => {
    request.log.info(
      {
        method: request.method,
        url: request.url,
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime * 10) / 10,
        caller: request.caller?.address,
      },
      'request',
    );
  });

  await app.register(protectionPlugin, {
    corsOrigin: config.CORS_ORIGIN,
    rateLimitMax: config.RATE_LIMIT_MAX,
    rateLimitWindowMs: config.RATE_LIMIT_WINDOW_MS,
    maxEventLoopDelayMs: config.MAX_EVENT_LOOP_DELAY_MS,
  });
  await app.register(errorHandlerPlugin);
  await app.register(jsonBodyPlugin);
  await app.register(openapiPlugin, { x402Enabled: config.X402_ENABLED });
  await app.register(callerPlugin, { deferTo: (request) => x402 !== null && request.routeOptions.config.price !== undefined });
  app.addCallerSource({
    name: 'siwe',
    resolve: async (request) => {
      const header = request.headers.authorization;
      if (!header || !/^SIWE\s/i.test(header)) return null;
      // The domain the message must name is configured, never read from Host or X-Forwarded-*.
      const signIn = await app.services.siwe.verify(header);
      return { address: signIn.address, via: 'siwe' };
    },
  });
  app.addCallerSource({
    name: 'session',
    resolve: async (request) => {
      const token = bearerToken(request.headers.authorization);
      if (token === null) return null;
      if (request.routeOptions.config.revocationInRead) {
        const session = await app.services.sessions.claims(token);
        return { address: session.address, via: 'session', revocationPending: session.jti };
      }
      const session = await app.services.sessions.authenticate(token);
      return { address: session.address, via: 'session' };
    },
  });
  // Dev-mode default domain (the listening origin): with PORT=0 the port is known only now.
  app.addHook('onListen', async () => {
    const address = app.server.address();
    if (address && typeof address === 'object') {
      const origin = publicBaseUrl({ ...config, PORT: address.port });
      app.services.siwe.listeningOn(origin);
      app.services.sessions.listeningOn(origin);
    }
  });
  if (x402) await app.register(x402Plugin, x402);
  await app.register(idempotencyPlugin, { db: database.db, clock, ttlSeconds: config.IDEMPOTENCY_TTL_SECONDS });

  await app.register(healthRoutes);
  await app.register(networkRoutes, { devChainRpcUrl: config.CHAIN_RPC_URL ? undefined : deps.chainRpcUrl });
  await app.register(agentRoutes);
  await app.register(taskRoutes);
  await app.register(taskEventRoutes);
  await app.register(batchRoutes);
  await app.register(receiptRoutes);
  await app.register(payerRoutes);
  await app.register(limitRoutes);
  await app.register(sessionRoutes);
  if (deps.devFaucet) await app.register(devRoutes, { faucet: deps.devFaucet });
  // Dev chain only, beside the faucet: demo wallets pay x402 challenges from Swagger UI (http/swagger-pay.ts).
  if (deps.devFaucet && x402) await app.register(devX402Routes);
  if (config.ADMIN_API_KEY) await app.register(adminRoutes, { apiKey: config.ADMIN_API_KEY, escrow });
  return app;
}
