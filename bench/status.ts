/**
 * Throughput of the task status poll (`GET /v1/tasks/{id}/status`) against a bare Fastify
 * route, in one run so the ratios are comparable (see bench/README.md).
 *
 *   npx tsx bench/status.ts        (BENCH_SECONDS, BENCH_CONNECTIONS, DATABASE_URL)
 *
 * Each server runs in a child process (this file with `--serve`), the load generator in this
 * one: on a 2-core machine each gets a core, as with a separate wrk.
 */
import { cpus } from 'node:os';
import autocannon from 'autocannon';
import { getAddress, verifyMessage, type Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { createSiweMessage, generateSiweNonce, parseSiweMessage } from 'viem/siwe';
import { SiweVerifier, parseAuthorizationHeader, type VerifiedSignIn } from '../src/auth/siwe.js';
import { systemClock } from '../src/clock.js';
import type { Db } from '../src/db/client.js';
import { authNonces } from '../src/db/schema.js';
import { AppError } from '../src/errors.js';
import {
  AUTH_DOMAIN,
  AUTH_URI,
  DEFAULT_PG_URL,
  WARMUP_SECONDS,
  agentBody,
  autocannonFigures,
  createThrowawayDb,
  killChildren,
  onceFromChild,
  positiveInt,
  printTable as printMarkdownTable,
  redactUrl,
  runBench,
  serveApp,
  serveBare,
  serveChild,
  serveKindFromArgs,
  siwe,
  startServer,
  startWatchdog,
  stopServer,
  taskBody,
  tell,
  withServer,
  type Server,
} from './lib.js';

// ---------------------------------------------------------------- messages parent ⇄ child

type ServeKind = 'bare' | 'app';
type ToChild = { type: 'skip-signature' } | { type: 'close' };
type FromChild = { type: 'ack' };

// ---------------------------------------------------------------- child: the servers

/**
 * The real app, logger off, limits out of the way; PGlite in a temp dir unless BENCH_DB_URL is set.
 * x402 off (the caller is identified by SIWE; bench/paid.ts measures the paid poll): x402 is on by
 * default and, with no chain here, the app would not start.
 */
const serveStatusApp = () => serveApp({ dirPrefix: 'te-bench-', config: { X402_ENABLED: 'false' } });

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

async function serve(kind: ServeKind): Promise<void> {
  const served = kind === 'bare' ? await serveBare() : await serveStatusApp();
  await serveChild<ToChild>(served, (msg) => {
    if (msg.type === 'skip-signature') {
      served.app.services.siwe = new SignatureSkippingVerifier(served.app.db);
      tell({ type: 'ack' } satisfies FromChild);
    }
  });
}

// ---------------------------------------------------------------- parent: settings

interface Settings {
  seconds: number;
  connections: number;
  pgUrl: string;
  /** Lifetime of the pre-signed headers and the server's AUTH_MAX_AGE_SECONDS. */
  authMaxAge: number;
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

// ---------------------------------------------------------------- parent: children

async function skipSignatures(server: Server): Promise<void> {
  const ack = onceFromChild<FromChild, 'ack'>(server.child, 'ack', 10_000);
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
    headers.push(await siwe(account, ttlSeconds));
  }
  return headers;
}

/** CPU cost of one viem `verifyMessage` on a SIWE message, measured in this process. */
async function measureVerify(account: PrivateKeyAccount): Promise<number> {
  const header = await siwe(account);
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
  const authorization = await siwe(who);
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
  const agent = await postSigned(base, '/v1/agents', owner, agentBody(owner.address));
  const task = await postSigned(base, '/v1/tasks', payer, taskBody(agent.id));
  const statusPath = `/v1/tasks/${String(task.task_id)}/status`;
  const check = await fetch(`${base}${statusPath}`, {
    headers: { authorization: await siwe(payer) },
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
  const row: Row = { target, ...autocannonFigures(r, cpu), shortfall: supply?.shortfall ?? 0 };
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
  printMarkdownTable(head, body);
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

async function benchPostgres(settings: Settings, signed: readonly string[], actors: Actors): Promise<Row[]> {
  const db = await createThrowawayDb(settings.pgUrl);
  if (typeof db === 'string') {
    console.log(`postgres: skipped — ${db}`);
    return [];
  }
  console.log(`postgres: throwaway database on ${redactUrl(settings.pgUrl)}`);
  try {
    return await withServer(import.meta.url, 'app', { BENCH_DB_URL: db.url, BENCH_AUTH_MAX_AGE: String(settings.authMaxAge) }, (server) =>
      measureStatus('(Postgres)', server, signed, settings, actors),
    );
  } finally {
    await db.drop();
  }
}

async function main(): Promise<void> {
  const settings = readSettings();
  startWatchdog((5 * (settings.seconds + WARMUP_SECONDS) + 300) * 1000, { kill: killChildren, exitDelayMs: 0, signals: ['SIGINT'] });
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
  const bare = await startServer(import.meta.url, 'bare', {});
  try {
    rows.push(await measure('bare /hello', bare.base, '/hello', settings));
  } finally {
    await stopServer(bare);
  }

  const embedded = await startServer(import.meta.url, 'app', { BENCH_DB_URL: '', BENCH_AUTH_MAX_AGE: String(settings.authMaxAge) });
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

const serveKind = serveKindFromArgs(process.argv.slice(2));
runBench(serveKind ? () => serve(serveKind) : undefined, main, killChildren);
