import { z } from 'zod';

/**
 * The service's whole configuration: one zod schema over the environment, parsed once.
 * Every name here is documented in README.md and checked against docker-compose.yml by a test.
 */
const bool = z
  .enum(['true', 'false', '1', '0'])
  .transform((v) => v === 'true' || v === '1');

const address = z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 0x-prefixed 20-byte hex address');

export const configSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ROLE: z.enum(['api', 'worker', 'all']).default('all'),

  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
  DATA_DIR: z.string().min(1).default('./data'),
  DB_POOL_MAX: z.coerce.number().int().min(1).max(200).default(10),

  /** SIWE `domain` the service accepts (host[:port]); unset = the request's Host header. */
  AUTH_DOMAIN: z.string().min(1).optional(),
  /** Longest lifetime a signed sign-in message may have, in seconds. */
  AUTH_MAX_AGE_SECONDS: z.coerce.number().int().min(10).max(86_400).default(600),

  /** Where funded escrow is held (the operator's escrow wallet). */
  ESCROW_ADDRESS: address.default('0x70997970C51812dc3A010C7d01b50e0d17dc79C8'),
  /** How long a created task may stay unfunded before it expires. */
  TASK_FUNDING_WINDOW_SECONDS: z.coerce.number().int().min(60).max(30 * 86_400).default(3600),
  TASK_TIMEOUT_MIN_SECONDS: z.coerce.number().int().min(1).default(30),
  TASK_TIMEOUT_MAX_SECONDS: z.coerce.number().int().min(1).default(7 * 86_400),
  /** Cancellation fee while work is in progress, in basis points of the escrow (see escrow/rules.ts). */
  CANCELLATION_FEE_BPS: z.coerce.number().int().min(0).max(10_000).default(1000),
  /** How long a dispute is expected to take to resolve, in seconds. */
  DISPUTE_REVIEW_SECONDS: z.coerce.number().int().min(60).default(3 * 86_400),

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

export type Config = z.infer<typeof configSchema>;

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
  if (cfg.TASK_TIMEOUT_MIN_SECONDS > cfg.TASK_TIMEOUT_MAX_SECONDS) {
    throw new ConfigError('Invalid configuration:\n  TASK_TIMEOUT_MIN_SECONDS: must not exceed TASK_TIMEOUT_MAX_SECONDS');
  }
  return cfg;
}

/** The names the service reads; used by tests to check docker-compose.yml and README.md. */
export const configNames = Object.keys(configSchema.shape) as (keyof Config)[];
