/**
 * The MCP server (npm run mcp → mcp/server.ts) as a real child process against the real service
 * (x402 on, anvil, a webhook agent run by the dispatcher), driven by the MCP SDK's own client over
 * both transports: stdio (StdioClientTransport spawns it) and streamable HTTP (`--http --port 0`,
 * StreamableHTTPClientTransport). Every payment is the SDK's, from a demo wallet whose key reaches
 * the server only through TASK_ESCROW_PRIVATE_KEY.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { getDefaultEnvironment, StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult, Progress } from '@modelcontextprotocol/sdk/types.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { startClientHarness, type ClientHarness } from '../helpers/client-harness.js';
import type { PaidApp } from '../helpers/paid.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SERVER = path.join(ROOT, 'mcp/server.ts');
const TOOLS = ['cancel_task', 'delegate_batch', 'hire_agent', 'receipts', 'search_agents', 'task_result', 'task_status'];
const keyOf = (n: number) => ANVIL_ACCOUNTS[DEV_ROLES.demo[n]!]!.privateKey;

let p: PaidApp;
let harness: ClientHarness;
let agentId: string;
/** Everything the servers wrote and every tool answered, to check that no key ever shows. */
const transcripts: string[] = [];
const clients: Client[] = [];
const children: ChildProcess[] = [];

function serverEnv(wallet: number, extra: Record<string, string> = {}): Record<string, string> {
  return { ...getDefaultEnvironment(), TASK_ESCROW_URL: p.baseUrl, TASK_ESCROW_PRIVATE_KEY: keyOf(wallet), ...extra };
}

async function stdioClient(wallet: number, extra: Record<string, string> = {}): Promise<Client> {
  const transport = new StdioClientTransport({ command: process.execPath, args: ['--import', 'tsx', SERVER], cwd: ROOT, env: serverEnv(wallet, extra), stderr: 'pipe' });
  transport.stderr?.on('data', (c: Buffer) => transcripts.push(c.toString('utf8')));
  const client = new Client({ name: 'mcp-test-stdio', version: '1.0.0' });
  await client.connect(transport);
  clients.push(client);
  return client;
}

async function httpClient(wallet: number): Promise<Client> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER, '--http', '--port', '0'], { cwd: ROOT, env: serverEnv(wallet), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const url = await new Promise<string>((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`no URL from the HTTP server: ${err}`)), 30_000);
    child.stderr!.on('data', (c: Buffer) => {
      err += c.toString('utf8');
      transcripts.push(c.toString('utf8'));
      const m = /on (http:\/\/127\.0\.0\.1:\d+\/mcp)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`HTTP server exited ${code}: ${err}`)));
  });
  const client = new Client({ name: 'mcp-test-http', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  clients.push(client);
  return client;
}

function textOf(r: unknown): string {
  const content = (r as CallToolResult).content;
  const text = content.map((c) => (c.type === 'text' ? c.text : '')).join('');
  transcripts.push(text);
  return text;
}
const jsonOf = <T>(r: unknown): T => JSON.parse(textOf(r)) as T;

beforeAll(async () => {
  harness = await startClientHarness('MCP');
  ({ p, agentId } = harness);
}, 60_000);

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  for (const c of children) c.kill('SIGTERM');
  await harness?.stop();
});

describe('the task-escrow MCP server, end to end', () => {
  it('stdio: lists the 7 tools; hire_agent with wait returns the result; receipts lists the payments', async () => {
    const client = await stdioClient(0);
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(TOOLS);
    for (const t of tools) expect(t.description!.length, t.name).toBeGreaterThan(80);
    expect(tools.find((t) => t.name === 'hire_agent')!.inputSchema.required).toEqual(expect.arrayContaining(['description', 'budget']));

    const before = await p.balance(p.demo(0).address);
    const found = jsonOf<{ agents: { id: string }[] }>(await client.callTool({ name: 'search_agents', arguments: { query: 'mcp-writing' } }));
    expect(found.agents.map((a) => a.id)).toEqual([agentId]);

    const progress: Progress[] = [];
    const hired = await client.callTool(
      { name: 'hire_agent', arguments: { agent_id: agentId, description: 'a tagline', budget: '0.2', wait: true } },
      undefined,
      { onprogress: (pr) => progress.push(pr), timeout: 60_000 },
    );
    expect(hired.isError, textOf(hired)).toBeFalsy();
    const out = jsonOf<{ task_id: string; status: string; result: { content: string } }>(hired);
    expect(out.task_id).toMatch(/^task_/);
    expect(out.status).toBe('completed');
    expect(out.result.content).toBe('a tagline done');
    expect(progress.at(-1)).toMatchObject({ progress: 100, total: 100 });

    const status = jsonOf<{ status: string }>(await client.callTool({ name: 'task_status', arguments: { task_id: out.task_id } }));
    expect(status.status).toBe('completed');
    const result = jsonOf<{ result: { content: string }; result_hash: string }>(await client.callTool({ name: 'task_result', arguments: { task_id: out.task_id } }));
    expect(result.result.content).toBe('a tagline done');

    const receipts = jsonOf<{ receipts: { kind: string; amount: string; task_id: string | null; tx_hash: string }[]; count: number }>(
      await client.callTool({ name: 'receipts', arguments: {} }),
    );
    // search + create + (escrow + fund fee) + event stream + result (hire) + status + result: seven settled payments.
    expect(receipts.count).toBe(7);
    expect(receipts.receipts.filter((r) => r.kind === 'escrow_funding').map((r) => r.task_id)).toEqual([out.task_id]);
    for (const r of receipts.receipts) expect(r.tx_hash).toMatch(/^0x[0-9a-f]{64}$/);
    const paid = receipts.receipts.reduce((s, r) => s + BigInt(r.amount), 0n);
    expect(await p.balance(p.demo(0).address)).toBe(before - paid);
  }, 90_000);

  it('HTTP: lists the 7 tools; delegate_batch returns ordered results and sends progress notifications', async () => {
    const client = await httpClient(1);
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(TOOLS);

    const progress: Progress[] = [];
    const res = await client.callTool(
      {
        name: 'delegate_batch',
        arguments: {
          items: [
            { agent_id: agentId, description: 'first', budget: '0.2' },
            { agent_id: agentId, description: 'breaks', budget: '0.15' },
            { agent_id: agentId, description: 'third', budget: '0.1', depends_on: [0] },
          ],
          policy: 'continue',
        },
      },
      undefined,
      { onprogress: (pr) => progress.push(pr), timeout: 60_000 },
    );
    expect(res.isError, textOf(res)).toBeFalsy();
    const out = jsonOf<{ status: string; results: { index: number; status: string; result: { content: unknown } | null }[]; failures: { index: number; refunded: string }[] }>(res);
    expect(out.status).toBe('partially_failed');
    expect(out.results.map((r) => [r.index, r.status, r.result?.content ?? null])).toEqual([
      [0, 'completed', 'first done'],
      [1, 'failed', null],
      [2, 'completed', 'third done'],
    ]);
    expect(out.failures).toEqual([expect.objectContaining({ index: 1, refunded: '150000' })]);

    expect(progress.length).toBeGreaterThanOrEqual(2);
    for (const pr of progress) expect(pr.total).toBe(3);
    const values = progress.map((pr) => pr.progress);
    expect(values).toEqual([...values].sort((a, b) => a - b));
    expect(new Set(values).size).toBe(values.length);
    expect(values.at(-1)).toBe(3);
    expect(progress.at(-1)!.message).toMatch(/3\/3 items ended/);

    const receipts = jsonOf<{ receipts: { kind: string }[] }>(await client.callTool({ name: 'receipts', arguments: {} }));
    expect(receipts.receipts.length).toBeGreaterThanOrEqual(1);
  }, 90_000);

  it('a spend cap refusal is an isError result with the code and message, and no money moves', async () => {
    const address = p.demo(3).address;
    const before = await p.balance(address);
    const client = await stdioClient(3, { TASK_ESCROW_MAX_PER_CALL: '1', TASK_ESCROW_MAX_PER_SESSION: '2' });
    const refused = await client.callTool({ name: 'hire_agent', arguments: { agent_id: agentId, description: 'too dear', budget: '1.5', wait: true } });
    expect(refused.isError).toBe(true);
    const err = jsonOf<{ error: { name: string; code: string; cap: string; limit: string; message: string } }>(refused);
    expect(err.error).toMatchObject({ name: 'SpendLimitError', code: 'spend_limit', cap: 'maxPerCall', limit: '1000000' });
    expect(err.error.message).toMatch(/nothing was paid/);

    const batch = await client.callTool({ name: 'delegate_batch', arguments: { items: [{ agent_id: agentId, description: 'x', budget: '0.9' }, { agent_id: agentId, description: 'y', budget: '0.9' }, { agent_id: agentId, description: 'z', budget: '0.9' }] } });
    expect(batch.isError).toBe(true);
    expect(jsonOf<{ error: { code: string } }>(batch).error.code).toBe('spend_limit');

    // The service's own errors come back as tool errors too, with its code.
    const missing = await client.callTool({ name: 'task_status', arguments: { task_id: 'nope' } });
    expect(missing.isError).toBe(true);
    expect(jsonOf<{ error: { name: string; code: string; status: number } }>(missing).error).toMatchObject({ name: 'TaskEscrowApiError', code: 'validation_error', status: 400 });

    const receipts = jsonOf<{ receipts: unknown[] }>(await client.callTool({ name: 'receipts', arguments: {} }));
    expect(receipts.receipts).toEqual([]);
    expect(await p.balance(address)).toBe(before);
  }, 60_000);

  it('never shows a private key', () => {
    expect(transcripts.length).toBeGreaterThan(5);
    const all = transcripts.join('\n').toLowerCase();
    for (const n of [0, 1, 3]) expect(all).not.toContain(keyOf(n).toLowerCase().slice(2));
  });
});
