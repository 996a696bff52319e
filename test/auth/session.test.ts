import type { FastifyInstance } from 'fastify';
import { decodeJwt, SignJWT, UnsecuredJWT } from 'jose';
import type { PrivateKeyAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';
import type { ManualClock } from '../../src/clock.js';
import { loadConfig } from '../../src/config.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { revokedSessions } from '../../src/db/schema.js';
import { runMaintenance } from '../../src/maintenance.js';
import { buildTestApp, otherInstance as sharedInstance, TEST_DOMAIN, wallet, type TestApp } from '../helpers/app.js';
import { expectError, registerAgent, rowCount } from '../helpers/fixtures.js';

/**
 * Sessions (src/auth/session.ts): sign in once with SIWE, then send `Authorization: Bearer <jwt>`
 * to the unpaid endpoints. Runs on PGlite by default and on Postgres with DATABASE_URL; the
 * revocation seen by a second app instance uses its own connection pool on Postgres.
 */
const SECRET = 'session-secret-of-the-tests-0123456789abcdef';
const ENV = {
  NODE_ENV: 'test',
  LOG_LEVEL: 'silent',
  AUTH_DOMAIN: TEST_DOMAIN,
  RATE_LIMIT_MAX: '100000',
  MAX_EVENT_LOOP_DELAY_MS: '0',
  X402_ENABLED: 'false',
  SESSION_SECRET: SECRET,
};

let t: TestApp;
beforeAll(async () => {
  t = await buildTestApp({ SESSION_SECRET: SECRET });
});
afterAll(() => t.close());

const alice = wallet(0);
const bob = wallet(1);

type Res = { status: number; body: any; headers: Record<string, unknown> };

async function send(app: FastifyInstance, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, headers: Record<string, string>, payload?: object): Promise<Res> {
  const res = await app.inject({ method, url, headers, ...(payload ? { payload } : {}) });
  return { status: res.statusCode, body: res.body ? res.json() : null, headers: res.headers };
}

const siwe = (who: PrivateKeyAccount, clock: ManualClock, opts: { ttlSeconds?: number; domain?: string } = {}) => {
  const domain = opts.domain ?? TEST_DOMAIN;
  return signInHeader(who, { domain, uri: `https://${domain}`, now: clock.now(), ...(opts.ttlSeconds ? { ttlSeconds: opts.ttlSeconds } : {}) });
};

async function startSession(app: FastifyInstance, authorization: string, headers: Record<string, string> = {}): Promise<Res> {
  return send(app, 'POST', '/v1/auth/session', { authorization, ...headers });
}

/** A new session for `who` on the test app; returns the token. */
async function tokenFor(who: PrivateKeyAccount, opts: { ttlSeconds?: number } = {}): Promise<string> {
  const res = await startSession(t.app, await siwe(who, t.clock, opts));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.token;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const receipts = (app: FastifyInstance, token: string) => send(app, 'GET', '/v1/receipts', bearer(token));
const endSession = (app: FastifyInstance, token: string) => send(app, 'DELETE', '/v1/auth/session', bearer(token));

/** Runs `fn` at `at`, then puts the shared clock back. */
async function atTime<T>(clock: ManualClock, at: Date, fn: () => Promise<T>): Promise<T> {
  const before = clock.now();
  clock.set(at);
  try {
    return await fn();
  } finally {
    clock.set(before);
  }
}

/** Another instance of the service on the test app's database, with these settings over the test's. */
const otherInstance = (env: Record<string, string> = {}) => sharedInstance(t, loadConfig({ ...ENV, ...env }));

describe('starting a session', () => {
  it('answers a JWT for the signed-in wallet: sub, aud, iss, iat, exp, jti', async () => {
    const res = await startSession(t.app, await siwe(alice, t.clock));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toMatchObject({ token_type: 'Bearer', address: alice.address });
    const now = Math.floor(t.clock.now().getTime() / 1000);
    const claims = decodeJwt(res.body.token);
    expect(claims).toMatchObject({ sub: alice.address, aud: TEST_DOMAIN, iss: 'task-escrow', iat: now });
    expect(claims.jti).toMatch(/^sess_[0-9a-z]{20}$/);
    // The helper's message expires 300 s after issue, before SESSION_TTL_SECONDS (900): the message wins.
    expect(claims.exp).toBe(now + 300);
    expect(res.body.expires_at).toBe(new Date((now + 300) * 1000).toISOString());
  });

  it('lasts SESSION_TTL_SECONDS at most; a message that starts one may be valid that long', async () => {
    const now = Math.floor(t.clock.now().getTime() / 1000);
    // 900 s is past AUTH_MAX_AGE_SECONDS (600): too long for a per-request signature, fine for a session.
    const long = await siwe(alice, t.clock, { ttlSeconds: 900 });
    expectError(await send(t.app, 'GET', '/v1/receipts', { authorization: await siwe(alice, t.clock, { ttlSeconds: 900 }) }), 401, 'invalid_signature');
    const res = await startSession(t.app, long);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(decodeJwt(res.body.token).exp).toBe(now + t.config.SESSION_TTL_SECONDS);
    expectError(await startSession(t.app, await siwe(alice, t.clock, { ttlSeconds: 901 })), 401, 'invalid_signature');

    const short = await otherInstance({ SESSION_TTL_SECONDS: '60' });
    try {
      const capped = await startSession(short.app, await siwe(alice, t.clock));
      expect(capped.status).toBe(201);
      expect(decodeJwt(capped.body.token).exp).toBe(now + 60);
    } finally {
      await short.close();
    }
  });

  it('refuses a request without a SIWE header, or with a token (a session cannot extend itself)', async () => {
    expectError(await send(t.app, 'POST', '/v1/auth/session', {}), 401, 'authentication_required');
    const res = await startSession(t.app, `Bearer ${await tokenFor(alice)}`);
    expectError(res, 401, 'authentication_required');
    expect(res.body.error.message).toContain('SIWE');
  });

  it('refuses the replay of the signed message that started it, here and on any other route', async () => {
    const header = await siwe(alice, t.clock);
    expect((await startSession(t.app, header)).status).toBe(201);
    expectError(await startSession(t.app, header), 401, 'signature_replayed');
    expectError(await send(t.app, 'GET', '/v1/receipts', { authorization: header }), 401, 'signature_replayed');
    // and a message already used for a request starts no session
    const used = await siwe(alice, t.clock);
    expect((await send(t.app, 'GET', '/v1/receipts', { authorization: used })).status).toBe(200);
    expectError(await startSession(t.app, used), 401, 'signature_replayed');
  });

  it('ignores Idempotency-Key: a token is never replayed to another request', async () => {
    const key = { 'idempotency-key': 'same-key-for-both' };
    const first = await startSession(t.app, await siwe(alice, t.clock), key);
    const second = await startSession(t.app, await siwe(bob, t.clock), key);
    expect([first.status, second.status]).toEqual([201, 201]);
    expect(second.headers['idempotent-replayed']).toBeUndefined();
    expect(second.body.address).toBe(bob.address);
    expect(second.body.token).not.toBe(first.body.token);
  });

  it('refuses a message for another domain', async () => {
    expectError(await startSession(t.app, await siwe(alice, t.clock, { domain: 'evil.example' })), 401, 'invalid_signature');
  });
});

describe('using a session token', () => {
  it('proves the wallet on unpaid endpoints, as many times as needed', async () => {
    const token = await tokenFor(alice);
    for (let i = 0; i < 3; i++) {
      const res = await receipts(t.app, token);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.receipts).toEqual([]);
    }
    // register an agent and read its private settings with the token: the token's wallet owns it
    const created = await send(t.app, 'POST', '/v1/agents', bearer(token), {
      name: 'Session Writer',
      capabilities: ['copywriting'],
      pricing: { base_rate: '1000' },
      payout_address: alice.address,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.owner_address).toBe(alice.address);
    const settings = await send(t.app, 'GET', `/v1/agents/${created.body.id}/settings`, bearer(token));
    expect(settings.status).toBe(200);
    expectError(await send(t.app, 'GET', `/v1/agents/${created.body.id}/settings`, bearer(await tokenFor(bob))), 403, 'forbidden');
  });

  it('leaves the per-request SIWE header working', async () => {
    const agent = await registerAgent(t, bob);
    const res = await send(t.app, 'GET', `/v1/agents/${agent.id}/settings`, await t.auth(bob));
    expect(res.status).toBe(200);
  });

  it('expires at exp (within a 5 s clock tolerance), and says so', async () => {
    const token = await tokenFor(alice);
    const exp = decodeJwt(token).exp! * 1000;
    expect((await atTime(t.clock, new Date(exp + 3_000), () => receipts(t.app, token))).status).toBe(200);
    const late = await atTime(t.clock, new Date(exp + 6_000), () => receipts(t.app, token));
    expectError(late, 401, 'session_expired');
    expect(late.body.error.message).toContain('expired');
  });

  it('refuses a token for another audience or signed with another key', async () => {
    const token = await tokenFor(alice);
    const otherDomain = await otherInstance({ AUTH_DOMAIN: 'other.example' }); // same key, other service
    const otherKey = await otherInstance({ SESSION_SECRET: 'another-session-secret-0123456789abcdefgh' });
    try {
      const foreign = await receipts(otherDomain.app, token);
      expectError(foreign, 401, 'invalid_signature');
      expect(foreign.body.error.message).toContain('not for this service');
      expectError(await receipts(otherKey.app, token), 401, 'invalid_signature');
      // and the other way round: their tokens are refused here
      const theirs = await startSession(otherDomain.app, await siwe(alice, t.clock, { domain: 'other.example' }));
      expect(theirs.status).toBe(201);
      expectError(await receipts(t.app, theirs.body.token), 401, 'invalid_signature');
    } finally {
      await otherDomain.close();
      await otherKey.close();
    }
  });

  it('without SESSION_SECRET (dev mode) each instance has its own random key', async () => {
    const a = await otherInstance({ SESSION_SECRET: '' });
    const b = await otherInstance({ SESSION_SECRET: '' });
    try {
      const token = (await startSession(a.app, await siwe(alice, t.clock))).body.token as string;
      expect((await receipts(a.app, token)).status).toBe(200);
      expectError(await receipts(b.app, token), 401, 'invalid_signature');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('refuses tampered, unsigned, malformed and foreign-issuer tokens', async () => {
    const token = await tokenFor(alice);
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const claims = decodeJwt(token);
    const reencode = (c: object) => Buffer.from(JSON.stringify(c)).toString('base64url');
    const key = new TextEncoder().encode(SECRET);
    const signed = (c: Record<string, unknown>) =>
      new SignJWT(c).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(key);
    const forged = [
      `${header}.${reencode({ ...claims, sub: bob.address })}.${signature}`, // another wallet
      `${header}.${reencode({ ...claims, exp: claims.exp! + 3600 })}.${signature}`, // a longer life
      `${header}.${payload}.${signature.slice(0, -4)}AAAA`, // a broken signature
      new UnsecuredJWT({ ...claims }).encode(), // alg: none
      await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS512', typ: 'JWT' }).sign(new Uint8Array(64).fill(1)), // another algorithm
      await signed({ ...claims, iss: 'someone-else' }), // right key, another issuer
      await signed({ sub: claims.sub, aud: claims.aud, iss: claims.iss, exp: claims.exp, iat: claims.iat }), // no jti
      await signed({ ...claims, sub: 'not-an-address' }),
      'abc',
      'a.b.c',
      '',
    ];
    for (const bad of forged) {
      const res = await receipts(t.app, bad);
      expectError(res, 401, 'invalid_signature');
      expect(res.body.error.type).toBe('authentication_error');
    }
    expect((await receipts(t.app, token)).status).toBe(200); // the genuine one still works
  });
});

describe('revoking a session', () => {
  it('refuses the revoked token from then on, keeps other sessions, and answers a repeat', async () => {
    const token = await tokenFor(alice);
    const other = await tokenFor(alice);
    const res = await endSession(t.app, token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toEqual({ revoked: true, address: alice.address, expires_at: new Date(decodeJwt(token).exp! * 1000).toISOString() });
    expectError(await receipts(t.app, token), 401, 'session_revoked');
    expect((await receipts(t.app, other)).status).toBe(200);
    expect((await endSession(t.app, token)).status).toBe(200); // idempotent
  });

  it('holds in another instance of the service on the same database', async () => {
    const replica = await otherInstance();
    try {
      const token = await tokenFor(bob);
      expect((await receipts(replica.app, token)).status).toBe(200); // one key, one audience: the replica accepts it
      expect((await endSession(replica.app, token)).status).toBe(200); // revoked there…
      expectError(await receipts(t.app, token), 401, 'session_revoked'); // …refused here
      expectError(await receipts(replica.app, token), 401, 'session_revoked');
      const later = await tokenFor(bob);
      expect((await endSession(t.app, later)).status).toBe(200); // revoked here…
      expectError(await receipts(replica.app, later), 401, 'session_revoked'); // …refused there
    } finally {
      await replica.close();
    }
  });

  it('accepts an expired token (nothing to store), refuses a forged one and a missing one', async () => {
    const token = await tokenFor(alice);
    const exp = decodeJwt(token).exp! * 1000;
    const before = await rowCount(t, revokedSessions);
    expect((await atTime(t.clock, new Date(exp + 60_000), () => endSession(t.app, token))).status).toBe(200);
    expect(await rowCount(t, revokedSessions)).toBe(before);
    expectError(await endSession(t.app, `${token.slice(0, -4)}AAAA`), 401, 'invalid_signature');
    expectError(await send(t.app, 'DELETE', '/v1/auth/session', {}), 401, 'authentication_required');
    expectError(await send(t.app, 'DELETE', '/v1/auth/session', await t.auth(alice)), 401, 'authentication_required');
  });

  it('maintenance purges revoked ids once their tokens have expired', async () => {
    const token = await tokenFor(alice);
    expect((await endSession(t.app, token)).status).toBe(200);
    const exp = decodeJwt(token).exp! * 1000;
    const count = () => rowCount(t, revokedSessions);
    const before = await count();
    expect(before).toBeGreaterThan(0);
    await runMaintenance(t.app.db, t.clock, t.app.services); // nothing expired yet
    expect(await count()).toBe(before);
    await atTime(t.clock, new Date(exp + 24 * 3600_000), () => runMaintenance(t.app.db, t.clock, t.app.services));
    expect(await count()).toBe(0);
  });
});

describe('the audience follows the sign-in domain', () => {
  it('with PORT=0 in dev mode, is the origin really listened on', async () => {
    const listening = await otherInstance({ AUTH_DOMAIN: '', PORT: '0' });
    try {
      const baseUrl = await listening.app.listen({ host: '127.0.0.1', port: 0 });
      const host = new URL(baseUrl).host;
      const started = await fetch(`${baseUrl}/v1/auth/session`, {
        method: 'POST',
        headers: { authorization: await signInHeader(alice, { domain: host, uri: baseUrl, now: t.clock.now() }) },
      });
      expect(started.status, await started.clone().text()).toBe(201);
      const { token } = (await started.json()) as { token: string };
      expect(decodeJwt(token).aud).toBe(host);
      const res = await fetch(`${baseUrl}/v1/receipts`, { headers: bearer(token) });
      expect(res.status).toBe(200);
    } finally {
      await listening.close();
    }
  });
});

describe('priced endpoints', () => {
  it('a token does not replace payment: x402 still answers 402', async () => {
    const database = t.db.url ? await openDatabase({ url: t.db.url, dataDir: '', poolMax: 5 }) : t.db.database;
    const config = loadConfig({ ...ENV, X402_ENABLED: 'true' });
    // x402 on; the facilitator is never reached by an unpaid request.
    const paid = await buildApp({ config, database, clock: t.clock, logger: false, chainRpcUrl: 'http://127.0.0.1:1' });
    await paid.ready();
    try {
      const token = (await startSession(paid, await siwe(alice, t.clock))).body.token as string;
      expect((await receipts(paid, token)).status).toBe(200); // unpaid: the token works
      const status = await send(paid, 'GET', '/v1/tasks/task_00000000000000000000/status', bearer(token));
      expectError(status, 402, 'payment_required');
      expect(status.headers['payment-required']).toBeTruthy();
      const search = await send(paid, 'GET', '/v1/agents', bearer(token));
      expectError(search, 402, 'payment_required');
    } finally {
      await paid.close();
      if (t.db.url) await database.close();
    }
  });

  it('with x402 off, a token stands in for the signature there too, like SIWE', async () => {
    const res = await send(t.app, 'GET', '/v1/tasks/task_00000000000000000000/status', bearer(await tokenFor(alice)));
    expectError(res, 404, 'task_not_found');
  });
});

describe('logs', () => {
  it('never carry the token or the session secret', async () => {
    const lines: string[] = [];
    const config = loadConfig({ ...ENV, LOG_LEVEL: 'trace' });
    const app = await buildApp({ config, database: t.db.database, clock: t.clock, logStream: { write: (l) => lines.push(l) } });
    await app.ready();
    try {
      const token = (await startSession(app, await siwe(alice, t.clock))).body.token as string;
      await receipts(app, token);
      await receipts(app, `${token}x`);
      await endSession(app, token);
      await receipts(app, token);
      const text = lines.join('');
      expect(lines.length).toBeGreaterThan(0);
      expect(text).not.toContain(token.split('.')[2]!);
      expect(text).not.toContain(SECRET);
    } finally {
      await app.close();
    }
  });
});
