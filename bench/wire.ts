/**
 * Wire speed in one run (issue 10, point 6): req/s, p50, p99 and server CPU per request for the
 * ceiling (a bare Fastify route doing one prepared select by id), the unpaid status poll with a
 * session token, the paid status poll over x402 `exact` and over `batch-settlement` vouchers; then
 * 1 000 concurrent event streams while their tasks progress (event delay p50/p99), the resident
 * memory of the embedded server process, and the ratios against the targets (see
 * bench/README.md).
 *
 *   npx tsx bench/wire.ts            # or: npm run bench:wire
 *   npx tsx bench/wire.ts --quick    # a small smoke run (seconds, not minutes)
 *
 * As in bench/paid.ts each server runs in a child process (this file with `--serve`), the load
 * generator and the stream clients in this one; one anvil, started here, serves every app child.
 */
import http, { type IncomingHttpHeaders } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { x402Client, x402HTTPClient } from '@x402/core/client';
import { decodePaymentResponseHeader, encodePaymentSignatureHeader } from '@x402/core/http';
import type { PaymentRequired } from '@x402/core/types';
import { toClientEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme as BatchSettlementClientScheme, InMemoryClientChannelStorage, computeChannelId } from '@x402/evm/batch-settlement/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import Fastify from 'fastify';
import pg from 'pg';
import { createPublicClient, http as viemHttp } from 'viem';
import type { PrivateKeyAccount } from 'viem/accounts';
import { BASE_NETWORK, DEV_ROLES } from '../src/chain/constants.js';
import { chainTarget, resolveWallets } from '../src/chain/wallets.js';
import { MicroFeeSettler } from '../src/payments/micro-fee-settler.js';
import { Loop } from '../src/workers/loop.js';
import { createChannelSettler } from '../src/workers/index.js';
import { startDevChain, type DevChain } from '../src/chain/dev/devchain.js';
import { createPglite } from '../src/db/client.js';
import {
  DEFAULT_PG_URL,
  WARMUP_SECONDS,
  cpuMeter,
  createAgent,
  challenge,
  createThrowawayDb,
  demo,
  fmt,
  fundedWallets,
  killChildren,
  measurePlain,
  measureSigned,
  onceFromChild,
  paidFixture,
  paymentSigner,
  positiveInt,
  printTable,
  readJson,
  redactUrl,
  rssOf,
  runBench,
  serveApp,
  serveChild,
  siwe,
  startWatchdog,
  taskBody,
  tell,
  unpaidFixture,
  withServer as withScriptServer,
  type Row,
  type Served,
  type Server,
} from './lib.js';

/** The longest authorization window the service accepts: pre-signed payments stay valid. */
const X402_TIMEOUT_SECONDS = 3600;
/** Demo wallets that pay (each owns tasks and polls or streams them), and the one that owns the agent. */
const PAYER_SLOTS = [0, 1, 2, 3] as const;
const OWNER_SLOT = 5;
/** Sends the voucher payers their test USDC (a demo wallet no other target uses). */
const FUNDER_SLOT = 4;
/** The price of GET /v1/tasks/{id}/status, atomic USDC. */
const STATUS_PRICE = 1000n;
/**
 * Test USDC each voucher payer gets: its channel's first deposit (the route's `minDeposit` hint,
 * 1 USDC = 1 000 polls by default) and room for the stock client's top-ups, one more hint each
 * time a lane passes what its channel holds (counted and printed).
 */
const VOUCHER_PAYER_FUNDS = 20_000_000n;
/** One payer may owe this much in deferred micro-fees (1 USDC: a thousand polls); four payers poll as fast as they can. */
const MICRO_FEE_PAYER_CAP = '1000000';
/** Request rate assumed to size the paid warm-up's pre-signed pool. */
const PAID_RATE_GUESS = 300;
/** Rows in the ceiling's table. */
const CEILING_ROWS = 1000;

const TARGETS = { unpaidOfCeiling: 0.6, paidOfCeiling: 0.5, paidP99OverP50: 3, sseDelayP99Ms: 100, rssMb: 400 } as const;
/** The voucher-paid poll is held to the paid poll's targets. */
const VOUCHER_TARGETS = { ofCeiling: TARGETS.paidOfCeiling, p99OverP50: TARGETS.paidP99OverP50 } as const;

// ---------------------------------------------------------------- messages parent ⇄ child

type ServeKind = 'ceiling' | 'app';
type ToChild = { type: 'start-tasks'; ids: string[] } | { type: 'close' };
type FromChild = { type: 'tasks-started' } | { type: 'failed'; message: string };

// ---------------------------------------------------------------- child: the servers

/**
 * The ceiling: a bare Fastify route (logger off) answering one select by primary key, prepared: a
 * named statement on a pg pool of 10 (the app's DB_POOL_MAX) when BENCH_DB_URL is set, else the
 * extended protocol of PGlite, opened as the app opens it (`createPglite`, same settings).
 */
async function serveCeiling(): Promise<Served> {
  const app = Fastify({ logger: false });
  const url = process.env.BENCH_DB_URL;
  const seed = `create table if not exists bench_rows (id int primary key, body text not null);
    insert into bench_rows select i, 'row ' || i from generate_series(1, ${CEILING_ROWS}) i on conflict do nothing`;
  const text = 'select id, body from bench_rows where id = $1';
  let select: (id: number) => Promise<unknown[]>;
  let close: () => Promise<void>;
  if (url) {
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    await pool.query(seed);
    select = async (id) => (await pool.query({ name: 'bench_row_by_id', text, values: [id] })).rows;
    close = () => pool.end();
  } else {
    const dir = mkdtempSync(path.join(tmpdir(), 'te-bench-ceiling-'));
    const db = await createPglite(dir);
    await db.exec(seed);
    select = async (id) => (await db.query(text, [id])).rows;
    close = async () => {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    };
  }
  app.get<{ Params: { id: string } }>('/rows/:id', async (req, reply) => {
    const rows = await select(Number(req.params.id));
    return rows.length ? rows[0] : reply.code(404).send({ error: 'not found' });
  });
  return {
    app,
    close: async () => {
      await app.close();
      await close();
    },
  };
}

/** The real app (lib.ts `serveApp`) on the parent's anvil, x402 on or off by BENCH_X402. */
async function serveWireApp(): Promise<Served> {
  const rpcUrl = process.env.BENCH_RPC_URL;
  if (!rpcUrl) throw new Error('BENCH_RPC_URL is not set');
  const served = await serveApp({
    dirPrefix: 'te-bench-wire-',
    config: {
      X402_ENABLED: process.env.BENCH_X402 === 'true' ? 'true' : 'false',
      X402_MAX_TIMEOUT_SECONDS: String(X402_TIMEOUT_SECONDS),
      MICRO_FEES_DEFERRED: process.env.BENCH_MICRO_FEES ?? 'true',
      MICRO_FEE_PAYER_CAP: MICRO_FEE_PAYER_CAP,
    },
    chainRpcUrl: rpcUrl,
  });
  // The batch settler of the deferred micro-fees runs beside the API, as in ROLE=all (no other worker:
  // the streams' tasks must stay in progress).
  const { app } = served;
  if (!app.microFees || !app.escrow) return served;
  const settler = new MicroFeeSettler({
    db: app.db,
    lifecycle: app.services.paymentLifecycle,
    operator: app.microFees.operator,
    usdc: chainTarget(app.config).usdc,
    feeAddress: resolveWallets(app.config).feeAddress,
    chain: app.escrow.usdc,
    batchSize: app.config.MICRO_FEE_BATCH_SIZE,
    leaseMs: app.config.PAYMENT_LEASE_MS,
  });
  const loop = new Loop(() => settler.drain(), (err) => console.error('micro-fee settlement failed', err));
  loop.start(app.config.MICRO_FEE_SETTLE_INTERVAL_MS);
  // So does the channel settler (claims the vouchers charged, settles and books them, on its
  // configured policy: CHANNEL_SETTLE_INTERVAL_MS, CHANNEL_CLAIM_THRESHOLD), as in ROLE=all.
  const channelSettler = createChannelSettler(app);
  const channelLoop = channelSettler ? new Loop(() => channelSettler.runOnce(), (err) => console.error('channel settlement failed', err)) : undefined;
  channelLoop?.start(app.config.CHANNEL_SETTLE_INTERVAL_MS);
  return { app, close: async () => (await channelLoop?.stop(), await loop.stop(), served.close()) };
}

async function serve(kind: ServeKind): Promise<void> {
  const served = kind === 'ceiling' ? await serveCeiling() : await serveWireApp();
  await serveChild<ToChild>(served, (msg) => {
    if (msg.type !== 'start-tasks') return;
    // Funding is impossible with x402 off: the tasks the streams follow are funded and started here,
    // as the dispatcher would start them (no worker runs in this process, so they stay in progress).
    const lifecycle = served.app.services.taskLifecycle;
    (async () => {
      for (const id of msg.ids) {
        await lifecycle.markFunded(id, { amount: 1_000_000n, txHash: null, actor: 'bench' });
        await lifecycle.markStarted(id, 'bench');
      }
    })().then(
      () => tell({ type: 'tasks-started' } satisfies FromChild),
      (err: unknown) => tell({ type: 'failed', message: err instanceof Error ? err.message : String(err) } satisfies FromChild),
    );
  });
}

// ---------------------------------------------------------------- parent: settings

/** The measured targets (`--only a,b`): the ceiling, the unpaid poll, the event streams, the paid poll over `exact`, over vouchers. */
const TARGET_NAMES = ['ceiling', 'unpaid', 'streams', 'paid', 'vouchers'] as const;
type TargetName = (typeof TARGET_NAMES)[number];

interface Settings {
  quick: boolean;
  /** The targets this run measures (default: all). */
  only: ReadonlySet<TargetName>;
  seconds: number;
  connections: number;
  paidConnections: number;
  streams: number;
  streamTasks: number;
  tickMs: number;
  streamSeconds: number;
  pgUrl: string | undefined;
}

function readSettings(argv: string[]): Settings {
  const quick = argv.includes('--quick');
  const pgUrl = argv.includes('--pglite-only') ? undefined : process.env.DATABASE_URL || DEFAULT_PG_URL;
  const s: Settings = {
    quick,
    only: readOnly(argv),
    seconds: positiveInt('BENCH_SECONDS', quick ? 2 : 10),
    connections: positiveInt('BENCH_CONNECTIONS', quick ? 10 : 50),
    paidConnections: positiveInt('BENCH_PAID_CONNECTIONS', quick ? 4 : 16),
    streams: positiveInt('BENCH_SSE_STREAMS', quick ? 40 : 1000),
    streamTasks: positiveInt('BENCH_SSE_TASKS', quick ? 4 : 100),
    tickMs: positiveInt('BENCH_SSE_TICK_MS', quick ? 300 : 1000),
    streamSeconds: positiveInt('BENCH_SSE_SECONDS', quick ? 2 : 10),
    pgUrl,
  };
  if (Math.floor((s.streamSeconds * 1000) / s.tickMs) > 99) throw new Error('BENCH_SSE_SECONDS / BENCH_SSE_TICK_MS: at most 99 ticks (progress 1…99 %)');
  return s;
}

/** `--only ceiling,unpaid` (or `--only=…`): the targets to measure; every one without it. */
function readOnly(argv: string[]): ReadonlySet<TargetName> {
  const i = argv.findIndex((a) => a === '--only' || a.startsWith('--only='));
  if (i < 0) return new Set(TARGET_NAMES);
  const list = argv[i]!.startsWith('--only=') ? argv[i]!.slice('--only='.length) : argv[i + 1];
  const names = (list ?? '').split(',').filter(Boolean);
  const unknown = names.filter((n) => !(TARGET_NAMES as readonly string[]).includes(n));
  if (names.length === 0 || unknown.length > 0) throw new Error(`--only takes a list of ${TARGET_NAMES.join(', ')}; got "${list ?? ''}"`);
  return new Set(names as TargetName[]);
}

/** Wall-clock budget after which the bench gives up and kills everything. */
const budgetSeconds = (s: Settings) => 2 * 4 * (WARMUP_SECONDS + s.seconds) + 3 * s.streamSeconds + (s.quick ? 300 : 720);

const withServer = <T>(kind: ServeKind, env: Record<string, string>, fn: (server: Server) => Promise<T>) =>
  withScriptServer(import.meta.url, kind, env, fn);

// ---------------------------------------------------------------- parent: sessions

/** A session token for `who` (POST /v1/auth/session with one SIWE header). */
async function sessionToken(base: string, who: PrivateKeyAccount): Promise<string> {
  const res = await fetch(`${base}/v1/auth/session`, { method: 'POST', headers: { authorization: await siwe(who) } });
  return String((await readJson(res, 201, 'POST /v1/auth/session')).token);
}

// ---------------------------------------------------------------- parent: event streams

/** The agent's owner reports progress `tick` % on a task, its send time in `intermediate_result`; true when answered 200. */
async function postProgress(base: string, ownerToken: string, taskId: string, tick: number): Promise<boolean> {
  try {
    const res = await fetch(`${base}/v1/tasks/${taskId}/progress`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ownerToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ progress_percent: tick, intermediate_result: { sent_at: Date.now(), tick } }),
    });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

interface StreamResult {
  streams: number;
  tasks: number;
  ticks: number;
  /** Progress events each stream should have seen (one per tick of its task) and those seen. */
  expected: number;
  received: number;
  /** ms from the progress POST being sent to its event arriving on a stream. */
  delays: number[];
  streamErrors: number;
  progressFailures: number;
  serverCpuS: number | undefined;
  seconds: number;
  /** The server process with every stream open. */
  rss: { rssMb: number; peakMb: number } | undefined;
}

/** One `text/event-stream` client: hands every `event: status` payload to `onStatus`. */
function openStream(url: string, headers: Record<string, string>, agent: http.Agent, onStatus: (data: unknown) => void, onError: () => void) {
  let buffer = '';
  const req = http.get(url, { headers: { ...headers, accept: 'text/event-stream' }, agent }, (res) => {
    if (res.statusCode !== 200) {
      onError();
      res.resume();
      return;
    }
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buffer += chunk;
      let i: number;
      while ((i = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        if (!block.includes('event: status')) continue;
        const data = block.split('\n').find((l) => l.startsWith('data: '));
        if (data) onStatus(JSON.parse(data.slice(6)));
      }
    });
  });
  let closed = false;
  req.on('error', () => {
    if (!closed) onError();
  });
  return {
    close: () => {
      closed = true;
      req.destroy();
    },
  };
}

/**
 * `streams` streams over `tasks` funded, started tasks of one payer (round robin), opened on the
 * unpaid app with the payer's session token; then every `tickMs` the agent's owner POSTs progress to
 * every task (spread over the tick), its send time in `intermediate_result`. The delay of an event is its arrival minus
 * that send time (both on this process's clock), as a client would see it.
 */
async function measureStreams(server: Server, settings: Settings): Promise<StreamResult> {
  const base = server.base;
  const payer = demo(PAYER_SLOTS[0]);
  const owner = demo(OWNER_SLOT);
  const [payerToken, ownerToken] = await Promise.all([sessionToken(base, payer), sessionToken(base, owner)]);
  const agentId = await createAgent(base, owner);
  const ids: string[] = [];
  for (let i = 0; i < settings.streamTasks; i++) {
    const res = await fetch(`${base}/v1/tasks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${payerToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(taskBody(agentId)),
    });
    ids.push(String((await readJson(res, 201, 'POST /v1/tasks (session)')).task_id));
  }
  const started = onceFromChild<FromChild, 'tasks-started'>(server.child, 'tasks-started', 120_000);
  server.child.send({ type: 'start-tasks', ids } satisfies ToChild);
  await started;

  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const delays: number[] = [];
  let streamErrors = 0;
  let connected = 0;
  const lastTick = new Array<number>(settings.streams).fill(0);
  const streams = Array.from({ length: settings.streams }, (_, k) => {
    let first = true;
    return openStream(
      `${base}/v1/tasks/${ids[k % ids.length]}/events`,
      { authorization: `Bearer ${payerToken}` },
      agent,
      (data) => {
        if (first) {
          first = false;
          connected++;
        }
        const mark = (data as { intermediate_result?: { sent_at?: number; tick?: number } | null }).intermediate_result;
        if (typeof mark?.sent_at !== 'number' || typeof mark.tick !== 'number' || mark.tick <= lastTick[k]!) return;
        lastTick[k] = mark.tick;
        delays.push(Date.now() - mark.sent_at);
      },
      () => streamErrors++,
    );
  });
  const openBy = Date.now() + 60_000;
  while (connected + streamErrors < settings.streams && Date.now() < openBy) await new Promise((r) => setTimeout(r, 50));
  console.log(`  streams: ${connected} of ${settings.streams} open (first event received), ${streamErrors} failed`);

  const ticks = Math.floor((settings.streamSeconds * 1000) / settings.tickMs);
  let progressFailures = 0;
  const meter = cpuMeter({ server: server.child.pid, anvil: undefined });
  const t0 = Date.now();
  // Each task's update has its own slot in the tick (task i at i/T of it): the same rate as a
  // burst of all of them at once, without a burst no real set of agents would make.
  const posts: Promise<void>[] = [];
  for (let tick = 1; tick <= ticks; tick++) {
    for (const [i, id] of ids.entries()) {
      const due = t0 + (tick - 1) * settings.tickMs + Math.floor((i * settings.tickMs) / ids.length);
      await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
      // Not awaited here: a slow answer must not shift the next send times.
      posts.push(
        postProgress(base, ownerToken, id, tick).then((ok) => {
          if (!ok) progressFailures++;
        }),
      );
    }
  }
  await Promise.all(posts);
  // Stragglers: until every stream saw the last tick, or 5 s.
  const settleBy = Date.now() + 5000;
  while (lastTick.some((t) => t < ticks) && Date.now() < settleBy) await new Promise((r) => setTimeout(r, 50));
  const seconds = (Date.now() - t0) / 1000;
  const cpu = meter();
  const rss = rssOf(server.child.pid);
  for (const s of streams) s.close();
  agent.destroy();
  return {
    streams: settings.streams,
    tasks: ids.length,
    ticks,
    expected: settings.streams * ticks,
    received: delays.length,
    delays,
    streamErrors,
    progressFailures,
    serverCpuS: cpu.server,
    seconds,
    rss,
  };
}

// ---------------------------------------------------------------- parent: the voucher-paid poll

/**
 * One voucher payer: a fresh wallet whose stock client (`BatchSettlementEvmScheme` on an
 * `x402Client`) opened a channel to the fee wallet with its first paid call (the creation of its
 * task), and the status route's challenge, narrowed to `batch-settlement`, to pay its polls against.
 */
interface VoucherLane {
  account: PrivateKeyAccount;
  client: x402Client;
  http: x402HTTPClient;
  /** The client's own view of its channel (the scheme's storage, passed in so that it can be read). */
  storage: InMemoryClientChannelStorage;
  channelKey: string;
  path: string;
  required: PaymentRequired;
  /** The channel's charged cumulative amount in the client's view after the task's creation. */
  chargedAtStart: bigint;
  /** Status polls answered 200 on this lane (warm-up and measured). */
  paid: number;
}

/** Figures of one voucher phase (warm-up or measured). */
interface VoucherStats {
  /** HTTP round trips of the paid requests, ms (send → answer read). */
  latencies: number[];
  /** The client's payment creation per call (the scheme signing its voucher), ms. */
  signing: number[];
  ok: number;
  non2xx: number;
  errors: number;
  /** HTTP requests sent (one per call when every answer is 200). */
  requests: number;
  /** Answers that settled a deposit on chain (the stock client's top-ups). */
  deposits: number;
  failures: string[];
}

const newStats = (): VoucherStats => ({ latencies: [], signing: [], ok: 0, non2xx: 0, errors: 0, requests: 0, deposits: 0, failures: [] });

/** A voucher-paid row: the poll table's figures plus what only vouchers have. */
interface VoucherRow extends Row {
  requestsPerCall: number;
  signingP50: number;
  /** Deposits (top-ups) settled during the warm-up and during the measured run. */
  warmDeposits: number;
  deposits: number;
  /** Lanes whose client's view of its channel does not match the polls it paid (0 when sound). */
  mismatched: number;
}

/** One GET on a keep-alive agent: status, headers and body (read to the end). */
function httpGet(base: URL, path: string, headers: Record<string, string>, agent: http.Agent): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: base.hostname, port: base.port, path, headers, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/**
 * `count` voucher payers on the x402-on app: fresh wallets holding test USDC (no ETH), each with
 * its own stock client, creating its own task through the paid `POST /v1/tasks` with
 * `wrapFetchWithPayment` (the call that deposits into its channel, on chain), then fetching the
 * status route's 402 challenge once.
 */
async function voucherLanes(server: Server, rpcUrl: string, count: number): Promise<VoucherLane[]> {
  const base = server.base;
  const agentId = await createAgent(base, demo(OWNER_SLOT));
  const accounts = await fundedWallets(rpcUrl, demo(FUNDER_SLOT), count, VOUCHER_PAYER_FUNDS);
  const reader = createPublicClient({ transport: viemHttp(rpcUrl), cacheTime: 0 });
  const lanes: VoucherLane[] = [];
  for (const account of accounts) {
    const storage = new InMemoryClientChannelStorage();
    const scheme = new BatchSettlementClientScheme(toClientEvmSigner(account, reader), { storage });
    const client = new x402Client().register(BASE_NETWORK, scheme);
    const pay = wrapFetchWithPayment(fetch, client);
    const res = await pay(`${base}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(taskBody(agentId)) });
    const settled = res.headers.get('payment-response');
    const task = await readJson(res, 201, 'POST /v1/tasks (batch-settlement)');
    if (!settled || !decodePaymentResponseHeader(settled).transaction) throw new Error('the voucher payer\'s first call (its task\'s creation) settled no deposit');
    const path = `/v1/tasks/${String(task.task_id)}/status`;
    const offered = await challenge(`${base}${path}`);
    const required: PaymentRequired = { ...offered, accepts: offered.accepts.filter((a) => a.scheme === 'batch-settlement') };
    const terms = required.accepts[0];
    if (required.accepts.length !== 1 || terms?.amount !== STATUS_PRICE.toString()) throw new Error(`unexpected status challenge: ${JSON.stringify(offered.accepts)}`);
    const channelKey = computeChannelId(scheme.buildChannelConfig(terms), terms.network).toLowerCase();
    const state = await storage.get(channelKey);
    if (!state?.balance) throw new Error('the stock client holds no channel after its deposit (the task\'s creation paid another channel?)');
    lanes.push({ account, client, http: new x402HTTPClient(client), storage, channelKey, path, required, chargedAtStart: BigInt(state.chargedCumulativeAmount ?? '0'), paid: 0 });
  }
  return lanes;
}

/**
 * One voucher-paid poll: the stock client creates the payment for the route's cached challenge (a
 * voucher over the channel's charged cumulative amount + the price; a deposit when the channel
 * would not cover it), one GET carries it, and the answer's PAYMENT-RESPONSE goes back to the
 * client (`processPaymentResult`, as @x402/fetch does) so its channel view advances. No 402 probe.
 * False when the lane must stop (an answer other than 200, or an error).
 */
async function voucherPoll(base: URL, lane: VoucherLane, agent: http.Agent, stats: VoucherStats): Promise<boolean> {
  const t0 = performance.now();
  let status = 0;
  try {
    const payload = await lane.client.createPaymentPayload(lane.required);
    const header = encodePaymentSignatureHeader(payload);
    const t1 = performance.now();
    stats.requests++;
    const res = await httpGet(base, lane.path, { 'payment-signature': header }, agent);
    const t2 = performance.now();
    status = res.status;
    const getHeader = (name: string) => {
      const v = res.headers[name.toLowerCase()];
      return Array.isArray(v) ? v[0] : v;
    };
    const result = await lane.http.processPaymentResult(payload, getHeader, res.status);
    if (res.status !== 200) {
      stats.non2xx++;
      if (stats.failures.length < 5) stats.failures.push(`${res.status}${result.recovered ? ' (the client resynced its channel)' : ''} ${res.body.slice(0, 400)}`);
      return false;
    }
    stats.ok++;
    lane.paid++;
    stats.latencies.push(t2 - t1);
    stats.signing.push(t1 - t0);
    if (result.settleResponse?.transaction) stats.deposits++;
    return true;
  } catch (err) {
    if (status === 0) stats.errors++;
    else stats.non2xx++;
    if (stats.failures.length < 5) stats.failures.push(`error ${err instanceof Error ? err.message : String(err)}`);
    return false;
  }
}

/** Every lane polls back to back (its next poll once the previous answered) until `seconds` passed; the phase's wall time, s. */
async function runVoucherLanes(base: URL, lanes: VoucherLane[], agent: http.Agent, seconds: number, stats: VoucherStats): Promise<number> {
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  await Promise.all(
    lanes.map(async (lane) => {
      while (performance.now() < until) if (!(await voucherPoll(base, lane, agent, stats))) return;
    }),
  );
  return (performance.now() - t0) / 1000;
}

/**
 * The voucher-paid status poll: BENCH_PAID_CONNECTIONS payers, one channel and one connection
 * each, every lane sequential (a channel takes one call at a time, its vouchers in order). A 2 s
 * warm-up, then `seconds` measured; req/s counts the paid answers; p50 / p99 are the HTTP round
 * trips (the client's signing is before each and reported apart); the server CPU is the child's
 * over the measured run.
 */
async function measureVouchers(label: string, server: Server, chain: DevChain, settings: Settings): Promise<VoucherRow> {
  const target = `paid status, vouchers ${label}`;
  const t0 = Date.now();
  const lanes = await voucherLanes(server, chain.rpcUrl, settings.paidConnections);
  const base = new URL(server.base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: lanes.length });
  try {
    const warm = newStats();
    const warmSeconds = await runVoucherLanes(base, lanes, agent, WARMUP_SECONDS, warm);
    console.log(
      `  ${target}: ${lanes.length} payers, channels opened in ${fmt((Date.now() - t0) / 1000, 1)} s; ` +
        `warm-up ${Math.round(warm.ok / warmSeconds)} req/s, ${warm.deposits} top-up deposits`,
    );
    // A failed warm-up stops here (the run is invalid): no measured run.
    const stats = newStats();
    let measured = { seconds: 0, cpu: { user: 0, system: 0 } as NodeJS.CpuUsage, others: { server: undefined, anvil: undefined } as { server: number | undefined; anvil: number | undefined } };
    if (warm.non2xx === 0 && warm.errors === 0) {
      const cpuBefore = process.cpuUsage();
      const others = cpuMeter({ server: server.child.pid, anvil: chain.pid });
      const seconds = await runVoucherLanes(base, lanes, agent, settings.seconds, stats);
      measured = { seconds, cpu: process.cpuUsage(cpuBefore), others: others() };
    }
    // Each lane's client must hold exactly the polls it paid: charged = after the creation + paid × price.
    let mismatched = 0;
    for (const lane of lanes) {
      const state = await lane.storage.get(lane.channelKey);
      if (BigInt(state?.chargedCumulativeAmount ?? '0') !== lane.chargedAtStart + BigInt(lane.paid) * STATUS_PRICE) mismatched++;
    }
    const row = voucherRow(target, warm, stats, measured.seconds, measured.cpu, measured.others, settings.paidConnections, mismatched);
    logVoucherRow(row);
    return row;
  } finally {
    agent.destroy();
  }
}

function voucherRow(
  target: string,
  warm: VoucherStats,
  stats: VoucherStats,
  seconds: number,
  cpu: NodeJS.CpuUsage,
  others: { server: number | undefined; anvil: number | undefined },
  connections: number,
  mismatched: number,
): VoucherRow {
  return {
    target,
    reqPerSec: seconds > 0 ? stats.ok / seconds : NaN,
    p50: quantile(stats.latencies, 0.5),
    p99: quantile(stats.latencies, 0.99),
    non2xx: warm.non2xx + stats.non2xx,
    errors: warm.errors + stats.errors,
    ok2xx: warm.ok + stats.ok,
    total: stats.ok,
    seconds,
    loaderCpu: seconds > 0 ? ((cpu.user + cpu.system) / 1e6 / seconds) * 100 : NaN,
    serverCpuS: others.server,
    anvilCpuS: others.anvil,
    connections,
    failures: [...warm.failures, ...stats.failures].slice(0, 5),
    shortfall: 0,
    requestsPerCall: stats.ok > 0 ? stats.requests / stats.ok : NaN,
    signingP50: quantile(stats.signing, 0.5),
    warmDeposits: warm.deposits,
    deposits: stats.deposits,
    mismatched,
  };
}

function logVoucherRow(row: VoucherRow): void {
  console.log(
    `  ${row.target}: ${Math.round(row.reqPerSec)} req/s, p50 ${fmt(row.p50, 1)} ms, p99 ${fmt(row.p99, 1)} ms, non-2xx ${row.non2xx}, errors ${row.errors}; ` +
      `HTTP requests per paid call ${fmt(row.requestsPerCall, 2)}, voucher signing p50 ${fmt(row.signingP50, 2)} ms (client), top-up deposits ${row.deposits}`,
  );
  for (const f of row.failures) console.log(`    non-2xx: ${f}`);
}

// ---------------------------------------------------------------- parent: one database

/** What one database measured; a target left out by `--only` is undefined. */
interface DbResult {
  label: string;
  ceiling: Row | undefined;
  unpaid: Row | undefined;
  paid: Row | undefined;
  vouchers: VoucherRow | undefined;
  sse: StreamResult | undefined;
  /** The paid app's server process after its run (PGlite: the embedded default, x402 on). */
  paidRss: { rssMb: number; peakMb: number } | undefined;
}

async function benchDatabase(label: string, dbUrl: string, chain: DevChain, settings: Settings): Promise<DbResult> {
  const env = (x402: boolean) => ({ BENCH_DB_URL: dbUrl, BENCH_RPC_URL: chain.rpcUrl, BENCH_X402: String(x402), BENCH_AUTH_MAX_AGE: '3600' });
  const payers = PAYER_SLOTS.map(demo);
  const { only } = settings;

  const ceiling = only.has('ceiling')
    ? await withServer('ceiling', { BENCH_DB_URL: dbUrl }, (server) => measurePlain(`ceiling: select by id ${label}`, server, '/rows/42', settings))
    : undefined;

  const { unpaid, sse } =
    only.has('unpaid') || only.has('streams')
      ? await withServer('app', env(false), async (server) => {
          let unpaidRow: Row | undefined;
          if (only.has('unpaid')) {
            const [poller] = await unpaidFixture(server.base, payers.slice(0, 1), demo(OWNER_SLOT));
            const token = await sessionToken(server.base, poller!.account);
            unpaidRow = await measurePlain(`unpaid status, session ${label}`, server, poller!.path, settings, { authorization: `Bearer ${token}` });
          }
          if (!only.has('streams')) return { unpaid: unpaidRow, sse: undefined };
          console.log(`  event streams ${label}: ${settings.streams} streams over ${settings.streamTasks} tasks, progress every ${settings.tickMs} ms for ${settings.streamSeconds} s`);
          return { unpaid: unpaidRow, sse: await measureStreams(server, settings) };
        })
      : { unpaid: undefined, sse: undefined };

  // One x402-on child: the `exact` poll (and the RSS after it), then the voucher-paid poll.
  const { paid, paidRss, vouchers } =
    only.has('paid') || only.has('vouchers')
      ? await withServer('app', env(true), async (server) => {
          let paidRow: Row | undefined;
          let rss: DbResult['paidRss'];
          if (only.has('paid')) {
            const pollers = await paidFixture(server.base, payers, demo(OWNER_SLOT));
            paidRow = await measureSigned(`paid status, exact ${label}`, server, chain.pid, settings.paidConnections, settings.seconds, PAID_RATE_GUESS, paymentSigner(pollers));
            rss = rssOf(server.child.pid);
          }
          const voucherRow = only.has('vouchers') ? await measureVouchers(label, server, chain, settings) : undefined;
          return { paid: paidRow, paidRss: rss, vouchers: voucherRow };
        })
      : { paid: undefined, paidRss: undefined, vouchers: undefined };
  return { label, ceiling, unpaid, paid, vouchers, sse, paidRss };
}

// ---------------------------------------------------------------- parent: report

function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

const cpuMsPerRequest = (r: Row) => (r.serverCpuS === undefined || r.total === 0 ? NaN : (r.serverCpuS * 1000) / r.total);

function printRows(results: DbResult[]): void {
  const rows = results.flatMap((r) => [r.ceiling, r.unpaid, r.paid, r.vouchers].filter((row): row is Row => row !== undefined));
  printTable(
    ['target', 'conns', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'server CPU ms/req', 'loader CPU %'],
    rows.map((r) => [r.target, String(r.connections), fmt(r.reqPerSec), fmt(r.p50, 1), fmt(r.p99, 1), String(r.non2xx), String(r.errors), fmt(cpuMsPerRequest(r), 2), fmt(r.loaderCpu)]),
  );
  for (const { vouchers: v } of results) {
    if (!v) continue;
    console.log(
      `  ${v.target}: ${fmt(v.requestsPerCall, 2)} HTTP requests per paid call (no 402 probe: the route's challenge is cached); ` +
        `the client's voucher signing p50 ${fmt(v.signingP50, 2)} ms before each request (in the load generator, not in the latency); ` +
        `top-up deposits (on chain) ${v.warmDeposits} in the warm-up, ${v.deposits} in the measured run`,
    );
  }
  const streams = results.filter((r): r is DbResult & { sse: StreamResult } => r.sse !== undefined);
  if (streams.length === 0) return;
  console.log('');
  printTable(
    ['event streams', 'streams', 'tasks', 'events seen / expected', 'delay p50 ms', 'delay p99 ms', 'delay max ms', 'server CPU %', 'server RSS MB (streams open)'],
    streams.map(({ label, sse: s }) => [
      label,
      String(s.streams),
      String(s.tasks),
      `${s.received} / ${s.expected}`,
      fmt(quantile(s.delays, 0.5), 1),
      fmt(quantile(s.delays, 0.99), 1),
      fmt(s.delays.length ? Math.max(...s.delays) : NaN, 1),
      s.serverCpuS === undefined ? '-' : fmt((s.serverCpuS / s.seconds) * 100),
      s.rss ? fmt(s.rss.rssMb) : '-',
    ]),
  );
}

function printTargets(results: DbResult[]): void {
  const mark = (ok: boolean) => (ok ? 'met' : 'NOT met');
  console.log('\ntargets (ratios of this run):');
  for (const r of results) {
    console.log(`  ${r.label}`);
    if (r.ceiling && r.unpaid) {
      const unpaid = r.unpaid.reqPerSec / r.ceiling.reqPerSec;
      console.log(`    unpaid status / ceiling   ${fmt(unpaid, 3)}  (≥ ${TARGETS.unpaidOfCeiling})  ${mark(unpaid >= TARGETS.unpaidOfCeiling)}`);
    }
    if (r.ceiling && r.paid) {
      const paid = r.paid.reqPerSec / r.ceiling.reqPerSec;
      console.log(`    paid status / ceiling     ${fmt(paid, 3)}  (≥ ${TARGETS.paidOfCeiling})  ${mark(paid >= TARGETS.paidOfCeiling)}`);
    }
    if (r.paid) {
      const spread = r.paid.p99 / r.paid.p50;
      console.log(`    paid p99 / p50            ${fmt(spread, 2)}  (≤ ${TARGETS.paidP99OverP50})  ${mark(spread <= TARGETS.paidP99OverP50)}`);
    }
    if (r.ceiling && r.vouchers) {
      const v = r.vouchers.reqPerSec / r.ceiling.reqPerSec;
      console.log(`    vouchers / ceiling        ${fmt(v, 3)}  (≥ ${VOUCHER_TARGETS.ofCeiling})  ${mark(v >= VOUCHER_TARGETS.ofCeiling)}`);
    }
    if (r.vouchers) {
      const spread = r.vouchers.p99 / r.vouchers.p50;
      console.log(`    vouchers p99 / p50        ${fmt(spread, 2)}  (≤ ${VOUCHER_TARGETS.p99OverP50})  ${mark(spread <= VOUCHER_TARGETS.p99OverP50)}`);
    }
    if (r.sse) {
      const delayP99 = quantile(r.sse.delays, 0.99);
      console.log(`    event delay p99           ${fmt(delayP99, 1)} ms  (≤ ${TARGETS.sseDelayP99Ms} ms)  ${mark(delayP99 <= TARGETS.sseDelayP99Ms)}`);
    }
  }
  const embedded = results.find((r) => r.label === '(PGlite)');
  const rss = embedded?.paidRss;
  if (rss) {
    const worst = Math.max(rss.rssMb, embedded.sse?.rss?.rssMb ?? 0);
    console.log(
      `  RSS of the embedded server process (PGlite, x402 on, after the paid run): ${fmt(rss.rssMb)} MB, peak ${fmt(rss.peakMb)} MB; ` +
        `with ${embedded.sse?.streams ?? 0} streams open ${embedded.sse?.rss ? fmt(embedded.sse.rss.rssMb) : '-'} MB  (≤ ${TARGETS.rssMb} MB)  ${mark(worst <= TARGETS.rssMb)}`,
    );
    console.log('    (a child run by tsx, as every bench server; `npm start` runs compiled JS: bench:memory measures it)');
  }
}

/** False when a figure is not valid: a failed request, stream or progress update. */
function checkResults(results: DbResult[]): boolean {
  let ok = true;
  for (const r of results) {
    for (const row of [r.ceiling, r.unpaid, r.paid, r.vouchers]) {
      if (!row) continue;
      if (row.non2xx > 0 || row.errors > 0 || row.shortfall > 0) {
        console.error(`WARNING ${row.target}: ${row.non2xx} non-2xx, ${row.errors} errors, ${row.shortfall} past the pre-signed items — not valid`);
        for (const f of row.failures) console.error(`  ${f}`);
        ok = false;
      }
      if (row.loaderCpu >= 90) console.error(`NOTE ${row.target}: the load generator used ${fmt(row.loaderCpu)} % of a core; that figure is a floor`);
    }
    if (r.vouchers && r.vouchers.mismatched > 0) {
      console.error(`WARNING ${r.vouchers.target}: ${r.vouchers.mismatched} lanes' clients hold a charged amount other than the polls they paid — not valid`);
      ok = false;
    }
    if (r.vouchers && r.vouchers.total === 0) {
      console.error(`WARNING ${r.vouchers.target}: no measured run — not valid`);
      ok = false;
    }
    const s = r.sse;
    if (!s) continue;
    if (s.streamErrors > 0 || s.progressFailures > 0) {
      console.error(`WARNING event streams ${r.label}: ${s.streamErrors} streams failed, ${s.progressFailures} progress updates failed — not valid`);
      ok = false;
    }
    if (s.received < s.expected) console.error(`NOTE event streams ${r.label}: ${s.expected - s.received} progress events not seen (coalesced or late)`);
  }
  return ok;
}

// ---------------------------------------------------------------- parent: main

let chainToStop: DevChain | undefined;

function killAll(): void {
  killChildren();
  void chainToStop?.stop();
}

async function main(): Promise<void> {
  const settings = readSettings(process.argv.slice(2));
  startWatchdog(budgetSeconds(settings) * 1000, { kill: killAll, exitDelayMs: 500, signals: ['SIGINT', 'SIGTERM'] });
  console.log(
    `bench:wire${settings.quick ? ' --quick' : ''}: ${WARMUP_SECONDS} s warm-up + ${settings.seconds} s per target; ${settings.connections} connections ` +
      `(paid: ${settings.paidConnections}); ${settings.streams} event streams; targets: ${[...settings.only].join(', ')}; node ${process.version}, ${cpus().length} cpus`,
  );
  const chain = await startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] });
  chainToStop = chain;
  try {
    const results: DbResult[] = [await benchDatabase('(PGlite)', '', chain, settings)];
    if (settings.pgUrl) {
      const db = await createThrowawayDb(settings.pgUrl);
      if (typeof db === 'string') console.log(`postgres: skipped — ${db}`);
      else {
        console.log(`postgres: throwaway database on ${redactUrl(settings.pgUrl)}`);
        try {
          results.push(await benchDatabase('(Postgres)', db.url, chain, settings));
        } finally {
          await db.drop();
        }
      }
    }
    console.log('');
    printRows(results);
    printTargets(results);
    if (!checkResults(results)) process.exitCode = 1;
  } finally {
    await chain.stop();
    chainToStop = undefined;
  }
}

const serveKind = ((): ServeKind | undefined => {
  const i = process.argv.indexOf('--serve');
  if (i < 0) return undefined;
  const kind = process.argv[i + 1];
  if (kind !== 'ceiling' && kind !== 'app') throw new Error(`--serve ceiling|app, got ${kind}`);
  return kind;
})();
runBench(serveKind ? () => serve(serveKind) : undefined, main, killAll);
