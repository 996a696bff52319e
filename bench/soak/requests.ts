/**
 * What the workload sent and what came back. A request counts as answered when an HTTP status
 * came back and as failed when it did not (the service was killed under it, or refused the
 * connection while down): both are expected, the soak never assumes success. A 500 is a bug.
 */
export interface ServerError {
  iteration: number;
  label: string;
  status: number;
  code: string | undefined;
  requestId: string | undefined;
  body: string;
}

export interface Answer {
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

export class RequestStats {
  sent = 0;
  answered = 0;
  failed = 0;
  /** Failures while the service was believed alive (not killed yet), by message. */
  failedWhileAlive: Record<string, number> = {};
  /** `label status[ code]` → count. */
  outcomes: Record<string, number> = {};
  serverErrors: ServerError[] = [];

  add(other: RequestStats): void {
    this.sent += other.sent;
    this.answered += other.answered;
    this.failed += other.failed;
    for (const [k, v] of Object.entries(other.failedWhileAlive)) this.failedWhileAlive[k] = (this.failedWhileAlive[k] ?? 0) + v;
    for (const [k, v] of Object.entries(other.outcomes)) this.outcomes[k] = (this.outcomes[k] ?? 0) + v;
    this.serverErrors.push(...other.serverErrors);
  }

  /** Sends one logical request (a paid one is two HTTP requests with the stock x402 client). */
  async send(iteration: number, label: string, alive: () => boolean, request: () => Promise<Response>): Promise<Answer | null> {
    this.sent++;
    let res: Response;
    let text: string;
    try {
      res = await request();
      text = await res.text();
    } catch (err) {
      this.failed++;
      this.outcomes[`${label} (no answer)`] = (this.outcomes[`${label} (no answer)`] ?? 0) + 1;
      // the kill may land a moment before the soak hears of the exit: look again shortly after
      await new Promise((r) => setTimeout(r, 300));
      if (alive()) {
        const message = describe(err);
        this.failedWhileAlive[message] = (this.failedWhileAlive[message] ?? 0) + 1;
      }
      return null;
    }
    this.answered++;
    let body: unknown = undefined;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = text;
    }
    const code = (body as { error?: { code?: string } } | undefined)?.error?.code;
    const key = `${label} ${res.status}${code ? ` ${code}` : ''}`;
    this.outcomes[key] = (this.outcomes[key] ?? 0) + 1;
    if (res.status >= 500 && res.status !== 503) {
      this.serverErrors.push({ iteration, label, status: res.status, code, requestId: res.headers.get('x-request-id') ?? undefined, body: text.slice(0, 1000) });
    }
    return { status: res.status, body };
  }
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err).slice(0, 120);
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return `${err.name}: ${err.message}${cause?.code ? ` (${cause.code})` : cause?.message ? ` (${cause.message})` : ''}`.slice(0, 160);
}
