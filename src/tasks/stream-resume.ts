import { createHmac, timingSafeEqual } from 'node:crypto';
import { getAddress, isAddress, type Address } from 'viem';
import type { Clock } from '../clock.js';

/**
 * Who may resume a task's event stream without paying again. Every event of a paid stream carries
 * an id `<token>:<n>`; the token names the task and the payer and expires `windowSeconds` after
 * that event, under an HMAC of a key derived from the service's secret (the same in every
 * process). A reconnect with `Last-Event-ID` naming a valid token for the same task is served as
 * that payer, free; anything else pays as usual.
 */
export class StreamResume {
  private readonly key: Buffer;

  constructor(
    secret: string,
    private readonly windowSeconds: number,
    private readonly clock: Clock,
  ) {
    this.key = createHmac('sha256', secret).update('task-escrow/event-stream-resume/v1').digest();
  }

  /** The id of event `n` of `payer`'s stream of `taskId`. */
  eventId(taskId: string, payer: Address, n: number): string {
    const body = Buffer.from(JSON.stringify({ t: taskId, p: payer, e: Math.floor(this.clock.now().getTime() / 1000) + this.windowSeconds })).toString('base64url');
    return `${body}.${this.mac(body)}:${n}`;
  }

  /** The payer a `Last-Event-ID` resumes for on `taskId` and the next event number; null if it does not. */
  resume(lastEventId: string | undefined, taskId: string): { payer: Address; next: number } | null {
    const m = /^([A-Za-z0-9_-]{1,512})\.([A-Za-z0-9_-]{43}):(\d{1,9})$/.exec(lastEventId ?? '');
    if (!m) return null;
    const [, body, mac, n] = m as unknown as [string, string, string, string];
    const expected = Buffer.from(this.mac(body));
    if (!timingSafeEqual(expected, Buffer.from(mac))) return null;
    let claims: { t?: unknown; p?: unknown; e?: unknown };
    try {
      claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as typeof claims;
    } catch {
      return null;
    }
    if (claims.t !== taskId || typeof claims.p !== 'string' || !isAddress(claims.p) || typeof claims.e !== 'number') return null;
    if (claims.e * 1000 < this.clock.now().getTime()) return null;
    return { payer: getAddress(claims.p), next: Number(n) + 1 };
  }

  private mac(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url');
  }
}
