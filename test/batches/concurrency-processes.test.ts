/**
 * Acceptance: a batch's `max_concurrency` holds across worker PROCESSES. One API process
 * (ROLE=api) and two worker processes (ROLE=worker), real `src/server.ts` under tsx, on one
 * scratch Postgres database and one anvil chain. A batch is paid with one x402 payment by the
 * stock client; its items go to a real webhook agent on loopback that holds every call for
 * 600–1000 ms and counts the calls in flight, overall and per worker process.
 *
 * Which process made a call is read from the kernel, not from anything the service says: the
 * agent looks up the caller's end of the TCP connection in /proc/net/tcp (its inode) and finds the
 * worker process holding that socket in /proc/<pid>/fd. The database tells the same thing
 * independently: the `in_progress` task event's actor is `dispatcher:<host>:<pid>:<hex>` (the
 * claiming dispatcher's lease-owner id). The test checks that both agree for every item.
 *
 * Shapes: each worker may run 2 tasks (DISPATCH_CONCURRENCY=2), the agent 10
 * (DISPATCH_PER_AGENT_CONCURRENCY), so the two workers together could run 4 of a batch's items:
 * - max_concurrency 3: no single worker can run 3, so reaching 3 in flight proves both processes
 *   ran items at the same moment, and never exceeding 3 (with room for 4) proves the limit is
 *   shared across the processes;
 * - max_concurrency 2: never more than 2 in flight while the workers' room is 4, and 2 reached.
 * With one agent, the claim's per-agent advisory lock (727002) already serialises the two workers'
 * claims, so a batch of one agent never exercises the batch's own claim lock (727004). The third
 * case spreads the items over 24 agents (one item each, the same loopback server): there, only
 * the batch claim lock keeps two simultaneous claims from both counting the batch below its limit
 * (with that lock removed from a copy of the dispatcher, this case saw 4 at once in 3 runs of 3).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { and, eq, inArray } from 'drizzle-orm';
import { wrapFetchWithPayment } from '@x402/fetch';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { taskEvents, tasks } from '../../src/db/schema.js';
import { SIGNATURE_HEADER, verifyWebhookSignature } from '../../src/dispatcher/runtimes/webhook.js';
import { x402ClientFor } from '../helpers/paid.js';
import { scratchDatabase, serviceEnv, startService, waitFor, type ScratchDatabase, type ServiceProcess } from '../helpers/service-process.js';

const DOMAIN = 'concurrency.test';
const SECRET = 'concurrency-processes-webhook-secret-0123';
const ITEM_BUDGET = 100_000n;
const BATCH_FEE = 10_000n; // PRICE_BATCH_FEE default
const PER_WORKER = 2;

let chain: DevChain;
let scratch: ScratchDatabase;
let database: Database;
let api: ServiceProcess;
let workers: ServiceProcess[] = [];
let agent: ConcurrencyAgent;
let agentId: string;
/** One item each in the many-agents case: the per-agent claim locks never serialise the two workers. */
const manyAgents: string[] = [];

// ─────────────────────────────────────────────────────────── which process holds a TCP connection

/** The inode of the IPv4 socket whose local port is `localPort` and peer port `peerPort` (from /proc/net/tcp). */
function socketInode(localPort: number, peerPort: number): string | undefined {
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const local = parseInt(f[1]!.split(':').at(-1)!, 16);
      const peer = parseInt(f[2]!.split(':').at(-1)!, 16);
      if (local === localPort && peer === peerPort && f[9] !== '0') return f[9];
    }
  }
  return undefined;
}

/** Which of `pids` holds the socket with this inode among its open files. */
function pidHoldingSocket(inode: string, pids: number[]): number | undefined {
  const target = `socket:[${inode}]`;
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === target) return pid;
      } catch {
        /* closed meanwhile */
      }
    }
  }
  return undefined;
}

// ─────────────────────────────────────────────────────────── the agent

interface Call {
  taskId: string;
  label: string;
  attempt: number;
  pid: number | undefined;
  signatureValid: boolean;
  /** Calls in flight (this one included) when it arrived: overall, and from its process. */
  inFlight: number;
  inFlightFromPid: number;
  /** Processes with a call in flight when it arrived (this one included). */
  pidsInFlight: number[];
  start: number;
  end?: number;
}

/**
 * A webhook agent on loopback: verifies each signed brief, tells which worker process sent it,
 * holds it 600–1000 ms and answers 200 with a result. `label` (the description's first word)
 * separates the batches.
 */
class ConcurrencyAgent {
  readonly calls: Call[] = [];
  private readonly live = new Map<number | undefined, number>();
  private server: Server | null = null;
  port = 0;
  url = '';

  constructor(private readonly workerPids: () => number[]) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    // the dispatcher opens a fresh connection per brief (agent: false); don't keep it
    this.server.keepAliveTimeout = 1;
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    this.url = `http://127.0.0.1:${this.port}/tasks`;
    return this;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // who is calling: looked up at once, while the caller's socket is certainly open
    const inode = socketInode(req.socket.remotePort!, this.port);
    const pid = inode ? pidHoldingSocket(inode, this.workerPids()) : undefined;
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const body = JSON.parse(raw) as { type: string; task: { id: string; attempt?: number; description?: string } };
    if (body.type !== 'task.assigned') {
      res.writeHead(200).end();
      return;
    }
    const signatureValid = verifyWebhookSignature(SECRET, req.headers[SIGNATURE_HEADER] as string, raw, Math.floor(Date.now() / 1000));
    this.live.set(pid, (this.live.get(pid) ?? 0) + 1);
    const inFlight = [...this.live.values()].reduce((a, b) => a + b, 0);
    const call: Call = {
      taskId: body.task.id,
      label: String(body.task.description ?? '').split(' ')[0]!,
      attempt: body.task.attempt ?? 0,
      pid,
      signatureValid,
      inFlight,
      inFlightFromPid: this.live.get(pid)!,
      pidsInFlight: [...this.live.entries()].filter(([, n]) => n > 0).map(([p]) => p ?? -1),
      start: Date.now(),
    };
    this.calls.push(call);
    await new Promise((r) => setTimeout(r, 600 + Math.floor(Math.random() * 400)));
    // out of flight before the answer leaves: the slot can only be claimed again after it arrives
    this.live.set(pid, this.live.get(pid)! - 1);
    call.end = Date.now();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ result: { type: 'text', content: `done ${body.task.description}`, metadata: { tokens_used: 1, model: 'm', duration_seconds: 1 } } }));
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

// ─────────────────────────────────────────────────────────── the processes

beforeAll(async () => {
  [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('batchconc')]);
  agent = await new ConcurrencyAgent(() => workers.map((w) => w.proc.pid!)).start();
  // the API migrates the database; then both workers start on it
  api = await startService(serviceEnv(scratch.url, chain.rpcUrl, { ROLE: 'api', AUTH_DOMAIN: DOMAIN, MICRO_FEES_DEFERRED: 'false' }));
  const workerEnv = serviceEnv(scratch.url, chain.rpcUrl, {
    ROLE: 'worker',
    PUBLIC_BASE_URL: api.baseUrl,
    AUTH_DOMAIN: DOMAIN,
    MICRO_FEES_DEFERRED: 'false',
    DISPATCH_CONCURRENCY: String(PER_WORKER),
    DISPATCH_PER_AGENT_CONCURRENCY: '10',
    // claims every 20 ms: the two workers' claim transactions overlap whatever the phase of their
    // timers (at 100 ms, two timers far apart in phase never claim at once and no race can show)
    DISPATCH_INTERVAL_MS: '20',
  });
  workers = await Promise.all([startService(workerEnv), startService(workerEnv)]);
  database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 3 });

  const owner = privateKeyToAccount(generatePrivateKey());
  const payout = privateKeyToAccount(generatePrivateKey()).address;
  const register = async (name: string): Promise<string> => {
    const registered = await fetch(`${api.baseUrl}/v1/agents`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: await signInHeader(owner, { domain: DOMAIN, uri: `https://${DOMAIN}` }) },
      body: JSON.stringify({
        name,
        description: 'Holds every brief for most of a second',
        capabilities: ['concurrency-probe'],
        pricing: { base_rate: '1000' },
        payout_address: payout,
        runtime: { kind: 'webhook', url: agent.url, secret: SECRET, timeout_ms: 10_000 },
      }),
    });
    expect(registered.status, await registered.clone().text()).toBe(201);
    return ((await registered.json()) as { id: string }).id;
  };
  agentId = await register('Slow Parallel Agent');
  for (let i = 0; i < 24; i++) manyAgents.push(await register(`Slow Agent ${i}`));
}, 90_000);

afterAll(async () => {
  await Promise.allSettled([...workers, api].filter(Boolean).map((s) => s.stop()));
  await agent?.stop();
  await database?.close();
  await scratch?.drop();
  await chain?.stop();
});

/** The pid in a dispatcher's lease-owner id (`<host>:<pid>:<hex>`), from the task event's actor. */
function pidOfActor(actor: string): number {
  const m = /^dispatcher:.+:(\d+):[0-9a-f]+$/.exec(actor);
  if (!m) throw new Error(`not a dispatcher actor: ${actor}`);
  return Number(m[1]);
}

/** Pays one batch of `n` items with max_concurrency `limit`, waits for every item to complete; returns what the agent saw. */
async function runBatch(label: string, n: number, limit: number, agentOf: (i: number) => string = () => agentId) {
  const payer = privateKeyToAccount(generatePrivateKey());
  const cost = BigInt(n) * ITEM_BUDGET + BATCH_FEE;
  await mintUsdc(chain, payer.address, cost + 100_000n);
  const pay = wrapFetchWithPayment(fetch, x402ClientFor(payer));
  const body = {
    items: Array.from({ length: n }, (_, i) => ({ agent_id: agentOf(i), description: `${label} item ${i}`, budget: { amount: String(ITEM_BUDGET), currency: 'USDC', chain: 'base' } })),
    policy: 'continue',
    max_concurrency: limit,
  };
  const started = Date.now();
  const res = await pay(`${api.baseUrl}/v1/batches`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status, await res.clone().text()).toBe(201);
  const created = (await res.json()) as { batch_id: string; max_concurrency: number; items: { task_id: string }[] };
  expect(created.max_concurrency).toBe(limit);
  // one payment funded every escrow and the fee
  expect(await usdcBalance(chain.rpcUrl, payer.address)).toBe(100_000n);
  const ids = created.items.map((i) => i.task_id);

  await waitFor(
    `every item of batch ${label} to complete`,
    async () => {
      const rows = await database.db.select({ status: tasks.status }).from(tasks).where(eq(tasks.batchId, created.batch_id));
      if (rows.some((r) => r.status !== 'completed' && r.status !== 'in_progress' && r.status !== 'funded')) {
        throw new Error(`an item ended otherwise: ${rows.map((r) => r.status).join(',')}`);
      }
      return rows.length === n && rows.every((r) => r.status === 'completed');
    },
    60_000,
  );
  const elapsedMs = Date.now() - started;

  // the owner's paid view agrees
  const view = (await (await pay(`${api.baseUrl}/v1/batches/${created.batch_id}`)).json()) as {
    status: string;
    totals: { completed: number; failed: number; running: number };
    items: { result: { content: string } }[];
  };
  expect(view.status).toBe('completed');
  expect(view.totals).toMatchObject({ completed: n, failed: 0, running: 0 });
  expect(view.items.map((i) => i.result.content)).toEqual(body.items.map((i) => `done ${i.description}`));

  // the database's word on who claimed each item: the in_progress event's actor
  const started_ = await database.db
    .select({ taskId: taskEvents.taskId, actor: taskEvents.actor })
    .from(taskEvents)
    .where(and(inArray(taskEvents.taskId, ids), eq(taskEvents.toStatus, 'in_progress')));
  const dbPid = new Map(started_.map((e) => [e.taskId, pidOfActor(e.actor)]));
  const actors = new Set(started_.map((e) => e.actor));

  const calls = agent.calls.filter((c) => c.label === label);
  return { ids, calls, dbPid, actors, elapsedMs };
}

function summary(calls: Call[], pids: number[]) {
  const perPid = pids.map((p) => calls.filter((c) => c.pid === p).length);
  return {
    calls: calls.length,
    perPid,
    peak: Math.max(...calls.map((c) => c.inFlight)),
    peakPerPid: pids.map((p) => Math.max(0, ...calls.filter((c) => c.pid === p).map((c) => c.inFlightFromPid))),
    bothInFlightAtOnce: calls.some((c) => pids.every((p) => c.pidsInFlight.includes(p))),
  };
}

describe('a batch’s max_concurrency across two worker processes', () => {
  it('max_concurrency 3 with room for 4: 3 in flight (so both processes at once), never more', { timeout: 90_000 }, async () => {
    const pids = workers.map((w) => w.proc.pid!);
    const { ids, calls, dbPid, actors, elapsedMs } = await runBatch('wide', 12, 3);
    const s = summary(calls, pids);
    console.log(`max_concurrency 3: ${JSON.stringify({ ...s, pids, elapsedMs })}`);

    // every item briefed exactly once, signed, by one of the two worker processes
    expect(calls.map((c) => c.taskId).sort()).toEqual([...ids].sort());
    expect(calls.every((c) => c.signatureValid && c.attempt === 1)).toBe(true);
    expect(calls.filter((c) => c.pid === undefined || !pids.includes(c.pid))).toEqual([]);
    // the kernel and the database agree on which process ran each item; each process is one dispatcher
    for (const c of calls) expect(dbPid.get(c.taskId), c.taskId).toBe(c.pid);
    expect(actors.size).toBe(2);

    expect(s.peak).toBe(3); // the limit, reached, never exceeded while the workers had room for 4
    for (const p of s.peakPerPid) expect(p).toBeLessThanOrEqual(PER_WORKER); // so 3 at once needed both processes
    expect(s.bothInFlightAtOnce).toBe(true);
    expect(s.perPid.every((n) => n > 0)).toBe(true);
  });

  it('max_concurrency 2 with room for 4: never more than 2 in flight, 2 reached', { timeout: 90_000 }, async () => {
    const pids = workers.map((w) => w.proc.pid!);
    const { ids, calls, dbPid, elapsedMs } = await runBatch('narrow', 8, 2);
    const s = summary(calls, pids);
    console.log(`max_concurrency 2: ${JSON.stringify({ ...s, pids, elapsedMs })}`);

    expect(calls.map((c) => c.taskId).sort()).toEqual([...ids].sort());
    expect(calls.every((c) => c.signatureValid && c.attempt === 1)).toBe(true);
    expect(calls.filter((c) => c.pid === undefined || !pids.includes(c.pid))).toEqual([]);
    for (const c of calls) expect(dbPid.get(c.taskId), c.taskId).toBe(c.pid);

    expect(s.peak).toBe(2);
    // (how the 8 items split between the processes is up to timing here; the first case proves the spread)
  });

  it('max_concurrency 3 over 24 agents: the batch claim lock alone holds the limit across the processes', { timeout: 90_000 }, async () => {
    const pids = workers.map((w) => w.proc.pid!);
    const { ids, calls, dbPid, actors, elapsedMs } = await runBatch('spread', 24, 3, (i) => manyAgents[i]!);
    const s = summary(calls, pids);
    console.log(`max_concurrency 3, 24 agents: ${JSON.stringify({ ...s, pids, elapsedMs })}`);

    expect(calls.map((c) => c.taskId).sort()).toEqual([...ids].sort());
    expect(calls.every((c) => c.signatureValid && c.attempt === 1)).toBe(true);
    expect(calls.filter((c) => c.pid === undefined || !pids.includes(c.pid))).toEqual([]);
    for (const c of calls) expect(dbPid.get(c.taskId), c.taskId).toBe(c.pid);
    expect(actors.size).toBe(2);

    expect(s.peak).toBe(3);
    for (const p of s.peakPerPid) expect(p).toBeLessThanOrEqual(PER_WORKER);
    expect(s.bothInFlightAtOnce).toBe(true);
    expect(s.perPid.every((n) => n > 0)).toBe(true);
  });
});
