/**
 * Typed client for task-escrow. A client, not part of the service: it imports only its generated
 * types (schema.d.ts, from openapi/openapi.json by `npm run sdk:types`) and published packages.
 *
 * Payments go through the stock `@x402/fetch` with the exact EVM scheme, or with a batch-settlement
 * channel (`scheme: 'batch-settlement'`: one deposit, then a voucher per call). Spend controls are the
 * caller's: `maxPerCall` caps one payment (the x402 client's own `maxAmountPerPayment` is set to
 * it, so funding above $1 works because the caller allowed it), `maxPerSession` caps what this
 * client instance pays in all. A payment over either is refused before it is signed.
 */
import createClient, { type Client } from 'openapi-fetch';
import { x402Client, x402HTTPClient } from '@x402/core/client';
import { decodePaymentSignatureHeader } from '@x402/core/http';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { toClientEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme } from '@x402/evm/batch-settlement/client';
import type { PaymentRequirements } from '@x402/core/types';
import { createPublicClient, http as viemHttp } from 'viem';
import { wrapFetchWithPayment } from '@x402/fetch';
import type { LocalAccount } from 'viem';
import { createSiweMessage, generateSiweNonce } from 'viem/siwe';
import type { components, paths } from './schema.js';

export type { components, paths } from './schema.js';
type S = components['schemas'];
export type TaskStatus = S['TaskStatus'];
export type TaskResult = S['TaskResult'];
export type TaskCreated = S['TaskCreated'];
export type TaskFunded = S['TaskFunded'];
export type Batch = S['Batch'];
export type BatchItem = S['BatchItem'];
export type Receipt = S['Receipt'];
export type AgentSearchResult = S['AgentSearchResult'];
export type NetworkInfo = S['NetworkInfo'];
export type Budget = S['Budget'];

/** Atomic USDC (6 decimals): a bigint or a decimal string of atomic units, as the API writes money. */
export type Atomic = bigint | string;

/** `usdc('1.5')` → `'1500000'`: decimal USDC to atomic units. */
export function usdc(amount: string | number): string {
  const text = typeof amount === 'number' ? amount.toFixed(6) : amount.trim();
  const m = /^(\d+)(?:\.(\d{0,6}))?$/.exec(text);
  if (!m) throw new Error(`Not a USDC amount with at most 6 decimals: ${amount}`);
  return (BigInt(m[1]!) * 1_000_000n + BigInt((m[2] ?? '').padEnd(6, '0'))).toString();
}

/** Atomic units to the dollar string the x402 client's spend controls take: 1005000n → '$1.005000'. */
function toUsd(atomic: bigint): string {
  return `$${atomic / 1_000_000n}.${(atomic % 1_000_000n).toString().padStart(6, '0')}`;
}

export interface SpendCaps {
  /** Most one payment may be (atomic USDC). Funding pays escrow + fee in one payment. */
  maxPerCall: Atomic;
  /** Most this client may pay in all (atomic USDC), counted from the payments the service settled. */
  maxPerSession: Atomic;
}

export interface TaskEscrowClientOptions {
  baseUrl: string;
  /** The paying wallet: signs x402 payments and the SIWE messages of free, signed routes. */
  account: LocalAccount;
  spend: SpendCaps;
  /** Domain the service accepts in SIWE messages (its AUTH_DOMAIN); default: the host of baseUrl. */
  authDomain?: string;
  /** Transport; default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Interval of status polls when no stream is used (ms, default 1000). Each poll is paid. */
  pollIntervalMs?: number;
  /**
   * How calls are paid. `exact` (default): one signed USDC transfer per call. `batch-settlement`:
   * the first call deposits into a channel (`extra.minDeposit` of the route, 0.5 USDC by default;
   * it must fit `maxPerCall`), every later call is a voucher with no transaction; `refundChannel()`
   * takes the remainder back. Funding and batches are always `exact` (the service offers no other).
   * The meter counts a call's price, not the refundable deposit.
   */
  scheme?: 'exact' | 'batch-settlement';
  /**
   * An RPC URL of the service's chain (GET /v1/network `rpc_url`), for a channel client to read its
   * channel on chain when it has no state of its own (a restarted process). Optional.
   */
  rpcUrl?: string;
}

/** Refused on the client, before anything was signed or paid. */
export class SpendLimitError extends Error {
  override readonly name = 'SpendLimitError';
  constructor(
    readonly cap: 'maxPerCall' | 'maxPerSession',
    readonly requested: bigint,
    readonly limit: bigint,
    /** Paid (settled) and reserved (in flight) in this session when refused. */
    readonly spent: bigint,
    what: string,
  ) {
    super(
      cap === 'maxPerCall'
        ? `${what} would pay ${requested} atomic USDC in one payment, above maxPerCall ${limit}; nothing was paid`
        : `${what} would pay ${requested} atomic USDC, and this session has already spent ${spent} of maxPerSession ${limit}; nothing was paid`,
    );
  }
}

/** The service answered with an error (its `{error:{code,…}}` body). */
export class TaskEscrowApiError extends Error {
  override readonly name = 'TaskEscrowApiError';
  readonly code: string;
  constructor(
    readonly status: number,
    readonly body: unknown,
    context: string,
  ) {
    const err = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
    super(`${context}: ${status} ${err?.code ?? ''} ${err?.message ?? ''}`.trim());
    this.code = err?.code ?? `http_${status}`;
  }
}

export type Transport = 'sse' | 'poll';
export interface FollowOptions<T> {
  /** Called with every view (status changes and progress). */
  onProgress?: (view: T) => void;
  /** Told which transport is used, and why it fell back to polling. */
  onTransport?: (transport: Transport, reason?: string) => void;
  /** 'auto' (default): the stream, falling back to polls if it fails; 'poll': polls only. */
  transport?: 'auto' | 'poll';
  signal?: AbortSignal;
  /** Give up after this long (ms, default 10 minutes). */
  timeoutMs?: number;
}

export interface HireInput {
  agent_id: string;
  description: string;
  /** Atomic USDC, or the API's budget object. */
  budget: Atomic | Budget;
  requirements?: S['CreateTask']['requirements'];
  callback_url?: string;
  timeout_seconds?: number;
}
export interface Hired {
  task_id: string;
  created: TaskCreated;
  funded: TaskFunded;
}
export interface HireAndWaitResult extends Hired {
  status: TaskStatus;
  /** The deliverable when the task completed, else null. */
  result: TaskResult | null;
}

export type BatchInputItem = Omit<BatchItem, 'budget'> & { budget: Atomic | Budget };
export interface BatchOptions extends FollowOptions<Batch> {
  policy?: 'fail_fast' | 'continue';
  max_concurrency?: number;
  max_spend?: Atomic;
  /** Where the service POSTs one signed `batch.<status>` event once every item has ended. */
  callback_url?: string;
}
export interface BatchItemOutcome {
  index: number;
  task_id: string;
  status: S['BatchItemView']['status'];
  result: S['ResultContent'] | null;
  result_hash: string | null;
  failure: string | null;
}
export interface BatchResult {
  batch_id: string;
  status: Batch['status'];
  /** One entry per input item, in input order. */
  results: BatchItemOutcome[];
  /** The partial-failure report: the items that delivered nothing, why, and their refunds. */
  failures: Batch['failures'];
  totals: Batch['totals'];
  batch: Batch;
}

const TERMINAL_TASK = (s: TaskStatus) => s.status !== 'created' && s.status !== 'in_progress';
const TERMINAL_BATCH = (b: Batch) => b.status !== 'running';

/** The session's meter: settled payments plus those in flight, checked before each payment. */
class SpendMeter {
  spent = 0n;
  reserved = 0n;
  constructor(
    readonly maxPerCall: bigint,
    readonly maxPerSession: bigint,
  ) {}
  refusal(amount: bigint, what: string): SpendLimitError | null {
    if (amount > this.maxPerCall) return new SpendLimitError('maxPerCall', amount, this.maxPerCall, this.spent + this.reserved, what);
    if (this.spent + this.reserved + amount > this.maxPerSession)
      return new SpendLimitError('maxPerSession', amount, this.maxPerSession, this.spent + this.reserved, what);
    return null;
  }
  /** Checks several payments an operation will make (each against the per-call cap, their sum against the session). */
  ensure(amounts: bigint[], what: string): void {
    for (const a of amounts) if (a > this.maxPerCall) throw new SpendLimitError('maxPerCall', a, this.maxPerCall, this.spent + this.reserved, what);
    const total = amounts.reduce((s, a) => s + a, 0n);
    const refused = this.refusal(total, what);
    if (refused) throw refused;
  }
}

const bigintOf = (a: Atomic): bigint => (typeof a === 'bigint' ? a : BigInt(a));
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

export class TaskEscrowClient {
  readonly baseUrl: string;
  readonly account: LocalAccount;
  /** Typed openapi-fetch client whose fetch pays with x402 under the caps. */
  readonly api: Client<paths>;
  private readonly meter: SpendMeter;
  private readonly refusals = new Map<number, SpendLimitError>();
  private refusalSeq = 0;
  private readonly payFetch: typeof fetch;
  private readonly pollIntervalMs: number;
  private networkInfo: Promise<NetworkInfo> | null = null;
  /** The channel scheme when paying with `batch-settlement`. */
  private readonly channel: BatchSettlementEvmScheme | undefined;

  constructor(private readonly opts: TaskEscrowClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.account = opts.account;
    this.pollIntervalMs = opts.pollIntervalMs ?? 1000;
    const maxPerCall = bigintOf(opts.spend.maxPerCall);
    const maxPerSession = bigintOf(opts.spend.maxPerSession);
    if (maxPerCall < 0n || maxPerSession < 0n) throw new Error('spend caps must be ≥ 0');
    this.meter = new SpendMeter(maxPerCall, maxPerSession);

    // With channels: take the route's batch-settlement terms when it offers them, else exact.
    const preferred = opts.scheme ?? 'exact';
    const x402 = new x402Client((_version: number, accepts: PaymentRequirements[]) => accepts.find((a) => a.scheme === preferred) ?? accepts[0]!);
    registerExactEvmScheme(x402, { signer: opts.account });
    if (preferred === 'batch-settlement') {
      const reader = opts.rpcUrl ? createPublicClient({ transport: viemHttp(opts.rpcUrl) }) : undefined;
      this.channel = new BatchSettlementEvmScheme(toClientEvmSigner(opts.account, reader));
      x402.register('eip155:*', this.channel); // beside exact, on any EVM network the service names
    }
    // The stock cap ($1) replaced by the caller's per-call cap: raised or lowered, never off.
    x402.setSpendControls({ maxAmountPerPayment: toUsd(maxPerCall) });
    x402.onBeforePaymentCreation(async ({ selectedRequirements: r, paymentRequired }) => {
      const amount = BigInt(r.amount);
      const refused = this.meter.refusal(amount, paymentRequired.resource?.url ? `paying ${paymentRequired.resource.url}` : 'a paid call');
      if (refused) {
        const id = ++this.refusalSeq;
        this.refusals.set(id, refused);
        return { abort: true, reason: `${refused.message} [sdk-refusal:${id}]` };
      }
      this.meter.reserved += amount;
    });
    x402.onPaymentCreationFailure(async ({ selectedRequirements: r }) => {
      this.meter.reserved -= BigInt(r.amount);
    });

    const base = opts.fetch ?? globalThis.fetch;
    // Under the x402 layer: sees the paid retry, and books its amount once the answer shows
    // whether it was charged (settled: PAYMENT-RESPONSE, or a success; refused: nothing charged).
    const metered = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
      const request = new Request(input, init);
      const signature = request.headers.get('payment-signature');
      if (!signature) return base(request);
      const amount = BigInt(decodePaymentSignatureHeader(signature).accepted.amount);
      let response: Response;
      try {
        response = await base(request);
      } catch (err) {
        this.meter.reserved -= amount;
        this.meter.spent += amount; // unknown outcome: counted, the cap stays safe
        throw err;
      }
      this.meter.reserved -= amount;
      if (response.headers.has('payment-response') || response.status < 400) this.meter.spent += amount;
      return response;
    };
    // First look at a 402: refuse with the caller's figures before the payment is even selected
    // (the x402 client's own cap would refuse too, with a generic message).
    const http = new x402HTTPClient(x402).onPaymentRequired(async ({ paymentRequired, requestUrl }) => {
      const amounts = paymentRequired.accepts.map((a) => BigInt(a.amount));
      if (amounts.length === 0) return;
      const cheapest = amounts.reduce((m, a) => (a < m ? a : m));
      const refused = this.meter.refusal(cheapest, `paying ${requestUrl}`);
      if (refused) throw refused;
    });
    const paying = wrapFetchWithPayment(metered, http);
    this.payFetch = async (input, init) => {
      try {
        return await paying(input, init);
      } catch (err) {
        const m = /\[sdk-refusal:(\d+)\]/.exec(err instanceof Error ? err.message : '');
        const refused = m ? this.refusals.get(Number(m[1])) : undefined;
        if (refused) {
          this.refusals.delete(Number(m![1]));
          throw refused;
        }
        throw err;
      }
    };
    this.api = createClient<paths>({ baseUrl: this.baseUrl, fetch: this.payFetch });
  }

  /**
   * Takes back what is left in this client's payment channel (`scheme: 'batch-settlement'`): one
   * transaction, which also lets the service claim the calls paid so far. Answers the amount
   * refunded (atomic USDC); 0n when the channel holds nothing more or none was opened.
   */
  async refundChannel(): Promise<bigint> {
    if (!this.channel) throw new Error("refundChannel needs scheme: 'batch-settlement'");
    try {
      const refunded = await this.channel.refund(`${this.baseUrl}/v1/agents?query=refund`);
      return refunded.success ? BigInt(refunded.amount ?? '0') : 0n;
    } catch (err) {
      if (/no (channel|balance)|nothing to refund|empty/i.test(err instanceof Error ? err.message : String(err))) return 0n;
      throw err;
    }
  }

  /** What this session paid (settled), what is in flight, and what the session cap still allows. */
  spending(): { spent: bigint; inFlight: bigint; remaining: bigint; maxPerCall: bigint; maxPerSession: bigint } {
    const { spent, reserved, maxPerCall, maxPerSession } = this.meter;
    return { spent, inFlight: reserved, remaining: maxPerSession - spent - reserved, maxPerCall, maxPerSession };
  }

  /** GET /v1/network (free, cached): chain, token, prices. */
  network(): Promise<NetworkInfo> {
    this.networkInfo ??= this.api.GET('/v1/network').then((r) => ok(r, 'network')).catch((e) => {
      this.networkInfo = null;
      throw e;
    });
    return this.networkInfo;
  }

  async searchAgents(query: string | NonNullable<paths['/v1/agents']['get']['parameters']['query']>): Promise<AgentSearchResult> {
    const q = typeof query === 'string' ? { query } : query;
    return ok(await this.api.GET('/v1/agents', { params: { query: q } }), 'searchAgents');
  }

  /** Create the task and fund its escrow (two payments: the create fee, then escrow + funding fee). */
  async hire(input: HireInput): Promise<Hired> {
    const net = await this.network();
    const budget = this.budgetOf(input.budget);
    const amount = BigInt(budget.amount);
    this.meter.ensure([BigInt(net.prices.create_task), amount + BigInt(net.prices.fund_task)], `hiring ${input.agent_id}`);
    const created = ok(
      await this.api.POST('/v1/tasks', {
        body: {
          agent_id: input.agent_id,
          description: input.description,
          budget,
          ...(input.requirements !== undefined && { requirements: input.requirements }),
          ...(input.callback_url !== undefined && { callback_url: input.callback_url }),
          ...(input.timeout_seconds !== undefined && { timeout_seconds: input.timeout_seconds }),
        },
      }),
      'create task',
    );
    const funded = ok(
      await this.api.POST('/v1/tasks/{id}/fund', { params: { path: { id: created.task_id } }, body: { amount: budget.amount } }),
      `fund ${created.task_id} (created, not funded)`,
    );
    return { task_id: created.task_id, created, funded };
  }

  async status(taskId: string): Promise<TaskStatus> {
    return ok(await this.api.GET('/v1/tasks/{id}/status', { params: { path: { id: taskId } } }), `status of ${taskId}`);
  }

  async result(taskId: string): Promise<TaskResult> {
    return ok(await this.api.GET('/v1/tasks/{id}/result', { params: { path: { id: taskId } } }), `result of ${taskId}`);
  }

  /** Status views of a task until it ends: the event stream (paid once), else polls of its status. */
  events(taskId: string, opts: FollowOptions<TaskStatus> = {}): AsyncGenerator<TaskStatus> {
    return this.follow(`/v1/tasks/${encodeURIComponent(taskId)}/events`, 'status', () => this.status(taskId), TERMINAL_TASK, opts);
  }

  /** Waits for the task to end and answers its last status view. */
  async wait(taskId: string, opts: FollowOptions<TaskStatus> = {}): Promise<TaskStatus> {
    let last: TaskStatus | undefined;
    for await (const view of this.events(taskId, opts)) last = view;
    if (!last || !TERMINAL_TASK(last)) throw new Error(`task ${taskId} did not end`);
    return last;
  }

  async hireAndWait(input: HireInput, opts: FollowOptions<TaskStatus> = {}): Promise<HireAndWaitResult> {
    const hired = await this.hire(input);
    const status = await this.wait(hired.task_id, opts);
    const result = status.status === 'completed' ? await this.result(hired.task_id) : null;
    return { ...hired, status, result };
  }

  /** POST /v1/tasks/{id}/cancel (paid). In progress: needs `accept_partial_refund: true`. */
  async cancel(taskId: string, body: { reason?: string; accept_partial_refund?: boolean } = {}): Promise<S['TaskCancelled']> {
    return ok(await this.api.POST('/v1/tasks/{id}/cancel', { params: { path: { id: taskId } }, body: { ...body, accept_partial_refund: body.accept_partial_refund ?? false } }), `cancel ${taskId}`);
  }

  /** Hires every item with ONE payment (POST /v1/batches), follows it to the end, answers the results in input order. */
  async batch(items: BatchInputItem[], opts: BatchOptions = {}): Promise<BatchResult> {
    const net = await this.network();
    const body = {
      items: items.map((i) => ({ ...i, budget: this.budgetOf(i.budget) })),
      policy: opts.policy ?? 'fail_fast',
      max_concurrency: opts.max_concurrency ?? 3,
      ...(opts.max_spend !== undefined && { max_spend: bigintOf(opts.max_spend).toString() }),
      ...(opts.callback_url !== undefined && { callback_url: opts.callback_url }),
    };
    const total = body.items.reduce((s, i) => s + BigInt(i.budget.amount), 0n) + BigInt(net.prices.create_batch);
    this.meter.ensure([total], `a batch of ${items.length} items`);
    const created = ok(await this.api.POST('/v1/batches', { body }), 'create batch');
    const id = created.batch_id;
    let last: Batch = created;
    opts.onProgress?.(created);
    if (!TERMINAL_BATCH(created)) {
      const getBatch = async () => ok(await this.api.GET('/v1/batches/{id}', { params: { path: { id } } }), `batch ${id}`);
      for await (const view of this.follow(`/v1/batches/${encodeURIComponent(id)}/events`, 'batch', getBatch, TERMINAL_BATCH, opts)) last = view;
    }
    return {
      batch_id: id,
      status: last.status,
      results: [...last.items]
        .sort((a, b) => a.index - b.index)
        .map((i) => ({ index: i.index, task_id: i.task_id, status: i.status, result: i.result, result_hash: i.result_hash, failure: i.failure })),
      failures: last.failures,
      totals: last.totals,
      batch: last,
    };
  }

  /** The wallet's settled x402 payments (GET /v1/receipts, free, SIWE-signed), every page. */
  async receipts(opts: { limit?: number } = {}): Promise<Receipt[]> {
    const all: Receipt[] = [];
    let cursor: string | undefined;
    do {
      const authorization = await this.signIn();
      const page = ok(
        await this.api.GET('/v1/receipts', { params: { query: { limit: opts.limit ?? 100, ...(cursor && { cursor }) } }, headers: { authorization } }),
        'receipts',
      );
      all.push(...page.receipts);
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    return all;
  }

  /** A fresh `Authorization: SIWE …` header for one signed request. */
  async signIn(): Promise<string> {
    const net = await this.network();
    const origin = new URL(this.baseUrl);
    const issuedAt = new Date();
    const message = createSiweMessage({
      address: this.account.address,
      domain: this.opts.authDomain ?? origin.host,
      uri: origin.origin,
      version: '1',
      chainId: net.chain_id,
      nonce: generateSiweNonce(),
      issuedAt,
      expirationTime: new Date(issuedAt.getTime() + 120_000),
      statement: 'Sign in to task-escrow',
    });
    const signature = await this.account.signMessage({ message });
    return `SIWE ${base64url(message)}.${signature}`;
  }

  private budgetOf(b: Atomic | Budget): Budget {
    if (typeof b === 'object') return b;
    return { amount: bigintOf(b).toString(), currency: 'USDC', chain: 'base' };
  }

  /**
   * Views until `done`: from the server-sent events at `path` (paid once; a dropped stream is
   * resumed once with Last-Event-ID), else — stream refused, unavailable or broken — by polling.
   */
  private async *follow<T>(path: string, eventName: string, poll: () => Promise<T>, done: (v: T) => boolean, opts: FollowOptions<T>): AsyncGenerator<T> {
    const deadline = Date.now() + (opts.timeoutMs ?? 600_000);
    const emit = (v: T) => {
      opts.onProgress?.(v);
      return v;
    };
    if (opts.transport !== 'poll') {
      let lastEventId: string | undefined;
      let reason = '';
      for (let attempt = 0; attempt < 2; attempt++) {
        if (attempt > 0 && !lastEventId) break;
        try {
          const headers: Record<string, string> = { accept: 'text/event-stream' };
          if (lastEventId) headers['last-event-id'] = lastEventId;
          const res = await this.payFetch(`${this.baseUrl}${path}`, { headers, ...(opts.signal && { signal: opts.signal }) });
          if (!res.ok || !res.body || !(res.headers.get('content-type') ?? '').includes('text/event-stream')) {
            await res.body?.cancel();
            reason = `stream answered ${res.status}`;
            break;
          }
          if (attempt === 0) opts.onTransport?.('sse');
          for await (const ev of parseSse(res.body)) {
            if (ev.id) lastEventId = ev.id;
            if (ev.event !== eventName || !ev.data) continue;
            const view = JSON.parse(ev.data) as T;
            yield emit(view);
            if (done(view)) return;
          }
          reason = 'stream ended before the end';
        } catch (err) {
          if (err instanceof SpendLimitError || opts.signal?.aborted) throw err;
          reason = `stream failed: ${err instanceof Error ? err.message : String(err)}`;
        }
      }
      opts.onTransport?.('poll', reason);
    } else opts.onTransport?.('poll', 'polling requested');
    let previous = '';
    for (;;) {
      const view = await poll();
      const text = JSON.stringify(view);
      if (text !== previous) yield emit(view);
      previous = text;
      if (done(view)) return;
      if (Date.now() > deadline) throw new Error(`gave up following ${path} after ${opts.timeoutMs ?? 600_000} ms`);
      await sleep(this.pollIntervalMs, opts.signal);
    }
  }
}

/** Shorthand for `new TaskEscrowClient(opts)`. */
export const createTaskEscrowClient = (opts: TaskEscrowClientOptions) => new TaskEscrowClient(opts);

function ok<T>(r: { data?: T; error?: unknown; response: Response }, context: string): T {
  if (r.error !== undefined || !r.response.ok || r.data === undefined) throw new TaskEscrowApiError(r.response.status, r.error, context);
  return r.data;
}

function base64url(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

interface SseEvent {
  id?: string;
  event: string;
  data: string;
}

/** Parses a text/event-stream body (fields id, event, data; comments ignored). */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let current: { id?: string; event: string; data: string[] } = { event: 'message', data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buffer.search(/\r?\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer[nl] === '\r' ? 2 : 1));
        if (line === '') {
          if (current.data.length || current.id) yield { ...(current.id && { id: current.id }), event: current.event, data: current.data.join('\n') };
          current = { event: 'message', data: [] };
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') current.data.push(value);
        else if (field === 'event') current.event = value;
        else if (field === 'id') current.id = value;
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}
