import { getAddress, verifyMessage, type Address, type Hex } from 'viem';
import { parseSiweMessage } from 'viem/siwe';
import type { Clock } from '../clock.js';
import { authNonces } from '../db/schema.js';
import type { Db } from '../db/client.js';
import { AppError } from '../errors.js';
import { lt } from 'drizzle-orm';

/**
 * Wallet sign-in for endpoints that are not paid (agent registration, provider calls):
 * Sign-In with Ethereum (EIP-4361, the Ethereum profile of CAIP-122), verified with viem.
 *
 * Wire format: `Authorization: SIWE <base64url(message)>.<0x signature>`.
 * Rules: the message names this service's domain, carries an expiration time at most
 * AUTH_MAX_AGE_SECONDS after its issued-at time, is inside its validity window, and its
 * nonce is used once per address (replay protection, kept until the message expires).
 */
export const SIWE_SCHEME = 'SIWE';
const CLOCK_SKEW_MS = 60_000;

export interface SiweVerifierOptions {
  db: Db;
  clock: Clock;
  /** Fixed domain to require; undefined = the request's Host header. */
  domain: string | undefined;
  maxAgeSeconds: number;
}

export interface VerifiedSignIn {
  address: Address;
  nonce: string;
  expiresAt: Date;
}

export function parseAuthorizationHeader(header: string): { message: string; signature: Hex } {
  const match = /^SIWE\s+([A-Za-z0-9_-]+={0,2})\.(0x[0-9a-fA-F]+)$/.exec(header.trim());
  if (!match) {
    throw new AppError('invalid_signature', 'Authorization must be "SIWE <base64url(EIP-4361 message)>.<0x signature>"', {
      param: 'Authorization',
    });
  }
  const message = Buffer.from(match[1]!, 'base64url').toString('utf8');
  return { message, signature: match[2] as Hex };
}

export class SiweVerifier {
  constructor(private readonly opts: SiweVerifierOptions) {}

  /** Verifies the header and consumes its nonce; throws an authentication AppError otherwise. */
  async verify(header: string, requestHost: string | undefined): Promise<VerifiedSignIn> {
    const { message, signature } = parseAuthorizationHeader(header);
    const fields = parseSiweMessage(message);
    const { address, domain, nonce, expirationTime, issuedAt, notBefore, version } = fields;
    if (!address || !domain || !nonce || !issuedAt || !expirationTime || version !== '1') {
      throw new AppError(
        'invalid_signature',
        'The sign-in message must be EIP-4361 version 1 with domain, address, nonce, issued-at and expiration time',
      );
    }
    const expected = this.opts.domain ?? requestHost;
    if (!expected || domain.toLowerCase() !== expected.toLowerCase()) {
      throw new AppError('invalid_signature', `The sign-in message is for domain "${domain}", not "${expected ?? ''}"`);
    }
    this.checkWindow(issuedAt, expirationTime, notBefore);
    const valid = await verifyMessage({ address, message, signature }).catch(() => false);
    if (!valid) throw new AppError('invalid_signature', 'The signature does not match the sign-in message address');
    await this.consumeNonce(address, nonce, expirationTime);
    return { address: getAddress(address), nonce, expiresAt: expirationTime };
  }

  private checkWindow(issuedAt: Date, expiresAt: Date, notBefore: Date | undefined): void {
    const now = this.opts.clock.now().getTime();
    if (expiresAt.getTime() <= now) throw new AppError('signature_expired', 'The sign-in message has expired');
    if (issuedAt.getTime() > now + CLOCK_SKEW_MS) {
      throw new AppError('invalid_signature', 'The sign-in message is issued in the future');
    }
    if (notBefore && notBefore.getTime() > now + CLOCK_SKEW_MS) {
      throw new AppError('invalid_signature', 'The sign-in message is not valid yet');
    }
    if (expiresAt.getTime() - issuedAt.getTime() > this.opts.maxAgeSeconds * 1000) {
      throw new AppError(
        'invalid_signature',
        `The sign-in message may be valid for at most ${this.opts.maxAgeSeconds} seconds`,
      );
    }
  }

  private async consumeNonce(address: Address, nonce: string, expiresAt: Date): Promise<void> {
    const inserted = await this.opts.db
      .insert(authNonces)
      .values({ address: address.toLowerCase(), nonce, expiresAt })
      .onConflictDoNothing()
      .returning({ nonce: authNonces.nonce });
    if (inserted.length === 0) throw new AppError('signature_replayed', 'This sign-in message was already used');
  }

  /** Deletes nonces whose messages have expired (they can no longer be replayed anyway). */
  async purgeExpired(): Promise<number> {
    const deleted = await this.opts.db
      .delete(authNonces)
      .where(lt(authNonces.expiresAt, this.opts.clock.now()))
      .returning({ nonce: authNonces.nonce });
    return deleted.length;
  }
}
