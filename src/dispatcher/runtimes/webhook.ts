import { z } from 'zod';
import { isRetryableStatus, OutboundError, bodyText, type OutboundResponse } from '../../net/outbound.js';
import { describeError, redactSecrets } from '../../net/redact.js';
import { postSigned } from '../../net/signed-post.js';
import { unixSeconds } from '../../net/signing.js';
import { UnsafeUrlError, type Resolver } from '../../net/ssrf.js';
import { ResultContent, type ResultContentT } from '../../tasks/schemas.js';
import type { AgentRuntime, RunContext, RunOutcome, TaskBrief } from '../runtime.js';

/**
 * The `webhook` runtime: the agent is an HTTPS endpoint. The dispatcher POSTs the task, signed
 * with the agent's shared secret (Stripe-style `t=<unix s>,v1=<hex HMAC-SHA256>` over
 * `<t>.<body>`, see src/net/signing.ts); the agent answers 200 with the result, or 202 and
 * delivers later through the API.
 *
 *   200 {result}          → completed (metadata fields it leaves out are null)
 *   202                   → accepted
 *   408 / 429 / 5xx       → failed, retryable (so are network errors and timeouts)
 *   other status, bad 200 → failed, not retryable
 *   ctx.signal aborted    → failed `aborted`, not retryable
 *
 * Requests go through src/net/outbound.ts: the URL is SSRF-checked and its addresses pinned
 * for the connection (no DNS rebinding), and redirects are never followed.
 * The secret is never logged and never appears in a failure reason.
 */

/** The signature scheme lives in src/net/signing.ts; agents may import it from here too. */
export { DEFAULT_TOLERANCE_SECONDS, EVENT_HEADER, SIGNATURE_HEADER, signWebhook, verifyWebhookSignature } from '../../net/signing.js';

export const WebhookConfig = z.object({
  kind: z.literal('webhook'),
  url: z.url({ protocol: /^https?$/ }),
  /** Shared HMAC secret; never returned to other wallets, never logged. */
  secret: z.string().min(32).max(256),
  timeout_ms: z.number().int().min(1000).max(600_000).default(30_000),
});
export type WebhookConfigT = z.output<typeof WebhookConfig>;

/** Largest response body read from an agent (a result is bounded by this). */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
/** Timeout of the best-effort cancellation notice. */
export const NOTIFY_TIMEOUT_MS = 5_000;
const USER_AGENT = 'task-escrow-webhook/1';

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
      ...(brief.predecessors?.length ? { predecessors: brief.predecessors } : {}),
      ...(brief.limits ? { limits: brief.limits } : {}),
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
  ssrf: { allowPrivate: boolean };
  /** Name resolution of agents' hosts; default the system resolver (tests inject one). */
  resolver?: Resolver;
}

const failed = (reason: string, retryable: boolean): RunOutcome => ({ kind: 'failed', reason, retryable });
const ABORTED: RunOutcome = failed('aborted', false);

/** Maps a non-200 answer to an outcome (the body is discarded). */
function outcomeOfStatus(status: number): RunOutcome {
  if (status === 202) return { kind: 'accepted' };
  if (isRetryableStatus(status)) return failed(`agent answered HTTP ${status}`, true);
  if (status >= 300 && status < 400) return failed(`agent answered a redirect (HTTP ${status}); redirects are not followed`, false);
  return failed(`agent answered HTTP ${status}`, false);
}

function outcomeOfResponse(res: OutboundResponse): RunOutcome {
  if (res.status !== 200) return outcomeOfStatus(res.status);
  const parsed = parseSyncReply(bodyText(res));
  return parsed.ok ? { kind: 'completed', result: parsed.result } : failed(parsed.error, false);
}

function outcomeOfError(err: unknown, ctx: RunContext, timeoutMs: number): RunOutcome {
  if (ctx.signal.aborted) return ABORTED;
  if (err instanceof OutboundError) {
    if (err.kind === 'timeout') return failed(`agent did not answer within ${timeoutMs} ms`, true);
    if (err.kind === 'too_large') return failed(`invalid 200 response: ${err.message}`, false);
    if (err.kind === 'invalid_request') return failed(`could not send to the agent: ${err.message}`, false);
  }
  if (err instanceof UnsafeUrlError) {
    // refused by the SSRF check, before any connection; only a name that did not resolve may change
    return failed(`webhook URL refused: ${err.message}`, err.reason === 'unresolvable');
  }
  return failed(`could not reach the agent: ${describeError(err)}`, true);
}

function redactOutcome(outcome: RunOutcome, secret: string): RunOutcome {
  return outcome.kind === 'failed' ? { ...outcome, reason: redactSecrets(outcome.reason, [secret]) } : outcome;
}

export function createWebhookRuntime(opts: WebhookRuntimeOptions): AgentRuntime<WebhookConfigT> {
  const now = (): number => unixSeconds(opts.clock.now());

  function post(config: WebhookConfigT, event: string, body: string, timeoutMs: number, signal?: AbortSignal): Promise<OutboundResponse> {
    return postSigned({
      url: config.url,
      secret: config.secret,
      event,
      body,
      timestamp: now(),
      userAgent: USER_AGENT,
      allowPrivate: opts.ssrf.allowPrivate,
      timeoutMs,
      maxBytes: MAX_RESPONSE_BYTES,
      // only a 200 carries a result; any other answer's body is discarded unread
      readBody: (head) => head.status === 200,
      ...(signal ? { signal } : {}),
      ...(opts.resolver ? { resolver: opts.resolver } : {}),
    });
  }

  async function run(brief: TaskBrief, config: WebhookConfigT, ctx: RunContext): Promise<RunOutcome> {
    if (ctx.signal.aborted) return ABORTED;
    try {
      const res = await post(config, 'task.assigned', assignedPayload(brief), config.timeout_ms, ctx.signal);
      return redactOutcome(outcomeOfResponse(res), config.secret);
    } catch (err) {
      return redactOutcome(outcomeOfError(err, ctx, config.timeout_ms), config.secret);
    }
  }

  async function notifyCancelled(brief: TaskBrief, config: WebhookConfigT, reason: string): Promise<void> {
    try {
      const timeoutMs = Math.min(config.timeout_ms, NOTIFY_TIMEOUT_MS);
      await post(config, 'task.cancelled', cancelledPayload(brief, reason), timeoutMs);
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
