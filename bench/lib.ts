/**
 * The harness the benchmarks share (bench/status.ts, bench/paid.ts, bench/dispatch.ts, bench/wire.ts):
 * settings from the environment, the `--serve` child processes and their messages, throwaway
 * Postgres databases and temp dirs, the watchdog, autocannon figures, the CPU and memory of other
 * processes, the table printer, the demo wallets, the fixtures the scripts post (an agent, tasks,
 * x402 challenges) and the load with single-use items (pre-signed SIWE headers or payments). Not a
 * benchmark itself.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { x402Client } from '@x402/core/client';
import { decodePaymentRequiredHeader, encodePaymentSignatureHeader } from '@x402/core/http';
import type { PaymentRequired } from '@x402/core/types';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import autocannon from 'autocannon';
import Fastify, { type FastifyInstance } from 'fastify';
import pg from 'pg';
import { createPublicClient, createWalletClient, http as viemHttp, parseAbi, type Address } from 'viem';
import { base as baseChain } from 'viem/chains';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { buildApp } from '../src/app.js';
import { signInHeader } from '../src/auth/siwe-client.js';
import { ANVIL_ACCOUNTS, BASE_USDC, DEV_ROLES } from '../src/chain/constants.js';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { runMigrations } from '../src/db/migrate.js';

export const AUTH_DOMAIN = 'bench.local';
export const AUTH_URI = `https://${AUTH_DOMAIN}`;
export const WARMUP_SECONDS = 2;
export const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/test';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- settings

/** An env knob that must be a positive integer (at most `max` when given), `fallback` when unset or empty. */
export function positiveInt(name: string, fallback: number, max?: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (max === undefined) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  } else if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new Error(`${name} must be an integer in 1..${max}, got "${raw}"`);
  }
  return n;
}

export function redactUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

// ---------------------------------------------------------------- child: the servers

/** Messages every child sends besides its own: its port once listening, or why it could not start. */
export type BaseFromChild = { type: 'listening'; port: number } | { type: 'failed'; message: string };

export interface Served {
  app: FastifyInstance;
  close(): Promise<void>;
}

export async function serveBare(): Promise<Served> {
  const app = Fastify({ logger: false });
  app.get('/hello', async () => ({ ok: true }));
  return { app, close: () => app.close() };
}

/**
 * The real app, logger off, limits out of the way; PGlite in a temp dir (`dirPrefix`) unless
 * BENCH_DB_URL is set. `config` adds settings to the bench's ones. `dataDir`: a PGlite directory
 * the parent made (and removes), instead of one of the child's own. `logStream`: the app logs
 * there at the configured LOG_LEVEL instead of not at all.
 */
export async function serveApp(opts: {
  dirPrefix: string;
  config?: Record<string, string | undefined>;
  chainRpcUrl?: string;
  dataDir?: string;
  logStream?: { write(line: string): void };
}): Promise<Served> {
  const url = process.env.BENCH_DB_URL || undefined;
  const ownDir = url || opts.dataDir ? undefined : mkdtempSync(path.join(tmpdir(), opts.dirPrefix));
  const dataDir = url ? undefined : (opts.dataDir ?? ownDir);
  const config = loadConfig({
    NODE_ENV: 'production',
    LOG_LEVEL: 'silent',
    DATABASE_URL: url,
    DATA_DIR: dataDir ?? 'unused',
    AUTH_DOMAIN,
    AUTH_MAX_AGE_SECONDS: process.env.BENCH_AUTH_MAX_AGE ?? '3600',
    RATE_LIMIT_MAX: '1000000000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    ...opts.config,
  });
  const database = await openDatabase({ url: config.DATABASE_URL, dataDir: config.DATA_DIR, poolMax: config.DB_POOL_MAX });
  await runMigrations(database);
  const app = await buildApp({
    config,
    database,
    ...(opts.logStream ? { logStream: opts.logStream } : { logger: false }),
    ...(opts.chainRpcUrl ? { chainRpcUrl: opts.chainRpcUrl } : {}),
  });
  return {
    app,
    close: async () => {
      await app.close();
      await database.close();
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    },
  };
}

export function tell<M extends { type: string }>(msg: M): void {
  process.send?.(msg);
}

/**
 * Child side: listens on loopback, closes `served` and exits on `close` or when the parent goes
 * away, hands every other message to `onMessage`, then tells the parent its port.
 */
export async function serveChild<M extends { type: string }>(served: Served, onMessage: (msg: M) => void): Promise<void> {
  await served.app.listen({ host: '127.0.0.1', port: 0 });
  const address = served.app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  let closing = false;
  const shutDown = async () => {
    if (closing) return;
    closing = true;
    await served.close().catch(() => undefined);
    process.exit(0);
  };
  process.on('disconnect', () => void shutDown());
  process.on('message', (raw: unknown) => {
    const msg = raw as M | { type: 'close' };
    if (msg.type === 'close') {
      void shutDown();
      return;
    }
    onMessage(msg as M);
  });
  tell({ type: 'listening', port } satisfies BaseFromChild);
}

/** `--serve bare|app` on the command line: this process is a server child. */
export function serveKindFromArgs(argv: string[]): 'bare' | 'app' | undefined {
  const i = argv.indexOf('--serve');
  if (i < 0) return undefined;
  const kind = argv[i + 1];
  if (kind !== 'bare' && kind !== 'app') throw new Error(`--serve bare|app, got ${kind}`);
  return kind;
}

/**
 * The end of each script: a child runs `serve` (telling the parent why it failed, if it does);
 * the parent runs `main`, then `kill` (children and whatever else is left) and exits.
 */
export function runBench(serve: (() => Promise<void>) | undefined, main: () => Promise<void>, kill: () => void): void {
  if (serve) {
    serve().catch((err: unknown) => {
      tell({ type: 'failed', message: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies BaseFromChild);
      process.exit(1);
    });
  } else {
    main()
      .catch((err: unknown) => {
        console.error(err);
        process.exitCode = 1;
      })
      .finally(() => {
        kill();
        process.exit();
      });
  }
}

// ---------------------------------------------------------------- parent: children

export const children = new Set<ChildProcess>();

export function killChildren(): void {
  for (const child of children) child.kill('SIGKILL');
}

/** Forks the script at `scriptUrl` (pass `import.meta.url`) with IPC, and tracks the child until it exits. */
export function forkSelf(scriptUrl: string, args: string[], env: Record<string, string>): ChildProcess {
  // BENCH_CPU_PROF_DIR: each child writes a V8 CPU profile there when it exits (node --cpu-prof).
  const profDir = process.env.BENCH_CPU_PROF_DIR;
  const child = fork(fileURLToPath(scriptUrl), args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    ...(profDir ? { execArgv: [...process.execArgv, '--cpu-prof', `--cpu-prof-dir=${profDir}`] } : {}),
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** The child's next message of `type` (a `failed` message, an exit or the timeout rejects). */
export function onceFromChild<F extends { type: string }, T extends F['type']>(
  child: ChildProcess,
  type: T,
  timeoutMs: number,
): Promise<Extract<F, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`child did not answer "${type}" within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (raw: unknown) => {
      const msg = raw as F | BaseFromChild;
      if (msg.type === type) finish(undefined, msg as Extract<F, { type: T }>);
      else if (msg.type === 'failed') finish(new Error((msg as Extract<BaseFromChild, { type: 'failed' }>).message));
    };
    const onExit = (code: number | null) => finish(new Error(`child exited (${code}) before "${type}"`));
    function finish(err?: Error, value?: Extract<F, { type: T }>) {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(value!);
    }
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

/** Asks a child to close and waits for its exit, killing it after `killAfterMs`. */
export async function stopProcess(proc: ChildProcess, killAfterMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.send({ type: 'close' });
  const timer = setTimeout(() => proc.kill('SIGKILL'), killAfterMs);
  await exited;
  clearTimeout(timer);
}

export interface Server {
  base: string;
  child: ChildProcess;
}

/** A `--serve <kind>` child of the script at `scriptUrl`, once it listens. */
export async function startServer(scriptUrl: string, kind: string, env: Record<string, string>): Promise<Server> {
  const child = forkSelf(scriptUrl, ['--serve', kind], env);
  const { port } = await onceFromChild<BaseFromChild, 'listening'>(child, 'listening', 120_000);
  return { base: `http://127.0.0.1:${port}`, child };
}

export async function stopServer(server: Server): Promise<void> {
  await stopProcess(server.child, 15_000);
}

export async function withServer<T>(
  scriptUrl: string,
  kind: string,
  env: Record<string, string>,
  fn: (server: Server) => Promise<T>,
): Promise<T> {
  const server = await startServer(scriptUrl, kind, env);
  try {
    return await fn(server);
  } finally {
    await stopServer(server);
  }
}

// ---------------------------------------------------------------- parent: temp dirs and Postgres

export const tempDirs = new Set<string>();

export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

export interface ThrowawayDb {
  url: string;
  drop(): Promise<void>;
}

/** Throwaway databases created and not dropped yet. */
export const databases = new Set<ThrowawayDb>();

export interface PostgresAdmin {
  create(): Promise<ThrowawayDb>;
  end(): Promise<void>;
}

/** One admin connection (or why there is none); each `create()` makes a `te_bench_<random>` database, dropped by `drop()`. */
export async function postgresAdmin(adminUrl: string): Promise<PostgresAdmin | string> {
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
    await admin.query('select 1');
  } catch (err) {
    await admin.end().catch(() => undefined);
    return `Postgres at ${redactUrl(adminUrl)} is unreachable (${(err as Error).message})`;
  }
  return {
    create: async () => {
      const name = `te_bench_${randomBytes(6).toString('hex')}`;
      await admin.query(`create database ${name}`);
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      const db: ThrowawayDb = {
        url: url.toString(),
        drop: async () => {
          databases.delete(db);
          await admin.query(`drop database if exists ${name} with (force)`);
        },
      };
      databases.add(db);
      return db;
    },
    end: () => admin.end(),
  };
}

/** One throwaway database on its own admin connection (or why there is none); `drop()` also ends the connection. */
export async function createThrowawayDb(adminUrl: string): Promise<ThrowawayDb | string> {
  const admin = await postgresAdmin(adminUrl);
  if (typeof admin === 'string') return admin;
  let db: ThrowawayDb;
  try {
    db = await admin.create();
  } catch (err) {
    await admin.end().catch(() => undefined);
    return `cannot create a database on ${redactUrl(adminUrl)} (${(err as Error).message})`;
  }
  return {
    url: db.url,
    drop: async () => {
      await db.drop();
      await admin.end();
    },
  };
}

// ---------------------------------------------------------------- parent: watchdog

/**
 * Gives up after `limitMs` (exit 2) and on the `signals` (exit 130): `kill` first, then exit at
 * once or after `exitDelayMs` (time for `kill`'s asynchronous part).
 */
export function startWatchdog(limitMs: number, opts: { kill: () => void; exitDelayMs: number; signals: readonly NodeJS.Signals[] }): void {
  const exit = (code: number) => {
    if (opts.exitDelayMs > 0) setTimeout(() => process.exit(code), opts.exitDelayMs).unref();
    else process.exit(code);
  };
  setTimeout(() => {
    console.error(`bench: gave up after ${limitMs / 1000} s`);
    opts.kill();
    exit(2);
  }, limitMs).unref();
  for (const signal of opts.signals) {
    process.once(signal, () => {
      opts.kill();
      exit(130);
    });
  }
}

// ---------------------------------------------------------------- load and CPU

/** CPU this process used, in ms, since `before`. */
export function cpuMsSince(before: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(before);
  return (d.user + d.system) / 1000;
}

/**
 * The figures of one autocannon run; `loaderCpu` is the CPU this (load generator) process used
 * during it (`cpu`, a `process.cpuUsage` delta), in % of one core.
 */
export function autocannonFigures(r: autocannon.Result, cpu: NodeJS.CpuUsage) {
  return {
    reqPerSec: r.requests.total / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors,
    loaderCpu: ((cpu.user + cpu.system) / 1e6 / r.duration) * 100,
  };
}

// ---------------------------------------------------------------- report

/** `n` with `digits` decimals; `-` for NaN or ±Infinity (a figure that was not measured). */
export const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

/** A Markdown table: columns in `left` padded left-aligned, the others right-aligned. */
export function printTable(head: string[], body: string[][], left: ReadonlySet<number> = new Set([0])): void {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (left.has(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  console.log(line(head));
  console.log(`|${widths.map((w, i) => (left.has(i) ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
  for (const b of body) console.log(line(b));
}

// ---------------------------------------------------------------- wallets and fixtures

/** The address of a new random key: an agent owner, payer or payout wallet nobody else uses. */
export const freshAddress = (): Address => privateKeyToAccount(generatePrivateKey()).address;

/** A demo wallet of the dev chain (index into DEV_ROLES.demo). */
export const demo = (slot: number): PrivateKeyAccount => privateKeyToAccount(ANVIL_ACCOUNTS[DEV_ROLES.demo[slot]!]!.privateKey);

/**
 * Fresh wallets holding `amount` test USDC each and no ETH, sent by `funder` (a demo wallet) one
 * transfer after the other (one nonce at a time), each waited for (as bench/channels.ts funds its payers).
 */
export async function fundedWallets(rpcUrl: string, funder: PrivateKeyAccount, count: number, amount: bigint): Promise<PrivateKeyAccount[]> {
  const wallet = createWalletClient({ account: funder, transport: viemHttp(rpcUrl), chain: baseChain });
  const reader = createPublicClient({ transport: viemHttp(rpcUrl) });
  const abi = parseAbi(['function transfer(address,uint256) returns (bool)']);
  const accounts: PrivateKeyAccount[] = [];
  for (let i = 0; i < count; i++) {
    const account = privateKeyToAccount(generatePrivateKey());
    const hash = await wallet.writeContract({ address: BASE_USDC, abi, functionName: 'transfer', args: [account.address, amount] });
    const receipt = await reader.waitForTransactionReceipt({ hash, pollingInterval: 20 });
    if (receipt.status !== 'success') throw new Error(`funding ${account.address} reverted (tx ${hash})`);
    accounts.push(account);
  }
  return accounts;
}

export function x402ClientFor(account: PrivateKeyAccount): x402Client {
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  return client;
}

/** A SIWE `Authorization` header for the bench's domain. */
export const siwe = (who: PrivateKeyAccount, ttlSeconds?: number) =>
  signInHeader(who, { domain: AUTH_DOMAIN, uri: AUTH_URI, ...(ttlSeconds ? { ttlSeconds } : {}) });

/** Body of `POST /v1/agents` for the bench's writer agent. */
export const agentBody = (payout: Address) => ({
  name: 'Bench Writer',
  description: 'Writes product copy for the benchmark',
  capabilities: ['copywriting'],
  pricing: { base_rate: '500000' },
  payout_address: payout,
});

/** Body of `POST /v1/tasks`: 1 USDC budget on base. */
export const taskBody = (agentId: unknown) => ({
  agent_id: agentId,
  description: 'Write a blurb',
  budget: { amount: '1000000', currency: 'USDC', chain: 'base' },
});

// ---------------------------------------------------------------- parent: CPU and memory of other processes

let clockTicks: number | undefined;

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); undefined elsewhere. */
export function procCpuSeconds(pid: number | undefined): number | undefined {
  if (!pid || pid < 0 || process.platform !== 'linux') return undefined;
  try {
    clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return undefined;
  }
}

/** Tracks the CPU a few processes use over one measured run. */
export function cpuMeter(pids: { server: number | undefined; anvil: number | undefined }) {
  const before = { server: procCpuSeconds(pids.server), anvil: procCpuSeconds(pids.anvil) };
  return () => {
    const delta = (k: 'server' | 'anvil') => {
      const a = before[k];
      const b = procCpuSeconds(pids[k]);
      return a === undefined || b === undefined ? undefined : b - a;
    };
    return { server: delta('server'), anvil: delta('anvil') };
  };
}

/** Resident memory of a process from /proc (Linux), in MB: now (VmRSS) and its peak (VmHWM); undefined elsewhere. */
export function rssOf(pid: number | undefined): { rssMb: number; peakMb: number } | undefined {
  if (!pid || process.platform !== 'linux') return undefined;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- parent: fixtures over HTTP (an agent, tasks, challenges)

export async function readJson(res: Response, expected: number, what: string): Promise<Record<string, unknown>> {
  const text = await res.text();
  if (res.status !== expected) throw new Error(`${what} answered ${res.status} (expected ${expected}): ${text.slice(0, 500)}`);
  return JSON.parse(text) as Record<string, unknown>;
}

/** The x402 challenge of a request sent without payment (status 402, header PAYMENT-REQUIRED). */
export async function challenge(url: string, init: RequestInit = {}): Promise<PaymentRequired> {
  const res = await fetch(url, init);
  const header = res.headers.get('payment-required');
  if (res.status !== 402 || !header) throw new Error(`expected a 402 challenge from ${url}, got ${res.status}: ${(await res.text()).slice(0, 500)}`);
  await res.arrayBuffer();
  return decodePaymentRequiredHeader(header);
}

/** One poller: a wallet and the status path of the task it owns. */
export interface Poller {
  account: PrivateKeyAccount;
  path: string;
  /** Paid run only: the status route's challenge, to sign payments against. */
  required?: PaymentRequired;
}

export async function createAgent(base: string, owner: PrivateKeyAccount): Promise<string> {
  const res = await fetch(`${base}/v1/agents`, {
    method: 'POST',
    headers: { authorization: await siwe(owner), 'content-type': 'application/json' },
    body: JSON.stringify(agentBody(owner.address)),
  });
  return String((await readJson(res, 201, 'POST /v1/agents')).id);
}

const taskJson = (agentId: string) => JSON.stringify(taskBody(agentId));

/** x402 off: an agent, then one task per payer through SIWE, each checked with one status poll. */
export async function unpaidFixture(base: string, payers: readonly PrivateKeyAccount[], owner: PrivateKeyAccount): Promise<Poller[]> {
  const agentId = await createAgent(base, owner);
  const pollers: Poller[] = [];
  for (const account of payers) {
    const res = await fetch(`${base}/v1/tasks`, {
      method: 'POST',
      headers: { authorization: await siwe(account), 'content-type': 'application/json' },
      body: taskJson(agentId),
    });
    const task = await readJson(res, 201, 'POST /v1/tasks (SIWE)');
    const statusPath = `/v1/tasks/${String(task.task_id)}/status`;
    await readJson(await fetch(`${base}${statusPath}`, { headers: { authorization: await siwe(account) } }), 200, 'status check');
    pollers.push({ account, path: statusPath });
  }
  return pollers;
}

/** x402 on: an agent, then one task per payer through the paid `POST /v1/tasks`, each checked with one paid poll. */
export async function paidFixture(base: string, payers: readonly PrivateKeyAccount[], owner: PrivateKeyAccount): Promise<Poller[]> {
  const agentId = await createAgent(base, owner);
  const pollers: Poller[] = [];
  for (const account of payers) {
    const client = x402ClientFor(account);
    const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body: taskJson(agentId) };
    const createTerms = await challenge(`${base}/v1/tasks`, init);
    const payment = encodePaymentSignatureHeader(await client.createPaymentPayload(createTerms));
    const res = await fetch(`${base}/v1/tasks`, { ...init, headers: { ...init.headers, 'payment-signature': payment } });
    const task = await readJson(res, 201, 'POST /v1/tasks (x402)');
    const statusPath = `/v1/tasks/${String(task.task_id)}/status`;
    // The status route offers `exact` and `batch-settlement`; these pollers pay `exact`.
    const offered = await challenge(`${base}${statusPath}`);
    const required = { ...offered, accepts: offered.accepts.filter((a) => a.scheme === 'exact') };
    const terms = required.accepts[0];
    if (required.accepts.length !== 1 || terms?.amount !== '1000') {
      throw new Error(`unexpected status challenge: ${JSON.stringify(required.accepts)}`);
    }
    const check = encodePaymentSignatureHeader(await client.createPaymentPayload(required));
    await readJson(await fetch(`${base}${statusPath}`, { headers: { 'payment-signature': check } }), 200, 'paid status check');
    pollers.push({ account, path: statusPath, required });
  }
  return pollers;
}

// ---------------------------------------------------------------- parent: pre-signed requests

/** One request's path and its single-use proof (SIWE header or x402 payment). */
export interface Item {
  path: string;
  headers: Record<string, string>;
}

export type Signer = (count: number) => Promise<Item[]>;

/** Round-robin over the pollers: SIWE `Authorization` headers, one per request. */
export function siweSigner(pollers: readonly Poller[], ttlSeconds: number): Signer {
  return async (count) => {
    const items: Item[] = [];
    for (let i = 0; i < count; i++) {
      const p = pollers[i % pollers.length]!;
      items.push({ path: p.path, headers: { authorization: await siwe(p.account, ttlSeconds) } });
    }
    return items;
  };
}

/** Round-robin over the pollers: a fresh EIP-3009 authorization (random nonce) per request. */
export function paymentSigner(pollers: readonly Poller[]): Signer {
  const clients = pollers.map((p) => x402ClientFor(p.account));
  return async (count) => {
    const items: Item[] = [];
    for (let i = 0; i < count; i++) {
      const k = i % pollers.length;
      const p = pollers[k]!;
      const payload = await clients[k]!.createPaymentPayload(p.required!);
      items.push({ path: p.path, headers: { 'payment-signature': encodePaymentSignatureHeader(payload) } });
    }
    return items;
  };
}

// ---------------------------------------------------------------- parent: load with single-use items

export interface Supply {
  items: Item[];
  next: number;
  shortfall: number;
}

export function loadOnce(
  base: string,
  seconds: number,
  connections: number,
  route: string,
  supply: Supply | undefined,
  failures: string[],
  headers?: Record<string, string>,
) {
  const request: autocannon.Request = { method: 'GET', path: route, ...(headers ? { headers } : {}) };
  request.onResponse = (status, body) => {
    if ((status < 200 || status > 299) && failures.length < 5) failures.push(`${status} ${body.slice(0, 400)}`);
  };
  const opts: autocannon.Options = { url: base, connections, duration: seconds, requests: [request] };
  if (supply) {
    request.setupRequest = (req) => {
      const item = supply.items[supply.next] ?? supply.items[supply.items.length - 1]!;
      if (supply.next < supply.items.length) supply.next++;
      else supply.shortfall++;
      return { ...req, path: item.path, headers: { ...req.headers, ...item.headers } };
    };
    // Never more requests than pre-signed items: the run stops early rather than replay one.
    opts.maxOverallRequests = supply.items.length;
    if (connections > supply.items.length) opts.connections = supply.items.length;
  }
  return autocannon(opts);
}

// ---------------------------------------------------------------- parent: measured targets (rows)

export interface Row {
  target: string;
  reqPerSec: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** 2xx answers over warm-up + measured run (paid: each one should be a settled payment). */
  ok2xx: number;
  /** Requests answered in the measured run. */
  total: number;
  /** Measured seconds (less than asked when the pre-signed pool ran out first). */
  seconds: number;
  /** CPU this (load generator) process used during the run, in % of one core. */
  loaderCpu: number;
  /** CPU seconds the server process and anvil used during the measured run (Linux only). */
  serverCpuS: number | undefined;
  anvilCpuS: number | undefined;
  connections: number;
  /** The first few non-2xx answers (status and body), for the diagnosis. */
  failures: string[];
  /** Pre-signed items handed out past the pool (0 by construction; checked anyway). */
  shortfall: number;
}

export const toRow = (
  target: string,
  r: autocannon.Result,
  cpu: NodeJS.CpuUsage,
  others: { server: number | undefined; anvil: number | undefined },
  connections: number,
  ok2xx: number,
  failures: string[],
  shortfall: number,
): Row => ({
  target,
  ...autocannonFigures(r, cpu),
  ok2xx,
  total: r.requests.total,
  seconds: r.duration,
  serverCpuS: others.server,
  anvilCpuS: others.anvil,
  connections,
  failures,
  shortfall,
});

export function logRow(row: Row): void {
  console.log(`  ${row.target}: ${Math.round(row.reqPerSec)} req/s, p99 ${row.p99} ms, non-2xx ${row.non2xx}, errors ${row.errors}`);
  for (const f of row.failures) console.log(`    non-2xx: ${f}`);
}

/** A target without single-use items (bare, or the same `headers` on every request): a 2 s warm-up, then the measured run. */
export async function measurePlain(
  target: string,
  server: Server,
  route: string,
  settings: { connections: number; seconds: number },
  headers?: Record<string, string>,
): Promise<Row> {
  const failures: string[] = [];
  await loadOnce(server.base, WARMUP_SECONDS, settings.connections, route, undefined, failures, headers);
  const cpuBefore = process.cpuUsage();
  const others = cpuMeter({ server: server.child.pid, anvil: undefined });
  const r = await loadOnce(server.base, settings.seconds, settings.connections, route, undefined, failures, headers);
  const row = toRow(target, r, process.cpuUsage(cpuBefore), others(), settings.connections, r['2xx'], failures, 0);
  logRow(row);
  return row;
}

/**
 * Signed target: every request takes its own pre-signed item. The warm-up pool is sized from a
 * guessed rate; the measured pool from the warm-up's rate (×2, plus slack). A run never sends
 * more requests than it has items (autocannon `maxOverallRequests`), so nothing is replayed; if a
 * pool runs out the run ends early and says so.
 */
export async function measureSigned(
  target: string,
  server: Server,
  anvilPid: number,
  connections: number,
  seconds: number,
  guessRate: number,
  sign: Signer,
): Promise<Row> {
  const failures: string[] = [];
  let t0 = Date.now();
  const warmItems = await sign(Math.max(connections * 4, Math.ceil(WARMUP_SECONDS * guessRate)));
  const warmSignS = (Date.now() - t0) / 1000;
  const warmSupply: Supply = { items: warmItems, next: 0, shortfall: 0 };
  const warm = await loadOnce(server.base, WARMUP_SECONDS, connections, warmItems[0]!.path, warmSupply, failures);
  const warmRate = warm.requests.total / warm.duration;
  const count = Math.ceil(warmRate * seconds * 2) + 20 * connections;
  t0 = Date.now();
  const items = await sign(count);
  console.log(
    `  ${target}: warm-up ${Math.round(warmRate)} req/s (${warmItems.length} signed in ${warmSignS.toFixed(1)} s); ` +
      `signed ${count} for the measured run in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
  const supply: Supply = { items, next: 0, shortfall: 0 };
  const cpuBefore = process.cpuUsage();
  const others = cpuMeter({ server: server.child.pid, anvil: anvilPid });
  const r = await loadOnce(server.base, seconds, connections, items[0]!.path, supply, failures);
  const row = toRow(target, r, process.cpuUsage(cpuBefore), others(), connections, warm['2xx'] + r['2xx'], failures, warmSupply.shortfall + supply.shortfall);
  row.non2xx += warm.non2xx;
  row.errors += warm.errors;
  logRow(row);
  return row;
}
