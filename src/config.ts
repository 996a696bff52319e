import type { Address, Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { z } from 'zod';
import { ANVIL_ACCOUNTS, DEV_ROLES } from './chain/constants.js';
import { llmPrices } from './dispatcher/runtimes/llm-prices.js';

/**
 * The service's whole configuration: one zod schema over the environment, parsed once.
 * Every name here is documented in README.md and checked against docker-compose.yml by a test.
 */
const bool = z
  .enum(['true', 'false', '1', '0'])
  .transform((v) => v === 'true' || v === '1');

const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 0x-prefixed 20-byte hex address');
const privateKey = z.string().regex(/^0x[0-9a-fA-F]{64}$/, 'must be a 0x-prefixed 32-byte hex private key');
const atomic = z.coerce.bigint().refine((v) => v > 0n && v < 10n ** 16n, 'must be a positive amount in atomic USDC');

const configObject = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ROLE: z.enum(['api', 'worker', 'all']).default('all'),

  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
  DATA_DIR: z.string().min(1).default('./data'),
  DB_POOL_MAX: z.coerce.number().int().min(1).max(200).default(10),

  /** SIWE `domain` the service accepts (host[:port]); unset = PUBLIC_BASE_URL's host, else (dev mode) HOST:PORT. Never the request's Host. */
  AUTH_DOMAIN: z.string().min(1).optional(),
  /** Longest lifetime a signed sign-in message may have, in seconds. */
  AUTH_MAX_AGE_SECONDS: z.coerce.number().int().min(10).max(86_400).default(600),
  /**
   * HMAC key (HS256) of session tokens (POST /v1/auth/session), at least 32 characters, the same in
   * every process. Required with CHAIN_RPC_URL; dev mode without it: a random key per process.
   */
  SESSION_SECRET: z.string().min(32).optional(),
  /** Longest lifetime of a session token, in seconds (never past its sign-in message's expiration time). */
  SESSION_TTL_SECONDS: z.coerce.number().int().min(60).max(86_400).default(900),

  /** How long a created task may stay unfunded before it expires. */
  TASK_FUNDING_WINDOW_SECONDS: z.coerce.number().int().min(60).max(30 * 86_400).default(3600),
  TASK_TIMEOUT_MIN_SECONDS: z.coerce.number().int().min(1).default(30),
  TASK_TIMEOUT_MAX_SECONDS: z.coerce.number().int().min(1).default(7 * 86_400),
  /** Cancellation fee while work is in progress, in basis points of the escrow (see escrow/rules.ts). */
  CANCELLATION_FEE_BPS: z.coerce.number().int().min(0).max(10_000).default(1000),
  /** How long a dispute is expected to take to resolve, in seconds. */
  DISPUTE_REVIEW_SECONDS: z.coerce.number().int().min(60).default(3 * 86_400),

  /** Chain JSON-RPC; unset = an embedded anvil dev chain made to look like Base (dev only). */
  CHAIN_RPC_URL: z.url({ protocol: /^(https?|wss?)$/ }).optional(),
  CHAIN_NETWORK: z.enum(['base', 'base-sepolia']).default('base'),
  /**
   * A JSON-RPC URL of the same chain that clients may use, published by GET /v1/network. Never
   * derived from CHAIN_RPC_URL (which may carry a provider key); a URL with credentials is refused.
   * With the embedded dev chain its own URL is published instead.
   */
  PUBLIC_CHAIN_RPC_URL: z
    .url({ protocol: /^(https?|wss?)$/ })
    .refine((v) => {
      const u = new URL(v);
      return u.username === '' && u.password === '';
    }, 'must not carry credentials (user:password@): it is published to every client')
    .optional(),
  /**
   * Facilitator key: settles x402 payments in-process and pays their gas. Required with
   * CHAIN_RPC_URL unless FACILITATOR_URL is set; embedded chain default: anvil account 2.
   */
  OPERATOR_PRIVATE_KEY: privateKey.optional(),
  /** The custodial escrow wallet: receives funding, sends releases and refunds. Required with CHAIN_RPC_URL; embedded chain default: anvil account 1. */
  ESCROW_PRIVATE_KEY: privateKey.optional(),
  /** The fee wallet's key (optional): refunds of call fees are sent from it; without it they wait for an operator. */
  FEE_PRIVATE_KEY: privateKey.optional(),
  /** Where per-call fees are paid. Required with CHAIN_RPC_URL; embedded chain default: anvil account 3. */
  FEE_ADDRESS: address.optional(),
  /** A hosted x402 facilitator instead of the in-process one. */
  FACILITATOR_URL: z.url().optional(),
  /** `false` turns x402 off: priced endpoints then identify callers by wallet signature and charge nothing (tests, private use). */
  X402_ENABLED: bool.default(true),
  X402_MAX_TIMEOUT_SECONDS: z.coerce.number().int().min(10).max(3600).default(300),
  /**
   * How often the in-process facilitator asks for a settlement's receipt (ms). Unset: viem's
   * default for the chain (1 000 ms on Base, half its block time) on a real chain, 20 ms on the
   * embedded one, which mines each transaction at once (a 1 s wait there was the p99 of a paid call).
   */
  CHAIN_POLL_MS: z.coerce.number().int().min(10).max(60_000).optional(),
  /**
   * Micro-fees (issue 9): an `exact` payment of at most MICRO_FEE_CEILING atomic USDC into the fee
   * wallet is verified locally, served at once and booked as owed; the worker settles the owed
   * authorizations in batches (one Multicall3 transaction each). A payer owes at most
   * MICRO_FEE_PAYER_CAP unsettled; past it (or below the balance last seen on chain) its calls
   * settle first as any payment. Only with the in-process facilitator. `false` settles every payment first.
   */
  MICRO_FEES_DEFERRED: bool.default(true),
  MICRO_FEE_CEILING: atomic.default(10_000n),
  MICRO_FEE_PAYER_CAP: atomic.default(100_000n),
  /** An authorization is deferred only if it stays valid this long (its validBefore); else it settles first. */
  MICRO_FEE_MIN_VALIDITY_SECONDS: z.coerce.number().int().min(10).max(3600).default(60),
  /** How often the worker settles owed micro-fees, and at most how many authorizations one transaction carries. */
  MICRO_FEE_SETTLE_INTERVAL_MS: z.coerce.number().int().min(50).default(1000),
  MICRO_FEE_BATCH_SIZE: z.coerce.number().int().min(1).max(1000).default(200),
  /**
   * x402 batch-settlement channels (issue 9): offered beside `exact` on every fixed-price route
   * (only with the in-process facilitator). A client deposits once into a channel on the channel
   * contract; each call is then paid by a voucher checked locally. A route's `extra.minDeposit`
   * asks for CHANNEL_DEPOSIT_CALLS calls at its price, at most CHANNEL_DEPOSIT_MAX atomic USDC.
   */
  CHANNELS_ENABLED: bool.default(true),
  CHANNEL_DEPOSIT_CALLS: z.coerce.number().int().min(1).max(1_000_000).default(1000),
  CHANNEL_DEPOSIT_MAX: atomic.default(1_000_000n),
  /** How long a payer's withdrawal waits on the channel contract (the time the service has to claim): 15 minutes … 30 days. */
  CHANNEL_WITHDRAW_DELAY_SECONDS: z.coerce.number().int().min(900).max(30 * 86_400).default(86_400),
  /**
   * The worker's channel settler runs every CHANNEL_SETTLE_INTERVAL_MS. It claims the charged
   * vouchers (one transaction for many channels) once CHANNEL_CLAIM_THRESHOLD atomic USDC are
   * unclaimed or the oldest unclaimed charge is CHANNEL_CLAIM_INTERVAL_SECONDS old, settles what it
   * claimed into the fee wallet, and refunds channels idle for CHANNEL_IDLE_REFUND_SECONDS.
   */
  CHANNEL_SETTLE_INTERVAL_MS: z.coerce.number().int().min(50).default(5000),
  CHANNEL_CLAIM_THRESHOLD: atomic.default(100_000n),
  CHANNEL_CLAIM_INTERVAL_SECONDS: z.coerce.number().int().min(1).default(3600),
  CHANNEL_IDLE_REFUND_SECONDS: z.coerce.number().int().min(1).default(6 * 3600),
  /** Confirmations a release or refund waits for. */
  CHAIN_CONFIRMATIONS: z.coerce.number().int().min(1).max(64).default(1),
  /** Settlement worker: how often it looks for payouts, how long it holds one, how it retries. */
  SETTLEMENT_INTERVAL_MS: z.coerce.number().int().min(100).default(2000),
  SETTLEMENT_LEASE_MS: z.coerce.number().int().min(5000).default(60_000),
  SETTLEMENT_MAX_ATTEMPTS: z.coerce.number().int().min(1).default(10),
  SETTLEMENT_BACKOFF_MS: z.coerce.number().int().min(10).default(1000),
  /**
   * How long a request may hold a verified or settling x402 payment before the recovery sweep
   * (worker role) takes it over, and how often the sweep looks.
   */
  PAYMENT_LEASE_MS: z.coerce.number().int().min(1000).default(90_000),
  PAYMENT_RECOVERY_INTERVAL_MS: z.coerce.number().int().min(100).default(5000),
  /** Public origin of this service as agents reach it (their callback URLs); default http://HOST:PORT. */
  PUBLIC_BASE_URL: z.url().optional(),
  /** Dispatcher: runs per worker, runs per agent, lease and heartbeat, retries. */
  DISPATCH_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(8),
  DISPATCH_PER_AGENT_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(4),
  DISPATCH_LEASE_MS: z.coerce.number().int().min(1000).default(4000),
  DISPATCH_HEARTBEAT_MS: z.coerce.number().int().min(100).default(1000),
  DISPATCH_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(3),
  DISPATCH_BACKOFF_MS: z.coerce.number().int().min(10).default(2000),
  DISPATCH_INTERVAL_MS: z.coerce.number().int().min(10).default(500),
  /** Seconds after completion during which the payer may dispute before the escrow is released. */
  DISPUTE_WINDOW_SECONDS: z.coerce.number().int().min(0).max(30 * 86_400).default(0),
  /** The operator's OpenAI-compatible endpoint and key for hosted agents that name none. */
  LLM_BASE_URL: z.url().optional(),
  LLM_API_KEY: z.string().min(1).optional(),
  LLM_MAX_COST_USD: z.coerce.number().positive().max(1000).default(1),
  /** Dev mode: the model of the built-in hosted agent `npm start` registers when LLM_BASE_URL is set (src/agents/builtin). */
  LLM_MODEL: z.string().trim().min(1).max(200).default('gpt-4o-mini'),
  /** JSON {"model": {"input_per_million_usd", "output_per_million_usd"}, "*": …} over the built-in price table. */
  LLM_PRICES: z
    .string()
    .optional()
    .refine((v) => {
      if (v === undefined) return true;
      try {
        llmPrices(v);
        return true;
      } catch {
        return false;
      }
    }, 'must be JSON: {"model": {"input_per_million_usd": n, "output_per_million_usd": n}}'),
  /** HMAC secret of the events POSTed to tasks' callback_url (x-task-escrow-signature). Required with CHAIN_RPC_URL; embedded chain default: a dev value. */
  CALLBACK_SIGNING_SECRET: z.string().min(32).optional(),
  /** Let agents, callbacks and tools reach loopback/private addresses (default: only with the embedded dev chain). */
  ALLOW_PRIVATE_URLS: bool.optional(),
  /** Platform fee taken from a released escrow, in basis points. */
  PLATFORM_FEE_BPS: z.coerce.number().int().min(0).max(10_000).default(250),
  /** Operator API key for /v1/admin/*; unset = the admin endpoints answer 404. */
  ADMIN_API_KEY: z.string().min(16).optional(),
  /** Prices in atomic USDC (6 decimals). */
  PRICE_SEARCH_AGENTS: atomic.default(1000n),
  PRICE_GET_AGENT: atomic.default(2000n),
  PRICE_RATE_AGENT: atomic.default(1000n),
  PRICE_CREATE_TASK: atomic.default(5000n),
  PRICE_FUND_FEE: atomic.default(5000n),
  PRICE_TASK_STATUS: atomic.default(1000n),
  PRICE_TASK_RESULT: atomic.default(2000n),
  PRICE_CANCEL_TASK: atomic.default(2000n),
  PRICE_DISPUTE_TASK: atomic.default(5000n),
  PRICE_CLAIM_TASK: atomic.default(2000n),
  /** One task's event stream, paid once (a poll costs PRICE_TASK_STATUS). */
  PRICE_TASK_EVENTS: atomic.default(5000n),
  /** The one fee of a batch (POST /v1/batches), paid with its escrows in one payment. */
  PRICE_BATCH_FEE: atomic.default(10_000n),
  /** A comment line on every open event stream this often, so proxies keep it open. */
  EVENT_STREAM_HEARTBEAT_MS: z.coerce.number().int().min(50).max(120_000).default(15_000),
  /** A dropped stream resumes with Last-Event-ID, without paying again, within this long of its last event. */
  EVENT_STREAM_RESUME_SECONDS: z.coerce.number().int().min(10).max(86_400).default(600),

  RATE_LIMIT_MAX: z.coerce.number().int().min(1).default(600),
  RATE_LIMIT_WINDOW_MS: z.coerce.number().int().min(1000).default(60_000),
  BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).max(10 * 1024 * 1024).default(256 * 1024),
  CORS_ORIGIN: z.string().default('*'),
  IDEMPOTENCY_TTL_SECONDS: z.coerce.number().int().min(60).default(86_400),
  REQUEST_TIMEOUT_MS: z.coerce.number().int().min(1000).default(30_000),
  /** How often the worker role expires unfunded tasks and purges spent nonces and idempotency keys. */
  MAINTENANCE_INTERVAL_MS: z.coerce.number().int().min(1000).default(60_000),
  SHUTDOWN_GRACE_MS: z.coerce.number().int().min(100).default(10_000),
  /** Event-loop delay (ms) above which the service answers 503 (0 = off). */
  MAX_EVENT_LOOP_DELAY_MS: z.coerce.number().int().min(0).default(1000),
  TRUST_PROXY: bool.default(false),
});

/** CALLBACK_SIGNING_SECRET on the embedded chain when none is set; refused with CHAIN_RPC_URL. */
export const DEV_CALLBACK_SIGNING_SECRET = 'dev-callback-signing-secret-change-me-0000';

type ParsedEnv = z.output<typeof configObject>;

/** The chain's secrets and wallets once resolved: always present except a hosted facilitator's operator key. */
export interface ChainSettings {
  ESCROW_PRIVATE_KEY: Hex;
  /** Undefined only with CHAIN_RPC_URL and FACILITATOR_URL (a hosted facilitator settles). */
  OPERATOR_PRIVATE_KEY: Hex | undefined;
  FEE_ADDRESS: Address;
  CALLBACK_SIGNING_SECRET: string;
}

type Flat<T> = { [K in keyof T]: T[K] };
type ResolvedEnv = Flat<Omit<ParsedEnv, keyof ChainSettings> & ChainSettings>;

const CHAIN_SETTINGS = ['ESCROW_PRIVATE_KEY', 'FEE_ADDRESS', 'OPERATOR_PRIVATE_KEY', 'CALLBACK_SIGNING_SECRET'] as const;

/**
 * No silent fallback: with CHAIN_RPC_URL (a real chain) the wallets and the callback secret must
 * be set, and each missing one is an issue naming it, so the service does not start. Runs even
 * when other variables are bad (`when`), so one message names everything to fix; `env` may then
 * hold unparsed values, hence the plain string checks.
 */
function requireRealChainSettings(env: ParsedEnv, ctx: z.RefinementCtx): void {
  if (isSet(env.FEE_PRIVATE_KEY) && isSet(env.FEE_ADDRESS) && /^0x[0-9a-fA-F]{64}$/.test(env.FEE_PRIVATE_KEY)) {
    const derived = privateKeyToAccount(env.FEE_PRIVATE_KEY as Hex).address.toLowerCase();
    if (derived !== env.FEE_ADDRESS.toLowerCase()) {
      ctx.addIssue({ code: 'custom', path: ['FEE_PRIVATE_KEY'], message: `is the key of ${derived}, not of FEE_ADDRESS` });
    }
  }
  if (!isSet(env.CHAIN_RPC_URL)) return;
  const why: Record<(typeof CHAIN_SETTINGS)[number], string> = {
    ESCROW_PRIVATE_KEY: "the custodial escrow wallet's key",
    FEE_ADDRESS: 'where per-call fees are paid',
    OPERATOR_PRIVATE_KEY: "the in-process facilitator's key (or set FACILITATOR_URL for a hosted facilitator)",
    CALLBACK_SIGNING_SECRET: 'the HMAC secret of callback events (at least 32 characters)',
  };
  for (const name of CHAIN_SETTINGS) {
    if (isSet(env[name]) || (name === 'OPERATOR_PRIVATE_KEY' && isSet(env.FACILITATOR_URL))) continue;
    ctx.addIssue({
      code: 'custom',
      path: [name],
      message: `required with CHAIN_RPC_URL (a real chain): ${why[name]}; anvil's dev defaults apply only to the embedded chain`,
    });
  }
  if (isSet(env.CALLBACK_SIGNING_SECRET) && env.CALLBACK_SIGNING_SECRET.startsWith('dev-')) {
    ctx.addIssue({ code: 'custom', path: ['CALLBACK_SIGNING_SECRET'], message: 'set your own secret (at least 32 characters) with a real chain, not a dev value' });
  }
  // Session tokens are verified by whichever API replica a request reaches: one key for all, never a per-process one.
  if (!isSet(env.SESSION_SECRET)) {
    ctx.addIssue({
      code: 'custom',
      path: ['SESSION_SECRET'],
      message: 'required with CHAIN_RPC_URL (a real chain): the key of session tokens (at least 32 characters), the same in every API replica',
    });
  }
}

/**
 * Callback receivers know CALLBACK_SIGNING_SECRET (they verify with it): as the session key it would
 * let any of them mint session tokens for any wallet.
 */
function requireDistinctSessionSecret(env: ParsedEnv, ctx: z.RefinementCtx): void {
  if (isSet(env.SESSION_SECRET) && env.SESSION_SECRET === env.CALLBACK_SIGNING_SECRET) {
    ctx.addIssue({ code: 'custom', path: ['SESSION_SECRET'], message: 'must differ from CALLBACK_SIGNING_SECRET (callback receivers know that one)' });
  }
}

const isSet = (value: unknown): value is string => typeof value === 'string' && value.length > 0;

/**
 * Roles run apart (`api`, `worker`) are several processes sharing one database and one chain, so
 * neither may be the embedded one (a PGlite file and an anvil belong to one process); a worker
 * also has no listener to learn the public address agents call back from.
 */
function requireRoleSettings(env: ParsedEnv, ctx: z.RefinementCtx): void {
  if (env.ROLE === 'all') return;
  const role = `ROLE=${env.ROLE}`;
  if (!isSet(env.DATABASE_URL)) {
    ctx.addIssue({ code: 'custom', path: ['DATABASE_URL'], message: `required with ${role}: API and worker processes share one Postgres database (the embedded PGlite file belongs to one process)` });
  }
  if (!isSet(env.CHAIN_RPC_URL)) {
    ctx.addIssue({ code: 'custom', path: ['CHAIN_RPC_URL'], message: `required with ${role}: every process must use the same chain (the embedded anvil belongs to one process)` });
  }
  if (env.ROLE === 'worker' && !isSet(env.PUBLIC_BASE_URL)) {
    ctx.addIssue({
      code: 'custom',
      path: ['PUBLIC_BASE_URL'],
      message: 'required with ROLE=worker: the public URL of the API, which agents call back (progress, deliver); a worker has no listener to learn it from',
    });
  }
}

/**
 * The resolved wallets and secret. Without CHAIN_RPC_URL (the embedded chain) anvil's well-known
 * dev accounts (escrow 1, operator 2, fees 3; chain/constants.ts) and a dev callback secret fill
 * what is not set; with it, requireRealChainSettings has made sure everything is set.
 */
function resolveChainSettings(env: ParsedEnv): ResolvedEnv {
  if (!env.CHAIN_RPC_URL) {
    const dev = (role: number) => ANVIL_ACCOUNTS[role]!;
    return {
      ...env,
      ESCROW_PRIVATE_KEY: (env.ESCROW_PRIVATE_KEY ?? dev(DEV_ROLES.escrow).privateKey) as Hex,
      OPERATOR_PRIVATE_KEY: (env.OPERATOR_PRIVATE_KEY ?? dev(DEV_ROLES.operator).privateKey) as Hex,
      FEE_ADDRESS: (env.FEE_ADDRESS ?? dev(DEV_ROLES.feeTreasury).address) as Address,
      FEE_PRIVATE_KEY: (env.FEE_PRIVATE_KEY ?? (env.FEE_ADDRESS ? undefined : dev(DEV_ROLES.feeTreasury).privateKey)) as Hex | undefined,
      CALLBACK_SIGNING_SECRET: env.CALLBACK_SIGNING_SECRET ?? DEV_CALLBACK_SIGNING_SECRET,
    };
  }
  const { ESCROW_PRIVATE_KEY, OPERATOR_PRIVATE_KEY, FEE_ADDRESS, CALLBACK_SIGNING_SECRET } = env;
  if (!ESCROW_PRIVATE_KEY || !FEE_ADDRESS || !CALLBACK_SIGNING_SECRET) {
    throw new Error('unreachable: requireRealChainSettings lets no real chain through without its wallets');
  }
  return {
    ...env,
    ESCROW_PRIVATE_KEY: ESCROW_PRIVATE_KEY as Hex,
    OPERATOR_PRIVATE_KEY: OPERATOR_PRIVATE_KEY as Hex | undefined,
    FEE_ADDRESS: FEE_ADDRESS as Address,
    CALLBACK_SIGNING_SECRET,
  };
}

/** The environment's schema: each variable's own rules, the real chain's requirements, then the resolved wallets. */
export const configSchema = configObject
  .superRefine(requireRealChainSettings, { when: () => true })
  .superRefine(requireRoleSettings, { when: () => true })
  .superRefine(requireDistinctSessionSecret)
  .transform(resolveChainSettings);

export type Config = z.output<typeof configSchema>;

/** Private and loopback URLs are allowed in dev mode (the embedded chain) unless said otherwise. */
export function allowPrivateUrls(config: Config): boolean {
  return config.ALLOW_PRIVATE_URLS ?? !config.CHAIN_RPC_URL;
}

export function publicBaseUrl(config: Config): string {
  return config.PUBLIC_BASE_URL ?? `http://${config.HOST === '0.0.0.0' ? '127.0.0.1' : config.HOST}:${config.PORT}`;
}

export class ConfigError extends Error {}

/** Parses an environment (default: process.env) into a Config, or throws a readable ConfigError. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = configSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(env)'}: ${i.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const cfg = parsed.data;
  if (cfg.EVENT_STREAM_HEARTBEAT_MS >= cfg.REQUEST_TIMEOUT_MS) {
    throw new ConfigError('Invalid configuration:\n  EVENT_STREAM_HEARTBEAT_MS: must be below REQUEST_TIMEOUT_MS, or idle event streams are cut');
  }
  if (cfg.DISPATCH_HEARTBEAT_MS * 2 > cfg.DISPATCH_LEASE_MS) {
    throw new ConfigError('Invalid configuration:\n  DISPATCH_HEARTBEAT_MS: must be at most half of DISPATCH_LEASE_MS, so that one late heartbeat does not lose a lease');
  }
  if (cfg.CHANNEL_CLAIM_INTERVAL_SECONDS * 2 > cfg.CHANNEL_WITHDRAW_DELAY_SECONDS) {
    throw new ConfigError(
      'Invalid configuration:\n  CHANNEL_CLAIM_INTERVAL_SECONDS: must be at most half of CHANNEL_WITHDRAW_DELAY_SECONDS, so that vouchers are claimed before a payer can withdraw',
    );
  }
  if (cfg.TASK_TIMEOUT_MIN_SECONDS > cfg.TASK_TIMEOUT_MAX_SECONDS) {
    throw new ConfigError('Invalid configuration:\n  TASK_TIMEOUT_MIN_SECONDS: must not exceed TASK_TIMEOUT_MAX_SECONDS');
  }
  return cfg;
}

/** The names the service reads; used by tests to check docker-compose.yml and README.md. */
export const configNames = Object.keys(configObject.shape) as (keyof Config)[];
