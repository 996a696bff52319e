/**
 * The database goes away while the service runs: every request that needs it answers
 * 503 `service_unavailable` in the error shape (retryable, with Retry-After), never 500, and the
 * service recovers by itself once the database is back.
 *
 * Real Postgres, reached through a TCP proxy on loopback (test/helpers/tcp-proxy.ts) that the
 * tests cut, freeze and restore; backends are also killed with pg_terminate_backend. Runs in both
 * test modes: on DATABASE_URL, or on postgres://postgres@127.0.0.1:5432/test (as the worker-kill
 * tests do). It creates its own database `te_outage_<random>` there and drops it afterwards.
 * No Postgres = the file FAILS. The last block does the same against an embedded PGlite that is
 * closed under the app.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import type { PrivateKeyAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { chainTarget } from '../../src/chain/wallets.js';
import { ManualClock } from '../../src/clock.js';
import { loadConfig, type Config } from '../../src/config.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';
import { TEST_DOMAIN, wallet } from '../helpers/app.js';
import { openPgliteDatabase } from '../helpers/pglite.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { redactPassword, withDatabase } from '../helpers/global-setup.js';

const BASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
/** Put in the app's connection string: it must never appear in a response or a log line. */
const SECRET = new URL(BASE_URL).password || 'outage-test-not-a-password-7f3a';

interface Harness {
  app: FastifyInstance;
  database: Database;
  config: Config;
  clock: ManualClock;
  logs: string[];
}

async function buildHarness(database: Database): Promise<Harness> {
  const logs: string[] = [];
  const config = loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    AUTH_DOMAIN: TEST_DOMAIN,
    RATE_LIMIT_MAX: '100000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    X402_ENABLED: 'false',
  });
  const clock = new ManualClock(new Date('2026-11-21T12:00:00.000Z'));
  const app = await buildApp({ config, database, clock, logStream: { write: (line) => logs.push(line) } });
  await app.ready();
  return { app, database, config, clock, logs };
}

async function signed(h: Harness, who: PrivateKeyAccount): Promise<{ authorization: string }> {
  return {
    authorization: await signInHeader(who, {
      domain: TEST_DOMAIN,
      uri: `https://${TEST_DOMAIN}`,
      chainId: chainTarget(h.config).chainId,
      now: h.clock.now(),
    }),
  };
}

interface Answer {
  status: number;
  headers: Record<string, unknown>;
  body: any;
  raw: string;
}

async function send(h: Harness, method: 'GET' | 'POST', url: string, who?: PrivateKeyAccount, payload?: object): Promise<Answer> {
  const res = await h.app.inject({
    method,
    url,
    headers: who ? await signed(h, who) : {},
    ...(payload ? { payload } : {}),
  });
  let body: unknown = null;
  try {
    body = res.body ? res.json() : null;
  } catch {
    body = res.body;
  }
  return { status: res.statusCode, headers: res.headers, body, raw: res.body };
}

/** 503 service_unavailable in the error shape, retryable, with a Retry-After of a few seconds. */
function expectUnavailable(res: Answer, what: string): void {
  expect(res.status, `${what} → ${res.raw}`).toBe(503);
  expect(res.body?.error, `${what} → ${res.raw}`).toMatchObject({
    type: 'api_error',
    code: 'service_unavailable',
    retryable: true,
  });
  expect(typeof res.body.error.message).toBe('string');
  expect(res.body.error.request_id).toMatch(/^req_/);
  expect(res.headers['x-request-id']).toBe(res.body.error.request_id);
  const retryAfter = Number(res.headers['retry-after']);
  expect(Number.isInteger(retryAfter), `Retry-After of ${what}: ${String(res.headers['retry-after'])}`).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(30);
  // Nothing about the connection leaks to the client.
  expect(res.raw).not.toContain(SECRET);
  expect(res.raw).not.toMatch(/ECONN|127\.0\.0\.1|postgres(ql)?:\/\/|terminat/i);
}

const payer = wallet(3);
const owner = wallet(1);

function agentBody(name: string) {
  return {
    name,
    description: 'Writes product copy',
    capabilities: ['copywriting'],
    pricing: { base_rate: '500000' },
    payout_address: owner.address,
  };
}

// ───────────────────────────────────────────────────────────────────────── Postgres

describe('Postgres goes away under the app', () => {
  let admin: pg.Client | undefined;
  let dbName: string | undefined;
  let dbUrl: string;
  let proxy: TcpProxy | undefined;
  let h: Harness | undefined;
  let names = 0;

  beforeAll(async () => {
    admin = await connectAdmin(BASE_URL);
    dbName = `te_outage_${randomBytes(6).toString('hex')}`;
    await admin.query(`create database ${dbName}`);
    dbUrl = withDatabase(BASE_URL, dbName);
    const direct = await openDatabase({ url: dbUrl, dataDir: '', poolMax: 2 });
    try {
      await runMigrations(direct);
    } finally {
      await direct.close();
    }
    const target = new URL(BASE_URL);
    proxy = await startTcpProxy({ host: target.hostname || '127.0.0.1', port: Number(target.port || 5432) });
    const viaProxy = new URL(proxy.urlFor(dbUrl));
    viaProxy.password = SECRET;
    if (!viaProxy.username) viaProxy.username = 'postgres';
    h = await buildHarness(await openDatabase({ url: viaProxy.toString(), dataDir: '', poolMax: 5 }));
  });

  afterAll(async () => {
    await proxy?.restore().catch(() => undefined);
    await h?.app.close();
    await h?.database.close().catch(() => undefined);
    await proxy?.close();
    if (admin) {
      if (dbName) await admin.query(`drop database if exists ${dbName} with (force)`);
      await admin.end();
    }
  });

  /** The calls that need the database, each through another path of the app. */
  async function databaseCalls(): Promise<Array<[string, Answer]>> {
    return [
      ['GET /v1/receipts (signed: the sign-in nonce is written first)', await send(h!, 'GET', '/v1/receipts', payer)],
      ['GET /v1/agents (public, a query in the handler)', await send(h!, 'GET', '/v1/agents')],
      ['POST /v1/agents (signed, a write)', await send(h!, 'POST', '/v1/agents', owner, agentBody(`Outage ${++names}`))],
    ];
  }

  async function expectHealthy(): Promise<void> {
    for (const [what, res] of await databaseCalls()) expect(res.status, `${what} → ${res.raw}`).toBeLessThan(300);
    const ready = await send(h!, 'GET', '/readyz');
    expect(ready.status, ready.raw).toBe(200);
    expect(ready.body).toEqual({ status: 'ready', database: 'postgres' });
  }

  it('answers normally through the proxy', async () => {
    await expectHealthy();
    expect(proxy!.connections).toBeGreaterThan(0);
  });

  it('connection refused (proxy cut): 503 + Retry-After on every database call and /readyz; recovers once restored', async () => {
    await proxy!.cut();
    for (const [what, res] of await databaseCalls()) expectUnavailable(res, what);
    expectUnavailable(await send(h!, 'GET', '/readyz'), 'GET /readyz');
    // Liveness does not need the database.
    expect((await send(h!, 'GET', '/healthz')).status).toBe(200);

    await proxy!.restore();
    await expectHealthy();
  });

  it('logs an outage as a warning naming the driver error, never the connection string or an error-level 500', async () => {
    const from = h!.logs.length;
    await proxy!.cut();
    try {
      expectUnavailable(await send(h!, 'GET', '/v1/agents'), 'GET /v1/agents');
    } finally {
      await proxy!.restore();
    }
    const lines = h!.logs.slice(from).map((l) => JSON.parse(l) as Record<string, any>);
    const warning = lines.find((l) => l.level === 40 && l.database_unreachable === true);
    expect(warning, JSON.stringify(lines)).toBeDefined();
    expect(warning!.cause.code ?? warning!.cause.message).toMatch(/ECONNREFUSED|Connection terminated|connect/);
    expect(lines.filter((l) => l.level >= 50), JSON.stringify(lines)).toEqual([]);
    expect(lines.find((l) => l.msg === 'request')).toMatchObject({ status: 503 });
    const all = h!.logs.slice(from).join('\n');
    expect(all).not.toContain(SECRET);
    expect(all).not.toMatch(/postgres(ql)?:\/\/[^\s"]*@/);
  });

  it('a connection dropped while its query runs: 503 for that request, then the next ones succeed', async () => {
    const lock = await lockPayments();
    try {
      const inFlight = send(h!, 'GET', '/v1/receipts', payer);
      await waitForLockWaiter();
      await proxy!.cut();
      expectUnavailable(await inFlight, 'GET /v1/receipts whose connection was cut mid-query');
    } finally {
      await lock.release();
      await proxy!.restore();
    }
    await expectHealthy();
  });

  it('pg_terminate_backend on the backend serving a request: 503 for that request, not 500', async () => {
    const lock = await lockPayments();
    let terminated = 0;
    try {
      const inFlight = send(h!, 'GET', '/v1/receipts', payer);
      const pid = await waitForLockWaiter();
      const { rows } = await lock.client.query<{ ok: boolean }>('select pg_terminate_backend($1) as ok', [pid]);
      terminated = rows.filter((r) => r.ok).length;
      expectUnavailable(await inFlight, 'GET /v1/receipts whose backend was terminated');
    } finally {
      await lock.release();
    }
    expect(terminated).toBe(1);
    await expectHealthy();
  });

  it('pg_terminate_backend on every idle connection of the pool: the next request is 503 or served, never 500', async () => {
    await expectHealthy(); // the pool holds idle connections
    const { rows } = await admin!.query<{ pid: number }>(
      `select pg_terminate_backend(pid), pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()`,
      [dbName],
    );
    expect(rows.length).toBeGreaterThan(0);
    const next = await send(h!, 'GET', '/v1/agents');
    if (next.status !== 200) expectUnavailable(next, 'GET /v1/agents right after its idle connections were terminated');
    // The pool drops the dead connections and opens new ones by itself.
    await eventually(async () => (await send(h!, 'GET', '/v1/agents')).status === 200);
    await expectHealthy();
  });

  it('a database that hangs instead of refusing: /readyz still answers 503 within seconds', async () => {
    await expectHealthy();
    proxy!.freeze();
    let ready: Answer;
    const started = Date.now();
    try {
      ready = await send(h!, 'GET', '/readyz');
    } finally {
      await proxy!.restore();
    }
    const elapsed = Date.now() - started;
    expectUnavailable(ready, 'GET /readyz while the database hangs');
    expect(elapsed).toBeLessThan(10_000);
    await expectHealthy();
  });

  // ── helpers that talk to Postgres directly, around the proxy ──

  /** An ACCESS EXCLUSIVE lock on `payments`, so GET /v1/receipts blocks in its query. */
  async function lockPayments(): Promise<{ client: pg.Client; release(): Promise<void> }> {
    const client = new pg.Client({ connectionString: dbUrl });
    await client.connect();
    await client.query('begin');
    await client.query('lock table payments in access exclusive mode');
    return {
      client,
      release: async () => {
        await client.query('rollback').catch(() => undefined);
        await client.end().catch(() => undefined);
      },
    };
  }

  /** The pid of the app's backend waiting on that lock (its request is in flight). */
  async function waitForLockWaiter(): Promise<number> {
    let pid: number | undefined;
    await eventually(async () => {
      const { rows } = await admin!.query<{ pid: number }>(
        `select pid from pg_stat_activity where datname = $1 and wait_event_type = 'Lock' and query ilike '%payments%'`,
        [dbName],
      );
      pid = rows[0]?.pid;
      return pid !== undefined;
    });
    return pid!;
  }
});

// ───────────────────────────────────────────────────────────────────────── PGlite

describe('the embedded PGlite is closed under the app', () => {
  let h: Harness | undefined;
  let destroy: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    const opened = await openPgliteDatabase();
    destroy = opened.destroy;
    h = await buildHarness(opened.database);
  });

  afterAll(async () => {
    await h?.app.close();
    await destroy?.();
  });

  it('answers 503 + Retry-After (not 500) on database calls and /readyz once PGlite is closed', async () => {
    expect((await send(h!, 'GET', '/v1/agents')).status).toBe(200);
    expect((await send(h!, 'GET', '/readyz')).body).toEqual({ status: 'ready', database: 'pglite' });

    await h!.database.close();

    expectUnavailable(await send(h!, 'GET', '/v1/agents'), 'GET /v1/agents on a closed PGlite');
    expectUnavailable(await send(h!, 'GET', '/v1/receipts', payer), 'GET /v1/receipts on a closed PGlite');
    expectUnavailable(await send(h!, 'GET', '/readyz'), 'GET /readyz on a closed PGlite');
  });
});

// ───────────────────────────────────────────────────────────────────────── helpers

async function eventually(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function connectAdmin(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
    await client.query('select 1');
    return client;
  } catch (err) {
    await client.end().catch(() => undefined);
    throw new Error(
      `outage.test.ts needs Postgres (it cuts a real connection), but ${redactPassword(url)} is unreachable: ` +
        `${err instanceof Error ? err.message : String(err)}. Start Postgres there or set DATABASE_URL.`,
    );
  }
}

