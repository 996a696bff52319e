/**
 * isDatabaseUnavailable: the one place that tells "the database cannot be reached" (answer 503,
 * retry later) from "this query failed" (a 4xx rule or a 500 bug), and the error handler's use
 * of it. Real driver errors are produced against real servers where that is cheap (a refused
 * port, a closed PGlite); the rest are built the way node-postgres / pg-pool / drizzle build them.
 */
import net from 'node:net';
import { DrizzleQueryError, sql } from 'drizzle-orm';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { describeDatabaseError, isDatabaseUnavailable, openDatabase, pingWithin, redactSecrets } from '../../src/db/client.js';
import { AppError } from '../../src/errors.js';
import { sendError, toAppError } from '../../src/http/error-handler.js';
import { openPgliteDatabase } from '../helpers/pglite.js';

function withCode(message: string, code: string, extra: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(message), { code, ...extra });
}

/** A pg DatabaseError as node-postgres builds it from an ErrorResponse. */
function pgError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code, severity: 'FATAL', routine: 'ProcessInterrupts', name: 'error' });
}

const wrapped = (cause: unknown) => new DrizzleQueryError('select "id" from "agents" where "owner" = $1', ['0xsecretparam'], cause as Error);

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('isDatabaseUnavailable', () => {
  it('recognises a real refused connection from node-postgres, raw and wrapped by drizzle', async () => {
    const port = await closedPort();
    const pool = new pg.Pool({ connectionString: `postgres://postgres:hunter2@127.0.0.1:${port}/db`, connectionTimeoutMillis: 2_000 });
    pool.on('error', () => undefined);
    const raw = await pool.query('select 1').then(
      () => undefined,
      (err: unknown) => err,
    );
    await pool.end();
    expect(raw).toMatchObject({ code: 'ECONNREFUSED' });
    expect(isDatabaseUnavailable(raw)).toBe(true);
    expect(isDatabaseUnavailable(wrapped(raw))).toBe(true);
    expect(describeDatabaseError(wrapped(raw))).toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('recognises a real refused connection through drizzle + the pool of openDatabase', async () => {
    const port = await closedPort();
    const database = await openDatabase({ url: `postgres://postgres@127.0.0.1:${port}/db`, dataDir: '', poolMax: 1 });
    try {
      const err = await database.db.execute(sql`select 1`).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DrizzleQueryError);
      expect(isDatabaseUnavailable(err)).toBe(true);
      // transactions take their client from the pool outside drizzle's wrapper: a raw error
      const txErr = await database.db.transaction(async () => undefined).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(txErr).toBeDefined();
      expect(isDatabaseUnavailable(txErr)).toBe(true);
    } finally {
      await database.close();
    }
  });

  it('recognises a real closed PGlite', async () => {
    const { database, destroy } = await openPgliteDatabase();
    await database.ping();
    await destroy();
    const err = await database.db.execute(sql`select 1`).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeDefined();
    expect(isDatabaseUnavailable(err)).toBe(true);
  });

  it.each([
    ['ECONNREFUSED', withCode('connect ECONNREFUSED 10.0.0.5:5432', 'ECONNREFUSED', { syscall: 'connect' })],
    ['ECONNRESET', withCode('read ECONNRESET', 'ECONNRESET')],
    ['ETIMEDOUT', withCode('connect ETIMEDOUT 10.0.0.5:5432', 'ETIMEDOUT')],
    ['EPIPE', withCode('write EPIPE', 'EPIPE')],
    ['ENOTFOUND', withCode('getaddrinfo ENOTFOUND db.internal', 'ENOTFOUND')],
    ['AggregateError of connection attempts', Object.assign(new AggregateError([withCode('connect ECONNREFUSED ::1:5432', 'ECONNREFUSED')], ''), { code: 'ECONNREFUSED' })],
    ['Connection terminated unexpectedly', new Error('Connection terminated unexpectedly')],
    ['Connection terminated', new Error('Connection terminated')],
    ['pg-pool connect timeout', new Error('Connection terminated due to connection timeout', { cause: new Error('Connection terminated unexpectedly') })],
    ['pg-pool waiting timeout', new Error('timeout exceeded when trying to connect')],
    ['client not queryable', new Error('Client has encountered a connection error and is not queryable')],
    ['client closed', new Error('Client was closed and is not queryable')],
    ['pool ended', new Error('Cannot use a pool after calling end on the pool')],
    ['PGlite closed', new Error('PGlite is closed')],
    ['PGlite closing', new Error('PGlite is closing')],
    ['08006 connection_failure', pgError('08006', 'connection failure')],
    ['08001 sqlclient_unable_to_establish_sqlconnection', pgError('08001', 'could not connect')],
    ['08P01 protocol_violation', pgError('08P01', 'protocol violation')],
    ['57P01 admin_shutdown', pgError('57P01', 'terminating connection due to administrator command')],
    ['57P02 crash_shutdown', pgError('57P02', 'terminating connection because of crash of another server process')],
    ['57P03 cannot_connect_now', pgError('57P03', 'the database system is starting up')],
    ['53300 too_many_connections', pgError('53300', 'sorry, too many clients already')],
  ])('unavailable: %s (raw, under drizzle, two causes deep)', (_name, err) => {
    expect(isDatabaseUnavailable(err)).toBe(true);
    expect(isDatabaseUnavailable(wrapped(err))).toBe(true);
    expect(isDatabaseUnavailable(wrapped(new Error('Connection terminated due to connection timeout', { cause: err })))).toBe(true);
  });

  it.each([
    ['unique violation 23505', wrapped(pgError('23505', 'duplicate key value violates unique constraint'))],
    ['serialization failure 40001', wrapped(pgError('40001', 'could not serialize access'))],
    ['deadlock 40P01', wrapped(pgError('40P01', 'deadlock detected'))],
    ['syntax error 42601', wrapped(pgError('42601', 'syntax error at or near "selec"'))],
    ['undefined table 42P01', wrapped(pgError('42P01', 'relation "nope" does not exist'))],
    ['query canceled 57014', wrapped(pgError('57014', 'canceling statement due to statement timeout'))],
    ['disk full 53100', wrapped(pgError('53100', 'could not extend file'))],
    ['a plain bug', new TypeError("Cannot read properties of undefined (reading 'id')")],
    ['an AppError', new AppError('task_not_found', 'Task x does not exist')],
    // Outbound HTTP (chain RPC, webhooks, the facilitator) failing is not the database failing.
    ['fetch failed (ECONNREFUSED below)', new TypeError('fetch failed', { cause: withCode('connect ECONNREFUSED 10.1.1.1:8545', 'ECONNREFUSED') })],
    [
      'an RPC client error over fetch failed',
      Object.assign(new Error('HTTP request failed.'), {
        name: 'HttpRequestError',
        cause: new TypeError('fetch failed', { cause: withCode('getaddrinfo ENOTFOUND rpc.example', 'ENOTFOUND') }),
      }),
    ],
    ['undefined', undefined],
    ['null', null],
    ['a string', 'ECONNREFUSED'],
    ['a number', 8],
  ])('not unavailable: %s', (_name, err) => {
    expect(isDatabaseUnavailable(err)).toBe(false);
  });

  it('survives cause cycles and very deep chains', () => {
    const a = new Error('a') as Error & { cause?: unknown };
    const b = new Error('b', { cause: a });
    a.cause = b;
    expect(isDatabaseUnavailable(a)).toBe(false);
    let deep: unknown = pgError('57P01', 'terminating');
    for (let i = 0; i < 10; i++) deep = wrapped(deep);
    expect(isDatabaseUnavailable(deep)).toBe(true);
  });
});

describe('describeDatabaseError', () => {
  it("names the driver's error, not drizzle's wrapper with the query parameters", () => {
    const d = describeDatabaseError(wrapped(pgError('57P01', 'terminating connection due to administrator command')));
    expect(d).toEqual({ code: '57P01', message: 'terminating connection due to administrator command' });
    expect(JSON.stringify(d)).not.toContain('0xsecretparam');
  });

  it('removes credentials from messages', () => {
    const err = wrapped(new Error('could not connect to postgres://app:s3cr3t@db.internal:5432/escrow (password=s3cr3t)'));
    const d = describeDatabaseError(err);
    expect(d.message).not.toContain('s3cr3t');
    expect(d.message).toContain('db.internal:5432');
    expect(redactSecrets('postgresql://u:p%40ss@h/db')).toBe('postgresql://[redacted]@h/db');
    expect(redactSecrets("host=h password='x y' user=u")).toBe('host=h password=[redacted] user=u');
  });
});

describe('the error handler on database outages', () => {
  it('maps an unreachable database to 503 service_unavailable, retryable, and other failures to 500', () => {
    const down = toAppError(wrapped(withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED')));
    expect(down).toMatchObject({ status: 503, code: 'service_unavailable', type: 'api_error', retryable: true, retryAfterSeconds: 5 });
    expect(down.message).not.toMatch(/ECONN|127\.0\.0\.1/);
    const bug = toAppError(wrapped(pgError('42601', 'syntax error')));
    expect(bug).toMatchObject({ status: 500, code: 'internal_error' });
    expect(bug.retryAfterSeconds).toBeUndefined();
  });

  it('sets Retry-After on a 503 unless the response already has one', () => {
    const headers = new Map<string, string>();
    const reply = {
      hasHeader: (k: string) => headers.has(k.toLowerCase()),
      header(k: string, v: string) {
        headers.set(k.toLowerCase(), v);
        return reply;
      },
      code: () => reply,
      type: () => reply,
      send: () => reply,
    };
    const request = { id: 'req_test' };
    sendError(request as never, reply as never, new AppError('service_unavailable', 'down'));
    expect(headers.get('retry-after')).toBe('5');
    headers.set('retry-after', '10'); // under-pressure's own
    sendError(request as never, reply as never, new AppError('service_unavailable', 'busy'));
    expect(headers.get('retry-after')).toBe('10');
    headers.clear();
    sendError(request as never, reply as never, new AppError('internal_error', 'boom'));
    expect(headers.has('retry-after')).toBe(false);
  });
});

describe('pingWithin', () => {
  it('rejects when the ping hangs, resolves when it answers', async () => {
    const started = Date.now();
    await expect(pingWithin({ ping: () => new Promise<void>(() => undefined) }, 100)).rejects.toThrow(/did not answer within 100 ms/);
    expect(Date.now() - started).toBeLessThan(2_000);
    await expect(pingWithin({ ping: async () => undefined }, 100)).resolves.toBeUndefined();
    await expect(pingWithin({ ping: async () => Promise.reject(new Error('Connection terminated')) }, 1_000)).rejects.toThrow('Connection terminated');
  });
});
