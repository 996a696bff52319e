import { and, asc, eq, inArray, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { withTransaction, type Db } from '../db/client.js';
import { callbackAttempts, callbackDeliveries, type CallbackDeliveryRow, type CallbackStatus } from '../db/callback-schema.js';
import { OutboundError } from '../net/outbound.js';
import { describeError } from '../net/redact.js';
import { postSigned } from '../net/signed-post.js';
import { unixSeconds } from '../net/signing.js';
import { UnsafeUrlError, type Resolver } from '../net/ssrf.js';
import { backoffMs, leaseDue, workerId, type WorkerLog } from '../queue/index.js';
import { Loop } from '../workers/loop.js';
import { callbackBody } from './enqueue.js';

/**
 * Signed callbacks to a task's `callback_url` when it reaches a terminal state, and to a batch's once
 * its last item has ended (`batch.<status>`, batches/ended.ts).
 *
 * `enqueueCallback` (./enqueue.ts) writes a pending delivery inside the transaction of the
 * transition. The `CallbackSender` then POSTs `{id, type, created_at, data}` signed with the
 * operator's CALLBACK_SIGNING_SECRET (`x-task-escrow-signature: t=…,v1=…`, src/net/signing.ts)
 * through src/net/outbound.ts (the URL checked and its addresses pinned for the connection,
 * redirects not followed):
 *
 *   pending ──2xx──▶ delivered
 *      │ other answer / network error: retried after backoffBaseMs × 2^min(attempts, 10)
 *      └── maxAttempts reached, or the URL refused by the SSRF check (not a public address) ──▶ failed
 *
 * Every attempt is recorded (callback_attempts) and summarised on the delivery (attempts,
 * last_status_code, last_error). Delivery is at least once: receivers dedupe on `id`.
 * Senders claim rows with FOR UPDATE SKIP LOCKED and lease them by moving next_attempt_at
 * forward; the result of an attempt is written only if no one else recorded one meanwhile.
 */

export type CallbackSenderLog = WorkerLog;

export interface CallbackSenderOptions {
  db: Db;
  clock: Clock;
  /** The operator's CALLBACK_SIGNING_SECRET (at least 32 characters; never logged). */
  signingSecret: string;
  ssrf: { allowPrivate: boolean };
  /** Attempts after which a delivery is given up (default 8). */
  maxAttempts?: number;
  /** Delay after the n-th failed attempt: backoffBaseMs × 2^min(n, 10) (default 5000). */
  backoffBaseMs?: number;
  /** Timeout of one POST (default 10 s). */
  timeoutMs?: number;
  /** How long a claim keeps other senders off a row (default timeoutMs + 30 s). */
  leaseMs?: number;
  /** Rows claimed at a time (default 10). */
  batchSize?: number;
  /** Most attempts one runOnce makes (default 100). */
  maxPerRun?: number;
  /** Name resolution of receivers' hosts; default the system resolver (tests inject one). */
  resolver?: Resolver;
  log?: CallbackSenderLog;
}

const USER_AGENT = 'task-escrow-webhook/1';
/** Receivers' answers are not read; a cap for the outbound client all the same. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/** What one attempt came to. */
interface AttemptResult {
  statusCode: number | null;
  error: string | null;
  delivered: boolean;
  /** No point retrying (the URL is refused). */
  permanent: boolean;
}

const silentLog: CallbackSenderLog = { info: () => {}, warn: () => {}, error: () => {} };

/** The delay after the n-th failed attempt: the workers' one backoff, n attempts in (base × 2^min(n, 10)). */
export function callbackBackoffMs(baseMs: number, attempts: number): number {
  return backoffMs(baseMs, attempts + 1);
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid url)';
  }
}

export class CallbackSender {
  /** The lease holder's name. */
  readonly id = workerId();
  private readonly db: Db;
  private readonly clock: Clock;
  private readonly log: CallbackSenderLog;
  private readonly maxAttempts: number;
  private readonly backoffBaseMs: number;
  private readonly timeoutMs: number;
  private readonly leaseMs: number;
  private readonly loop = new Loop(
    () => this.runOnce(),
    (err) => this.log.error({ error: describeError(err) }, 'callback run failed'),
  );

  constructor(private readonly opts: CallbackSenderOptions) {
    if (opts.signingSecret.length < 32) throw new Error('callbacks: signingSecret must have at least 32 characters');
    this.db = opts.db;
    this.clock = opts.clock;
    this.log = opts.log ?? silentLog;
    this.maxAttempts = opts.maxAttempts ?? 8;
    this.backoffBaseMs = opts.backoffBaseMs ?? 5_000;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.leaseMs = opts.leaseMs ?? this.timeoutMs + 30_000;
    if (!Number.isInteger(this.maxAttempts) || this.maxAttempts < 1) throw new Error('callbacks: maxAttempts must be ≥ 1');
    if (!(this.backoffBaseMs >= 0) || !(this.timeoutMs > 0) || !(this.leaseMs > 0)) {
      throw new Error('callbacks: backoffBaseMs ≥ 0, timeoutMs > 0 and leaseMs > 0');
    }
  }

  /** Makes one attempt on every due delivery (each at most once); returns how many attempts were made. */
  async runOnce(): Promise<number> {
    const seen: string[] = [];
    const maxPerRun = this.opts.maxPerRun ?? 100;
    while (seen.length < maxPerRun) {
      const batch = await this.lease(seen, Math.min(this.opts.batchSize ?? 10, maxPerRun - seen.length));
      if (batch.length === 0) break;
      for (const row of batch) seen.push(row.id);
      const settled = await Promise.allSettled(batch.map((row) => this.deliver(row)));
      const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failure) throw failure.reason;
    }
    return seen.length;
  }

  /** Runs every `intervalMs` until stop(); errors are logged, never thrown. */
  start(intervalMs: number): void {
    this.loop.start(intervalMs);
  }

  /** Stops the timer and waits for the run in progress. */
  async stop(): Promise<void> {
    await this.loop.stop();
  }

  /** Leases up to `limit` due deliveries no other sender holds (SKIP LOCKED). */
  private async lease(exclude: readonly string[], limit: number): Promise<CallbackDeliveryRow[]> {
    const now = this.clock.now().toISOString();
    const claimed = await leaseDue(this.db, {
      table: 'callback_deliveries',
      due: sql`status = 'pending' and next_attempt_at <= ${now}::timestamptz`,
      owner: this.id,
      leaseMs: this.leaseMs,
      orderBy: sql`next_attempt_at, id`,
      limit,
      exclude,
    });
    if (claimed.length === 0) return [];
    return this.db
      .select()
      .from(callbackDeliveries)
      .where(inArray(callbackDeliveries.id, claimed))
      .orderBy(asc(callbackDeliveries.createdAt), asc(callbackDeliveries.id));
  }

  private async deliver(row: CallbackDeliveryRow): Promise<void> {
    const result = await this.attempt(row);
    const status = this.nextStatus(row, result);
    const recorded = await this.record(row, result, status);
    const fields = { delivery: row.id, task: row.taskId, batch: row.batchId, origin: originOf(row.url), attempt: row.attempts + 1, status, code: result.statusCode };
    if (!recorded) this.log.warn(fields, 'callback attempt not recorded: another sender recorded one first');
    else if (status === 'failed') this.log.warn({ ...fields, error: result.error }, 'callback given up');
    else if (status === 'pending') this.log.info({ ...fields, error: result.error }, 'callback attempt failed, will retry');
  }

  /** One POST of the delivery; never throws. */
  private async attempt(row: CallbackDeliveryRow): Promise<AttemptResult> {
    try {
      const res = await postSigned({
        url: row.url,
        secret: this.opts.signingSecret,
        event: row.event,
        body: callbackBody(row),
        timestamp: unixSeconds(this.clock.now()),
        userAgent: USER_AGENT,
        headers: { 'x-task-escrow-delivery': row.id },
        allowPrivate: this.opts.ssrf.allowPrivate,
        timeoutMs: this.timeoutMs,
        maxBytes: MAX_RESPONSE_BYTES,
        readBody: () => false,
        ...(this.opts.resolver ? { resolver: this.opts.resolver } : {}),
      });
      const ok = res.status >= 200 && res.status < 300;
      return { statusCode: res.status, error: ok ? null : `HTTP ${res.status}`, delivered: ok, permanent: false };
    } catch (err) {
      if (err instanceof UnsafeUrlError) {
        // refused by the SSRF check before any connection; only a name that did not resolve may change
        return { statusCode: null, error: `ssrf: ${err.message}`, delivered: false, permanent: err.reason !== 'unresolvable' };
      }
      const error = err instanceof OutboundError && err.kind === 'timeout' ? `no answer within ${this.timeoutMs} ms` : describeError(err);
      return { statusCode: null, error, delivered: false, permanent: false };
    }
  }

  private nextStatus(row: CallbackDeliveryRow, result: AttemptResult): CallbackStatus {
    if (result.delivered) return 'delivered';
    if (result.permanent || row.attempts + 1 >= this.maxAttempts) return 'failed';
    return 'pending';
  }

  /**
   * Writes the attempt and the delivery's new state in one transaction, fenced on the attempt
   * count the row was claimed with. False when another sender recorded this attempt first.
   */
  private async record(row: CallbackDeliveryRow, result: AttemptResult, status: CallbackStatus): Promise<boolean> {
    const now = this.clock.now();
    const attempt = row.attempts + 1;
    const next = status === 'pending' ? new Date(now.getTime() + callbackBackoffMs(this.backoffBaseMs, attempt)) : now;
    return withTransaction(this.db, async (tx) => {
      const updated = await tx
        .update(callbackDeliveries)
        .set({
          status,
          attempts: attempt,
          nextAttemptAt: next,
          lastStatusCode: result.statusCode,
          lastError: result.error,
          deliveredAt: result.delivered ? now : null,
          leaseOwner: null,
          leaseExpiresAt: null,
        })
        .where(
          and(
            eq(callbackDeliveries.id, row.id),
            eq(callbackDeliveries.attempts, row.attempts),
            eq(callbackDeliveries.status, 'pending'),
            eq(callbackDeliveries.leaseOwner, this.id),
          ),
        )
        .returning({ id: callbackDeliveries.id });
      if (updated.length === 0) return false;
      await tx.insert(callbackAttempts).values({ deliveryId: row.id, attempt, statusCode: result.statusCode, error: result.error, at: now });
      return true;
    });
  }
}
