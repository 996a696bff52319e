import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { assertPublicUrl, UnsafeUrlError } from '../../net/ssrf.js';
import { ResultContent, type ResultContentT } from '../../tasks/schemas.js';
import type { AgentRuntime, RunContext, RunOutcome, TaskBrief } from '../runtime.js';

/**
 * The `webhook` runtime: the agent is an HTTPS endpoint. The dispatcher POSTs the task, signed
 * with the agent's shared secret (Stripe-style `t=<unix s>,v1=<hex HMAC-SHA256>` over
 * `<t>.<body>`); the agent answers 200 with the result, or 202 and delivers later through the API.
 *
 *   200 {result}          → completed (metadata fields it leaves out are null)
 *   202                   → accepted
 *   408 / 429 / 5xx       → failed, retryable (so are network errors and timeouts)
 *   other status, bad 200 → failed, not retryable
 *   ctx.signal aborted    → failed `aborted`, not retryable
 *
 * The URL is SSRF-checked before every request and redirects are never followed.
 * The secret is never logged and never appears in a failure reason.
 */

export const WebhookConfig = z.object({
  kind: z.literal('webhook'),
  url: z.url({ protocol: /^https?$/ }),
  /** Shared HMAC secret; never returned to other wallets, never logged. */
  secret: z.string().min(32).max(256),
  timeout_ms: z.number().int().min(1000).max(600_000).default(30_000),
});
export type WebhookConfigT = z.output<typeof WebhookConfig>;

export const SIGNATURE_HEADER = 'x-task-escrow-signature';
export const EVENT_HEADER = 'x-task-escrow-event';
export const DEFAULT_TOLERANCE_SECONDS = 300;
/** Largest response body read from an agent (a result is bounded by this). */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
/** Timeout of the best-effort cancellation notice. */
export const NOTIFY_TIMEOUT_MS = 5_000;
const USER_AGENT = 'task-escrow-webhook/1';

// ------------------------------------------------------------------------------- signatures

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

// ------------------------------------------------------------------------------ signed POSTs

export interface SignedPost {
  fetch: typeof fetch;
  url: string;
  secret: string;
  event: string;
  body: string;
  /** Unix seconds of the signature. */
  timestamp: number;
  signal: AbortSignal;
  headers?: Record<string, string>;
}

/** POSTs a signed JSON body; never follows redirects (a 3xx is returned as is). */
export function postSigned(req: SignedPost): Promise<Response> {
  return req.fetch(req.url, {
    method: 'POST',
    redirect: 'manual',
    signal: req.signal,
    headers: {
      'content-type': 'application/json',
      'user-agent': USER_AGENT,
      [SIGNATURE_HEADER]: signWebhook(req.secret, req.timestamp, req.body),
      [EVENT_HEADER]: req.event,
      ...req.headers,
    },
    body: req.body,
  });
}

export class ResponseTooLargeError extends Error {
  constructor(limit: number) {
    super(`response body exceeds ${limit} bytes`);
    this.name = 'ResponseTooLargeError';
  }
}

/** Reads a response body as text, refusing more than `maxBytes`. */
export async function readBoundedText(res: Response, maxBytes: number): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new ResponseTooLargeError(maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Releases the connection of a response whose body is not wanted. */
export async function discardBody(res: Response): Promise<void> {
  await res.body?.cancel().catch(() => undefined);
}

/** A short, secret-free description of a fetch failure (`ECONNREFUSED`, `fetch failed`, …). */
export function describeFetchError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  const code = cause && typeof cause === 'object' ? (cause as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? `${err.message} (${code})` : err.message;
}

export function unixSeconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

// ---------------------------------------------------------------------------------- payloads

export function assignedPayload(brief: TaskBrief): string {
  return JSON.stringify({
    type: 'task.assigned',
    task: {
      id: brief.taskId,
      description: brief.description,
      requirements: brief.requirements ?? null,
      budget: brief.budget,
      deadline: brief.deadline.toISOString(),
      attempt: brief.attempt,
    },
    callbacks: { progress: brief.callbacks.progress, deliver: brief.callbacks.deliver },
  });
}

export function cancelledPayload(brief: TaskBrief, reason: string): string {
  return JSON.stringify({ type: 'task.cancelled', task: { id: brief.taskId }, reason });
}

/** The loose envelope of a 200 answer; the result itself is checked against ResultContent. */
const SyncReply = z.object({
  result: z.object({
    type: z.unknown(),
    content: z.unknown(),
    metadata: z.record(z.string(), z.unknown()).optional(),
  }),
});

const EMPTY_METADATA = { tokens_used: null, model: null, duration_seconds: null };

function describeIssues(issues: readonly z.core.$ZodIssue[], prefix: string): string {
  return issues
    .slice(0, 5)
    .map((i) => `${[prefix, ...i.path.map(String)].filter(Boolean).join('.') || '(body)'}: ${i.message}`)
    .join('; ');
}

/** Parses the body of a 200 answer into a result, or says what is wrong with it. */
export function parseSyncReply(text: string): { ok: true; result: ResultContentT } | { ok: false; error: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, error: 'the 200 response is not JSON' };
  }
  const envelope = SyncReply.safeParse(json);
  if (!envelope.success) return { ok: false, error: `invalid 200 response: ${describeIssues(envelope.error.issues, '')}` };
  const { type, content, metadata } = envelope.data.result;
  if (content === undefined) return { ok: false, error: 'invalid 200 response: result.content is required' };
  const parsed = ResultContent.safeParse({ type, content, metadata: { ...EMPTY_METADATA, ...metadata } });
  if (!parsed.success) return { ok: false, error: `invalid 200 response: ${describeIssues(parsed.error.issues, 'result')}` };
  return { ok: true, result: parsed.data };
}

// ------------------------------------------------------------------------------- the runtime

export interface WebhookRuntimeOptions {
  clock: { now(): Date };
  fetch?: typeof fetch;
  ssrf: { allowPrivate: boolean };
}

const failed = (reason: string, retryable: boolean): RunOutcome => ({ kind: 'failed', reason, retryable });
const ABORTED: RunOutcome = failed('aborted', false);

function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** Maps a non-200 answer to an outcome (the body is discarded). */
function outcomeOfStatus(status: number): RunOutcome {
  if (status === 202) return { kind: 'accepted' };
  if (isRetryableStatus(status)) return failed(`agent answered HTTP ${status}`, true);
  if (status >= 300 && status < 400) return failed(`agent answered a redirect (HTTP ${status}); redirects are not followed`, false);
  return failed(`agent answered HTTP ${status}`, false);
}

async function outcomeOfResponse(res: Response): Promise<RunOutcome> {
  if (res.status !== 200) {
    await discardBody(res);
    return outcomeOfStatus(res.status);
  }
  const parsed = parseSyncReply(await readBoundedText(res, MAX_RESPONSE_BYTES));
  return parsed.ok ? { kind: 'completed', result: parsed.result } : failed(parsed.error, false);
}

function outcomeOfError(err: unknown, ctx: RunContext, timeout: AbortSignal, timeoutMs: number): RunOutcome {
  if (ctx.signal.aborted) return ABORTED;
  if (timeout.aborted) return failed(`agent did not answer within ${timeoutMs} ms`, true);
  if (err instanceof ResponseTooLargeError) return failed(`invalid 200 response: ${err.message}`, false);
  return failed(`could not reach the agent: ${describeFetchError(err)}`, true);
}

/** Removes the secret from a text that is about to leave the runtime (defence in depth). */
function redact(text: string, secret: string): string {
  return secret.length > 0 ? text.split(secret).join('[redacted]') : text;
}

function redactOutcome(outcome: RunOutcome, secret: string): RunOutcome {
  return outcome.kind === 'failed' ? { ...outcome, reason: redact(outcome.reason, secret) } : outcome;
}

/** Why a URL may not be called now; `retryable` when only its name did not resolve. */
export interface UrlRefusal {
  message: string;
  retryable: boolean;
}

/** The SSRF check of a URL about to be called: null when it may be called. */
export async function checkOutboundUrl(url: string, allowPrivate: boolean): Promise<UrlRefusal | null> {
  try {
    await assertPublicUrl(url, { allowPrivate });
    return null;
  } catch (err) {
    const retryable = err instanceof UnsafeUrlError && err.reason === 'unresolvable';
    return { message: err instanceof Error ? err.message : String(err), retryable };
  }
}

export function createWebhookRuntime(opts: WebhookRuntimeOptions): AgentRuntime<WebhookConfigT> {
  const fetchFn = opts.fetch ?? fetch;
  const now = (): number => unixSeconds(opts.clock.now());

  async function run(brief: TaskBrief, config: WebhookConfigT, ctx: RunContext): Promise<RunOutcome> {
    if (ctx.signal.aborted) return ABORTED;
    const refused = await checkOutboundUrl(config.url, opts.ssrf.allowPrivate);
    if (refused) return redactOutcome(failed(`webhook URL refused: ${refused.message}`, refused.retryable), config.secret);
    if (ctx.signal.aborted) return ABORTED;
    const timeout = AbortSignal.timeout(config.timeout_ms);
    const signal = AbortSignal.any([ctx.signal, timeout]);
    try {
      const body = assignedPayload(brief);
      const res = await postSigned({ fetch: fetchFn, url: config.url, secret: config.secret, event: 'task.assigned', body, timestamp: now(), signal });
      return redactOutcome(await outcomeOfResponse(res), config.secret);
    } catch (err) {
      return redactOutcome(outcomeOfError(err, ctx, timeout, config.timeout_ms), config.secret);
    }
  }

  async function notifyCancelled(brief: TaskBrief, config: WebhookConfigT, reason: string): Promise<void> {
    try {
      if (await checkOutboundUrl(config.url, opts.ssrf.allowPrivate)) return;
      const signal = AbortSignal.timeout(Math.min(config.timeout_ms, NOTIFY_TIMEOUT_MS));
      const body = cancelledPayload(brief, reason);
      const res = await postSigned({ fetch: fetchFn, url: config.url, secret: config.secret, event: 'task.cancelled', body, timestamp: now(), signal });
      await discardBody(res);
    } catch {
      /* best effort: the agent also learns it from the API */
    }
  }

  return { kind: 'webhook', configSchema: WebhookConfig, run, notifyCancelled };
}

/** The runtime object as its owner may see it: everything but the secret. */
export function redactWebhookConfig(config: WebhookConfigT): Omit<WebhookConfigT, 'secret'> & { secret: '[redacted]' } {
  return { ...config, secret: '[redacted]' };
}
