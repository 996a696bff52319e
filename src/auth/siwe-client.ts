import type { LocalAccount } from 'viem';
import { createSiweMessage, generateSiweNonce } from 'viem/siwe';

/**
 * Client side of the SIWE scheme in siwe.ts: builds the `Authorization` header value for one
 * request. Used by the demo, the tests and any Node client; other languages build the same
 * EIP-4361 message with their own SIWE library.
 */
export interface SignInOptions {
  /**
   * host[:port] the service is configured to accept: its AUTH_DOMAIN, else the host of its
   * PUBLIC_BASE_URL, else (dev mode) the host:port it listens on. Not whatever Host you send.
   */
  domain: string;
  /** Origin of the service, on that domain, e.g. http://127.0.0.1:3000 */
  uri: string;
  /** The service's chain: 8453 (base, the default) or 84532 (base-sepolia). */
  chainId?: number;
  ttlSeconds?: number;
  now?: Date;
  nonce?: string;
  statement?: string;
}

export async function signInHeader(account: LocalAccount, opts: SignInOptions): Promise<string> {
  const issuedAt = opts.now ?? new Date();
  const message = createSiweMessage({
    address: account.address,
    domain: opts.domain,
    uri: opts.uri,
    version: '1',
    chainId: opts.chainId ?? 8453,
    nonce: opts.nonce ?? generateSiweNonce(),
    issuedAt,
    expirationTime: new Date(issuedAt.getTime() + (opts.ttlSeconds ?? 300) * 1000),
    statement: opts.statement ?? 'Sign in to task-escrow',
  });
  const signature = await account.signMessage({ message });
  return `SIWE ${Buffer.from(message, 'utf8').toString('base64url')}.${signature}`;
}
