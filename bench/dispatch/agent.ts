/**
 * Parent side: the instant webhook agent every phase dispatches to, on loopback in this process.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SIGNATURE_HEADER, verifyWebhookSignature } from '../../src/net/signing.js';
import type { Child } from './children.js';
import { AGENT_SECRET } from './protocol.js';

/** A webhook agent on loopback: verifies every signature, answers 200 with a result at once, counts task ids. */
export class InstantAgent {
  readonly assigned = new Map<string, number>();
  badSignatures = 0;
  otherEvents = 0;
  private server: Server | null = null;
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/tasks`;
    return this;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const ok = verifyWebhookSignature(AGENT_SECRET, req.headers[SIGNATURE_HEADER] as string | undefined, raw, Math.floor(Date.now() / 1000));
    if (!ok) {
      this.badSignatures++;
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"bad signature"}');
      return;
    }
    const body = JSON.parse(raw) as { type: string; task: { id: string } };
    if (body.type !== 'task.assigned') {
      this.otherEvents++;
      res.writeHead(200).end();
      return;
    }
    this.assigned.set(body.task.id, (this.assigned.get(body.task.id) ?? 0) + 1);
    const result = { result: { type: 'text', content: `done ${body.task.id}`, metadata: { tokens_used: 1, model: 'instant', duration_seconds: 0 } } };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(result));
  }

  /** This agent registered in the child's app under `name`, paying out to `payout`: its agent id there. */
  register(child: Child, name: string, payout: string): Promise<string> {
    return child.call<string>({ type: 'register-agent', url: this.url, payout, name });
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
