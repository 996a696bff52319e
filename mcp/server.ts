/**
 * task-escrow MCP server: the SDK's calls as MCP tools (mcp/tools.ts), paid from the wallet in
 * TASK_ESCROW_PRIVATE_KEY under a per-session spend cap (mcp/settings.ts).
 *
 *   npm run mcp                                   # stdio (for an MCP host that spawns it)
 *   npm run mcp -- --http --port 3333             # streamable HTTP on http://127.0.0.1:3333/mcp
 *
 * Options: --http, --port N (default 3333; 0 = any free port), --max-per-call USDC, --max-per-session USDC.
 * Over HTTP every MCP session (Mcp-Session-Id) has its own SDK client, hence its own spend meter.
 * Logs go to stderr only (stdout is the stdio transport); the private key is never written.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { clientFor, readSettings, redactor, SettingsError, type Env, type McpSettings } from './settings.js';
import { createMcpServer } from './tools.js';

const log = (redact: (t: string) => string, text: string) => process.stderr.write(`${redact(text)}\n`);

async function serveStdio(settings: McpSettings, redact: (t: string) => string): Promise<void> {
  const server = createMcpServer(clientFor(settings), redact);
  const transport = new StdioServerTransport();
  await server.connect(transport);
  // The host closed our stdin: the session is over.
  process.stdin.once('end', () => process.exit(0));
  log(redact, `task-escrow MCP server on stdio (service ${settings.baseUrl}, payer ${settings.account.address})`);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 4 * 1024 * 1024) throw new Error('body too large');
    chunks.push(c as Buffer);
  }
  const raw = Buffer.concat(chunks).toString('utf8');
  return raw ? JSON.parse(raw) : undefined;
}

function jsonRpcError(res: ServerResponse, status: number, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

/** Streamable HTTP on 127.0.0.1, stateful: one transport + McpServer + SDK client per session. */
export async function serveHttp(settings: McpSettings, port: number, redact: (t: string) => string): Promise<{ url: string; close: () => Promise<void> }> {
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  let allowedHosts: string[] = [];
  const http = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      if (url.pathname !== '/mcp') return jsonRpcError(res, 404, 'not found: the MCP endpoint is /mcp');
      const sessionId = req.headers['mcp-session-id'];
      const existing = typeof sessionId === 'string' ? sessions.get(sessionId) : undefined;
      if (req.method === 'POST') {
        let body: unknown;
        try {
          body = await readJson(req);
        } catch (err) {
          return jsonRpcError(res, 400, `invalid JSON body: ${(err as Error).message}`);
        }
        if (existing) return existing.handleRequest(req, res, body);
        if (sessionId !== undefined) return jsonRpcError(res, 404, 'unknown session');
        if (!isInitializeRequest(body)) return jsonRpcError(res, 400, 'no session: send initialize first');
        const transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => void sessions.set(id, transport),
          enableDnsRebindingProtection: true,
          allowedHosts,
        });
        transport.onclose = () => {
          if (transport.sessionId) sessions.delete(transport.sessionId);
        };
        await createMcpServer(clientFor(settings), redact).connect(transport);
        return transport.handleRequest(req, res, body);
      }
      if (req.method === 'GET' || req.method === 'DELETE') {
        if (!existing) return jsonRpcError(res, sessionId === undefined ? 400 : 404, 'unknown or missing Mcp-Session-Id');
        return existing.handleRequest(req, res);
      }
      res.writeHead(405, { allow: 'GET, POST, DELETE' }).end();
    })().catch((err: unknown) => {
      log(redact, `mcp http: ${err instanceof Error ? err.message : String(err)}`);
      if (!res.headersSent) jsonRpcError(res, 500, 'internal error');
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, '127.0.0.1', () => resolve());
  });
  const actual = (http.address() as AddressInfo).port;
  allowedHosts = [`127.0.0.1:${actual}`, `localhost:${actual}`];
  const url = `http://127.0.0.1:${actual}/mcp`;
  log(redact, `task-escrow MCP server on ${url} (service ${settings.baseUrl}, payer ${settings.account.address})`);
  return {
    url,
    close: async () => {
      for (const t of sessions.values()) await t.close().catch(() => undefined);
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

export async function main(argv: string[], env: Env = process.env): Promise<void> {
  const redact = redactor(env);
  let values: { http?: boolean; port?: string; 'max-per-call'?: string; 'max-per-session'?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { http: { type: 'boolean' }, port: { type: 'string' }, 'max-per-call': { type: 'string' }, 'max-per-session': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }));
  } catch (err) {
    log(redact, `task-escrow-mcp: ${(err as Error).message}`);
    process.exit(2);
  }
  if (values.help) {
    process.stderr.write('Usage: npm run mcp [-- --http [--port N]] [--max-per-call USDC] [--max-per-session USDC]\n');
    process.exit(0);
  }
  let settings: McpSettings;
  try {
    settings = readSettings(env, {
      ...(values['max-per-call'] !== undefined && { maxPerCall: values['max-per-call'] }),
      ...(values['max-per-session'] !== undefined && { maxPerSession: values['max-per-session'] }),
    });
  } catch (err) {
    log(redact, `task-escrow-mcp: ${err instanceof SettingsError ? err.message : String(err)}`);
    process.exit(2);
  }
  if (!values.http) return serveStdio(settings, redact);
  const port = values.port === undefined ? 3333 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    log(redact, `task-escrow-mcp: --port: not a port: ${JSON.stringify(values.port)}`);
    process.exit(2);
  }
  const served = await serveHttp(settings, port, redact);
  const stop = () => void served.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

await main(process.argv.slice(2));
