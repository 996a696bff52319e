/**
 * The MCP server's settings, read as the CLI reads them (cli/task-escrow.ts):
 * - service: TASK_ESCROW_URL, else BASE_URL, else http://127.0.0.1:$PORT (scripts/base-url.ts);
 * - wallet: TASK_ESCROW_PRIVATE_KEY (0x + 64 hex), never printed;
 * - spend caps per MCP session: --max-per-call / --max-per-session (decimal USDC), else
 *   TASK_ESCROW_MAX_PER_CALL / TASK_ESCROW_MAX_PER_SESSION, else 1.5 and 5.
 */
import { privateKeyToAccount } from 'viem/accounts';
import type { LocalAccount } from 'viem';
import { serviceBaseUrl } from '../scripts/base-url.js';
import { TaskEscrowClient, usdc } from '../sdk/src/index.js';

export type Env = Record<string, string | undefined>;

export class SettingsError extends Error {
  override readonly name = 'SettingsError';
}

export interface McpSettings {
  baseUrl: string;
  account: LocalAccount;
  maxPerCall: string;
  maxPerSession: string;
  authDomain?: string;
}

function usdcSetting(value: string, what: string): string {
  try {
    return usdc(value);
  } catch {
    throw new SettingsError(`${what}: not a USDC amount with at most 6 decimals: ${JSON.stringify(value)}`);
  }
}

export function readSettings(env: Env, flags: { maxPerCall?: string; maxPerSession?: string } = {}): McpSettings {
  let baseUrl: string;
  try {
    baseUrl = serviceBaseUrl(env);
  } catch (err) {
    throw new SettingsError((err as Error).message);
  }
  const key = env.TASK_ESCROW_PRIVATE_KEY?.trim();
  if (!key) throw new SettingsError('TASK_ESCROW_PRIVATE_KEY is not set: the paying wallet’s private key (0x + 64 hex digits)');
  if (!/^0x[0-9a-fA-F]{64}$/.test(key)) throw new SettingsError('TASK_ESCROW_PRIVATE_KEY is not a private key (0x + 64 hex digits); its value is not shown');
  return {
    baseUrl,
    account: privateKeyToAccount(key as `0x${string}`),
    maxPerCall: usdcSetting(flags.maxPerCall ?? env.TASK_ESCROW_MAX_PER_CALL?.trim() ?? '1.5', '--max-per-call / TASK_ESCROW_MAX_PER_CALL'),
    maxPerSession: usdcSetting(flags.maxPerSession ?? env.TASK_ESCROW_MAX_PER_SESSION?.trim() ?? '5', '--max-per-session / TASK_ESCROW_MAX_PER_SESSION'),
    ...(env.AUTH_DOMAIN?.trim() && { authDomain: env.AUTH_DOMAIN.trim() }),
  };
}

/** A fresh SDK client: its spend meter is one MCP session's. */
export function clientFor(s: McpSettings): TaskEscrowClient {
  return new TaskEscrowClient({
    baseUrl: s.baseUrl,
    account: s.account,
    spend: { maxPerCall: s.maxPerCall, maxPerSession: s.maxPerSession },
    ...(s.authDomain && { authDomain: s.authDomain }),
  });
}

/** Removes the private key (with or without 0x) from any text. */
export function redactor(env: Env): (text: string) => string {
  const key = env.TASK_ESCROW_PRIVATE_KEY?.trim();
  if (!key || key.length < 8) return (t) => t;
  const bare = key.replace(/^0x/i, '');
  const re = new RegExp(bare.replace(/[^0-9a-zA-Z]/g, ''), 'gi');
  return (t) => t.replace(re, '[redacted]');
}
