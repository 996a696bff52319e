import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A chat-completions provider on loopback speaking the OpenAI wire format, standing in for a real
 * LLM when none is configured. It plays a coordinator: offered the `delegate_task` tool, it calls it
 * once with the children it was given (`children`); handed the tool's answer, it writes its final
 * answer from the children's results, in the order the answer lists them. Every request is kept.
 */

export interface StandInRequest {
  model: string;
  messages: { role: string; content?: string | null; tool_call_id?: string; tool_calls?: unknown[] }[];
  tools?: { type: string; function: { name: string } }[];
}

/** One task of a delegate_task call, as the tool takes it. */
export interface DelegateTaskItem {
  agent_id: string;
  description: string;
  budget: string;
}

/** The delegate_task tool's answer (the part the stand-in and the demo read). */
export interface DelegateToolAnswer {
  batch_id: string;
  children: { index: number; task_id: string; agent_id: string; status: string; result: { type: string; content: unknown } | null; failure: string | null; escrow: string; paid_to_agent: string; returned: string }[];
  escrow: { carved: string; returned: string; remaining: string };
}

export class LlmStandIn {
  readonly requests: StandInRequest[] = [];
  /** The tasks the coordinator delegates (set once the children's agents are registered). */
  children: DelegateTaskItem[] = [];
  baseUrl = '';
  private server: Server | null = null;

  /** The delegate_task answers the model was handed, in order. */
  get toolAnswers(): DelegateToolAnswer[] {
    const seen = new Set<string>();
    const answers: DelegateToolAnswer[] = [];
    for (const r of this.requests) {
      for (const m of r.messages) {
        if (m.role !== 'tool' || !m.tool_call_id || seen.has(m.tool_call_id)) continue;
        seen.add(m.tool_call_id);
        try {
          const parsed = JSON.parse(String(m.content)) as Partial<DelegateToolAnswer>;
          if (Array.isArray(parsed.children)) answers.push(parsed as DelegateToolAnswer);
        } catch {
          /* not an answer of delegate_task */
        }
      }
    }
    return answers;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as StandInRequest;
          this.requests.push(body);
          const message = this.answer(body);
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({
              id: `chatcmpl-stand-in-${this.requests.length}`,
              object: 'chat.completion',
              model: body.model,
              choices: [{ index: 0, message, finish_reason: message.tool_calls ? 'tool_calls' : 'stop' }],
              usage: { prompt_tokens: 180, completion_tokens: 60, total_tokens: 240 },
            }),
          );
        } catch (err) {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { message: err instanceof Error ? err.message : String(err) } }));
        }
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(0, '127.0.0.1', resolve);
    });
    this.baseUrl = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
    return this;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = null;
  }

  private answer(req: StandInRequest): { role: 'assistant'; content: string | null; tool_calls?: unknown[] } {
    const tool = [...req.messages].reverse().find((m) => m.role === 'tool');
    const offered = req.tools?.some((t) => t.function.name === 'delegate_task') ?? false;
    if (!tool && offered && this.children.length > 0) {
      return {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'call_delegate_1', type: 'function', function: { name: 'delegate_task', arguments: JSON.stringify({ tasks: this.children }) } }],
      };
    }
    if (!tool) return { role: 'assistant', content: 'No children to hire: nothing to combine.' };
    let outcome: Partial<DelegateToolAnswer> & { error?: string };
    try {
      outcome = JSON.parse(String(tool.content)) as typeof outcome;
    } catch {
      return { role: 'assistant', content: `delegate_task answered something unreadable: ${String(tool.content).slice(0, 200)}` };
    }
    if (!outcome.children) return { role: 'assistant', content: `Could not delegate: ${outcome.error ?? 'no children'}` };
    const parts = outcome.children.map((c) => {
      const text = c.result ? (typeof c.result.content === 'string' ? c.result.content : JSON.stringify(c.result.content)) : `no result (${c.failure ?? c.status})`;
      return `[${c.index}] ${c.task_id} ${c.status}: ${text.length > 160 ? `${text.slice(0, 159)}…` : text}`;
    });
    return { role: 'assistant', content: `Launch brief from ${outcome.children.length} children, in the order asked. ${parts.join(' ')}` };
  }
}
