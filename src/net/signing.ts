import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * The signature of every POST the service sends (agents' webhooks and clients' callbacks),
 * Stripe style: `x-task-escrow-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
 * Receivers verify it with `verifyWebhookSignature` and reject stale timestamps.
 */

export const SIGNATURE_HEADER = 'x-task-escrow-signature';
export const EVENT_HEADER = 'x-task-escrow-event';
export const DEFAULT_TOLERANCE_SECONDS = 300;

function hmacHex(secret: string, timestamp: number, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/** The signature header value: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) throw new Error('signWebhook: timestamp must be unix seconds');
  return `t=${timestamp},v1=${hmacHex(secret, timestamp, body)}`;
}

interface ParsedSignature {
  timestamp: number;
  signatures: string[];
}

function parseSignatureHeader(header: string): ParsedSignature | null {
  let timestamp: number | null = null;
  const signatures: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't' && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    else if (key === 'v1' && /^[0-9a-f]{64}$/.test(value)) signatures.push(value);
  }
  return timestamp === null || signatures.length === 0 ? null : { timestamp, signatures };
}

function hexEquals(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex');
  const right = Buffer.from(b, 'hex');
  return left.length === right.length && timingSafeEqual(left, right);
}

/**
 * True when `header` carries a v1 signature of `body` by `secret` whose timestamp is within
 * `toleranceSeconds` of `nowSeconds` (replay protection). Compares in constant time.
 */
export function verifyWebhookSignature(
  secret: string,
  header: string | null | undefined,
  body: string,
  nowSeconds: number,
  toleranceSeconds: number = DEFAULT_TOLERANCE_SECONDS,
): boolean {
  if (!header) return false;
  const parsed = parseSignatureHeader(header);
  if (!parsed || Math.abs(nowSeconds - parsed.timestamp) > toleranceSeconds) return false;
  const expected = hmacHex(secret, parsed.timestamp, body);
  let match = false;
  for (const candidate of parsed.signatures) match = hexEquals(candidate, expected) || match;
  return match;
}

export function unixSeconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}
