import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LocalAccount } from 'viem';
import { signInHeader } from '../../auth/siwe-client.js';
import { SIGNATURE_HEADER, verifyWebhookSignature } from '../../net/signing.js';
import type { BuiltinAgent } from './catalog.js';
import type { WorkResult } from './work.js';

/**
 * The built-in agents' webhook endpoints, on a loopback HTTP server of this process. They speak
 * the webhook wire protocol as a remote agent does (src/dispatcher/runtimes/webhook.ts):
 * - every request must carry a valid `x-task-escrow-signature` made with that agent's secret;
 * - `task.assigned`: the agent works a little (the catalog's steps), reports each step's progress
 *   to the brief's `callbacks.progress`, signed (SIWE) as its owner wallet, then answers 200 with
 *   the result;
 * - `task.cancelled`: the work in flight for that task stops; answered 200.
 * A run the dispatcher gives up on (timeout, cancel, shutdown) closes the request, which stops it too.
 * Answering synchronously keeps a run the dispatcher's to retry when this process dies mid-work.
 */

export interface AgentServerLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface BuiltinAgentServerOptions {
  agents: readonly BuiltinAgent[];
  /** The agents' owner wallet: signs their progress reports. */
  owner: LocalAccount;
  /** The service's chain id (SIWE messages name it). */
  chainId: number;
  /** Pause before each progress step and before the answer (the simulated work). */
  stepMs: number;
  log: AgentServerLog;
}

/** Largest request body accepted (a brief is a few KiB; the service caps requirements). */
const MAX_BODY_BYTES = 1024 * 1024;
const PROGRESS_TIMEOUT_MS = 5_000;

interface Assigned {
  type: 'task.assigned';
  task: { id: string; description: string; requirements: unknown };
  callbacks: { progress: string; deliver: string };
}

export class BuiltinAgentServer {
  private server: Server | null = null;
  private origin = '';
  /** Each agent's webhook secret, by slug: new at every start, written into its runtime by the registry. */
  private readonly secrets = new Map<string, string>();
  /** Work in flight, by task id: a cancellation notice aborts it. */
  private readonly running = new Map<string, AbortController>();

  constructor(private readonly opts: BuiltinAgentServerOptions) {
    for (const agent of opts.agents) this.secrets.set(agent.slug, randomBytes(32).toString('hex'));
  }

  async start(): Promise<this> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.opts.log.warn({ err }, 'built-in agent failed');
        if (!res.headersSent) reply(res, 500, { error: 'internal error' });
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    this.server = server;
    this.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this;
  }

  /** The webhook runtime of a built-in agent (its URL on this server and its secret). */
  runtimeOf(agent: BuiltinAgent): Record<string, unknown> {
    if (!this.server) throw new Error('the built-in agent server is not started');
    return { kind: 'webhook', url: `${this.origin}/agents/${agent.slug}`, secret: this.secrets.get(agent.slug)!, timeout_ms: 30_000 };
  }

  async stop(): Promise<void> {
    for (const controller of this.running.values()) controller.abort();
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const slug = /^\/agents\/([a-z0-9-]+)$/.exec(req.url ?? '')?.[1];
    const agent = this.opts.agents.find((a) => a.slug === slug);
    if (req.method !== 'POST' || !agent) return reply(res, 404, { error: 'no such agent' });
    const raw = await readBody(req);
    if (raw === null) return reply(res, 413, { error: 'body too large' });
    const signature = req.headers[SIGNATURE_HEADER];
    const now = Math.floor(Date.now() / 1000);
    if (!verifyWebhookSignature(this.secrets.get(agent.slug)!, typeof signature === 'string' ? signature : undefined, raw, now)) {
      return reply(res, 401, { error: 'invalid signature' });
    }
    const event = JSON.parse(raw) as { type?: string; task?: { id?: string } };
    if (event.type === 'task.cancelled') {
      this.running.get(String(event.task?.id))?.abort();
      return reply(res, 200, { ok: true });
    }
    if (event.type !== 'task.assigned') return reply(res, 400, { error: `unknown event ${String(event.type)}` });
    const result = await this.work(agent, event as Assigned, res);
    if (result) reply(res, 200, { result });
  }

  /** The simulated work: progress steps, then the deterministic result (null if it was stopped). */
  private async work(agent: BuiltinAgent, event: Assigned, res: ServerResponse): Promise<WorkResult | null> {
    const taskId = event.task.id;
    const controller = new AbortController();
    this.running.set(taskId, controller);
    // the dispatcher closed the request (timeout, cancellation, shutdown): stop working
    const onClose = () => {
      if (!res.writableEnded) controller.abort();
    };
    res.once('close', onClose);
    try {
      this.opts.log.info({ agent: agent.name, task_id: taskId }, 'built-in agent working');
      for (const step of agent.steps) {
        if (!(await pause(this.opts.stepMs, controller.signal))) return null;
        await this.reportProgress(event.callbacks.progress, step.percent, step.note, controller.signal);
      }
      if (!(await pause(this.opts.stepMs, controller.signal))) return null;
      const result = agent.work({ description: event.task.description, requirements: event.task.requirements });
      const simulated = ((agent.steps.length + 1) * this.opts.stepMs) / 1000;
      return { ...result, metadata: { ...result.metadata, duration_seconds: simulated } };
    } finally {
      res.off('close', onClose);
      if (this.running.get(taskId) === controller) this.running.delete(taskId);
    }
  }

  /** POST /v1/tasks/{id}/progress as the owner wallet; best effort (a failed report is logged, the work goes on). */
  private async reportProgress(url: string, percent: number, note: string, signal: AbortSignal): Promise<void> {
    try {
      const target = new URL(url);
      const authorization = await signInHeader(this.opts.owner, { domain: target.host, uri: target.origin, chainId: this.opts.chainId });
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization },
        body: JSON.stringify({ progress_percent: percent, intermediate_result: { note } }),
        signal: AbortSignal.any([signal, AbortSignal.timeout(PROGRESS_TIMEOUT_MS)]),
      });
      if (!res.ok) this.opts.log.warn({ status: res.status, url }, 'built-in agent: progress report refused');
      await res.body?.cancel();
    } catch (err) {
      if (!signal.aborted) this.opts.log.warn({ err, url }, 'built-in agent: progress report failed');
    }
  }
}

/** The request body, or null past MAX_BODY_BYTES. */
async function readBody(req: IncomingMessage): Promise<string | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return null;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** Waits `ms`; false if `signal` aborted first. */
function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
