/**
 * The hiring clients' callback receiver: every task is created with `callback_url` pointing here.
 * It checks each POST's signature (CALLBACK_SIGNING_SECRET, src/net/signing.ts), answers 200 and
 * records the event id per task, so the bench can check one callback per task (delivery is at
 * least once: a repeat of the same event id is counted apart, not as a second callback).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SIGNATURE_HEADER, verifyWebhookSignature } from '../../src/net/signing.js';

export interface CallbackFigures {
  /** POSTs received. */
  received: number;
  badSignature: number;
  /** Task id → event ids received (each once, in order). */
  eventsByTask: Map<string, string[]>;
  /** Event id → type (`task.completed`, …). */
  typeOf: Map<string, string>;
  /** Deliveries of an event id already received (at-least-once repeats). */
  repeats: number;
}

export class CallbackReceiver {
  readonly figures: CallbackFigures = { received: 0, badSignature: 0, eventsByTask: new Map(), typeOf: new Map(), repeats: 0 };
  private server: Server | undefined;
  url = '';

  constructor(private readonly secret: string) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        this.record(raw, req.headers[SIGNATURE_HEADER]);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/callbacks`;
    return this;
  }

  private record(raw: string, signature: string | string[] | undefined): void {
    const f = this.figures;
    f.received++;
    const header = Array.isArray(signature) ? signature[0] : signature;
    if (!header || !verifyWebhookSignature(this.secret, header, raw, Math.floor(Date.now() / 1000))) f.badSignature++;
    let event: { id?: string; type?: string; data?: { task_id?: string } };
    try {
      event = JSON.parse(raw);
    } catch {
      f.badSignature++;
      return;
    }
    const taskId = event.data?.task_id ?? '(no task id)';
    const id = event.id ?? '(no id)';
    const seen = f.eventsByTask.get(taskId) ?? [];
    if (seen.includes(id)) f.repeats++;
    else f.eventsByTask.set(taskId, [...seen, id]);
    f.typeOf.set(id, event.type ?? '?');
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
