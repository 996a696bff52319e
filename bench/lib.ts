/**
 * The harness the benchmarks share (bench/status.ts, bench/paid.ts, bench/dispatch.ts): settings
 * from the environment, the `--serve` child processes and their messages, throwaway Postgres
 * databases and temp dirs, the watchdog, autocannon figures, the table printer, and the demo
 * wallets / fixtures the scripts post. Not a benchmark itself.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { x402Client } from '@x402/core/client';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import type autocannon from 'autocannon';
import Fastify, { type FastifyInstance } from 'fastify';
import pg from 'pg';
import type { Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { buildApp } from '../src/app.js';
import { signInHeader } from '../src/auth/siwe-client.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../src/chain/constants.js';
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
  const child = fork(fileURLToPath(scriptUrl), args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
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
