import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SIGNATURE_HEADER, verifyWebhookSignature } from '../../src/dispatcher/runtimes/webhook.js';

/** What a remote agent received: the parsed body and whether our signature verified. */
export interface Received {
  type: string;
  taskId: string;
  attempt: number;
  body: Record<string, unknown>;
  signatureValid: boolean;
}

export type AgentReply = { status: number; body?: unknown } | 'hang';

/**
 * A real webhook agent on loopback: verifies the signature of every request with the shared
 * secret, records it, and answers what the test's handler says ('hang' = never answers).
 */
export class AgentServer {
  readonly received: Received[] = [];
  private server: Server | null = null;
  private readonly open = new Set<ServerResponse>();
  url = '';

  constructor(
    readonly secret: string,
    private readonly handler: (r: Received) => AgentReply | Promise<AgentReply>,
  ) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}/tasks`;
    return this;
  }

  requestsFor(taskId: string, type = 'task.assigned'): Received[] {
    return this.received.filter((r) => r.taskId === taskId && r.type === type);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const body = JSON.parse(raw) as { type: string; task: { id: string; attempt?: number } };
    const signatureValid = verifyWebhookSignature(this.secret, req.headers[SIGNATURE_HEADER] as string, raw, Math.floor(Date.now() / 1000));
    const r: Received = { type: body.type, taskId: body.task.id, attempt: body.task.attempt ?? 0, body, signatureValid };
    this.received.push(r);
    const reply = signatureValid ? await this.handler(r) : { status: 401, body: { error: 'bad signature' } };
    if (reply === 'hang') {
      this.open.add(res);
      return;
    }
    res.writeHead(reply.status, { 'content-type': 'application/json' });
    res.end(reply.body === undefined ? '' : JSON.stringify(reply.body));
  }

  async stop(): Promise<void> {
    for (const res of this.open) res.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
