import type { FastifyRequest } from 'fastify';

/** The escrow amount a fund request asks to lock (validated by the route schema before payment). */
export function fundingAmount(request: FastifyRequest): bigint {
  const amount = (request.body as { amount?: unknown } | undefined)?.amount;
  return typeof amount === 'string' && /^[0-9]{1,16}$/.test(amount) ? BigInt(amount) : 0n;
}
