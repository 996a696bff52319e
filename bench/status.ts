/**
 * Throughput of the task status poll (`GET /v1/tasks/{id}/status`) against a bare Fastify
 * route, in one run so the ratios are comparable (see bench/README.md).
 *
 *   npx tsx bench/status.ts        (BENCH_SECONDS, BENCH_CONNECTIONS, DATABASE_URL)
 *
 * Each server runs in a child process (this file with `--serve`), the load generator in this
 * one: on a 2-core machine each gets a core, as with a separate wrk.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import Fastify, { type FastifyInstance } from 'fastify';
import pg from 'pg';
import { getAddress, verifyMessage, type Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { createSiweMessage, generateSiweNonce, parseSiweMessage } from 'viem/siwe';
import { buildApp } from '../src/app.js';
import { signInHeader } from '../src/auth/siwe-client.js';
import { SiweVerifier, parseAuthorizationHeader, type VerifiedSignIn } from '../src/auth/siwe.js';
import { systemClock } from '../src/clock.js';
import { loadConfig } from '../src/config.js';
import { openDatabase, type Db } from '../src/db/client.js';
import { runMigrations } from '../src/db/migrate.js';
import { authNonces } from '../src/db/schema.js';
import { AppError } from '../src/errors.js';

const AUTH_DOMAIN = 'bench.local';
const AUTH_URI = `https://${AUTH_DOMAIN}`;
const WARMUP_SECONDS = 2;
const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/test';

// ---------------------------------------------------------------- messages parent ⇄ child

type ServeKind = 'bare' | 'app';
type ToChild = { type: 'skip-signature' } | { type: 'close' };
type FromChild = { type: 'listening'; port: number } | { type: 'ack' } | { type: 'failed'; message: string };

// ---------------------------------------------------------------- child: the servers

interface Served {
  app: FastifyInstance;
  close(): Promise<void>;
}

async function serveBare(): Promise<Served> {
  const app = Fastify({ logger: false });
  app.get('/hello', async () => ({ ok: true }));
  return { app, close: () => app.close() };
}

/** The real app, logger off, limits out of the way; PGlite in a temp dir unless BENCH_DB_URL is set. */
async function serveApp(): Promise<Served> {
  const url = process.env.BENCH_DB_URL || undefined;
  const dataDir = url ? undefined : mkdtempSync(path.join(tmpdir(), 'te-bench-'));
  const config = loadConfig({
    NODE_ENV: 'production',
    LOG_LEVEL: 'silent',
    DATABASE_URL: url,
    DATA_DIR: dataDir ?? 'unused',
    AUTH_DOMAIN,
    AUTH_MAX_AGE_SECONDS: process.env.BENCH_AUTH_MAX_AGE ?? '3600',
    RATE_LIMIT_MAX: '1000000000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
  });
  const database = await openDatabase({ url: config.DATABASE_URL, dataDir: config.DATA_DIR, poolMax: config.DB_POOL_MAX });
  await runMigrations(database);
  const app = await buildApp({ config, database, logger: false });
  return {
    app,
    close: async () => {
      await app.close();
      await database.close();
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * The SIWE verifier minus the signature check: parses the header and message and spends the
 * nonce in the database exactly like the real one, but never recovers the signer. Bench only.
 */
class SignatureSkippingVerifier extends SiweVerifier {
  constructor(private readonly nonceDb: Db) {
    super({ db: nonceDb, clock: systemClock, domain: AUTH_DOMAIN, maxAgeSeconds: 86_400 });
  }

  override async verify(header: string): Promise<VerifiedSignIn> {
    const { message } = parseAuthorizationHeader(header);
    const { address, nonce, expirationTime } = parseSiweMessage(message);
    if (!address || !nonce || !expirationTime) throw new AppError('invalid_signature', 'Incomplete sign-in message');
    const inserted = await this.nonceDb
      .insert(authNonces)
      .values({ address: address.toLowerCase(), nonce, expiresAt: expirationTime })
      .onConflictDoNothing()
      .returning({ nonce: authNonces.nonce });
    if (inserted.length === 0) throw new AppError('signature_replayed', 'This sign-in message was already used');
    return { address: getAddress(address), nonce, expiresAt: expirationTime };
  }
}

function tell(msg: FromChild): void {
  process.send?.(msg);
}

async function serve(kind: ServeKind): Promise<void> {
  const served = kind === 'bare' ? await serveBare() : await serveApp();
  await served.app.listen({ host: '127.0.0.1', port: 0 });
  const address = served.app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const shutDown = async () => {
    await served.close().catch(() => undefined);
    process.exit(0);
  };
  process.on('disconnect', () => void shutDown());
  process.on('message', (raw: unknown) => {
    const msg = raw as ToChild;
    if (msg.type === 'close') void shutDown();
    if (msg.type === 'skip-signature') {
      served.app.services.siwe = new SignatureSkippingVerifier(served.app.db);
      tell({ type: 'ack' });
    }
  });
  tell({ type: 'listening', port });
}

// ---------------------------------------------------------------- parent: settings

interface Settings {
  seconds: number;
  connections: number;
  pgUrl: string;
  /** Lifetime of the pre-signed headers and the server's AUTH_MAX_AGE_SECONDS. */
  authMaxAge: number;
}

function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

function readSettings(): Settings {
  const seconds = positiveInt('BENCH_SECONDS', 10);
  const connections = positiveInt('BENCH_CONNECTIONS', 50);
  const runs = 5 * (seconds + WARMUP_SECONDS);
  return {
    seconds,
    connections,
    pgUrl: process.env.DATABASE_URL || DEFAULT_PG_URL,
    authMaxAge: Math.min(86_400, Math.max(600, 2 * runs + 600)),
  };
}

function redactUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

// ---------------------------------------------------------------- parent: children

const children = new Set<ChildProcess>();

function onceFromChild<T extends FromChild['type']>(
  child: ChildProcess,
  type: T,
  timeoutMs: number,
): Promise<Extract<FromChild, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`child did not answer "${type}" within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (raw: unknown) => {
      const msg = raw as FromChild;
      if (msg.type === type) finish(undefined, msg as Extract<FromChild, { type: T }>);
      else if (msg.type === 'failed') finish(new Error(msg.message));
    };
    const onExit = (code: number | null) => finish(new Error(`child exited (${code}) before "${type}"`));
    function finish(err?: Error, value?: Extract<FromChild, { type: T }>) {
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

interface Server {
  base: string;
  child: ChildProcess;
}

async function startServer(kind: ServeKind, env: Record<string, string>): Promise<Server> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve', kind], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const { port } = await onceFromChild(child, 'listening', 120_000);
  return { base: `http://127.0.0.1:${port}`, child };
}

async function stopServer(server: Server): Promise<void> {
  if (server.child.exitCode !== null) return;
  const exited = new Promise<void>((resolve) => server.child.once('exit', () => resolve()));
  server.child.send({ type: 'close' } satisfies ToChild);
  const timer = setTimeout(() => server.child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

async function skipSignatures(server: Server): Promise<void> {
  const ack = onceFromChild(server.child, 'ack', 10_000);
  server.child.send({ type: 'skip-signature' } satisfies ToChild);
  await ack;
}

// ---------------------------------------------------------------- parent: headers

/** Hands out one Authorization header per request; never repeats one (a repeat is a replay → 401). */
interface HeaderSupply {
  next(): string;
  readonly shortfall: number;
}

function poolSupply(headers: readonly string[]): HeaderSupply {
  let i = 0;
  let shortfall = 0;
  return {
    next() {
      if (i < headers.length) return headers[i++]!;
      shortfall++;
      return headers[headers.length - 1]!;
    },
    get shortfall() {
      return shortfall;
    },
  };
}

/** Same wire format as src/auth/siwe-client.ts, with a placeholder signature (for the signature-skipping server). */
function unsignedHeader(address: Address, ttlSeconds: number): string {
  const issuedAt = new Date();
  const message = createSiweMessage({
    address,
    domain: AUTH_DOMAIN,
    uri: AUTH_URI,
    version: '1',
    chainId: 8453,
    nonce: generateSiweNonce(),
    issuedAt,
    expirationTime: new Date(issuedAt.getTime() + ttlSeconds * 1000),
  });
  return `SIWE ${Buffer.from(message, 'utf8').toString('base64url')}.0x${'11'.repeat(65)}`;
}

function lazySupply(build: () => string): HeaderSupply {
  return { next: build, shortfall: 0 };
}

async function signHeaders(account: PrivateKeyAccount, count: number, ttlSeconds: number): Promise<string[]> {
  const headers: string[] = [];
  for (let i = 0; i < count; i++) {
    headers.push(await signInHeader(account, { domain: AUTH_DOMAIN, uri: AUTH_URI, ttlSeconds }));
  }
  return headers;
}

/** CPU cost of one viem `verifyMessage` on a SIWE message, measured in this process. */
async function measureVerify(account: PrivateKeyAccount): Promise<number> {
  const header = await signInHeader(account, { domain: AUTH_DOMAIN, uri: AUTH_URI });
  const { message, signature } = parseAuthorizationHeader(header);
  const once = async () => {
    if (!(await verifyMessage({ address: account.address, message, signature }))) throw new Error('verifyMessage failed');
  };
  for (let i = 0; i < 30; i++) await once();
  let n = 0;
  const start = process.hrtime.bigint();
  while (n < 2000 && process.hrtime.bigint() - start < 1_500_000_000n) {
    await once();
    n++;
  }
  return Number(process.hrtime.bigint() - start) / 1e6 / n;
}

// ---------------------------------------------------------------- parent: fixtures over HTTP

async function postSigned(base: string, route: string, who: PrivateKeyAccount, body: object): Promise<Record<string, unknown>> {
  const authorization = await signInHeader(who, { domain: AUTH_DOMAIN, uri: AUTH_URI });
  const res = await fetch(`${base}${route}`, {
    method: 'POST',
    headers: { authorization, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`POST ${route} answered ${res.status}: ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

interface Actors {
  owner: PrivateKeyAccount;
  payer: PrivateKeyAccount;
}

/** One agent and one task through the API; returns the status path the payer polls. */
async function createFixture(base: string, { owner, payer }: Actors): Promise<string> {
  const agent = await postSigned(base, '/v1/agents', owner, {
    name: 'Bench Writer',
    description: 'Writes product copy for the benchmark',
    capabilities: ['copywriting'],
    pricing: { base_rate: '500000' },
    payout_address: owner.address,
  });
  const task = await postSigned(base, '/v1/tasks', payer, {
    agent_id: agent.id,
    description: 'Write a blurb',
    budget: { amount: '1000000', currency: 'USDC', chain: 'base' },
  });
  const statusPath = `/v1/tasks/${String(task.task_id)}/status`;
  const check = await fetch(`${base}${statusPath}`, {
    headers: { authorization: await signInHeader(payer, { domain: AUTH_DOMAIN, uri: AUTH_URI }) },
  });
  if (check.status !== 200) throw new Error(`status check answered ${check.status}: ${await check.text()}`);
  return statusPath;
}

// ---------------------------------------------------------------- parent: load

interface Row {
  target: string;
  reqPerSec: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  shortfall: number;
  /** CPU this (load generator) process used during the run, in % of one core: near 100 = the loader, not the server, set the pace. */
  loaderCpu: number;
}

async function load(base: string, route: string, seconds: number, connections: number, supply?: HeaderSupply) {
  const request: autocannon.Request = { method: 'GET', path: route };
  if (supply) {
    request.setupRequest = (req) => ({ ...req, headers: { ...req.headers, authorization: supply.next() } });
  }
  return autocannon({ url: base, connections, duration: seconds, requests: [request] });
}

async function measure(
  target: string,
  base: string,
  route: string,
  settings: Settings,
  supply?: HeaderSupply,
): Promise<Row> {
  await load(base, route, WARMUP_SECONDS, settings.connections, supply);
  const cpuBefore = process.cpuUsage();
  const r = await load(base, route, settings.seconds, settings.connections, supply);
  const cpu = process.cpuUsage(cpuBefore);
  const row: Row = {
    target,
    reqPerSec: r.requests.total / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors,
    shortfall: supply?.shortfall ?? 0,
    loaderCpu: ((cpu.user + cpu.system) / 1e6 / r.duration) * 100,
  };
  console.log(`  ${target}: ${Math.round(row.reqPerSec)} req/s, non-2xx ${row.non2xx}`);
  return row;
}

/** Both status variants against one running app: signature verified, then signature skipped. */
async function measureStatus(label: string, server: Server, signed: readonly string[], settings: Settings, actors: Actors): Promise<Row[]> {
  const route = await createFixture(server.base, actors);
  const verified = await measure(`status ${label}`, server.base, route, settings, poolSupply(signed));
  await skipSignatures(server);
  const unsigned = lazySupply(() => unsignedHeader(actors.payer.address, settings.authMaxAge));
  const skipped = await measure(`status ${label}, signature skipped`, server.base, route, settings, unsigned);
  return [verified, skipped];
}

// ---------------------------------------------------------------- parent: Postgres

interface ThrowawayDb {
  url: string;
  drop(): Promise<void>;
}

async function createThrowawayDb(adminUrl: string): Promise<ThrowawayDb | string> {
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch (err) {
    return `Postgres at ${redactUrl(adminUrl)} is unreachable (${(err as Error).message})`;
  }
  const name = `te_bench_${randomBytes(6).toString('hex')}`;
  await admin.query(`create database ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      await admin.query(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

// ---------------------------------------------------------------- parent: report

const fmt = (n: number, digits = 0) => n.toFixed(digits);

function printTable(rows: Row[]): void {
  const head = ['target', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'loader CPU %'];
  const body = rows.map((r) => [
    r.target,
    fmt(r.reqPerSec),
    fmt(r.p50, 1),
    fmt(r.p99, 1),
    String(r.non2xx),
    String(r.errors),
    fmt(r.loaderCpu),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  console.log(line(head));
  console.log(`|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
  for (const b of body) console.log(line(b));
}

function printRatios(rows: Row[], verifyMs: number): void {
  const bare = rows.find((r) => r.target === 'bare /hello');
  if (!bare) return;
  console.log('\nratios to bare /hello (req/s):');
  for (const r of rows.filter((x) => x !== bare)) console.log(`  ${r.target.padEnd(36)} ${fmt(r.reqPerSec / bare.reqPerSec, 3)}`);
  console.log(`\nviem verifyMessage (one SIWE check, this process): ${fmt(verifyMs, 2)} ms → at most ~${fmt(1000 / verifyMs)} verified req/s per core`);
}

function checkRows(rows: Row[]): boolean {
  const bad = rows.filter((r) => r.non2xx > 0 || r.errors > 0 || r.shortfall > 0);
  for (const r of bad) {
    console.error(`WARNING ${r.target}: ${r.non2xx} non-2xx, ${r.errors} errors, ${r.shortfall} requests past the pre-signed headers — figures are not valid`);
  }
  for (const r of rows.filter((x) => x.loaderCpu >= 90)) {
    console.error(`NOTE ${r.target}: the load generator used ${fmt(r.loaderCpu)} % of a core; that figure is a floor`);
  }
  return bad.length === 0;
}

// ---------------------------------------------------------------- parent: main

function startWatchdog(settings: Settings): void {
  const limitMs = (5 * (settings.seconds + WARMUP_SECONDS) + 300) * 1000;
  setTimeout(() => {
    console.error(`bench: gave up after ${limitMs / 1000} s`);
    for (const child of children) child.kill('SIGKILL');
    process.exit(2);
  }, limitMs).unref();
  process.once('SIGINT', () => {
    for (const child of children) child.kill('SIGKILL');
    process.exit(130);
  });
}

async function benchPostgres(settings: Settings, signed: readonly string[], actors: Actors): Promise<Row[]> {
  const db = await createThrowawayDb(settings.pgUrl);
  if (typeof db === 'string') {
    console.log(`postgres: skipped — ${db}`);
    return [];
  }
  console.log(`postgres: throwaway database on ${redactUrl(settings.pgUrl)}`);
  try {
    const server = await startServer('app', { BENCH_DB_URL: db.url, BENCH_AUTH_MAX_AGE: String(settings.authMaxAge) });
    try {
      return await measureStatus('(Postgres)', server, signed, settings, actors);
    } finally {
      await stopServer(server);
    }
  } finally {
    await db.drop();
  }
}

async function main(): Promise<void> {
  const settings = readSettings();
  startWatchdog(settings);
  console.log(
    `bench: ${settings.connections} connections, ${WARMUP_SECONDS} s warm-up + ${settings.seconds} s per target, ` +
      `node ${process.version}, ${cpus().length} cpus`,
  );
  const actors: Actors = { owner: privateKeyToAccount(generatePrivateKey()), payer: privateKeyToAccount(generatePrivateKey()) };

  const verifyMs = await measureVerify(actors.payer);
  // The server verifies on one thread, so it cannot pass 1000/verifyMs req/s; sign a margin above that
  // (and above ~1.5 ms per check, in case this measurement ran on a busier machine than the server will).
  const ceiling = 1000 / Math.min(verifyMs, 1.5);
  const count = Math.ceil((settings.seconds + WARMUP_SECONDS) * ceiling * 1.5) + 20 * settings.connections;
  const t0 = Date.now();
  const signed = await signHeaders(actors.payer, count, settings.authMaxAge);
  console.log(`signed ${count} headers in ${fmt((Date.now() - t0) / 1000, 1)} s`);

  const rows: Row[] = [];
  const bare = await startServer('bare', {});
  try {
    rows.push(await measure('bare /hello', bare.base, '/hello', settings));
  } finally {
    await stopServer(bare);
  }

  const embedded = await startServer('app', { BENCH_DB_URL: '', BENCH_AUTH_MAX_AGE: String(settings.authMaxAge) });
  try {
    rows.push(...(await measureStatus('(PGlite)', embedded, signed, settings, actors)));
  } finally {
    await stopServer(embedded);
  }

  rows.push(...(await benchPostgres(settings, signed, actors)));

  console.log('');
  printTable(rows);
  printRatios(rows, verifyMs);
  if (!checkRows(rows)) process.exitCode = 1;
}

function serveKindFromArgs(argv: string[]): ServeKind | undefined {
  const i = argv.indexOf('--serve');
  if (i < 0) return undefined;
  const kind = argv[i + 1];
  if (kind !== 'bare' && kind !== 'app') throw new Error(`--serve bare|app, got ${kind}`);
  return kind;
}

const serveKind = serveKindFromArgs(process.argv.slice(2));
if (serveKind) {
  serve(serveKind).catch((err: unknown) => {
    tell({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  });
} else {
  main()
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    })
    .finally(() => {
      for (const child of children) child.kill('SIGKILL');
      process.exit();
    });
}
