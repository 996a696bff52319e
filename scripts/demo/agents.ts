import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { PrivateKeyAccount } from 'viem/accounts';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { SIGNATURE_HEADER, verifyWebhookSignature } from '../../src/net/signing.js';

/**
 * Webhook agents the demo serves itself on loopback, written the way a remote agent would be:
 * every request's `x-task-escrow-signature` is checked with the shared secret; a `sync` agent
 * answers 200 with its result after a short think, an `async` agent answers 202 at once, then
 * reports progress and delivers through the API, signed (SIWE) as the agent's owner wallet.
 */

export interface AgentResult {
  type: 'text' | 'image' | 'file' | 'structured';
  content: unknown;
  metadata: { tokens_used: number | null; model: string | null; duration_seconds: number | null; [extra: string]: unknown };
}

export interface Brief {
  id: string;
  description: string;
  attempt: number;
  /** A batch item's predecessors (its depends_on) with their results: `task.predecessors` of the brief, else empty. */
  predecessors: Predecessor[];
}

/** One entry of `task.predecessors[]`: a result the batch item may build on, or why there is none. */
export interface Predecessor {
  task_id: string;
  index: number;
  status: string;
  result: AgentResult | null;
  failure: string | null;
}

interface AssignedEvent {
  type: 'task.assigned';
  task: { id: string; description: string; attempt?: number; predecessors?: Predecessor[] };
  callbacks: { progress: string; deliver: string };
}

interface OtherEvent {
  type: string;
  task: { id: string };
}

export interface DemoAgentOptions {
  name: string;
  /** Wallet that registered the agent: the async agent signs its progress and delivery with it. */
  owner: PrivateKeyAccount;
  mode: 'sync' | 'async';
  /** Milliseconds between the steps of the work (sync: the think before answering). */
  stepMs: number;
  /** The work itself: the result for a brief. */
  work(brief: Brief): AgentResult;
  /** Progress reports of an async agent before it delivers (percentages with a draft). */
  progress?: (brief: Brief) => { percent: number; draft: unknown }[];
  log(line: string): void;
}

export class DemoAgent {
  readonly secret = `demo-agent-secret-${randomBytes(24).toString('hex')}`;
  url = '';
  /** Briefs received with a valid signature, by task id. */
  readonly briefs = new Map<string, Brief>();
  /** Errors of the async work (a failed progress report or delivery); the demo stops on them. */
  readonly errors: string[] = [];
  private server: Server | null = null;
  private readonly jobs = new Set<Promise<void>>();
  private readonly abort = new AbortController();

  constructor(readonly opts: DemoAgentOptions) {}

  get name(): string {
    return this.opts.name;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.errors.push(`webhook handler failed: ${String(err)}`);
        if (!res.headersSent) res.writeHead(500).end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(0, '127.0.0.1', resolve);
    });
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/tasks`;
    return this;
  }

  /** Abandons the async work in flight (progress reports, deliveries not yet sent). */
  abortWork(): void {
    this.abort.abort();
  }

  /** Stops the async work in flight, waits for it, then closes the HTTP server. */
  async stop(): Promise<void> {
    this.abortWork();
    await Promise.allSettled([...this.jobs]);
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = null;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const signature = req.headers[SIGNATURE_HEADER];
    if (req.method !== 'POST' || !verifyWebhookSignature(this.secret, typeof signature === 'string' ? signature : undefined, raw, Math.floor(Date.now() / 1000))) {
      this.opts.log(`${this.name}: refused a request without a valid signature`);
      reply(res, 401, { error: 'invalid signature' });
      return;
    }
    const event = JSON.parse(raw) as AssignedEvent | OtherEvent;
    if (event.type !== 'task.assigned') {
      this.opts.log(`${this.name}: ${event.type} for ${event.task.id}`);
      reply(res, 200, { ok: true });
      return;
    }
    const assigned = event as AssignedEvent;
    const brief: Brief = {
      id: assigned.task.id,
      description: assigned.task.description,
      attempt: assigned.task.attempt ?? 1,
      predecessors: assigned.task.predecessors ?? [],
    };
    this.briefs.set(brief.id, brief);
    if (this.opts.mode === 'sync') {
      this.opts.log(`${this.name}: brief "${brief.description}" for ${brief.id} (signature ok)${describePredecessors(brief)}, working…`);
      await sleep(this.opts.stepMs, this.abort.signal);
      const result = this.opts.work(brief);
      this.opts.log(`${this.name}: answered 200 with the result of ${brief.id}`);
      reply(res, 200, { result });
      return;
    }
    this.opts.log(`${this.name}: brief "${brief.description}" for ${brief.id} (signature ok), answered 202`);
    reply(res, 202);
    const job = this.workAsync(brief, assigned.callbacks)
      .catch((err: unknown) => {
        if (!this.abort.signal.aborted) this.errors.push(`${this.name} on ${brief.id}: ${err instanceof Error ? err.message : String(err)}`);
      })
      .finally(() => this.jobs.delete(job));
    this.jobs.add(job);
  }

  private async workAsync(brief: Brief, callbacks: AssignedEvent['callbacks']): Promise<void> {
    const signal = this.abort.signal;
    for (const step of this.opts.progress?.(brief) ?? []) {
      await sleep(this.opts.stepMs, signal);
      await this.callApi(callbacks.progress, { progress_percent: step.percent, intermediate_result: step.draft });
      this.opts.log(`${this.name}: reported ${step.percent}% on ${brief.id}`);
    }
    await sleep(this.opts.stepMs, signal);
    await this.callApi(callbacks.deliver, { result: this.opts.work(brief) });
    this.opts.log(`${this.name}: delivered ${brief.id}`);
  }

  /** POST to the service as the agent's owner wallet (SIWE). */
  private async callApi(url: string, body: unknown): Promise<void> {
    const target = new URL(url);
    const authorization = await signInHeader(this.opts.owner, { domain: target.host, uri: target.origin });
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization },
      body: JSON.stringify(body),
      signal: this.abort.signal,
    });
    if (!res.ok) {
      const text = await res.text();
      throw new Error(`POST ${target.pathname} answered ${res.status}: ${describeError(text)}`);
    }
    await res.body?.cancel();
  }
}

function reply(res: ServerResponse, status: number, body?: unknown): void {
  res.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

/** ", with the results of task_… (item 0)" when the brief carries predecessors. */
function describePredecessors(brief: Brief): string {
  if (brief.predecessors.length === 0) return '';
  const each = brief.predecessors.map((p) => `${p.task_id} (item ${p.index}, ${p.result ? `${p.result.type} result` : `no result: ${p.failure ?? p.status}`})`);
  return `, with the results of ${each.join(', ')}`;
}

// ------------------------------------------------------------- the two-step pipeline's agents

/** What Field Scout finds: `structured` content with a topic, findings and an audience. */
export interface ResearchContent {
  topic: string;
  findings: string[];
  audience: string;
}

const FINDINGS = [
  'off-grid households spend up to 15% of their income on kerosene',
  'buyers rank hours of light above price',
  'schools and market stalls buy first, then families follow',
];

/** Field Scout (research): a deterministic research note on the brief's topic. */
export function fieldScoutWork(brief: Brief): AgentResult {
  const content: ResearchContent = { topic: brief.description, findings: FINDINGS, audience: 'off-grid households in East Africa' };
  return { type: 'structured', content, metadata: { tokens_used: 412, model: 'field-scout-1', duration_seconds: 0.8, sources: 3 } };
}

/**
 * Story Smith (writing): writes from the research its brief carries in `task.predecessors[]`, and
 * says which task it used. Without a research result it writes nothing up and says so.
 */
export function storySmithWork(brief: Brief): AgentResult {
  const research = brief.predecessors.find((p) => p.result?.type === 'structured');
  const metadata = { tokens_used: 188, model: 'story-smith-1', duration_seconds: 0.8 };
  if (!research?.result) {
    const why = brief.predecessors.map((p) => p.failure ?? p.status).join('; ') || 'no predecessor';
    return { type: 'text', content: `No research to write from (${why}).`, metadata: { ...metadata, based_on: [] } };
  }
  const notes = research.result.content as ResearchContent;
  const [cost, priority, firstBuyers] = notes.findings;
  const text =
    `Research ${research.task_id} found that ${cost}, and that ${priority}. ` +
    `So the pitch to ${notes.audience}: twelve hours of SunBeam light a night, for less than a month of kerosene. ` +
    `Where to start: ${firstBuyers}.`;
  return { type: 'text', content: text, metadata: { ...metadata, based_on: [research.task_id], findings_used: notes.findings.length } };
}

/** The `error.code: message` of the service's error shape, or the raw text. */
export function describeError(text: string): string {
  try {
    const json = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (json.error) return `${json.error.code ?? 'error'}: ${json.error.message ?? ''}`.trim();
  } catch {
    /* not JSON */
  }
  return text.slice(0, 200) || '(empty body)';
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new Error('aborted'));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Error('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
