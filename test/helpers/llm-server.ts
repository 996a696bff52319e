import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A chat-completions provider on loopback (the OpenAI wire format), scripted by the test. */
export interface ChatRequest {
  model: string;
  messages: { role: string; content?: string | null; tool_call_id?: string; tool_calls?: unknown[] }[];
  /** The tools offered (OpenAI function tools), if any. */
  tools?: { type: string; function: { name: string; description?: string; parameters?: unknown } }[];
  authorization: string | undefined;
}

/** An answer: final text, or tool calls (`arguments` is JSON-serialised unless already a string). */
export type ChatAnswer = string | { content?: string | null; tool_calls: { id: string; name: string; arguments: unknown }[] };

export class LlmServer {
  readonly requests: ChatRequest[] = [];
  private server: Server | null = null;
  baseUrl = '';

  constructor(private readonly answer: (req: ChatRequest) => ChatAnswer | Promise<ChatAnswer>) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void (async () => {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Pick<ChatRequest, 'model' | 'messages' | 'tools'>;
          const r: ChatRequest = { model: body.model, messages: body.messages, ...(body.tools ? { tools: body.tools } : {}), authorization: req.headers.authorization };
          this.requests.push(r);
          const answer = await this.answer(r);
          const message =
            typeof answer === 'string'
              ? { role: 'assistant', content: answer }
              : {
                  role: 'assistant',
                  content: answer.content ?? null,
                  tool_calls: answer.tool_calls.map((c) => ({
                    id: c.id,
                    type: 'function',
                    function: { name: c.name, arguments: typeof c.arguments === 'string' ? c.arguments : JSON.stringify(c.arguments) },
                  })),
                };
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({
              id: `chatcmpl-${this.requests.length}`,
              object: 'chat.completion',
              model: body.model,
              choices: [{ index: 0, message, finish_reason: typeof answer === 'string' ? 'stop' : 'tool_calls' }],
              usage: { prompt_tokens: 120, completion_tokens: 30, total_tokens: 150 },
            }),
          );
        })().catch((err: unknown) => {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { message: err instanceof Error ? err.message : String(err) } }));
        });
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.baseUrl = `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}/v1`;
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
