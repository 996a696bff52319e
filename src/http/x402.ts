import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import {
  x402HTTPResourceServer,
  type HTTPAdapter,
  type HTTPRequestContext,
  type HTTPResponseInstructions,
  type x402ResourceServer,
} from '@x402/core/server';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { getAddress, type Address } from 'viem';
import type { ChainTarget } from '../chain/wallets.js';
import { AppError, type ErrorCode } from '../errors.js';
import type { PaymentRow } from '../db/schema.js';
import type { PaymentsService } from '../payments/service.js';
import type { PriceBook, PriceName } from '../payments/prices.js';
import { errorBody } from './error-handler.js';

/**
 * x402 for Fastify, over `x402HTTPResourceServer` of @x402/core. A route opts in with
 * `config: { price: '<name>' }`. After validation the request must carry a PAYMENT-SIGNATURE
 * that the facilitator verifies (else 402 with the PAYMENT-REQUIRED challenge); the paying
 * wallet becomes `request.caller`; the authorization is claimed so that it serves one request.
 * When the handler answered below 400 the payment is settled and the PAYMENT-RESPONSE header
 * added; when it failed, nothing is charged. A route with `settleInHandler` settles itself
 * (escrow funding must not change state before the money moved).
 */
export interface X402Options {
  resourceServer: x402ResourceServer;
  target: ChainTarget;
  feeAddress: Address;
  prices: PriceBook;
  maxTimeoutSeconds: number;
  payments: PaymentsService;
  /** Dynamic terms of a route (funding: the escrow amount plus the fee, paid to the escrow wallet). */
  dynamic?: Partial<Record<PriceName, (request: FastifyRequest) => { amount: bigint; payTo: Address }>>;
}

export interface VerifiedPayment {
  server: x402HTTPResourceServer;
  context: HTTPRequestContext;
  payload: PaymentPayload;
  requirements: PaymentRequirements;
  declaredExtensions: Record<string, unknown> | undefined;
  claim: PaymentRow;
  settled: boolean;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    price?: PriceName;
    /** The handler settles the payment itself (through settlePayment) before changing state. */
    settleInHandler?: boolean;
  }
  interface FastifyRequest {
    payment: VerifiedPayment | null;
  }
}

const PAYMENT_HEADER = 'payment-signature';

function adapterFor(request: FastifyRequest): HTTPAdapter {
  const header = (name: string) => {
    const v = request.headers[name.toLowerCase()];
    return Array.isArray(v) ? v[0] : v;
  };
  return {
    getHeader: header,
    getMethod: () => request.method,
    getPath: () => request.url.split('?')[0] ?? '/',
    getUrl: () => `${request.protocol}://${request.host}${request.url}`,
    getAcceptHeader: () => header('accept') ?? '',
    getUserAgent: () => header('user-agent') ?? '',
    getQueryParams: () => (request.query ?? {}) as Record<string, string>,
    getBody: () => request.body,
  };
}

/** The task a paid request created (POST /v1/tasks answers its task_id), so its receipt names it. */
function createdTaskId(payload: unknown): string | undefined {
  if (typeof payload !== 'string' || !payload.includes('"task_id"')) return undefined;
  try {
    const id = (JSON.parse(payload) as { task_id?: unknown }).task_id;
    return typeof id === 'string' && /^task_[0-9a-z]{20}$/.test(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

/** Why a payment was refused, from the facilitator's reason, as the API's codes. */
export function paymentErrorCode(reason: string | undefined): ErrorCode {
  const r = (reason ?? '').toLowerCase();
  if (!r || r === 'payment required') return 'payment_required';
  if (r.includes('insufficient')) return 'insufficient_funds';
  if (r.includes('nonce') && (r.includes('used') || r.includes('already'))) return 'payment_replayed';
  if (r.includes('no matching') || r.includes('amount') || r.includes('value')) return 'amount_mismatch';
  return 'payment_invalid';
}

function decodeChallenge(headers: Record<string, string>): { error?: string; [k: string]: unknown } | undefined {
  const raw = Object.entries(headers).find(([k]) => k.toLowerCase() === 'payment-required')?.[1];
  if (!raw) return undefined;
  try {
    return JSON.parse(Buffer.from(raw, 'base64').toString('utf8'));
  } catch {
    return undefined;
  }
}

function sendChallenge(request: FastifyRequest, reply: FastifyReply, response: HTTPResponseInstructions): FastifyReply {
  const challenge = decodeChallenge(response.headers);
  const code = paymentErrorCode(challenge?.error);
  const message =
    code === 'payment_required'
      ? 'This endpoint is paid with x402: retry with a PAYMENT-SIGNATURE for one of the accepted payment requirements'
      : `Payment refused: ${challenge?.error ?? 'invalid payment'}`;
  const err = new AppError(code, message, { details: challenge ? { x402: challenge } : {} });
  for (const [k, v] of Object.entries(response.headers)) if (k.toLowerCase() !== 'content-type') reply.header(k, v);
  return reply.code(402).type('application/json; charset=utf-8').send(errorBody(err, request.id));
}

/** Settles the request's verified payment now; throws a payment AppError when the money did not move. */
export async function settlePayment(request: FastifyRequest, reply: FastifyReply): Promise<{ txHash: string; payment: VerifiedPayment }> {
  const payment = request.payment;
  if (!payment) throw new AppError('payment_required', 'This endpoint needs an x402 payment');
  const result = await payment.server.processSettlement(payment.payload, payment.requirements, payment.declaredExtensions, {
    request: payment.context,
  });
  payment.settled = true;
  if (!result.success) {
    throw new AppError(paymentErrorCode(result.errorReason), `Payment settlement failed: ${result.errorReason}`, {
      details: { reason: result.errorReason },
    });
  }
  for (const [k, v] of Object.entries(result.headers)) reply.header(k, v);
  return { txHash: result.transaction, payment };
}

export const x402Plugin = fp(
  async (app: FastifyInstance, opts: X402Options) => {
    const servers = new Map<string, x402HTTPResourceServer>();
    // x402 hands dynamic price/payTo callbacks a copy of the context; its adapter leads back to the request.
    const requestsByAdapter = new WeakMap<HTTPAdapter, FastifyRequest>();
    const requestOf = (ctx: HTTPRequestContext): FastifyRequest => {
      const request = requestsByAdapter.get(ctx.adapter);
      if (!request) throw new Error('x402: no request for this payment context');
      return request;
    };
    const routeKey = (method: string, url: string) => `${method} ${url}`;
    app.decorateRequest('payment', null);

    app.addHook('onRoute', (route) => {
      const name = route.config?.price;
      if (!name) return;
      const methods = Array.isArray(route.method) ? route.method : [route.method];
      const dynamic = opts.dynamic?.[name];
      const price = (amount: bigint) => ({ asset: opts.target.usdc, amount: amount.toString(), extra: { ...opts.target.usdcDomain } });
      const server = new x402HTTPResourceServer(opts.resourceServer, {
        accepts: {
          scheme: 'exact',
          network: opts.target.network,
          maxTimeoutSeconds: opts.maxTimeoutSeconds,
          payTo: dynamic ? (ctx: HTTPRequestContext) => dynamic(requestOf(ctx)).payTo : opts.feeAddress,
          price: dynamic ? (ctx: HTTPRequestContext) => price(dynamic(requestOf(ctx)).amount) : price(opts.prices[name]),
        },
        description: route.schema?.summary ?? name,
        mimeType: 'application/json',
      });
      for (const m of methods) servers.set(routeKey(m, route.url), server);
    });

    app.addHook('onReady', async () => {
      for (const server of new Set(servers.values())) await server.initialize();
    });

    // After validation and the caller plugin: a malformed request is refused before any payment.
    app.addHook('preHandler', async (request, reply) => {
      const server = servers.get(routeKey(request.method, request.routeOptions.url ?? ''));
      if (!server) return;
      const adapter = adapterFor(request);
      requestsByAdapter.set(adapter, request);
      const context: HTTPRequestContext = {
        adapter,
        path: request.url.split('?')[0] ?? '/',
        method: request.method,
        paymentHeader: request.headers[PAYMENT_HEADER] as string | undefined,
      };
      const result = await server.processHTTPRequest(context);
      if (result.type === 'no-payment-required') return;
      if (result.type === 'payment-error') return sendChallenge(request, reply, result.response);
      const authorization = (result.paymentPayload.payload as { authorization?: { from?: string; nonce?: string } }).authorization;
      if (!authorization?.from || !authorization.nonce) {
        throw new AppError('payment_invalid', 'The payment carries no EIP-3009 authorization');
      }
      const payer = getAddress(authorization.from);
      const claim = await opts.payments.claim({
        payer,
        payTo: getAddress(result.paymentRequirements.payTo),
        amount: BigInt(result.paymentRequirements.amount),
        asset: result.paymentRequirements.asset,
        network: result.paymentRequirements.network,
        authorizationNonce: authorization.nonce,
        endpoint: `${request.method} ${request.routeOptions.url}`,
        kind: request.routeOptions.config.settleInHandler ? 'escrow_funding' : 'call_fee',
        taskId: (request.params as { id?: string } | undefined)?.id?.startsWith('task_') ? (request.params as { id: string }).id : undefined,
      });
      request.caller = { address: payer, via: 'x402' };
      request.payment = {
        server,
        context,
        payload: result.paymentPayload,
        requirements: result.paymentRequirements,
        declaredExtensions: result.declaredExtensions,
        claim,
        settled: false,
      };
    });

    // Settle after the handler succeeded; a failed request is never charged.
    app.addHook('onSend', async (request, reply, payload) => {
      const payment = request.payment;
      if (!payment || payment.settled) return payload;
      payment.settled = true;
      const replayed = reply.getHeader('idempotent-replayed') === 'true';
      if (reply.statusCode >= 400 || replayed) {
        await opts.payments.release(payment.claim.id);
        return payload;
      }
      const result = await payment.server.processSettlement(payment.payload, payment.requirements, payment.declaredExtensions, {
        request: payment.context,
      });
      if (!result.success) {
        await opts.payments.release(payment.claim.id);
        const err = new AppError(paymentErrorCode(result.errorReason), `Payment settlement failed: ${result.errorReason}`);
        for (const [k, v] of Object.entries(result.headers)) reply.header(k, v);
        reply.code(402).type('application/json; charset=utf-8');
        return JSON.stringify(errorBody(err, request.id));
      }
      for (const [k, v] of Object.entries(result.headers)) reply.header(k, v);
      try {
        await opts.payments.settle(app.db, payment.claim.id, result.transaction, payment.claim.taskId ?? createdTaskId(payload));
      } catch (err) {
        // The money moved and the work is done: answer it. The missing booking shows in reconciliation.
        request.log.error({ err, payment: payment.claim.id, tx: result.transaction }, 'payment settled on chain but not recorded');
      }
      return payload;
    });

  },
  { name: 'x402', dependencies: ['wallet-caller'] },
);
