import { getAddress, type Address, type Hex } from 'viem';
import { parseSiweMessage } from 'viem/siwe';
import type { Clock } from '../clock.js';
import { verifyMessageFast } from '../crypto/signatures.js';
import { publicBaseUrl, type Config } from '../config.js';
import { authNonces } from '../db/schema.js';
import type { Db } from '../db/client.js';
import { AppError } from '../errors.js';
import { lt } from 'drizzle-orm';

/**
 * Wallet sign-in for endpoints that are not paid (agent registration, provider calls):
 * Sign-In with Ethereum (EIP-4361, the Ethereum profile of CAIP-122), verified with viem.
 *
 * Wire format: `Authorization: SIWE <base64url(message)>.<0x signature>`.
 * Rules: the message names this service's domain (and its `uri` is on that host, and its chain
 * id, when it carries one, is the service's chain), carries an expiration time at most
 * AUTH_MAX_AGE_SECONDS after its issued-at time, is inside its validity window, and its
 * nonce is used once per address (replay protection, kept until the message expires).
 *
 * The accepted domain comes from configuration only (see `siweDomain`), never from the
 * request's `Host` or `X-Forwarded-*` headers: a client chooses those, so a message the wallet
 * signed for another site could otherwise be replayed here by naming that site in `Host`.
 */
export const SIWE_SCHEME = 'SIWE';
const CLOCK_SKEW_MS = 60_000;

export interface SiweVerifierOptions {
  db: Db;
  clock: Clock;
  /**
   * host[:port] every message must name, from configuration (`siweDomain`); undefined = none is
   * configured and every sign-in is refused. Never taken from a request.
   */
  domain: string | undefined;
  /** Chain id a message that carries one must name (the configured chain's); undefined = not checked. */
  chainId?: number;
  /**
   * The domain is the dev-mode default, the listening origin: `listeningOn` may replace it with
   * the origin the server really listens on (PORT=0 picks a free port only at listen time).
   */
  domainFromListener?: boolean;
  maxAgeSeconds: number;
}

/** Where the accepted SIWE domain comes from, in order of precedence. */
export type SiweDomainSource = 'AUTH_DOMAIN' | 'PUBLIC_BASE_URL' | 'listener' | 'none';

/**
 * The domain sign-in messages must name, from configuration only: AUTH_DOMAIN if set; else the
 * host of PUBLIC_BASE_URL; else, in dev mode (the embedded chain), the listening origin
 * (http://HOST:PORT); else none (a real chain with neither set: every sign-in is refused).
 */
export function siweDomain(config: Config): { domain: string | undefined; source: SiweDomainSource } {
  if (config.AUTH_DOMAIN) return { domain: config.AUTH_DOMAIN.toLowerCase(), source: 'AUTH_DOMAIN' };
  if (config.PUBLIC_BASE_URL) return { domain: new URL(config.PUBLIC_BASE_URL).host, source: 'PUBLIC_BASE_URL' };
  if (!config.CHAIN_RPC_URL) return { domain: hostOf(publicBaseUrl(config)), source: 'listener' };
  return { domain: undefined, source: 'none' };
}

function hostOf(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}

/** `uri`'s host equals `domain` (host[:port]), default ports of `uri`'s scheme included. */
function uriIsOnDomain(uri: string, domain: string): boolean {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return false;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  // Parsing the domain with the uri's scheme normalises case and drops a default port (":443").
  const expected = hostOf(`${url.protocol}//${domain}`);
  return expected !== undefined && url.host === expected;
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
  private domain: string | undefined;

  constructor(private readonly opts: SiweVerifierOptions) {
    this.domain = opts.domain?.toLowerCase();
  }

  /** The domain messages must name (undefined: none configured). */
  get expectedDomain(): string | undefined {
    return this.domain;
  }

  /**
   * Tells a verifier whose domain is the dev-mode listening default the origin the server
   * really listens on (e.g. http://127.0.0.1:54321 after PORT=0). A domain from AUTH_DOMAIN or
   * PUBLIC_BASE_URL is never replaced.
   */
  listeningOn(origin: string): void {
    if (!this.opts.domainFromListener) return;
    const host = hostOf(origin);
    if (host) this.domain = host.toLowerCase();
  }

  /** Verifies the header and consumes its nonce; throws an authentication AppError otherwise. */
  async verify(header: string): Promise<VerifiedSignIn> {
    const { message, signature } = parseAuthorizationHeader(header);
    const fields = parseSiweMessage(message);
    const { address, domain, uri, chainId, nonce, expirationTime, issuedAt, notBefore, version } = fields;
    if (!address || !domain || !uri || !nonce || !issuedAt || !expirationTime || version !== '1') {
      throw new AppError(
        'invalid_signature',
        'The sign-in message must be EIP-4361 version 1 with domain, address, uri, nonce, issued-at and expiration time',
      );
    }
    this.checkAudience(domain, uri, chainId);
    this.checkWindow(issuedAt, expirationTime, notBefore);
    // WASM libsecp256k1 first; viem's verifyMessage for what that cannot decide (crypto/signatures.ts).
    const valid = await verifyMessageFast({ address, message, signature }).catch(() => false);
    if (!valid) throw new AppError('invalid_signature', 'The signature does not match the sign-in message address');
    await this.consumeNonce(address, nonce, expirationTime);
    return { address: getAddress(address), nonce, expiresAt: expirationTime };
  }

  /** The message is meant for this service: its domain, a uri on that domain, its chain. */
  private checkAudience(domain: string, uri: string, chainId: number | undefined): void {
    const expected = this.domain;
    if (!expected) {
      throw new AppError(
        'invalid_signature',
        'This service has no sign-in domain configured (its operator must set AUTH_DOMAIN or PUBLIC_BASE_URL)',
      );
    }
    if (domain.toLowerCase() !== expected) {
      throw new AppError('invalid_signature', `The sign-in message is for domain "${domain}", this service is "${expected}"`);
    }
    if (!uriIsOnDomain(uri, expected)) {
      throw new AppError('invalid_signature', `The sign-in message's uri "${uri}" is not an http(s) URL on "${expected}"`);
    }
    if (chainId !== undefined && this.opts.chainId !== undefined && chainId !== this.opts.chainId) {
      throw new AppError('invalid_signature', `The sign-in message is for chain ${chainId}, this service runs on chain ${this.opts.chainId}`);
    }
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
