import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Address } from 'viem';
import { AppError } from '../errors.js';

/**
 * Who is calling: every caller is a wallet. Sources are tried in order and the first that
 * recognises the request wins: the wallet sign-in (SIWE), then a session token (Bearer, started
 * from a SIWE sign-in); on priced routes the x402 payer instead (`deferTo`).
 * A route says what it needs with `config: { auth: 'required' | 'optional' }` (default none).
 */
export interface Caller {
  address: Address;
  /** How the caller was proven. */
  via: string;
  /**
   * A session token's id whose revocation is still to be checked: set only on a route that checks
   * it in its own read (`config.revocationInRead`), which must refuse a revoked one before it
   * answers anything else.
   */
  revocationPending?: string;
}

export interface CallerSource {
  name: string;
  /** null = this source does not apply to the request; throws = it applies and is invalid. */
  resolve(request: FastifyRequest): Promise<Caller | null>;
}

export type AuthMode = 'required' | 'optional' | 'none';

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null;
  }
  interface FastifyContextConfig {
    auth?: AuthMode;
    /**
     * A hot read that looks a session token's revocation up in its own statement (one round trip
     * instead of two): the session source leaves it to the read (`Caller.revocationPending`).
     */
    revocationInRead?: boolean;
  }
  interface FastifyInstance {
    addCallerSource(source: CallerSource): void;
  }
}

export interface CallerOptions {
  /** Routes whose caller another plugin proves (x402: the payer of a priced route). */
  deferTo?: (request: FastifyRequest) => boolean;
}

export const callerPlugin = fp(
  async (app: FastifyInstance, opts: CallerOptions) => {
    const sources: CallerSource[] = [];
    app.decorate('addCallerSource', (source: CallerSource) => {
      sources.push(source);
    });
    app.decorateRequest('caller', null);
    // After validation: a malformed request is refused before a signature's nonce is spent.
    app.addHook('preHandler', async (request) => {
      const mode = request.routeOptions.config.auth ?? 'none';
      if (mode === 'none' || opts.deferTo?.(request)) return;
      for (const source of sources) {
        const caller = await source.resolve(request);
        if (caller) {
          request.caller = caller;
          return;
        }
      }
      if (mode === 'required') {
        throw new AppError(
          'authentication_required',
          'This endpoint needs a wallet: send "Authorization: SIWE <base64url(message)>.<signature>" or a session token, "Authorization: Bearer <token>"',
          { param: 'Authorization' },
        );
      }
    });
  },
  { name: 'wallet-caller' },
);

/** The caller of a route declared with auth 'required'. */
export function callerOf(request: FastifyRequest): Caller {
  if (!request.caller) throw new AppError('authentication_required', 'This endpoint needs a wallet');
  return request.caller;
}

/** The caller of a route with `revocationInRead`: its wallet, and the session whose revocation its read checks (if any). */
export function readerOf(request: FastifyRequest): { address: Address; session?: string } {
  const caller = callerOf(request);
  return caller.revocationPending ? { address: caller.address, session: caller.revocationPending } : { address: caller.address };
}
