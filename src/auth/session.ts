import { randomBytes, webcrypto } from 'node:crypto';
import { errors as jose, jwtVerify, SignJWT } from 'jose';
import { getAddress, isAddress, type Address } from 'viem';
import { eq, lt, sql, type Placeholder, type SQL } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import { preparedQuery } from '../db/prepared.js';
import { revokedSessions } from '../db/schema.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import { SIWE_SCHEME, type SiweVerifier } from './siwe.js';

/**
 * Sessions: sign in once with SIWE, then call unpaid endpoints with a short-lived token.
 *
 * `POST /v1/auth/session` verifies a SIWE header (siwe.ts: domain, chain, window, signature, and
 * its nonce is consumed, so one signed message starts at most one session and is spent for every
 * other use) and answers a JWT signed with SESSION_SECRET (HS256):
 *   `sub` the checksummed wallet, `aud` the sign-in domain, `iss` "task-escrow", `iat`,
 *   `exp` = min(now + SESSION_TTL_SECONDS, the message's expiration time), `jti` `sess_…`.
 * Requests then send `Authorization: Bearer <token>`. Each use checks signature, `iss`, `aud` and
 * `exp` (with CLOCK_TOLERANCE_SECONDS, on the service's clock) in memory and then one
 * primary-key lookup: is the `jti` revoked? Revocation (`DELETE /v1/auth/session`) stores the
 * `jti` until the token expires, so it holds in every process that shares the database.
 * A hot read may run that lookup inside its own statement instead (`claims` + `sessionRevoked` +
 * `refuseRevoked`): the same lookup, in the same snapshot as the data it reads, one round trip.
 *
 * A token never replaces payment: on a priced route x402 proves the caller, as it does for SIWE.
 */
export const BEARER_SCHEME = 'Bearer';
export const SESSION_ISSUER = 'task-escrow';
/** Leeway on `exp` between the processes' clocks. */
export const CLOCK_TOLERANCE_SECONDS = 5;
/** Revoked ids are kept this long past their token's expiry (clocks of other hosts may lag). */
const PURGE_MARGIN_MS = 60_000;
const ALGORITHM = 'HS256';
/** Tokens remembered as verified (`SessionService.verified`); past this, the oldest is forgotten. */
const VERIFIED_TOKENS_MAX = 4096;
const BEARER = /^Bearer(?:\s+(.*))?$/i;

export interface SessionServiceOptions {
  db: Db;
  clock: Clock;
  /** The HMAC key (SESSION_SECRET's bytes, or a random per-process key in dev mode). */
  key: Uint8Array;
  ttlSeconds: number;
  /**
   * Proves the wallet when a session starts. It shares siwe.ts's nonce table with the per-request
   * verifier, so a message is used once whichever of the two sees it first.
   */
  signIn: SiweVerifier;
}

export interface SessionClaims {
  address: Address;
  jti: string;
  expiresAt: Date;
}

export interface Session extends SessionClaims {
  token: string;
}

/** The session key: SESSION_SECRET, else (dev mode: config refuses a real chain without it) 32 random bytes, never logged. */
export function sessionKey(config: Pick<Config, 'SESSION_SECRET'>): Uint8Array {
  return config.SESSION_SECRET ? new TextEncoder().encode(config.SESSION_SECRET) : new Uint8Array(randomBytes(32));
}

/**
 * The token of an `Authorization: Bearer <token>` header; null when the header is absent or of
 * another scheme (SIWE), so that other caller sources may answer.
 */
export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const match = BEARER.exec(header.trim());
  return match ? (match[1] ?? '').trim() : null;
}

/**
 * Whether session `jti` is revoked, as an SQL expression: the lookup `authenticate` makes, for a
 * read that checks a token's revocation in its own statement (`SessionService.claims`).
 */
export function sessionRevoked(jti: Placeholder | SQL): SQL<boolean> {
  return sql<boolean>`exists (select 1 from ${revokedSessions} where ${revokedSessions.jti} = ${jti})`;
}

/** The answer to a revoked session token (401). */
export function refuseRevoked(): AppError {
  return new AppError('session_revoked', 'This session token was revoked; sign in again (POST /v1/auth/session)', { param: 'Authorization' });
}

/** Is this session id revoked? Prepared: one primary-key lookup on every use of a token. */
const revokedJti = preparedQuery((db) =>
  db.select({ jti: revokedSessions.jti }).from(revokedSessions).where(eq(revokedSessions.jti, sql.placeholder('jti'))).limit(1).prepare('sessions_revoked_jti'),
);

/**
 * The HMAC key imported once (WebCrypto): given raw bytes, jose imports them again on every
 * signature and check, about a seventh of the CPU of an unpaid read.
 */
function importHmacKey(key: Uint8Array): Promise<webcrypto.CryptoKey> {
  return webcrypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
}

const invalid = (message: string) => new AppError('invalid_signature', message, { param: 'Authorization' });

/** A token `jwtVerify` accepted: for the audience it was checked against, its claims and time limits. */
interface VerifiedToken {
  audience: string;
  claims: SessionClaims;
  /** `exp` and `nbf` (absent in this service's tokens) in seconds since the epoch. */
  exp: number;
  nbf: number | undefined;
}

export class SessionService {
  private readonly key: Promise<webcrypto.CryptoKey>;
  /**
   * Tokens whose signature, header and claims `jwtVerify` accepted, by their text: the same text is
   * authentic under the same key whenever it comes back, so a later use checks only the clock (`exp`
   * and `nbf`, as jose does) and skips the HMAC (with WebCrypto, a tenth of an unpaid read's CPU).
   * Revocation is not remembered: every use still looks it up in the database.
   */
  private readonly verified = new Map<string, VerifiedToken>();

  constructor(private readonly opts: SessionServiceOptions) {
    this.key = importHmacKey(opts.key);
    this.key.catch(() => undefined); // reported by the first sign or check that awaits it
  }

  /** The `aud` of this service's tokens: its sign-in domain (undefined: none configured). */
  get audience(): string | undefined {
    return this.opts.signIn.expectedDomain;
  }

  /** Dev mode with PORT=0: the sign-in domain (and so the audience) is the origin really listened on. */
  listeningOn(origin: string): void {
    this.opts.signIn.listeningOn(origin);
  }

  /** Starts a session from a SIWE `Authorization` header (its nonce is consumed). */
  async start(authorization: string | undefined): Promise<Session> {
    if (!authorization || !new RegExp(`^${SIWE_SCHEME}\\s`, 'i').test(authorization.trim())) {
      throw new AppError(
        'authentication_required',
        bearerToken(authorization) !== null
          ? 'A session starts from a wallet signature, not from a session token: send "Authorization: SIWE <base64url(message)>.<signature>"'
          : 'Starting a session needs a wallet signature: send "Authorization: SIWE <base64url(message)>.<signature>"',
        { param: 'Authorization' },
      );
    }
    const signIn = await this.opts.signIn.verify(authorization);
    const audience = this.audience!; // verify() refuses every message when no domain is configured
    const now = Math.floor(this.opts.clock.now().getTime() / 1000);
    const exp = Math.min(now + this.opts.ttlSeconds, Math.floor(signIn.expiresAt.getTime() / 1000));
    const jti = newId('sess');
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: ALGORITHM, typ: 'JWT' })
      .setSubject(signIn.address)
      .setAudience(audience)
      .setIssuer(SESSION_ISSUER)
      .setIssuedAt(now)
      .setExpirationTime(exp)
      .setJti(jti)
      .sign(await this.key);
    return { token, address: signIn.address, jti, expiresAt: new Date(exp * 1000) };
  }

  /** The wallet of a valid, unexpired, unrevoked token; otherwise a 401 AppError saying why. */
  async authenticate(token: string): Promise<SessionClaims> {
    const claims = await this.claims(token);
    if (await this.isRevoked(claims.jti)) throw refuseRevoked();
    return claims;
  }

  /**
   * The claims of a valid, unexpired token (`authenticate` less the revocation lookup), for a read
   * that looks its `jti` up in its own statement (`sessionRevoked`) and throws `refuseRevoked()` before
   * it answers anything else. Nothing may be done for the caller before that check.
   */
  claims(token: string): Promise<SessionClaims> {
    return this.verifyToken(token, false);
  }

  /**
   * Revokes a token of this service (signature, issuer and audience checked). Revoking an expired
   * or already revoked token succeeds and stores nothing more: it is unusable either way.
   */
  async revoke(token: string): Promise<SessionClaims> {
    const claims = await this.verifyToken(token, true);
    this.verified.delete(token);
    const now = this.opts.clock.now();
    if (claims.expiresAt.getTime() + CLOCK_TOLERANCE_SECONDS * 1000 > now.getTime()) {
      await this.opts.db
        .insert(revokedSessions)
        .values({ jti: claims.jti, address: claims.address.toLowerCase(), expiresAt: claims.expiresAt, revokedAt: now })
        .onConflictDoNothing();
    }
    return claims;
  }

  /** Deletes revoked ids whose tokens have expired (with a margin for other hosts' clocks). */
  async purgeExpired(): Promise<number> {
    const before = new Date(this.opts.clock.now().getTime() - PURGE_MARGIN_MS);
    const deleted = await this.opts.db.delete(revokedSessions).where(lt(revokedSessions.expiresAt, before)).returning({ jti: revokedSessions.jti });
    return deleted.length;
  }

  /** One primary-key lookup. */
  private async isRevoked(jti: string): Promise<boolean> {
    const rows = await revokedJti(this.opts.db).execute({ jti });
    return rows.length > 0;
  }

  private async verifyToken(token: string, allowExpired: boolean): Promise<SessionClaims> {
    const audience = this.audience;
    if (!audience) {
      throw invalid('This service has no sign-in domain configured (its operator must set AUTH_DOMAIN or PUBLIC_BASE_URL)');
    }
    if (!token) throw invalid('Authorization must be "Bearer <session token>"');
    const known = this.verified.get(token);
    if (known && known.audience === audience && (allowExpired || this.inTime(known))) return known.claims;
    let payload: Record<string, unknown>;
    let expired = false;
    try {
      ({ payload } = await jwtVerify(token, await this.key, {
        algorithms: [ALGORITHM],
        typ: 'JWT',
        issuer: SESSION_ISSUER,
        audience,
        requiredClaims: ['sub', 'jti', 'iat', 'exp'],
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        currentDate: this.opts.clock.now(),
      }));
    } catch (err) {
      // jose checks the signature, then typ, iss and aud, and only then exp: an expired token is authentic.
      this.verified.delete(token);
      if (!(err instanceof jose.JWTExpired && allowExpired)) throw sessionError(err, audience);
      payload = err.payload;
      expired = true;
    }
    const { sub, jti, exp, nbf } = payload;
    if (typeof sub !== 'string' || !isAddress(sub) || typeof jti !== 'string' || typeof exp !== 'number') {
      throw invalid('The session token does not name a wallet and a session');
    }
    const claims = { address: getAddress(sub), jti, expiresAt: new Date(exp * 1000) };
    if (!expired) this.remember(token, { audience, claims, exp, nbf: typeof nbf === 'number' ? nbf : undefined });
    return claims;
  }

  /** jose's time checks (with CLOCK_TOLERANCE_SECONDS, on the service's clock): not before `nbf`, before `exp`. */
  private inTime(token: VerifiedToken): boolean {
    const now = Math.floor(this.opts.clock.now().getTime() / 1000);
    return !(token.nbf !== undefined && token.nbf > now + CLOCK_TOLERANCE_SECONDS) && !(token.exp <= now - CLOCK_TOLERANCE_SECONDS);
  }

  private remember(token: string, verified: VerifiedToken): void {
    this.verified.delete(token);
    if (this.verified.size >= VERIFIED_TOKENS_MAX) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(token, verified);
  }
}

function sessionError(err: unknown, audience: string): AppError {
  if (err instanceof jose.JWTExpired) {
    const exp = typeof err.payload.exp === 'number' ? ` at ${new Date(err.payload.exp * 1000).toISOString()}` : '';
    return new AppError('session_expired', `The session token expired${exp}; sign in again (POST /v1/auth/session)`, { param: 'Authorization' });
  }
  if (err instanceof jose.JWTClaimValidationFailed) {
    // Past the signature check: the claims are this service's key's, but not for this service.
    if (err.claim === 'aud') return invalid(`The session token is not for this service ("${audience}")`);
    return invalid(`The session token's "${err.claim}" claim is not acceptable here`);
  }
  // Malformed, another algorithm, tampered with, or signed with another key: say no more.
  return invalid('The session token is invalid: malformed, altered, or not issued by this service');
}
